"""numba kernels for the softmax cross-entropy (soft and integer labels) and its logit gradient,
and their entry points (loss, logits' gradient, both in one pass; NumPy in and out).

Each kernel works on rows prepared by ``_kernels.layout.class_rows``: every operand is a 1-D base
array, an offset and a row stride (in elements); a row's classes are contiguous, so each row is a
contiguous slice, which is what lets LLVM vectorise the loops. This module writes what one row
does; ``_kernels.loops.over_rows`` makes each row function a serial and a parallel kernel (the
rows shared among numba's threads). A row is processed whole by one thread, in passes that stay
in its L2 cache (a row of 32768 float32 logits and labels is 256 KiB; L2 is 1 MiB):

1. the row maximum ``m``;
2. ``T = sum of e^(x_j - m)`` over the entries below the maximum, the number of ties with the
   maximum, and for soft labels ``S = sum z_j`` and ``D = sum z_j (m - x_j)``;
3. for the gradient only: each class's derivative, written once.

The loss is ``log1p(T') S + D`` with ``T' = T + (ties - 1)``: the reference's
``sum_j z_j (log1p(T') - (x_j - m))`` (``formula.softmax_loss``) with the sum split into its two
sums of non-negative terms, so nothing cancels and each is accumulated in one pass. The gradient
mirrors ``formula.softmax_grad_logits`` term by term. ``log1p(T')`` is one libm call per row.

Inputs are loaded in their dtype, computed in float64 and stored rounded once. Three levels of
care, picked at compile time (the ``_exact_diff`` flags):

- loss of float32 inputs: the exp polynomial sized to float32 (``vector_math``), ``x_j - m`` rounded
  (every term is non-negative: a relative error of 2^-28 in ``e`` is nothing to a float32 loss);
- gradient of float32 inputs: the float64-accurate exp, and ``x_j - m`` formed error-free
  (Knuth's two-sum) with ``e^(hi + lo) = e^hi (1 + lo)``: the gradient's two terms cancel near
  its zero, which multiplies their relative error, as in the reference;
- float64 inputs: as the gradient, in both, with ``e`` down to the smallest subnormal, and the
  halves formula where ``x_j - m`` overflows (logits further apart than the float64 range).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import overload

from ..._core import buffers
from ..._kernels import drivers, layout
from ..._kernels.loops import INLINE, ROWS, VALUE, class_row, operands, over_rows
from ..._kernels.vector_math import (
    LN3,
    add_reassoc,
    any_nan,
    exp_expm1_nonpos,
    exp_nonpos,
    is_float64,
    max_nan,
    min_ordered,
    prefer_wide_vectors,
    two_sum,
)

_NAN = math.nan
_INF = math.inf


# --- One row, pass by pass ---------------------------------------------------------------------


def row_max(xs):
    """The largest value of a row as a float64, NaN if the row holds one (a NaN makes the tail
    sum NaN: see :func:`no_limit`); ``-inf`` for a row of ``-inf``.

    float32 rows are reduced in float32 lanes (a maximum is exact: the same value, twice the
    lanes, no widening; measured 3-5 % of the float32 loss kernels' time, 1 thread), other rows
    in float64."""


@overload(row_max, inline="always")
def _row_max_typed(xs):
    if xs.dtype == types.float32:
        lowest = np.float32(-_INF)

        def single(xs):
            m = lowest
            for j in range(xs.size):
                m = max_nan(m, xs[j])
            return np.float64(m)

        return single

    def double(xs):
        m = -_INF
        for j in range(xs.size):
            m = max_nan(m, np.float64(xs[j]))
        return m

    return double


@njit(**INLINE)
def exp_diff(v, m, exact, precise, subnormal, wide=True):
    """``(hi, e, overflow)`` for one entry: ``hi = x_j - m`` (0 at a maximum, also an
    infinite one), ``e = e^(x_j - m)`` (1 at a maximum), and whether ``x_j - m`` overflowed.

    With ``exact``, ``hi + lo = x_j - m`` exactly (two-sum) and ``e = e^hi + e^hi lo``, as the
    reference's ``_softmax_parts``; ``lo`` is dropped where it is not finite (``x_j = -inf``,
    whose ``e`` is 0 anyway). ``wide``: whether the logits are float64 (a compile-time
    constant); the difference of two narrower logits, taken in float64, never overflows, and
    without ``wide`` its test and the halves formula it guards are compiled away: in
    :func:`soft_sums`' loop they took about a fifth of the float32 soft-label loss (measured,
    1 thread: 8192 x 1024 17.2 -> 14.2 ms, 2048 x 32768 135 -> 107 ms, with :func:`row_max`'s
    float32 lanes)."""
    is_max = v == m
    hi, lo = two_sum(v, -m)
    if exact:
        lo = 0.0 if (is_max or not (abs(lo) < _INF)) else lo
    hi = 0.0 if is_max else hi
    e = exp_nonpos(hi, precise, subnormal)
    if exact:
        e = e + e * lo
    # Both finite, their difference is not: only float64 logits more than the range apart.
    overflow = wide and hi == -_INF and v > -_INF and m < _INF
    return hi, e, overflow


# Classes summed per block: inside a block the sums are vectorised (reassociated) running sums
# of at most _BLOCK / lanes terms each, and the blocks' sums are added with Knuth's two-sum, so
# a row's sums keep about one rounding error whatever its length (a plain running sum over
# 20 000 classes lost hundreds of float64 ULP). Measured as fast as the single loop (2^20
# float64 exponentials: 1.9 vs 2.3 ns each), and the same block boundaries for every row
# blocking and thread count: the results do not depend on either.
_BLOCK = 256


@njit(**INLINE)
def _accumulate(hi, lo, value):
    """``(hi, lo)`` plus ``value``, the rounding error kept in ``lo`` (two-sum); an infinite or
    NaN sum keeps ``hi`` as it is (its error term would be NaN)."""
    total, error = two_sum(hi, value)
    return total, lo + (error if abs(total) < _INF else 0.0)


def _block(es, start, stop):
    """``es[start:stop]``, or None for None (a pass that keeps no exponentials)."""


@overload(_block, inline="always")
def _block_typed(es, start, stop):
    if isinstance(es, types.NoneType):
        return lambda es, start, stop: None
    return lambda es, start, stop: es[start:stop]


def _keep(block, j, e):
    """``block[j] = e``, nothing for None: compiled away in a loss alone."""


@overload(_keep, inline="always")
def _keep_typed(block, j, e):
    if isinstance(block, types.NoneType):
        return lambda block, j, e: None

    def store(block, j, e):
        block[j] = e

    return store


@njit(**INLINE)
def soft_sums(xs, zs, m, exact, precise, subnormal, es):
    """Pass 2 for soft labels: ``(small_tail, ties, S, D, zn, first)``; each entry's ``e``
    written into ``es`` unless it is None (for the gradient pass: :func:`soft_grad_row`).

    ``small_tail``: sum of ``e`` below the maximum; ``ties``: entries equal to it; ``S``: sum
    of the labels; ``D``: sum of ``z_j (m - x_j) >= 0`` (0 where ``z_j = 0``, also against an
    infinite logit; the reference's halves where ``x_j - m`` overflows); ``zn``: sum of the
    labels below the maximum; ``first``: index of the first maximum (``cols`` if none). Each
    sum compensated across blocks of :data:`_BLOCK` classes."""
    tail_hi = tail_lo = total_hi = total_lo = gaps_hi = gaps_lo = below_hi = below_lo = 0.0
    ties = 0.0
    n = xs.size
    wide = is_float64(xs)
    # The first maximum's index as a float64 minimum (exact below 2^53): an integer index
    # reduction through a select is not one LLVM vectorises.
    first = np.float64(n)
    for start in range(0, n, _BLOCK):
        bx = xs[start : min(n, start + _BLOCK)]
        bz = zs[start : min(n, start + _BLOCK)]
        be = _block(es, start, min(n, start + _BLOCK))
        small_tail = 0.0
        total = 0.0
        gaps = 0.0
        below = 0.0
        for j in range(bx.size):
            v = np.float64(bx[j])
            zj = np.float64(bz[j])
            hi, e, overflow = exp_diff(v, m, exact, precise, subnormal, wide)
            _keep(be, j, e)
            is_max = v == m
            small_tail = add_reassoc(small_tail, 0.0 if is_max else e)
            ties = add_reassoc(ties, 1.0 if is_max else 0.0)
            total = add_reassoc(total, zj)
            below = add_reassoc(below, 0.0 if is_max else zj)
            gap = 2.0 * (zj * (0.5 * m - 0.5 * v)) if overflow else zj * -hi
            gaps = add_reassoc(gaps, 0.0 if zj == 0.0 else gap)
            first = min_ordered(first, np.float64(start + j) if is_max else np.float64(n))
        tail_hi, tail_lo = _accumulate(tail_hi, tail_lo, small_tail)
        total_hi, total_lo = _accumulate(total_hi, total_lo, total)
        gaps_hi, gaps_lo = _accumulate(gaps_hi, gaps_lo, gaps)
        below_hi, below_lo = _accumulate(below_hi, below_lo, below)
    return (
        tail_hi + tail_lo, ties, total_hi + total_lo, gaps_hi + gaps_lo, below_hi + below_lo,
        int(first),
    )  # fmt: skip


@njit(**INLINE)
def sparse_sums(xs, m, exact, precise, subnormal, es):
    """Pass 2 for integer labels: ``(small_tail, ties, first)`` as :func:`soft_sums` (``es``
    likewise)."""
    tail_hi = tail_lo = 0.0
    ties = 0.0
    n = xs.size
    first = np.float64(n)
    for start in range(0, n, _BLOCK):
        bx = xs[start : min(n, start + _BLOCK)]
        be = _block(es, start, min(n, start + _BLOCK))
        small_tail = 0.0
        for j in range(bx.size):
            v = np.float64(bx[j])
            _, e, _ = exp_diff(v, m, exact, precise, subnormal)
            _keep(be, j, e)
            is_max = v == m
            small_tail = add_reassoc(small_tail, 0.0 if is_max else e)
            ties = add_reassoc(ties, 1.0 if is_max else 0.0)
            first = min_ordered(first, np.float64(start + j) if is_max else np.float64(n))
        tail_hi, tail_lo = _accumulate(tail_hi, tail_lo, small_tail)
    return tail_hi + tail_lo, ties, int(first)


@njit(**INLINE)
def no_limit(m, small_tail, ties):
    """The reference's ``_nan_without_limit``: a NaN in the row (NaN tail), all ``-inf``, or
    more than one ``+inf``."""
    tail = small_tail + (ties - 1.0)
    return tail != tail or m == -_INF or (m == _INF and ties > 1.0)


@njit(**INLINE)
def soft_row_loss(m, small_tail, ties, total, gaps):
    if no_limit(m, small_tail, ties):
        return _NAN
    log_sum = math.log1p(small_tail + (ties - 1.0))
    # log_sum S, with S = 0 (all labels 0) giving 0: log_sum is finite here.
    return log_sum * total + gaps


@njit(**INLINE)
def sparse_row_loss(xs, label, m, small_tail, ties, exact):
    """``log1p(T') - (x_c - m)``: the one-hot case of :func:`soft_row_loss` (NaN for a label that
    is not a class, as the reference's ``_nan_out_of_range``)."""
    n = xs.size
    if label < 0 or label >= n or no_limit(m, small_tail, ties):
        return _NAN
    v = np.float64(xs[label])
    hi, _, overflow = exp_diff(v, m, exact, False, False, is_float64(xs))
    log_sum = math.log1p(small_tail + (ties - 1.0))
    if overflow:
        return 2.0 * (0.5 * log_sum + (0.5 * m - 0.5 * v))
    return log_sum - hi


_TINY_GAP = 2.0**-20


@njit(**INLINE)
def soft_grad_row(xs, zs, es, gs, m, small_tail, ties, total, below, first, scale, wide):
    """Pass 3: ``scale * d loss / d x_j`` for a row with a limit, from the ``e`` that
    :func:`soft_sums` kept in ``es`` (exact and precise: one exponential per entry for the
    loss and its gradient together); mirrors
    ``formula.softmax_grad_logits``: ``S e_j / (c + t) - z_j`` below the maximum and
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
        e = es[j]
        # exp_diff's hi: x_j - m rounded (0 at a maximum), for the near test below.
        hi = 0.0 if v == m else v - m
        # S e / (c + t) - z as one fused multiply-add of S / (c + t): one rounding fewer than
        # the reference's, no division per element.
        elsewhere = share * e - zj
        others = others_first if j == first else total - zj
        at_max = ((others - zj * extra_ties) - zj * small_tail) * reciprocal
        g = at_max if v == m else elsewhere
        gs[j] = _NAN if (hi < 0.0 and hi > -_TINY_GAP) else g * scale
    if any_nan(gs):
        _soft_grad_row_near(xs, zs, gs, m, ties, total, others_first, first, scale, wide)


@njit(error_model="numpy")
def _soft_grad_row_near(xs, zs, gs, m, ties, total, others_first, first, scale, wide):
    """The reference's formula with near entries (``x_j - m > -ln 3``) as ``1 + u_j``,
    ``u_j = expm1(x_j - m)``: ``D = C + t + U`` (``C`` maxima and near entries, ``t`` the far
    ``e``, ``U`` the near ``u``), numerators ``(S_j - z_j (C - 1)) - z_j (t + U)`` at a maximum,
    ``((S - z_j C) + S u_j) - z_j (t + U)`` near, ``S e_j / D - z_j`` far. Scalar (rare); the
    sums compensated as :func:`soft_sums`' (plain running sums cost a float64 row of 20 000
    classes 18 scale-ULP)."""
    n = xs.size
    count = ties
    far_hi = far_lo = near_hi = near_lo = tail_hi = tail_lo = 0.0
    for j in range(n):
        v = np.float64(xs[j])
        hi, e, _ = exp_diff(v, m, True, True, wide)
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
        hi, e, _ = exp_diff(v, m, True, True, wide)
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


@njit(**INLINE)
def _expm1_diff(v, m, hi):
    """``e^(v - m) - 1`` for ``-ln 3 < v - m < 0``, with the two-sum error of ``hi``."""
    _, lo = two_sum(v, -m)
    lo = lo if abs(lo) < _INF else 0.0
    e, u = exp_expm1_nonpos(hi, True)
    return u + e * lo


@njit(**INLINE)
def sparse_grad_row(xs, es, gs, label, m, small_tail, ties, first, scale):
    """:func:`soft_grad_row` with one-hot labels (``S = 1``, ``z_j = [j == label]``), from the
    ``e`` :func:`sparse_sums` kept in ``es``: ``e_j / (c + t)`` for every entry (a vectorised
    scaling), then the label's entry and the maxima's (``first``, and the later ties) by their
    own formulas."""
    n = xs.size
    reciprocal = 1.0 / (ties + small_tail)
    for j in range(n):
        gs[j] = (reciprocal * es[j]) * scale
    if np.float64(xs[label]) != m:
        gs[label] = (reciprocal * es[label] - 1.0) * scale
    # The labels' sum but the first maximum's: 1 unless the label is the first maximum.
    others_first = 0.0 if label == first else 1.0
    extra_ties = ties - 1.0
    for j in range(first, n if ties > 1.0 else first + 1):
        if j != first and np.float64(xs[j]) != m:
            continue
        zj = 1.0 if j == label else 0.0
        others = others_first if j == first else 1.0 - zj
        gs[j] = (((others - zj * extra_ties) - zj * small_tail) * reciprocal) * scale


@njit(**INLINE)
def fill_nan(gs):
    for j in range(gs.size):
        gs[j] = _NAN


# --- Rows --------------------------------------------------------------------------------------
#
# Every operand is a ``layout.RowOperand`` (base, offset, row stride): row ``r`` of a class-axis
# operand (``x``, ``z``, ``grad``) is ``loops.class_row``, a per-row operand (``labels``, ``u``
# the upstream, ``loss``) is ``base[offset + r * row_stride]``. ``want_loss``: whether the
# gradient kernels write the loss too (else ``loss`` is a one-element stand-in).

SoftLossOperands = operands("SoftLossOperands", __name__, x=ROWS, z=ROWS, loss=ROWS)
SoftGradOperands = operands(
    "SoftGradOperands", __name__, x=ROWS, z=ROWS, u=ROWS, loss=ROWS, grad=ROWS, want_loss=VALUE
)
SparseLossOperands = operands("SparseLossOperands", __name__, x=ROWS, labels=ROWS, loss=ROWS)
SparseGradOperands = operands(
    "SparseGradOperands", __name__, x=ROWS, labels=ROWS, u=ROWS, loss=ROWS, grad=ROWS,
    want_loss=VALUE,
)  # fmt: skip


@over_rows(SoftLossOperands)
def soft_loss(x, x_offset, x_stride, z, z_offset, z_stride, loss, loss_offset, loss_stride, r,
              cols, wide, scratch):  # fmt: skip
    """The softmax loss of row ``r``."""
    prefer_wide_vectors()
    xs = class_row(x, x_offset, x_stride, r, cols)
    zs = class_row(z, z_offset, z_stride, r, cols)
    m = row_max(xs)
    small_tail, ties, total, gaps, _, _ = soft_sums(xs, zs, m, wide, wide, wide, None)
    loss[loss_offset + r * loss_stride] = soft_row_loss(m, small_tail, ties, total, gaps)


@over_rows(SoftGradOperands, scratch=True)
def soft_grad(
    x, x_offset, x_stride, z, z_offset, z_stride, u, u_offset, u_stride, loss, loss_offset,
    loss_stride, grad, grad_offset, grad_stride, want_loss, r, cols, wide, scratch,
):  # fmt: skip
    """``upstream * d loss / d x`` of row ``r`` (and its loss if ``want_loss``)."""
    prefer_wide_vectors()
    xs = class_row(x, x_offset, x_stride, r, cols)
    zs = class_row(z, z_offset, z_stride, r, cols)
    gs = class_row(grad, grad_offset, grad_stride, r, cols)
    m = row_max(xs)
    es = scratch  # the row's exponentials, from the sums' pass to the gradient's
    small_tail, ties, total, gaps, below, first = soft_sums(xs, zs, m, True, True, wide, es)
    if want_loss:
        loss[loss_offset + r * loss_stride] = soft_row_loss(m, small_tail, ties, total, gaps)
    if no_limit(m, small_tail, ties):
        fill_nan(gs)
    else:
        scale = np.float64(u[u_offset + r * u_stride])
        soft_grad_row(xs, zs, es, gs, m, small_tail, ties, total, below, first, scale, wide)


@over_rows(SparseLossOperands)
def sparse_loss(x, x_offset, x_stride, labels, labels_offset, labels_stride, loss, loss_offset,
                loss_stride, r, cols, wide, scratch):  # fmt: skip
    """The sparse softmax loss of row ``r``."""
    prefer_wide_vectors()
    xs = class_row(x, x_offset, x_stride, r, cols)
    label = labels[labels_offset + r * labels_stride]
    m = row_max(xs)
    small_tail, ties, _ = sparse_sums(xs, m, wide, wide, wide, None)
    loss[loss_offset + r * loss_stride] = sparse_row_loss(xs, label, m, small_tail, ties, wide)


@over_rows(SparseGradOperands, scratch=True)
def sparse_grad(
    x, x_offset, x_stride, labels, labels_offset, labels_stride, u, u_offset, u_stride, loss,
    loss_offset, loss_stride, grad, grad_offset, grad_stride, want_loss, r, cols, wide, scratch,
):  # fmt: skip
    """``upstream * d loss / d x`` of row ``r`` for integer labels (and its loss if
    ``want_loss``)."""
    prefer_wide_vectors()
    xs = class_row(x, x_offset, x_stride, r, cols)
    gs = class_row(grad, grad_offset, grad_stride, r, cols)
    label = labels[labels_offset + r * labels_stride]
    m = row_max(xs)
    # Narrow inputs: the loss kernel's float32-sized exp suffices here too. With one-hot labels
    # the only cancelling entry is the maximum's, formed from the tail sum (relative error
    # 2^-28 there, as everywhere else); the soft-label gradient needs the precise exp instead.
    es = scratch
    small_tail, ties, first = sparse_sums(xs, m, wide, wide, wide, es)
    if want_loss:
        loss[loss_offset + r * loss_stride] = sparse_row_loss(xs, label, m, small_tail, ties, wide)
    if label < 0 or label >= cols or no_limit(m, small_tail, ties):
        fill_nan(gs)
    else:
        scale = np.float64(u[u_offset + r * u_stride])
        sparse_grad_row(xs, es, gs, label, m, small_tail, ties, first, scale)


# --- Entry points: operands checked, laid out as rows, launched ------------------------------

# The kernels (tests count their calls through __all__); int64_labels is a host-side helper.
__all__ = [
    "softmax_grad_logits",
    "softmax_loss",
    "softmax_loss_and_grad",
    "sparse_softmax_grad_logits",
    "sparse_softmax_loss",
    "sparse_softmax_loss_and_grad",
]


def softmax_loss(
    x: np.ndarray, z: Any, axis: int = -1, out: np.ndarray | None = None
) -> np.ndarray:
    """Softmax cross-entropy of logits ``x`` against soft labels ``z`` along ``axis``.

    The kernel version of ``reference.softmax`` (formula: ``formula.softmax_loss``): float16,
    bfloat16 and float32 within 1 ULP of the exact value, float64 within a few ULP, the exact
    limits at infinite logits, NaN for rows without a limit. ``z`` must broadcast to ``x``'s
    shape (it is cast to ``x``'s dtype; one row of labels shared by every row is read in
    place); ``out``, if given, a writeable array of ``x``'s dtype (or float64) and the loss's
    shape (``x.shape`` without ``axis``). Returns ``out`` or a new array.
    """
    fn = "softmax_loss"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    out = drivers.output(fn, "out", out, x.dtype, drivers.loss_shape(x, axis), wide_ok=True)
    loss, _ = _softmax_run(
        x, {"z": z}, {"loss": out, "grad": None}, axis=axis, want_loss=True, want_grad=False
    )
    return loss


def softmax_grad_logits(
    x: np.ndarray,
    z: Any,
    axis: int = -1,
    upstream: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``upstream * d loss / d x`` of :func:`softmax_loss`: ``(softmax(x) sum(z) - z) *
    upstream``, the true derivative for labels of any sum (``formula.softmax_grad_logits``).

    ``upstream``: ``None`` (ones) or anything that broadcasts to the loss's shape (one value per
    row). ``out``: ``x``'s dtype and shape.
    """
    fn = "softmax_grad_logits"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    upstream = drivers.per_row(fn, upstream, x, axis)
    out = drivers.output(fn, "out", out, x.dtype, x.shape)
    _, grad = _softmax_run(
        x, {"z": z, "u": upstream}, {"loss": None, "grad": out}, axis=axis, want_loss=False,
        want_grad=True,
    )  # fmt: skip
    return grad


def softmax_loss_and_grad(x: np.ndarray, z: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(softmax_loss(x, z, axis), softmax_grad_logits(x, z, axis))`` in one call: each row is
    read once for both (the caller multiplies the gradient by its upstream later)."""
    fn = "softmax_loss_and_grad"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    ones = drivers.per_row(fn, None, x, axis)
    loss, grad = _softmax_run(
        x, {"z": z, "u": ones}, {"loss": None, "grad": None}, axis=axis, want_loss=True,
        want_grad=True,
    )  # fmt: skip
    return loss, grad


def sparse_softmax_loss(x: np.ndarray, labels: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax cross-entropy against integer ``labels`` (shape ``x.shape[:-1]``) over the last
    axis of ``x`` (``formula.sparse_softmax_loss``); NaN for a row whose label is not in
    ``[0, num_classes)``, as the reference's ``_nan_out_of_range``."""
    fn = "sparse_softmax_loss"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    out = drivers.output(fn, "out", out, x.dtype, x.shape[:-1], wide_ok=True)
    loss, _ = _softmax_run(
        x, {"labels": labels}, {"loss": out, "grad": None}, axis=-1, want_loss=True,
        want_grad=False,
    )  # fmt: skip
    return loss


def sparse_softmax_grad_logits(
    x: np.ndarray, labels: Any, upstream: Any = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``upstream * (softmax(x) - one_hot(labels))`` (``formula.sparse_softmax_grad_logits``),
    NaN in the rows of out-of-range labels."""
    fn = "sparse_softmax_grad_logits"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    upstream = drivers.per_row(fn, upstream, x, x.ndim - 1)
    out = drivers.output(fn, "out", out, x.dtype, x.shape)
    _, grad = _softmax_run(
        x, {"labels": labels, "u": upstream}, {"loss": None, "grad": out}, axis=-1,
        want_loss=False, want_grad=True,
    )  # fmt: skip
    return grad


def sparse_softmax_loss_and_grad(x: np.ndarray, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sparse_softmax_loss(x, labels), sparse_softmax_grad_logits(x, labels))`` in one
    call."""
    fn = "sparse_softmax_loss_and_grad"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    ones = drivers.per_row(fn, None, x, x.ndim - 1)
    loss, grad = _softmax_run(
        x, {"labels": labels, "u": ones}, {"loss": None, "grad": None}, axis=-1,
        want_loss=True, want_grad=True,
    )  # fmt: skip
    return loss, grad


def _softmax_logits(fn: str, x: Any, axis: int) -> tuple[np.ndarray, int]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: logits must be a NumPy array, got {type(x).__name__}")
    name = drivers.dtype_name(x.dtype)
    if name not in drivers.DIRECT + drivers.THROUGH_FLOAT32:
        raise TypeError(f"{fn}: logits must be float16, bfloat16, float32 or float64, got {name}")
    if x.ndim == 0:
        raise ValueError(f"{fn}: logits must have a class axis, got a 0-d array")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{fn}: axis must be an integer, got {type(axis).__name__}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for logits of shape {x.shape}")
    axis = int(axis) % x.ndim
    if x.shape[axis] == 0:
        # As the reference (a maximum over no classes): there is no loss to give.
        raise ValueError(f"{fn}: logits have zero classes (shape {x.shape}, axis {axis})")
    return x, axis


def _soft_labels(fn: str, z: Any, x: np.ndarray) -> np.ndarray:
    """Soft labels of ``x``'s dtype broadcast to ``x``'s shape: a view, so labels shared along
    the batch (a class-weight row for label smoothing) are read with a zero row stride."""
    return np.broadcast_to(drivers.operand(fn, "labels", z, x, elementwise=False), x.shape)


def _integer_labels(fn: str, labels: Any, x: np.ndarray) -> np.ndarray:
    """``labels`` as int64 of shape ``x.shape[:-1]`` (values are not checked: an out-of-range
    label gives a NaN row)."""
    a = np.asarray(labels)
    if a.dtype.kind not in "iu":
        raise TypeError(
            f"{fn}: labels must have an integer dtype, got {drivers.dtype_name(a.dtype)}"
        )
    if a.shape != x.shape[:-1]:
        raise ValueError(f"{fn}: labels must have shape {x.shape[:-1]}, got {a.shape}")
    return int64_labels(a)


def int64_labels(a: np.ndarray) -> np.ndarray:
    """Integer labels as int64 (a copy only where needed); a uint64 label beyond int64 is out of
    range anyway, and stays so (-1, not wrapped to a class)."""
    wide = a.astype(np.int64, copy=False)
    if a.dtype == np.uint64:
        wide = wide.copy()
        wide[a > np.iinfo(np.int64).max] = -1
    return wide


@drivers.through_float32
def _softmax_run(
    x: np.ndarray,
    inputs: dict[str, np.ndarray],
    outs: dict[str, np.ndarray | None],
    *,
    axis: int,
    want_loss: bool,
    want_grad: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Run the soft (``inputs["z"]``) or sparse (``inputs["labels"]``) kernels, with the
    upstream ``inputs["u"]`` (one per row) for the gradient; returns ``(loss, grad)``, each
    ``None`` unless wanted (into ``outs["loss"]`` / ``outs["grad"]`` where given)."""
    z, labels, upstream = inputs.get("z"), inputs.get("labels"), inputs.get("u")
    loss_out, grad_out = outs["loss"], outs["grad"]
    axis %= x.ndim
    moved_x = np.moveaxis(x, axis, -1)
    moved_z = None if z is None else np.moveaxis(z, axis, -1)
    loss = loss_out if want_loss else None
    grad = grad_out if want_grad else None
    if want_loss and loss is None:
        loss = np.empty(moved_x.shape[:-1], x.dtype)
    loss_dtype = None if loss is None else loss.dtype
    if want_grad and grad is None:
        # The gradient in the logits' memory order when the kernels can read that, else with
        # the classes contiguous (the kernels' order), the axis moved back.
        if moved_x.strides[-1] == x.itemsize or moved_x.shape[-1] == 1:
            grad = buffers.empty_like(x)
        else:
            grad = np.moveaxis(buffers.empty(moved_x.shape, x.dtype), -1, axis)
    if moved_x.size == 0:
        return loss, grad
    classes = {"x": moved_x} | ({} if moved_z is None else {"z": moved_z})
    per_row = {name: a for name, a in (("labels", labels), ("u", upstream)) if a is not None}
    # Outputs written through a temporary where they overlap an input other than as the very
    # same view (the kernels read a row whole before writing it, element j of the gradient after
    # element j of the inputs), or where the kernels cannot write them in place.
    loss_target = loss
    if loss is not None and any(np.may_share_memory(loss, a) for a in classes.values()):
        loss_target = np.empty(loss.shape, loss_dtype)
    grad_target = None if grad is None else np.moveaxis(grad, axis, -1)
    if grad_target is not None and any(
        np.may_share_memory(grad_target, a) and not drivers.same_view(grad_target, a)
        for a in classes.values()
    ):
        grad_target = buffers.empty(moved_x.shape, x.dtype)
    for attempt in range(2):
        full = {name: (a, False) for name, a in classes.items()}
        if grad_target is not None:
            full["grad"] = (grad_target, True)
        rows = {name: (a, False) for name, a in per_row.items()}
        if loss_target is not None:
            rows["loss"] = (loss_target, True)
        try:
            plan = layout.class_rows(full, rows)
            break
        except layout.LayoutError:
            if attempt:
                raise AssertionError("unreachable: contiguous operands have rows") from None
            classes = {name: _contiguous(a) for name, a in classes.items()}
            per_row = {name: _contiguous(a) for name, a in per_row.items()}
            if grad_target is not None and not drivers.c_contiguous(grad_target):
                grad_target = buffers.empty(moved_x.shape, x.dtype)
            if loss_target is not None and not drivers.c_contiguous(loss_target):
                loss_target = np.empty(loss_target.shape, loss_dtype)
    soft = z is not None
    if want_grad:
        kernels = soft_grad if soft else sparse_grad
        # Without a loss wanted, a one-element stand-in of the same type (one compiled kernel).
        plan.operands.setdefault("loss", layout.RowOperand(np.empty(1, x.dtype), 0, 0))
        drivers.launch(kernels, [plan], lambda _: {"want_loss": want_loss})
    else:
        drivers.launch(soft_loss if soft else sparse_loss, [plan])
    if loss is not None and loss_target is not loss:
        loss[...] = loss_target
    if grad is not None:
        moved_grad = np.moveaxis(grad, axis, -1)
        if not drivers.same_view(moved_grad, grad_target):
            moved_grad[...] = grad_target
    return loss, grad


def _contiguous(a: np.ndarray) -> np.ndarray:
    return a if drivers.c_contiguous(a) else np.ascontiguousarray(a)
