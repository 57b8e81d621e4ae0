"""Forward mode from a family's gradient table, for the PyTorch ``jvp`` and the JAX JVP rule."""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from .._core import arrays
from .._core.arrays import Array
from .._losses.family import Family, Options


def tangent(
    family: Family,
    primals: Sequence[Array | None],
    tangents: Sequence[Any],
    options: Options,
    *,
    xp: Any,
    perturbed: Callable[[Any], bool],
) -> Array:
    """``sum(grad * tangent)`` over the inputs (the logits, then the family's operands) that are
    present, differentiable (in the gradient table) and ``perturbed``, summed over the class
    axis if the loss has one, in the logits' dtype.

    Each gradient (elementwise, in the compute dtype) is evaluated only where a tangent arrived;
    the tangent is widened to the compute dtype and the sum rounded once, as the loss is. A
    tangent of a broadcast operand (a per-class ``pos_weight``) broadcasts against its
    gradient; transposing the product (``jax.grad``) sums the cotangent back to its shape.
    """
    x, *operands = primals
    wide = family.widen(xp, x, tuple(operands))
    parts = [
        family.grads[wrt](*wide, xp=xp, **options) * arrays.widen(xp, x, dt)[1]
        for wrt, primal, dt in zip(("logits", *family.operands), primals, tangents, strict=True)
        if wrt in family.grads and primal is not None and perturbed(dt)
    ]
    total = functools.reduce(operator.add, parts) if parts else xp.zeros_like(x)
    axis = family.axis(options)
    if axis is not None:
        total = xp.sum(total, axis=axis)
    return xp.astype(total, x.dtype, copy=False)
