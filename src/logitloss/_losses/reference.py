"""The array-API implementation of every loss family: widen to the compute dtype, apply the
family's formula (the loss, or a gradient from its table), round once to the logits' dtype.
Works unchanged on every array library, lazily on Dask and under ``jax.jit``; autograd follows
the formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core import arrays
from .._core.arrays import Array
from .family import Family, Operands, Options
from .logistic.formula import LOGISTIC
from .softmax.formula import SOFTMAX, SPARSE_SOFTMAX


def value(family: Family, x: Array, operands: Operands, options: Options, *, xp: Any) -> Array:
    """The family's loss of ``x`` and ``operands`` (in ``family.operands``' order) with these
    options, in ``x``'s dtype: elementwise, or with the class axis summed away."""
    wide = family.widen(xp, x, operands)
    with arrays.quiet():
        return xp.astype(family.loss(*wide, xp=xp, **options), x.dtype, copy=False)


def grad(
    family: Family,
    x: Array,
    operands: Operands,
    options: Options,
    upstream: Array,
    *,
    wrt: str,
    xp: Any,
) -> Array:
    """The gradient of ``sum(upstream * loss)`` with respect to ``wrt`` ("logits" or the name
    of an operand in the family's gradient table), in ``x``'s dtype and the shape of that
    argument (summed back to it for a broadcast operand)."""
    *wide, wg = family.widen(xp, x, (*operands, upstream))
    axis = family.axis(options)
    if axis is not None:
        wg = xp.expand_dims(wg, axis=axis)
    with arrays.quiet():
        grad = family.grads[wrt](*wide, xp=xp, **options) * wg
        if wrt in family.broadcast:
            operand = operands[family.operands.index(wrt)]
            grad = _sum_to_shape(grad, tuple(operand.shape), xp=xp)
        return xp.astype(grad, x.dtype, copy=False)


def _sum_to_shape(a: Array, shape: tuple[int, ...], *, xp: Any) -> Array:
    """Sum ``a`` over the axes that broadcasting added to or stretched in ``shape``."""
    extra = a.ndim - len(shape)
    if extra:
        a = xp.sum(a, axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    if stretched:
        a = xp.sum(a, axis=stretched, keepdims=True)
    a = xp.reshape(a, shape)
    # NumPy's full reduction gives a scalar; keep a 0-d array (xp.asarray would make torch warn)
    return np.asarray(a) if isinstance(a, np.generic) else a


# Each loss by name, as the kernel tests compare against it.


def logistic(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    """Sigmoid (``q is None``) or weighted cross-entropy, elementwise, in ``x``'s dtype."""
    return value(LOGISTIC, x, (z, q), {}, xp=xp)


def logistic_grad(
    x: Array, z: Array, q: Array | None, upstream: Array, *, wrt: str, xp: Any
) -> Array:
    return grad(LOGISTIC, x, (z, q), {}, upstream, wrt=wrt, xp=xp)


def softmax(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    return value(SOFTMAX, x, (z,), {"axis": axis}, xp=xp)


def softmax_grad(x: Array, z: Array, upstream: Array, *, axis: int, wrt: str, xp: Any) -> Array:
    return grad(SOFTMAX, x, (z,), {"axis": axis}, upstream, wrt=wrt, xp=xp)


def sparse_softmax(x: Array, labels: Array, *, xp: Any) -> Array:
    return value(SPARSE_SOFTMAX, x, (labels,), {}, xp=xp)


def sparse_softmax_grad(x: Array, labels: Array, upstream: Array, *, xp: Any) -> Array:
    return grad(SPARSE_SOFTMAX, x, (labels,), {}, upstream, wrt="logits", xp=xp)
