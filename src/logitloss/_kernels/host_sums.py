"""The host's float64 sums in numba, rounding exactly as the host does, for code that runs
without Python (the XLA FFI handlers of ``_autodiff.jax_ffi``): NumPy's ``np.sum`` of a
contiguous array (pairwise, :func:`numpy_sum`; through float64 buffers of 8192 for a cast,
:func:`numpy_cast_sum`), ``math.fsum`` (:func:`fsum`) and the mean over counted
(:func:`counted_mean`, ``_core.reductions.counted_mean``'s number case).

NumPy's pairwise summation (``numpy/_core/src/umath/loops_utils.h.src``) is fixed by the length
alone: below 8 elements a running sum, up to 128 eight running sums added as a tree, above that
the two halves (the first a multiple of 8) summed apart; a reduction adds each inner loop's sum
to its running total, which starts at 0. A cast (``np.sum(a, dtype=np.float64)`` of float32)
runs the inner loop on the iterator's buffers of 8192 elements. ``tests/test_jax_training.py``
holds these to NumPy's results.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .loops import OPTIONS

# NumPy's PW_BLOCKSIZE and its ufunc buffer size (np.getbufsize()).
_BLOCK = 128
_BUFFER = 8192


@njit(**OPTIONS)
def _leaf(a, lo, n):
    """NumPy's ``pairwise_sum`` of ``a[lo:lo + n]`` for ``n <= 128``."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += np.float64(a[lo + i])
        return res
    r0, r1, r2, r3 = np.float64(a[lo]), np.float64(a[lo + 1]), np.float64(a[lo + 2]), \
        np.float64(a[lo + 3])  # fmt: skip
    r4, r5, r6, r7 = np.float64(a[lo + 4]), np.float64(a[lo + 5]), np.float64(a[lo + 6]), \
        np.float64(a[lo + 7])  # fmt: skip
    i = 8
    stop = n - n % 8
    while i < stop:
        j = lo + i
        r0 += np.float64(a[j])
        r1 += np.float64(a[j + 1])
        r2 += np.float64(a[j + 2])
        r3 += np.float64(a[j + 3])
        r4 += np.float64(a[j + 4])
        r5 += np.float64(a[j + 5])
        r6 += np.float64(a[j + 6])
        r7 += np.float64(a[j + 7])
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += np.float64(a[lo + i])
        i += 1
    return res


@njit(**OPTIONS)
def _pairwise(a, lo, n):
    """NumPy's ``pairwise_sum`` of ``a[lo:lo + n]``: above 128 elements the two halves (the
    first a multiple of 8) summed apart and added. Without recursion (numba cannot link a
    recursive function into a ``cfunc``): the same tree, walked with a stack."""
    starts = np.empty(64, np.int64)
    lengths = np.empty(64, np.int64)
    stages = np.empty(64, np.int64)  # 0: not split yet, 1: left half pending, 2: right
    lefts = np.empty(64)
    top = 0
    starts[0], lengths[0], stages[0] = lo, n, 0
    done = 0.0  # the value of the node last finished
    while top >= 0:
        m = lengths[top]
        if m <= _BLOCK:
            done = _leaf(a, starts[top], m)
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        stage = stages[top]
        if stage == 0:
            stages[top] = 1
            top += 1
            starts[top], lengths[top], stages[top] = starts[top - 1], half, 0
        elif stage == 1:
            lefts[top] = done
            stages[top] = 2
            top += 1
            starts[top], lengths[top], stages[top] = starts[top - 1] + half, m - half, 0
        else:
            done = lefts[top] + done
            top -= 1
    return done


# For a caller that converts each buffer itself (``logistic.reduced``'s bfloat16 and float16
# weights, as NumPy's sum of their float32 copy): the buffers' length and one buffer's sum.
BUFFER = _BUFFER
pairwise = _pairwise


@njit(**OPTIONS)
def numpy_sum(a):
    """``np.sum(a)`` of a contiguous 1-D float64 array."""
    return 0.0 + _pairwise(a, 0, a.size)


@njit(**OPTIONS)
def numpy_cast_sum(a):
    """``np.sum(a, dtype=np.float64)`` of a contiguous 1-D array of another dtype."""
    total = 0.0
    lo = 0
    while lo < a.size:
        n = min(_BUFFER, a.size - lo)
        total += _pairwise(a, lo, n)
        lo += n
    return total


# Non-overlapping partials of a float64 sum: at most one per 53 bits of the exponent range.
_PARTIALS = 64


@njit(**OPTIONS)
def fsum(a):
    """``math.fsum(a)`` of a 1-D float64 array: the correctly rounded sum (Shewchuk's partials,
    CPython's final rounding). Infinities and NaNs give their plain sum; where ``math.fsum``
    raises (an intermediate overflow, ``inf - inf``) this gives inf or NaN."""
    partials = np.empty(_PARTIALS)
    n = 0
    special = 0.0
    finite = True
    for k in range(a.size):
        x = a[k]
        if not math.isfinite(x):
            special += x
            finite = False
            continue
        i = 0
        for j in range(n):
            y = partials[j]
            if abs(x) < abs(y):
                x, y = y, x
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                partials[i] = lo
                i += 1
            x = hi
        n = i
        if x != 0.0:
            if not math.isfinite(x):
                return x  # intermediate overflow
            partials[n] = x
            n += 1
    if not finite:
        return special
    hi = 0.0
    if n > 0:
        n -= 1
        hi = partials[n]
        lo = 0.0
        while n > 0:
            x = hi
            n -= 1
            y = partials[n]
            hi = x + y
            lo = y - (hi - x)
            if lo != 0.0:
                break
        # Round half-even across the remaining partials (CPython's correction).
        if n > 0 and ((lo < 0.0 and partials[n - 1] < 0.0) or (lo > 0.0 and partials[n - 1] > 0.0)):
            y = lo * 2.0
            x = hi + y
            if y == x - hi:
                hi = x
    return hi


@njit(**OPTIONS)
def counted_mean(total, count):
    """``_core.reductions.counted_mean`` of two numbers: ``total / count``, 0 when ``count``
    is 0."""
    return total / count if count != 0.0 else 0.0


__all__ = ["BUFFER", "counted_mean", "fsum", "numpy_cast_sum", "numpy_sum", "pairwise"]
