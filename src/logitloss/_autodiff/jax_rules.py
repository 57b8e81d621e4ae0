"""JAX autodiff with the exact gradients instead of the forward formula's derivative.

Each loss is a ``jax.custom_jvp`` function whose JVP rule forms the tangent from the exact
gradients of ``_formulas``: ``g_x dx + g_z dz + g_q dq`` elementwise for the logistic losses,
``sum_j (g_x_j dx_j + g_z_j dz_j)`` along the class axis for softmax. ``jax.grad`` transposes
that linear rule, so reverse mode gets the same exact gradients; ``jax.hessian`` and other
higher orders differentiate the rule itself; ``jit`` and ``vmap`` trace it like any function.

The rule's primal output calls the custom_jvp function again rather than the formula, so that
differentiating the rule (second order) meets the exact gradients for the loss too, not the
derivative of the forward formula. Tangents are computed only for the inputs that are perturbed
(``symbolic_zeros``): ``jax.grad`` with respect to the logits never evaluates the labels' one.

Everything is computed in the compute dtype (float64 where JAX has it, i.e. under x64 mode) and
rounded once to the logits' dtype. This module imports JAX; ``_dispatch`` imports it only when
JAX arrays arrive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._core import arrays
from .._core.arrays import Array
from .._losses import reference
from .._losses.logistic import formula as logistic_formula
from .._losses.softmax import formula as softmax_formula


def _perturbed(tangent: Any) -> bool:
    """Whether a tangent is a real one: not a symbolic zero (unperturbed input)."""
    return not isinstance(tangent, jax.custom_derivatives.SymbolicZero)


def _tangent(
    x: Array,
    terms: list[tuple[Callable[[], Array], Any]],
    reduce: Callable[[Array], Array],
) -> Array:
    """``reduce(sum of grad() * tangent)`` over the perturbed inputs, in ``x``'s dtype.

    ``grad`` (elementwise, unreduced, in the compute dtype) is evaluated only for a perturbed
    input; the tangent is widened to the compute dtype and the sum rounded once, as the loss is.
    """
    parts = [grad() * arrays.widen(jnp, x, t)[1] for grad, t in terms if _perturbed(t)]
    total = functools.reduce(jnp.add, parts) if parts else jnp.zeros_like(x)
    return jnp.astype(reduce(total), x.dtype)


@jax.custom_jvp
def _sigmoid(x: Array, z: Array) -> Array:
    return reference.logistic(x, z, None, xp=jnp)


def _sigmoid_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, z = primals
    dx, dz = tangents
    out = _sigmoid(x, z)
    wx, wz = arrays.widen(jnp, x, z)
    terms = [
        (lambda: logistic_formula.logistic_grad_logits(wx, wz, None, xp=jnp), dx),
        (lambda: logistic_formula.logistic_grad_labels(wx, wz, None, xp=jnp), dz),
    ]
    return out, _tangent(x, terms, lambda t: t)


_sigmoid.defjvp(_sigmoid_jvp, symbolic_zeros=True)


@jax.custom_jvp
def _weighted(x: Array, z: Array, q: Array) -> Array:
    return reference.logistic(x, z, q, xp=jnp)


def _weighted_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, z, q = primals
    dx, dz, dq = tangents
    out = _weighted(x, z, q)
    wx, wz, wq = arrays.widen(jnp, x, z, q)
    # dq broadcasts against the elementwise d/dq; transposing the product (jax.grad) sums the
    # cotangent back to q's shape.
    terms = [
        (lambda: logistic_formula.logistic_grad_logits(wx, wz, wq, xp=jnp), dx),
        (lambda: logistic_formula.logistic_grad_labels(wx, wz, wq, xp=jnp), dz),
        (lambda: logistic_formula.logistic_grad_pos_weight(wx, wz, xp=jnp), dq),
    ]
    return out, _tangent(x, terms, lambda t: t)


_weighted.defjvp(_weighted_jvp, symbolic_zeros=True)


# ``axis`` is a Python int that shapes the computation: static, never traced or differentiated.
@functools.partial(jax.custom_jvp, nondiff_argnums=(2,))
def _softmax(x: Array, z: Array, axis: int) -> Array:
    return reference.softmax(x, z, axis=axis, xp=jnp)


def _softmax_jvp(axis: int, primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, z = primals
    dx, dz = tangents
    out = _softmax(x, z, axis)
    wx, wz = arrays.widen(jnp, x, z)
    terms = [
        (lambda: softmax_formula.softmax_grad_logits(wx, wz, axis=axis, xp=jnp), dx),
        (lambda: softmax_formula.softmax_grad_labels(wx, wz, axis=axis, xp=jnp), dz),
    ]
    return out, _tangent(x, terms, lambda t: jnp.sum(t, axis=axis))


_softmax.defjvp(_softmax_jvp, symbolic_zeros=True)


@jax.custom_jvp
def _sparse_softmax(x: Array, labels: Array) -> Array:
    return reference.sparse_softmax(x, labels, xp=jnp)


def _sparse_softmax_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
    x, labels = primals
    dx, _ = tangents  # integer labels: a float0 or symbolic-zero tangent, nothing to add
    out = _sparse_softmax(x, labels)
    (wx,) = arrays.widen(jnp, x)
    terms = [(lambda: softmax_formula.sparse_softmax_grad_logits(wx, labels, xp=jnp), dx)]
    return out, _tangent(x, terms, lambda t: jnp.sum(t, axis=-1))


_sparse_softmax.defjvp(_sparse_softmax_jvp, symbolic_zeros=True)


def logistic(x: Array, z: Array, q: Array | None) -> Array:
    """The sigmoid (``q is None``) or weighted loss, with exact JAX derivatives."""
    return _sigmoid(x, z) if q is None else _weighted(x, z, q)


def softmax(x: Array, z: Array, *, axis: int) -> Array:
    """The softmax loss along ``axis``, with exact JAX derivatives in ``x`` and ``z``."""
    return _softmax(x, z, axis)


def sparse_softmax(x: Array, labels: Array) -> Array:
    """The sparse softmax loss, with exact JAX derivatives in ``x``."""
    return _sparse_softmax(x, labels)
