"""The reduced training losses on JAX CPU by the fused numba kernel, through an XLA FFI custom
call (``_autodiff.jax_ffi``).

``_api.training._fused`` calls :func:`reduced` for JAX logits and a "mean" or "sum" reduction.
On the CPU backend with numba installed it returns the loss as a ``jax.custom_jvp`` function of
the logits and the operands whose value comes from ``jax_ffi``: the reduced loss **and** the
logits' gradient (already divided by the mean's denominator) in one kernel pass on XLA's
buffers, the same numbers as ``_losses.training.reduced``. Empty logits (:data:`CALLBACK_MIN`)
and calls inside ``reference_path()`` return None: the caller composes the exact ``jax_rules``.
No case needs ``jax.pure_callback`` any more.

Derivatives:

- The JVP rule calls the kernel once for ``(value, grad)`` and returns the tangent
  ``sum(grad * dx)``; reverse mode transposes that to ``grad * cotangent`` (no second
  call), forward mode (``jax.jvp``, ``jacfwd``) uses it as it is.
- The tangents of the differentiable operands (probability labels, class weights,
  ``pos_weight``, element weights), computed only where they are perturbed (symbolic zeros),
  are those of the composed path (``_api.training.composed``, the exact ``jax_rules`` pieces,
  handed in by the caller): ``jax.grad`` with respect to the logits alone never evaluates it.
- ``(value, grad)`` is itself a ``custom_jvp`` whose rule is the composed path's, so second
  derivatives (``jax.hessian``) are the composed path's exact ones.

``jit`` traces the custom call once; ``vmap`` calls it once per batch element (``vmap_method=
"sequential"``). The kernel computes in float64 whatever the dtype (float16 and bfloat16 are
read as float32) and the results are rounded once to the logits' dtype: no XLA float64 work,
x64 on or off.

Index labels out of range: concrete counted labels (eager calls) raise the composed path's
``ValueError`` here, before any computation; traced ones (under ``jit``, ``vmap``) cannot be
read then, and give a NaN loss and an all-NaN gradient (the composed path gives NaN rows).
"""

from __future__ import annotations

import functools
import importlib.util
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._core import arrays, route
from .._core.arrays import Array
from .._losses import training as fused
from . import jax_ffi

#: Fewer logits than this take the composed XLA path: only empty ones. The custom call costs
#: about 10 microseconds a call (jitted value and gradient of 8 x 2 logits: 10.8 us against the
#: composed path's 53 us; 512 x 10: 63 against 297 us; best of 7, 2 loaded cores).
CALLBACK_MIN = 1


def reduced(
    loss: str,
    x: Array,
    operands: tuple,
    options: dict[str, Any],
    composed: Callable[..., Array],
) -> Array | None:
    """The fused path's entry for JAX arrays (``_api.training._fused``): the reduced loss by
    the kernel, differentiable in ``x`` and the operands, or None where not taken (the composed
    path computes the call). ``loss``, ``operands`` and ``options`` are those of
    ``_losses.training.reduced``, validated (index labels raw: ``ignore_index`` included);
    ``composed(loss, x, *operands, **options)`` is the same loss on the composed path, for the
    derivatives the kernel does not give."""
    if not _takes(x):
        return None
    if loss == "cross_entropy":
        _check_labels(x, operands, options)
    return _rule(loss, tuple(sorted(options.items())), composed)(x, *operands)


def _takes(x: Array) -> bool:
    """CPU logits of at least :data:`CALLBACK_MIN` elements, numba installed, not inside
    ``reference_path()``."""
    if math.prod(x.shape) < CALLBACK_MIN or route.forced_reference() or not _numba():
        return False
    if arrays.is_tracer(x):
        return jax.default_backend() == "cpu"
    return all(d.platform == "cpu" for d in x.devices())


@functools.cache
def _numba() -> bool:
    return importlib.util.find_spec("numba") is not None


def _check_labels(x: Array, operands: tuple, options: dict[str, Any]) -> None:
    """The composed path's ValueError for counted index labels outside ``[0, C)``, where the
    labels (and the mask, if any) are concrete."""
    labels, _, _, mask = operands
    if labels is None or not labels.size or arrays.is_tracer(labels) or arrays.is_tracer(mask):
        return
    values = np.asarray(labels).reshape(-1)
    counted = values != options["ignore_index"]
    if mask is not None:
        shape = tuple(n for i, n in enumerate(x.shape) if i != options["axis"] % x.ndim)
        counted &= np.broadcast_to(np.asarray(mask), shape).reshape(-1)
    values = values[counted]
    classes = x.shape[options["axis"]]
    if values.size and (values.min() < 0 or values.max() >= classes):
        raise ValueError(fused.label_error(values, classes))


def _perturbed(tangent: Any) -> bool:
    return not isinstance(tangent, jax.custom_derivatives.SymbolicZero)


@functools.cache
def _rule(
    loss: str, items: tuple[tuple[str, Any], ...], composed_loss: Callable[..., Array]
) -> Callable[..., Array]:
    """The reduced ``loss`` with these options as a ``jax.custom_jvp`` of
    ``(x, *operands)``."""
    options = dict(items)
    kernel = jax_ffi.cross_entropy if loss == "cross_entropy" else jax_ffi.binary_cross_entropy
    composed = functools.partial(composed_loss, loss, **options)

    @jax.custom_jvp
    def pair(x: Array, *operands: Array | None) -> tuple[Array, Array]:
        return kernel(x, *operands, **options)

    def pair_jvp(primals: tuple, tangents: tuple) -> tuple:
        # Reached only by second derivatives: the composed path's value and gradient.
        return jax.jvp(lambda *a: jax.value_and_grad(composed)(*a), primals, tangents)

    pair.defjvp(pair_jvp)

    @jax.custom_jvp
    def value(x: Array, *operands: Array | None) -> Array:
        return pair(x, *operands)[0]

    def value_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
        x, *operands = primals
        dx, *doperands = tangents
        out, grad = pair(*primals)
        tangent = jnp.sum(grad * dx) if _perturbed(dx) else jnp.zeros_like(out)
        moved = [
            i
            for i, (a, d) in enumerate(zip(operands, doperands, strict=True))
            if a is not None and _perturbed(d) and jnp.issubdtype(a.dtype, jnp.floating)
        ]
        if moved:

            def of_moved(*picked: Array) -> Array:
                full = list(operands)
                for i, a in zip(moved, picked, strict=True):
                    full[i] = a
                return composed(x, *full)

            picked = [operands[i] for i in moved]
            _, more = jax.jvp(of_moved, picked, [doperands[i] for i in moved])
            tangent = tangent + more
        return out, tangent

    value.defjvp(value_jvp, symbolic_zeros=True)
    return value
