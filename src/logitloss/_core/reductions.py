"""The reductions of the training losses, with one meaning of "mean" for every loss.

``reduce`` receives the per-element loss in the compute dtype (float64 where the library has
it), already weighted and already zero wherever an element is not counted (ignored or masked),
and the weight each element adds to the denominator. It returns the result rounded once to the
logits' dtype.

"mean" is the weighted mean over the counted elements, ``sum(w * loss) / sum(w)``: for one-hot
and index targets alike, and 0 (not NaN) when nothing is counted (:func:`counted_mean`, which the
kernels' sums and ``linear_cross_entropy``'s chunks use too). This is where a reduced kernel
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
        if denominator_weight is None:
            # An empty batch: total is an empty sum, 0, still connected to the graph.
            count = _count(loss, xp=xp)
            total = counted_mean(total, count, xp=xp if arrays.is_array(count) else None)
        else:
            if tuple(denominator_weight.shape) != tuple(loss.shape):
                denominator_weight = xp.broadcast_to(denominator_weight, tuple(loss.shape))
            count = xp.sum(denominator_weight)
            total = counted_mean(total, count, xp=xp)
    return _zero_d(xp.astype(total, dtype, copy=False))


def _count(loss: Array, *, xp: Any) -> Any:
    """The number of elements of ``loss``: a Python int, or for a traced TF tensor of unknown
    (None) dimensions, a 0-d array of its dtype counted when the graph runs."""
    shape = tuple(loss.shape)
    if None not in shape:
        return math.prod(shape)
    import tensorflow as tf

    return xp.astype(tf.size(loss), loss.dtype)


def counted_mean(total: Any, count: Any, *, xp: Any = None) -> Any:
    """The "mean": ``total / count`` over the counted elements; 0 (not NaN) when ``count`` is 0.

    The one definition of the mean for every loss. ``count`` is a Python number (a number of
    rows, or the kernels' float64 sum of weights; ``total`` is then a float or an array) or,
    with ``xp``, a 0-d array (possibly lazy or traced: the choice is an ``xp.where``, and the
    inner one keeps 0/0 out of the graph, whose gradient would be NaN even where unused).
    """
    if xp is None:
        if count:
            return total / count
        # Nothing counted: total, a sum over nothing counted, is 0 too; an array stays one.
        return total * 0 if arrays.is_array(total) else 0.0
    zero = arrays.scalar(0.0, total, xp=xp)
    one = arrays.scalar(1.0, total, xp=xp)
    empty = count == 0
    return xp.where(empty, zero, total / xp.where(empty, one, count))


def scalar(value: float, *, like: Array, xp: Any) -> Array:
    """A Python float (a float64 reduction) as a 0-d array of ``like``'s dtype, library and
    device, rounded once."""
    if type(value) is float and abs(value) < _FLOAT16_MAX:
        # Finite in every dtype: no overflow to silence (np.errstate costs a microsecond).
        return _zero_d(arrays.scalar(value, like, xp=xp))
    with np.errstate(over="ignore"):  # beyond the dtype's range: inf, the rounded value
        return _zero_d(arrays.scalar(value, like, xp=xp))


# The narrowest dtype's largest finite value: anything smaller in magnitude rounds to a finite
# value in float16, bfloat16, float32 and float64.
_FLOAT16_MAX = 65504.0


def _zero_d(total: Array) -> Array:
    """NumPy's full reductions give a scalar: the 0-d array every other library returns."""
    return np.asarray(total) if isinstance(total, np.generic) else total
