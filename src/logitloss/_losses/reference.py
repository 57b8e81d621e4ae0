"""The array-API implementation of each loss: widen to the compute dtype, apply the formula from
``_formulas``, round once to the logits' dtype. Works unchanged on every array library, lazily on
Dask and under ``jax.jit``; autograd follows the formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._core import arrays
from .._core.arrays import Array
from .logistic import formula as logistic_formula
from .softmax import formula as softmax_formula


def _quiet_numpy() -> np.errstate:
    """NumPy warns about what the formulas do on purpose: inf - inf in the error-free difference
    of an infinite logit (an entry the formula then discards), and the final rounding of a loss
    beyond the dtype's range to inf (the correctly rounded result)."""
    return np.errstate(invalid="ignore", over="ignore")


def logistic(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    """Sigmoid (``q is None``) or weighted cross-entropy, elementwise, in ``x``'s dtype."""
    wx, wz, wq = arrays.widen(xp, x, z, q)
    with _quiet_numpy():
        return xp.astype(logistic_formula.logistic_loss(wx, wz, wq, xp=xp), x.dtype, copy=False)


def softmax(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    """Softmax cross-entropy with soft labels along ``axis``, in ``x``'s dtype."""
    wx, wz = arrays.widen(xp, x, z)
    with _quiet_numpy():
        loss = softmax_formula.softmax_loss(wx, wz, axis=axis, xp=xp)
        return xp.astype(loss, x.dtype, copy=False)


def sparse_softmax(x: Array, labels: Array, *, xp: Any) -> Array:
    """Softmax cross-entropy against integer labels over the last axis, in ``x``'s dtype."""
    (wx,) = arrays.widen(xp, x)
    with _quiet_numpy():
        loss = softmax_formula.sparse_softmax_loss(wx, labels, xp=xp)
        return xp.astype(loss, x.dtype, copy=False)


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


def logistic_grad(
    x: Array, z: Array, q: Array | None, upstream: Array, *, wrt: str, xp: Any
) -> Array:
    """The gradient of ``sum(upstream * loss)`` for the sigmoid (``q is None``) or weighted
    loss with respect to ``wrt`` ("logits", "labels" or "pos_weight"), in ``x``'s dtype and
    the shape of that argument."""
    wx, wz, wq, wg = arrays.widen(xp, x, z, q, upstream)
    with _quiet_numpy():
        if wrt == "logits":
            grad = logistic_formula.logistic_grad_logits(wx, wz, wq, xp=xp)
        elif wrt == "labels":
            grad = logistic_formula.logistic_grad_labels(wx, wz, wq, xp=xp)
        else:
            grad = logistic_formula.logistic_grad_pos_weight(wx, wz, xp=xp)
        grad = grad * wg
        if wrt == "pos_weight":
            grad = _sum_to_shape(grad, tuple(q.shape), xp=xp)
        return xp.astype(grad, x.dtype, copy=False)


def softmax_grad(x: Array, z: Array, upstream: Array, *, axis: int, wrt: str, xp: Any) -> Array:
    """The gradient of ``sum(upstream * loss)`` for the softmax loss with respect to ``wrt``
    ("logits" or "labels"), in ``x``'s dtype and the shape of that argument."""
    wx, wz, wg = arrays.widen(xp, x, z, upstream)
    wg = xp.expand_dims(wg, axis=axis)
    with _quiet_numpy():
        if wrt == "logits":
            grad = softmax_formula.softmax_grad_logits(wx, wz, axis=axis, xp=xp) * wg
        else:
            grad = softmax_formula.softmax_grad_labels(wx, wz, axis=axis, xp=xp) * wg
            grad = _sum_to_shape(grad, tuple(z.shape), xp=xp)
        return xp.astype(grad, x.dtype, copy=False)


def sparse_softmax_grad(x: Array, labels: Array, upstream: Array, *, xp: Any) -> Array:
    """The gradient of ``sum(upstream * loss)`` for the sparse loss with respect to the logits."""
    wx, wg = arrays.widen(xp, x, upstream)
    with _quiet_numpy():
        grad = softmax_formula.sparse_softmax_grad_logits(wx, labels, xp=xp)
        return xp.astype(grad * xp.expand_dims(wg, axis=-1), x.dtype, copy=False)
