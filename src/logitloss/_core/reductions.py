"""The reductions of the training losses, with one meaning of "mean" for every loss.

``reduce`` receives the per-element loss in the compute dtype (float64 where the library has
it), already weighted and already zero wherever an element is not counted (ignored or masked),
and the weight each element adds to the denominator. It returns the result rounded once to the
logits' dtype.

"mean" is the weighted mean over the counted elements, ``sum(w * loss) / sum(w)``: for one-hot
and index targets alike, and 0 (not NaN) when nothing is counted. This is where a reduced kernel
would plug in: one pass over (logits, labels, weights, mask) that returns the two sums
``sum(w * loss)`` and ``sum(w)`` without writing the per-element loss.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import arrays
from .arrays import Array


def reduce(
    loss: Array, denominator_weight: Array | None, reduction: str, *, dtype: Any, xp: Any
) -> Array:
    """``loss`` reduced by ``reduction`` and rounded once to ``dtype``.

    ``denominator_weight`` (broadcastable to ``loss``, zero where not counted) is what each
    element adds to the denominator of "mean"; None counts every element once.
    """
    if reduction == "none":
        return xp.astype(loss, dtype, copy=False)
    total = xp.sum(loss)
    if reduction == "mean":
        total = _safe_mean(total, loss, denominator_weight, xp=xp)
    return _zero_d(xp.astype(total, dtype, copy=False))


def scalar(value: float, *, like: Array, xp: Any) -> Array:
    """A Python float (a float64 reduction) as a 0-d array of ``like``'s dtype, library and
    device, rounded once."""
    with np.errstate(over="ignore"):  # beyond the dtype's range: inf, the rounded value
        return _zero_d(arrays.scalar(value, like, xp=xp))


def _zero_d(total: Array) -> Array:
    """NumPy's full reductions give a scalar: the 0-d array every other library returns."""
    return np.asarray(total) if isinstance(total, np.generic) else total


def _safe_mean(total: Array, loss: Array, weight: Array | None, *, xp: Any) -> Array:
    """``total / sum(weight)``, 0 where the denominator is 0 (then ``total`` is 0 too)."""
    if weight is None:
        count = math.prod(loss.shape)
        # An empty batch: total is an empty sum, 0, still connected to the graph.
        return total if count == 0 else total / count
    denominator = xp.sum(xp.broadcast_to(weight, tuple(loss.shape)))
    zero = arrays.scalar(0.0, total, xp=xp)
    one = arrays.scalar(1.0, total, xp=xp)
    empty = denominator == 0
    # The inner where keeps 0/0 out of the graph: its gradient would be NaN even where unused.
    return xp.where(empty, zero, total / xp.where(empty, one, denominator))
