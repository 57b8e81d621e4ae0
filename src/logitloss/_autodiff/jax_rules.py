"""JAX autodiff with the exact gradients instead of the forward formula's derivative.

Each loss family (``_losses.family``) is a ``jax.custom_jvp`` function (one per family and
options, built on first use) whose JVP rule forms the tangent from the family's gradient table:
``g_x dx + g_z dz + g_q dq`` elementwise for the logistic losses, ``sum_j (g_x_j dx_j + g_z_j
dz_j)`` along the class axis for softmax. ``jax.grad`` transposes that linear rule, so reverse
mode gets the same exact gradients; ``jax.hessian`` and other higher orders differentiate the
rule itself; ``jit`` and ``vmap`` trace it like any function.

The rule's primal output calls the custom_jvp function again rather than the formula, so that
differentiating the rule (second order) meets the exact gradients for the loss too, not the
derivative of the forward formula. Tangents are computed only for the inputs that are perturbed
(``symbolic_zeros``): ``jax.grad`` with respect to the logits never evaluates the labels' one;
an absent operand (``pos_weight`` None) and integer labels add nothing.

Everything is computed in the compute dtype (float64 where JAX has it, i.e. under x64 mode) and
rounded once to the logits' dtype. This module imports JAX; ``_api.dispatch`` imports it only
when JAX arrays arrive.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .._core.arrays import Array
from .._losses import reference
from .._losses.family import Family, Operands, Options
from .tangent import tangent


def _perturbed(tangent: Any) -> bool:
    """Whether a tangent is a real one: not a symbolic zero (unperturbed input)."""
    return not isinstance(tangent, jax.custom_derivatives.SymbolicZero)


# Options (the class axis) are Python values that shape the computation: closed over, never
# traced or differentiated.
@functools.cache
def _rule(family: Family, options: tuple[tuple[str, Any], ...]) -> Callable[..., Array]:
    """The family's loss with these options as a ``jax.custom_jvp`` of ``(x, *operands)``."""
    keywords = dict(options)

    @jax.custom_jvp
    def loss(x: Array, *operands: Array | None) -> Array:
        return reference.value(family, x, operands, keywords, xp=jnp)

    def loss_jvp(primals: tuple, tangents: tuple) -> tuple[Array, Array]:
        out = loss(*primals)
        return out, tangent(family, primals, tangents, keywords, xp=jnp, perturbed=_perturbed)

    loss.defjvp(loss_jvp, symbolic_zeros=True)
    return loss


def loss(family: Family, x: Array, operands: Operands, options: Options) -> Array:
    """The family's loss, with exact JAX derivatives in the logits and every operand its
    gradient table holds."""
    return _rule(family, tuple(sorted(options.items())))(x, *operands)
