"""The array-API implementation of each loss: widen to the compute dtype, apply the formula from
``_formulas``, round once to the logits' dtype. Works unchanged on every array library, lazily on
Dask and under ``jax.jit``; autograd follows the formulas.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _arrays, _formulas

Array = Any


def _quiet_numpy() -> np.errstate:
    """NumPy warns about what the formulas do on purpose: inf - inf in the error-free difference
    of an infinite logit (an entry the formula then discards), and the final rounding of a loss
    beyond the dtype's range to inf (the correctly rounded result)."""
    return np.errstate(invalid="ignore", over="ignore")


def _widen(xp: Any, x: Array, *others: Array | None) -> tuple[Array, ...]:
    wide = _arrays.compute_dtype(xp, x)
    return tuple(None if a is None else xp.astype(a, wide, copy=False) for a in (x, *others))


def logistic(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    """Sigmoid (``q is None``) or weighted cross-entropy, elementwise, in ``x``'s dtype."""
    wx, wz, wq = _widen(xp, x, z, q)
    with _quiet_numpy():
        return xp.astype(_formulas.logistic_loss(wx, wz, wq, xp=xp), x.dtype, copy=False)


def softmax(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    """Softmax cross-entropy with soft labels along ``axis``, in ``x``'s dtype."""
    wx, wz = _widen(xp, x, z)
    with _quiet_numpy():
        return xp.astype(_formulas.softmax_loss(wx, wz, axis=axis, xp=xp), x.dtype, copy=False)


def sparse_softmax(x: Array, labels: Array, *, xp: Any) -> Array:
    """Softmax cross-entropy against integer labels over the last axis, in ``x``'s dtype."""
    (wx,) = _widen(xp, x)
    with _quiet_numpy():
        return xp.astype(_formulas.sparse_softmax_loss(wx, labels, xp=xp), x.dtype, copy=False)
