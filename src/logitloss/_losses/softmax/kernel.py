"""numba kernels for the softmax cross-entropy (soft and integer labels) and its logit gradient.

Each kernel works on rows prepared by ``_layout.class_rows``: every operand is a 1-D base array,
an offset and a row stride (in elements); a row's classes are contiguous, so each row is a
contiguous slice, which is what lets LLVM vectorise the loops (see ``_logistic``). The rows are
shared among numba's threads (``prange``); a row is processed whole by one thread, in passes
that stay in its L2 cache (a row of 32768 float32 logits and labels is 256 KiB; L2 is 1 MiB):

1. the row maximum ``m``;
2. ``T = sum of e^(x_j - m)`` over the entries below the maximum, the number of ties with the
   maximum, and for soft labels ``S = sum z_j`` and ``D = sum z_j (m - x_j)``;
3. for the gradient only: each class's derivative, written once.

The loss is ``log1p(T') S + D`` with ``T' = T + (ties - 1)``: the reference's
``sum_j z_j (log1p(T') - (x_j - m))`` (``_formulas.softmax_loss``) with the sum split into its two
sums of non-negative terms, so nothing cancels and each is accumulated in one pass. The gradient
mirrors ``_formulas.softmax_grad_logits`` term by term. ``log1p(T')`` is one libm call per row.

Inputs are loaded in their dtype, computed in float64 and stored rounded once. Three levels of
care, picked at compile time (the ``_exact_diff`` flags):

- loss of float32 inputs: the exp polynomial sized to float32 (``_math``), ``x_j - m`` rounded
  (every term is non-negative: a relative error of 2^-28 in ``e`` is nothing to a float32 loss);
- gradient of float32 inputs: the float64-accurate exp, and ``x_j - m`` formed error-free
  (Knuth's two-sum) with ``e^(hi + lo) = e^hi (1 + lo)``: the gradient's two terms cancel near
  its zero, which multiplies their relative error, as in the reference;
- float64 inputs: as the gradient, in both, with ``e`` down to the smallest subnormal, and the
  halves formula where ``x_j - m`` overflows (logits further apart than the float64 range).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ..._kernels.vector_math import (
    LN3,
    add_reassoc,
    exp_expm1_nonpos,
    exp_nonpos,
    max_nan,
    min_nan,
    two_sum,
)
from ..logistic.kernel import _is_float64

_OPTIONS = {"error_model": "numpy", "nogil": True, "cache": True}
_INLINE = {"inline": "always", "error_model": "numpy"}
_NAN = math.nan
_INF = math.inf


# --- One row, pass by pass ---------------------------------------------------------------------


@njit(**_INLINE)
def _row_max(xs):  # type: ignore[no-untyped-def]
    """The largest value of a row, ignoring NaN (a NaN makes the tail sum NaN: see
    :func:`_no_limit`); ``-inf`` for a row of NaN and ``-inf``."""
    m = -_INF
    for j in range(xs.size):
        m = max_nan(m, np.float64(xs[j]))
    return m


@njit(**_INLINE)
def _exp_diff(v, m, exact, precise, subnormal):  # type: ignore[no-untyped-def]
    """``(hi, e, overflow)`` for one entry: ``hi = x_j - m`` (0 at a maximum, also an
    infinite one), ``e = e^(x_j - m)`` (1 at a maximum), and whether ``x_j - m`` overflowed.

    With ``exact``, ``hi + lo = x_j - m`` exactly (two-sum) and ``e = e^hi + e^hi lo``, as the
    reference's ``_softmax_parts``; ``lo`` is dropped where it is not finite (``x_j = -inf``,
    whose ``e`` is 0 anyway)."""
    is_max = v == m
    hi, lo = two_sum(v, -m)
    if exact:
        lo = 0.0 if (is_max or not (abs(lo) < _INF)) else lo
    hi = 0.0 if is_max else hi
    e = exp_nonpos(hi, precise, subnormal)
    if exact:
        e = e + e * lo
    # Both finite, their difference is not: only float64 logits more than the range apart.
    overflow = hi == -_INF and v > -_INF and m < _INF
    return hi, e, overflow


# Classes summed per block: inside a block the sums are vectorised (reassociated) running sums
# of at most _BLOCK / lanes terms each, and the blocks' sums are added with Knuth's two-sum, so
# a row's sums keep about one rounding error whatever its length (a plain running sum over
# 20 000 classes lost hundreds of float64 ULP). Measured as fast as the single loop (2^20
# float64 exponentials: 1.9 vs 2.3 ns each), and the same block boundaries for every row
# blocking and thread count: the results do not depend on either.
_BLOCK = 256


@njit(**_INLINE)
def _accumulate(hi, lo, value):  # type: ignore[no-untyped-def]
    """``(hi, lo)`` plus ``value``, the rounding error kept in ``lo`` (two-sum); an infinite or
    NaN sum keeps ``hi`` as it is (its error term would be NaN)."""
    total, error = two_sum(hi, value)
    return total, lo + (error if abs(total) < _INF else 0.0)


@njit(**_INLINE)
def _soft_sums(xs, zs, m, exact, precise, subnormal):  # type: ignore[no-untyped-def]
    """Pass 2 for soft labels: ``(small_tail, ties, S, D, zn, first)``.

    ``small_tail``: sum of ``e`` below the maximum; ``ties``: entries equal to it; ``S``: sum
    of the labels; ``D``: sum of ``z_j (m - x_j) >= 0`` (0 where ``z_j = 0``, also against an
    infinite logit; the reference's halves where ``x_j - m`` overflows); ``zn``: sum of the
    labels below the maximum; ``first``: index of the first maximum (``cols`` if none). Each
    sum compensated across blocks of :data:`_BLOCK` classes."""
    tail_hi = tail_lo = total_hi = total_lo = gaps_hi = gaps_lo = below_hi = below_lo = 0.0
    ties = 0.0
    n = xs.size
    # The first maximum's index as a float64 minimum (exact below 2^53): an integer index
    # reduction through a select is not one LLVM vectorises.
    first = np.float64(n)
    for start in range(0, n, _BLOCK):
        bx = xs[start : min(n, start + _BLOCK)]
        bz = zs[start : min(n, start + _BLOCK)]
        small_tail = 0.0
        total = 0.0
        gaps = 0.0
        below = 0.0
        for j in range(bx.size):
            v = np.float64(bx[j])
            zj = np.float64(bz[j])
            hi, e, overflow = _exp_diff(v, m, exact, precise, subnormal)
            is_max = v == m
            small_tail = add_reassoc(small_tail, 0.0 if is_max else e)
            ties = add_reassoc(ties, 1.0 if is_max else 0.0)
            total = add_reassoc(total, zj)
            below = add_reassoc(below, 0.0 if is_max else zj)
            gap = 2.0 * (zj * (0.5 * m - 0.5 * v)) if overflow else zj * -hi
            gaps = add_reassoc(gaps, 0.0 if zj == 0.0 else gap)
            first = min_nan(first, np.float64(start + j) if is_max else np.float64(n))
        tail_hi, tail_lo = _accumulate(tail_hi, tail_lo, small_tail)
        total_hi, total_lo = _accumulate(total_hi, total_lo, total)
        gaps_hi, gaps_lo = _accumulate(gaps_hi, gaps_lo, gaps)
        below_hi, below_lo = _accumulate(below_hi, below_lo, below)
    return (
        tail_hi + tail_lo, ties, total_hi + total_lo, gaps_hi + gaps_lo, below_hi + below_lo,
        int(first),
    )  # fmt: skip


@njit(**_INLINE)
def _sparse_sums(xs, m, exact, precise, subnormal):  # type: ignore[no-untyped-def]
    """Pass 2 for integer labels: ``(small_tail, ties, first)`` as :func:`_soft_sums`."""
    tail_hi = tail_lo = 0.0
    ties = 0.0
    n = xs.size
    first = np.float64(n)
    for start in range(0, n, _BLOCK):
        bx = xs[start : min(n, start + _BLOCK)]
        small_tail = 0.0
        for j in range(bx.size):
            v = np.float64(bx[j])
            _, e, _ = _exp_diff(v, m, exact, precise, subnormal)
            is_max = v == m
            small_tail = add_reassoc(small_tail, 0.0 if is_max else e)
            ties = add_reassoc(ties, 1.0 if is_max else 0.0)
            first = min_nan(first, np.float64(start + j) if is_max else np.float64(n))
        tail_hi, tail_lo = _accumulate(tail_hi, tail_lo, small_tail)
    return tail_hi + tail_lo, ties, int(first)


@njit(**_INLINE)
def _no_limit(m, small_tail, ties):  # type: ignore[no-untyped-def]
    """The reference's ``_nan_without_limit``: a NaN in the row (NaN tail), all ``-inf``, or
    more than one ``+inf``."""
    tail = small_tail + (ties - 1.0)
    return tail != tail or m == -_INF or (m == _INF and ties > 1.0)


@njit(**_INLINE)
def _soft_loss(m, small_tail, ties, total, gaps):  # type: ignore[no-untyped-def]
    if _no_limit(m, small_tail, ties):
        return _NAN
    log_sum = math.log1p(small_tail + (ties - 1.0))
    # log_sum S, with S = 0 (all labels 0) giving 0: log_sum is finite here.
    return log_sum * total + gaps


@njit(**_INLINE)
def _sparse_loss(xs, label, m, small_tail, ties, exact):  # type: ignore[no-untyped-def]
    """``log1p(T') - (x_c - m)``: the one-hot case of :func:`_soft_loss` (NaN for a label that
    is not a class, as the reference's ``_nan_out_of_range``)."""
    n = xs.size
    if label < 0 or label >= n or _no_limit(m, small_tail, ties):
        return _NAN
    v = np.float64(xs[label])
    hi, _, overflow = _exp_diff(v, m, exact, False, False)
    log_sum = math.log1p(small_tail + (ties - 1.0))
    if overflow:
        return 2.0 * (0.5 * log_sum + (0.5 * m - 0.5 * v))
    return log_sum - hi


_TINY_GAP = 2.0**-20


@njit(**_INLINE)
def _soft_grad_row(xs, zs, gs, m, small_tail, ties, total, below, first, scale, wide):  # type: ignore[no-untyped-def]
    """Pass 3: ``scale * d loss / d x_j`` for a row with a limit; mirrors
    ``_formulas.softmax_grad_logits``: ``S e_j / (c + t) - z_j`` below the maximum and
    ``((S_j - z_j (c - 1)) - z_j t) / (c + t)`` at a maximum, ``S_j`` the sum of the other labels
    (for the first maximum summed without it; ``S - z_j`` at the other maxima).

    A logit within ``2^-20`` of the maximum but not equal to it marks its entry NaN; a row with
    a mark (rare) is then recomputed by :func:`_soft_grad_row_near`, with ``expm1`` for the
    near entries, which keeps differences of logits that ``e^(x_j - m)`` rounds away."""
    n = xs.size
    others_first = below
    if ties > 1.0:
        # The other maxima's labels, after the first: rare (ties), a scalar loop.
        for j in range(first + 1, n):
            if np.float64(xs[j]) == m:
                others_first += np.float64(zs[j])
    denominator = ties + small_tail
    reciprocal = 1.0 / denominator
    share = total / denominator
    extra_ties = ties - 1.0
    for j in range(n):
        v = np.float64(xs[j])
        zj = np.float64(zs[j])
        hi, e, _ = _exp_diff(v, m, True, True, wide)
        # S e / (c + t) - z as one fused multiply-add of S / (c + t): one rounding fewer than
        # the reference's, no division per element.
        elsewhere = share * e - zj
        others = others_first if j == first else total - zj
        at_max = ((others - zj * extra_ties) - zj * small_tail) * reciprocal
        g = at_max if v == m else elsewhere
        gs[j] = _NAN if (hi < 0.0 and hi > -_TINY_GAP) else g * scale
    if _any_nan(gs):
        _soft_grad_row_near(xs, zs, gs, m, ties, total, others_first, first, scale, wide)


@njit(**_INLINE)
def _any_nan(gs):  # type: ignore[no-untyped-def]
    found = False
    for j in range(gs.size):
        found |= gs[j] != gs[j]
    return found


@njit(error_model="numpy")
def _soft_grad_row_near(xs, zs, gs, m, ties, total, others_first, first, scale, wide):  # type: ignore[no-untyped-def]
    """The reference's formula with near entries (``x_j - m > -ln 3``) as ``1 + u_j``,
    ``u_j = expm1(x_j - m)``: ``D = C + t + U`` (``C`` maxima and near entries, ``t`` the far
    ``e``, ``U`` the near ``u``), numerators ``(S_j - z_j (C - 1)) - z_j (t + U)`` at a maximum,
    ``((S - z_j C) + S u_j) - z_j (t + U)`` near, ``S e_j / D - z_j`` far. Scalar (rare); the
    sums compensated as :func:`_soft_sums`' (plain running sums cost a float64 row of 20 000
    classes 18 scale-ULP)."""
    n = xs.size
    count = ties
    far_hi = far_lo = near_hi = near_lo = tail_hi = tail_lo = 0.0
    for j in range(n):
        v = np.float64(xs[j])
        hi, e, _ = _exp_diff(v, m, True, True, wide)
        if v == m:
            continue
        tail_hi, tail_lo = _accumulate(tail_hi, tail_lo, e)
        if hi > -LN3:
            count += 1.0
            near_hi, near_lo = _accumulate(near_hi, near_lo, _expm1_diff(v, m, hi))
        else:
            far_hi, far_lo = _accumulate(far_hi, far_lo, e)
    rest = (far_hi + near_hi) + (far_lo + near_lo)
    denominator = ties + (tail_hi + tail_lo)
    for j in range(n):
        v = np.float64(xs[j])
        zj = np.float64(zs[j])
        hi, e, _ = _exp_diff(v, m, True, True, wide)
        if v == m:
            others = others_first if j == first else total - zj
            num = (others - zj * (count - 1.0)) - zj * rest
            g = num / denominator
        elif hi > -LN3:
            u = _expm1_diff(v, m, hi)
            g = (((total - zj * count) + total * u) - zj * rest) / denominator
        else:
            g = (total * e) / denominator - zj
        gs[j] = g * scale


@njit(**_INLINE)
def _expm1_diff(v, m, hi):  # type: ignore[no-untyped-def]
    """``e^(v - m) - 1`` for ``-ln 3 < v - m < 0``, with the two-sum error of ``hi``."""
    _, lo = two_sum(v, -m)
    lo = lo if abs(lo) < _INF else 0.0
    e, u = exp_expm1_nonpos(hi, True)
    return u + e * lo


@njit(**_INLINE)
def _sparse_grad_row(xs, gs, label, m, small_tail, ties, first, scale, wide):  # type: ignore[no-untyped-def]
    """:func:`_soft_grad_row` with one-hot labels (``S = 1``, ``z_j = [j == label]``)."""
    n = xs.size
    # The labels' sum but the first maximum's: 1 unless the label is the first maximum.
    others_first = 0.0 if label == first else 1.0
    denominator = ties + small_tail
    reciprocal = 1.0 / denominator
    extra_ties = ties - 1.0
    for j in range(n):
        v = np.float64(xs[j])
        zj = 1.0 if j == label else 0.0
        _, e, _ = _exp_diff(v, m, wide, wide, wide)
        elsewhere = reciprocal * e - zj
        others = others_first if j == first else 1.0 - zj
        at_max = ((others - zj * extra_ties) - zj * small_tail) * reciprocal
        g = at_max if v == m else elsewhere
        gs[j] = g * scale


@njit(**_INLINE)
def _fill_nan(gs):  # type: ignore[no-untyped-def]
    for j in range(gs.size):
        gs[j] = _NAN


# --- Rows: soft labels -------------------------------------------------------------------------
#
# The row functions are compiled apart, not inlined into the ``prange`` loops: numba's parfor
# pass takes the inner loops' running sums for reductions of the outer loop and fails.
#
# Operands: (base, offset, row_stride); a row r of a class-axis operand is
# base[offset + r * row_stride : ... + cols], a per-row operand (loss, upstream) is
# base[offset + r * row_stride].


@njit(**_OPTIONS)
def _soft_loss_row(x, xo, xrs, z, zo, zrs, loss, lo, lrs, r, cols, wide):  # type: ignore[no-untyped-def]
    xs = x[xo + r * xrs : xo + r * xrs + cols]
    zs = z[zo + r * zrs : zo + r * zrs + cols]
    m = _row_max(xs)
    small_tail, ties, total, gaps, _, _ = _soft_sums(xs, zs, m, wide, wide, wide)
    loss[lo + r * lrs] = _soft_loss(m, small_tail, ties, total, gaps)


@njit(parallel=True, **_OPTIONS)
def soft_loss_parallel(x, xo, xrs, z, zo, zrs, loss, lo, lrs, rows, cols):  # type: ignore[no-untyped-def]
    """The softmax loss of ``rows`` rows of ``cols`` classes, rows shared among threads."""
    wide = _is_float64(x)
    for r in prange(rows):
        _soft_loss_row(x, xo, xrs, z, zo, zrs, loss, lo, lrs, r, cols, wide)


@njit(**_OPTIONS)
def soft_loss_serial(x, xo, xrs, z, zo, zrs, loss, lo, lrs, rows, cols):  # type: ignore[no-untyped-def]
    """:func:`soft_loss_parallel` on the calling thread."""
    wide = _is_float64(x)
    for r in range(rows):
        _soft_loss_row(x, xo, xrs, z, zo, zrs, loss, lo, lrs, r, cols, wide)


@njit(**_OPTIONS)
def _soft_grad_full_row(  # type: ignore[no-untyped-def]
    x, xo, xrs, z, zo, zrs, u, uo, urs, loss, lo, lrs, g, go, grs, r, cols, wide, want_loss
):
    xs = x[xo + r * xrs : xo + r * xrs + cols]
    zs = z[zo + r * zrs : zo + r * zrs + cols]
    gs = g[go + r * grs : go + r * grs + cols]
    m = _row_max(xs)
    small_tail, ties, total, gaps, below, first = _soft_sums(xs, zs, m, True, True, wide)
    if want_loss:
        loss[lo + r * lrs] = _soft_loss(m, small_tail, ties, total, gaps)
    if _no_limit(m, small_tail, ties):
        _fill_nan(gs)
    else:
        scale = np.float64(u[uo + r * urs])
        _soft_grad_row(xs, zs, gs, m, small_tail, ties, total, below, first, scale, wide)


@njit(parallel=True, **_OPTIONS)
def soft_grad_parallel(  # type: ignore[no-untyped-def]
    x, xo, xrs, z, zo, zrs, u, uo, urs, loss, lo, lrs, g, go, grs, rows, cols, want_loss
):
    """``upstream * d loss / d x`` (and the loss if ``want_loss``), rows shared among threads."""
    wide = _is_float64(x)
    for r in prange(rows):
        _soft_grad_full_row(
            x, xo, xrs, z, zo, zrs, u, uo, urs, loss, lo, lrs, g, go, grs, r, cols, wide, want_loss
        )


@njit(**_OPTIONS)
def soft_grad_serial(  # type: ignore[no-untyped-def]
    x, xo, xrs, z, zo, zrs, u, uo, urs, loss, lo, lrs, g, go, grs, rows, cols, want_loss
):
    """:func:`soft_grad_parallel` on the calling thread."""
    wide = _is_float64(x)
    for r in range(rows):
        _soft_grad_full_row(
            x, xo, xrs, z, zo, zrs, u, uo, urs, loss, lo, lrs, g, go, grs, r, cols, wide, want_loss
        )


# --- Rows: integer labels ----------------------------------------------------------------------


@njit(**_OPTIONS)
def _sparse_loss_row(x, xo, xrs, labels, lbo, lbrs, loss, lo, lrs, r, cols, wide):  # type: ignore[no-untyped-def]
    xs = x[xo + r * xrs : xo + r * xrs + cols]
    label = labels[lbo + r * lbrs]
    m = _row_max(xs)
    small_tail, ties, _ = _sparse_sums(xs, m, wide, wide, wide)
    loss[lo + r * lrs] = _sparse_loss(xs, label, m, small_tail, ties, wide)


@njit(parallel=True, **_OPTIONS)
def sparse_loss_parallel(x, xo, xrs, labels, lbo, lbrs, loss, lo, lrs, rows, cols):  # type: ignore[no-untyped-def]
    """The sparse softmax loss of ``rows`` rows, rows shared among threads."""
    wide = _is_float64(x)
    for r in prange(rows):
        _sparse_loss_row(x, xo, xrs, labels, lbo, lbrs, loss, lo, lrs, r, cols, wide)


@njit(**_OPTIONS)
def sparse_loss_serial(x, xo, xrs, labels, lbo, lbrs, loss, lo, lrs, rows, cols):  # type: ignore[no-untyped-def]
    """:func:`sparse_loss_parallel` on the calling thread."""
    wide = _is_float64(x)
    for r in range(rows):
        _sparse_loss_row(x, xo, xrs, labels, lbo, lbrs, loss, lo, lrs, r, cols, wide)


@njit(**_OPTIONS)
def _sparse_grad_full_row(  # type: ignore[no-untyped-def]
    x, xo, xrs, labels, lbo, lbrs, u, uo, urs, loss, lo, lrs, g, go, grs, r, cols, wide, want_loss
):
    xs = x[xo + r * xrs : xo + r * xrs + cols]
    gs = g[go + r * grs : go + r * grs + cols]
    label = labels[lbo + r * lbrs]
    m = _row_max(xs)
    # Narrow inputs: the loss kernel's float32-sized exp suffices here too. With one-hot labels
    # the only cancelling entry is the maximum's, formed from the tail sum (relative error
    # 2^-28 there, as everywhere else); the soft-label gradient needs the precise exp instead.
    small_tail, ties, first = _sparse_sums(xs, m, wide, wide, wide)
    if want_loss:
        loss[lo + r * lrs] = _sparse_loss(xs, label, m, small_tail, ties, wide)
    if label < 0 or label >= cols or _no_limit(m, small_tail, ties):
        _fill_nan(gs)
    else:
        scale = np.float64(u[uo + r * urs])
        _sparse_grad_row(xs, gs, label, m, small_tail, ties, first, scale, wide)


@njit(parallel=True, **_OPTIONS)
def sparse_grad_parallel(  # type: ignore[no-untyped-def]
    x, xo, xrs, labels, lbo, lbrs, u, uo, urs, loss, lo, lrs, g, go, grs, rows, cols, want_loss
):
    """``upstream * d loss / d x`` for integer labels (and the loss if ``want_loss``)."""
    wide = _is_float64(x)
    for r in prange(rows):
        _sparse_grad_full_row(
            x, xo, xrs, labels, lbo, lbrs, u, uo, urs, loss, lo, lrs, g, go, grs, r, cols, wide,
            want_loss,
        )  # fmt: skip


@njit(**_OPTIONS)
def sparse_grad_serial(  # type: ignore[no-untyped-def]
    x, xo, xrs, labels, lbo, lbrs, u, uo, urs, loss, lo, lrs, g, go, grs, rows, cols, want_loss
):
    """:func:`sparse_grad_parallel` on the calling thread."""
    wide = _is_float64(x)
    for r in range(rows):
        _sparse_grad_full_row(
            x, xo, xrs, labels, lbo, lbrs, u, uo, urs, loss, lo, lrs, g, go, grs, r, cols, wide,
            want_loss,
        )  # fmt: skip
