"""The training loss's fused kernel: ``cross_entropy``'s reduced loss and its logits' gradient
in one pass over the logits (``_api.training``'s options: class weights, ``ignore_index``, a row
mask, label smoothing, z-loss; index or probability targets).

Every row is the soft-label softmax loss of ``kernel.py`` with the row's effective labels

    t_j = (1 - eps) r [j == y] + (eps / C) w_j          (index y, row weight r = w_y)
    t_j = w_j ((1 - eps) z_j + eps / C)                 (probabilities z, r = sum_c w_c z_c)

(``w`` the class weights, ones without them): the loss is linear in the labels, so this is
``training.cross_entropy``'s ``(1 - eps) w_y (-log p_y) + (eps / C) sum_c w_c (-log p_c)``
summed into one softmax loss, computed by the same row functions (non-negative terms, float64,
the exact gradient ``S_t p - t``). The z-loss adds ``lambda r lse^2`` and its derivative
``2 lambda r lse p``. Without smoothing, z-loss and probability targets the row is
``kernel.py``'s sparse row, scaled by ``r``.

The gradient is written already multiplied by ``grad_scale`` (the mean's ``1 / denominator``),
so that a backward pass only scales it by its upstream. A row that is not counted (its label
``ignore_index``, its mask False) has loss 0 and gradient 0; an index label outside
``[0, C)`` is found by :func:`index_denominator` before the rows are read.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..._kernels import host_sums, runtime
from ..._kernels.loops import INLINE, OPTIONS, as_input, unowned
from ..._kernels.narrow import round_span as _round_span
from ..._kernels.narrow import widen_span as _widen_span
from ..._kernels.vector_math import is_float64, prefer_wide_vectors
from .kernel import (
    fill_nan,
    int64_labels,
    no_limit,
    row_max,
    soft_grad_row,
    soft_row_loss,
    soft_sums,
    sparse_grad_row,
    sparse_row_loss,
    sparse_sums,
)

_NAN = math.nan


@njit(**OPTIONS)
def index_denominator(labels, w, has_w, mask, has_mask, ignore_index, cols):
    """``(sum of r over the counted rows, first bad row)`` for index targets, ``r = w_y`` (1
    without weights); the first counted row whose label is not a class, or -1."""
    total = 0.0
    for i in range(labels.size):
        y = labels[i]
        if y == ignore_index or (has_mask and not mask[i]):
            continue
        if y < 0 or y >= cols:
            return total, i
        total += w[y] if has_w else 1.0
    return total, -1


def _row_in(x, i, scratch):
    """Row ``i`` of the logits as the row functions read it: ``x[i]``, or for bfloat16 bits
    (uint16) the row widened into the float32 ``scratch`` (exact)."""


@overload(_row_in, inline="always")
def _row_in_typed(x, i, scratch):
    if x.dtype != types.uint16:
        return lambda x, i, scratch: x[i]

    def widened(x, i, scratch):
        _widen_span(x[i], scratch.view(np.uint32), 0, scratch.size)
        return scratch

    return widened


def _row_out(grad, i, scratch):
    """Where row ``i``'s gradient is written: ``grad[i]``, or for bfloat16 bits the float32
    ``scratch``, which :func:`_row_done` then rounds into ``grad[i]``."""


@overload(_row_out, inline="always")
def _row_out_typed(grad, i, scratch):
    if grad.dtype != types.uint16:
        return lambda grad, i, scratch: grad[i]
    return lambda grad, i, scratch: scratch


def _row_done(grad, i, scratch):
    """Nothing, or for bfloat16 bits: the float32 gradient row rounded once into ``grad[i]``
    (to nearest even, as ml_dtypes and torch round)."""


@overload(_row_done, inline="always")
def _row_done_typed(grad, i, scratch):
    if grad.dtype != types.uint16:
        return lambda grad, i, scratch: None

    def rounded(grad, i, scratch):
        _round_span(scratch.view(np.uint32), grad[i], 0, scratch.size)

    return rounded


def _is_bits(x):
    """Whether the logits come as bfloat16 bits (uint16): a compile-time constant."""


@overload(_is_bits, inline="always")
def _is_bits_typed(x):
    bits = x.dtype == types.uint16
    return lambda x: bits


@njit(**INLINE)
def _scratch(x, soft, smoothing, z_scale):
    """:func:`_rows`' scratch rows, allocated by its caller (which so keeps them alive while
    ``_rows`` reads them without counting references: ``loops.unowned``): a row's effective
    labels, its float64 gradient where the z-loss adds to it, each entry's ``e^(x_j - m)``
    (kept by the sums' pass for the gradient's), and for bfloat16 bits the float32 row and
    gradient row they are staged through."""
    cols = x.shape[1]
    plain = not soft and smoothing == 0.0 and z_scale == 0.0
    staged = cols if _is_bits(x) else 0
    return (np.empty(0 if plain else cols), np.empty(cols if z_scale != 0.0 else 0),
            np.empty(cols), np.empty(staged, np.float32), np.empty(staged, np.float32))  # fmt: skip


@njit(**OPTIONS)
def _rows(x, labels, z, w, has_w, mask, has_mask, ignore_index, soft, smoothing, z_scale,
          grad_scale, loss, grad, start, stop, scratch):  # fmt: skip
    """Rows ``start:stop``: ``loss[i]`` (float64, weighted, 0 where not counted) and
    ``grad[i] = grad_scale * d loss_i / d x_i``. ``soft``: probability targets ``z``, else
    index ``labels``. bfloat16 logits and gradient come as their bits (uint16): each row is
    widened into a float32 scratch row and its gradient rounded from one, in cache (no float32
    copy of the whole array, no second pass). ``scratch``: :func:`_scratch`'s."""
    prefer_wide_vectors()
    plain = not soft and smoothing == 0.0 and z_scale == 0.0
    # Every array as a view numba does not reference-count: the caller holds them all.
    x, labels, z, w, mask = unowned(x), unowned(labels), unowned(z), unowned(w), unowned(mask)
    loss, grad = unowned(loss), unowned(grad)
    targets, wide_grad, exps = unowned(scratch[0]), unowned(scratch[1]), unowned(scratch[2])
    x_row, grad_row = unowned(scratch[3]), unowned(scratch[4])
    for i in range(start, stop):
        xs = _row_in(x, i, x_row)
        gs = _row_out(grad, i, grad_row)
        loss[i] = _row(xs, gs, i, labels, z, w, has_w, mask, has_mask, ignore_index, soft,
                       smoothing, z_scale, grad_scale, plain, targets, wide_grad, exps)  # fmt: skip
        _row_done(grad, i, grad_row)


@njit(**INLINE)
def _row(xs, gs, i, labels, z, w, has_w, mask, has_mask, ignore_index, soft, smoothing, z_scale,
         grad_scale, plain, targets, wide_grad, exps):  # fmt: skip
    """Row ``i`` (logits ``xs``, its gradient written into ``gs``): its loss."""
    cols = xs.size
    wide = is_float64(xs)
    y = 0
    if not soft:
        y = labels[i]
        counted = y != ignore_index
    else:
        counted = True
    if has_mask:
        counted = counted and mask[i]
    if not counted:
        gs[:] = 0.0
        return 0.0
    m = row_max(xs)
    if plain:
        r = w[y] if has_w else 1.0
        small_tail, ties, first = sparse_sums(xs, m, wide, wide, wide, exps)
        if no_limit(m, small_tail, ties):
            fill_nan(gs)
            return _NAN
        value = sparse_row_loss(xs, y, m, small_tail, ties, wide)
        sparse_grad_row(xs, exps, gs, y, m, small_tail, ties, first, r * grad_scale)
        return 0.0 if r == 0.0 else r * value
    spread = smoothing / cols
    keep = 1.0 - smoothing
    r = 0.0
    if soft:
        zs = z[i]
        for j in range(cols):
            wj = w[j] if has_w else 1.0
            zj = np.float64(zs[j])
            targets[j] = wj * (keep * zj + spread)
            r += wj * zj
        if not has_w:
            r = 1.0
    else:
        r = w[y] if has_w else 1.0
        for j in range(cols):
            targets[j] = spread * (w[j] if has_w else 1.0)
        targets[y] += keep * r
    small_tail, ties, total, gaps, below, first = soft_sums(xs, targets, m, True, True, wide,
                                                           exps)  # fmt: skip
    if no_limit(m, small_tail, ties):
        fill_nan(gs)
        return _NAN
    value = soft_row_loss(m, small_tail, ties, total, gaps)
    if z_scale == 0.0:
        soft_grad_row(xs, targets, exps, gs, m, small_tail, ties, total, below, first,
                      grad_scale, wide)  # fmt: skip
        return value
    # z-loss: lambda r lse^2, lse = m + log(sum_j e^(x_j - m)); its derivative 2 lambda r
    # lse p_j joins the softmax gradient in float64, rounded once.
    lse = m + math.log1p(small_tail + (ties - 1.0))
    weight = z_scale * r
    soft_grad_row(xs, targets, exps, wide_grad, m, small_tail, ties, total, below, first,
                  1.0, wide)  # fmt: skip
    share = 0.0 if weight == 0.0 else 2.0 * weight * lse / (ties + small_tail)
    for j in range(cols):
        gs[j] = (wide_grad[j] + share * exps[j]) * grad_scale
    return value + (0.0 if weight == 0.0 else weight * (lse * lse))


@njit(**OPTIONS)
def _grad_scale(mean, denominator):
    """The gradient's factor: ``1 / denominator`` for the mean (0 when nothing is counted)."""
    if not mean:
        return 1.0
    return 1.0 / denominator if denominator != 0.0 else 0.0


# Blocks of rows per thread in the parallel kernel: each block allocates its scratch rows once.
_BLOCKS_PER_THREAD = 4


@njit(parallel=True, **OPTIONS)
def _rows_parallel(x, labels, z, w, has_w, mask, has_mask, ignore_index, soft, smoothing,
                   z_scale, grad_scale, loss, grad, blocks):  # fmt: skip
    rows = x.shape[0]
    per_block = (rows + blocks - 1) // blocks
    for b in prange(blocks):
        start = b * per_block
        stop = min(rows, start + per_block)
        if start < stop:
            scratch = _scratch(x, soft, smoothing, z_scale)
            _rows(x, labels, z, w, has_w, mask, has_mask, ignore_index, soft, smoothing, z_scale,
                  grad_scale, loss, grad, start, stop, scratch)  # fmt: skip


@njit(**OPTIONS)
def fused(x, labels, z, w, has_w, mask, has_mask, ignore_index, soft, smoothing, z_scale, mean,
          denominator, grad, threads):  # fmt: skip
    """:func:`run`'s computation in one compiled call (the XLA FFI handler calls it too):
    ``(the reduced loss, the mean's denominator, first bad row or -1)``. The rows on the
    calling thread for ``threads <= 1``, else shared among numba's threads (as many as the
    caller set: ``threads``). The loss is the rows' float64 losses summed as ``np.sum`` sums
    them (``host_sums``), divided by the denominator for the ``mean``."""
    # The arrays as read-only and the flags and the first row as plain values (as_input): the
    # rows' loops are then compiled once per dtype (the serial call and the parallel loop's share
    # _rows), not again for each caller's mix of array flags and constants.
    x, labels, z, w, mask = as_input(x), as_input(labels), as_input(z), as_input(w), as_input(mask)
    has_w, has_mask, soft = as_input(has_w), as_input(has_mask), as_input(soft)
    if not soft:
        denominator, bad = index_denominator(labels, w, has_w, mask, has_mask, ignore_index,
                                             x.shape[1])  # fmt: skip
        if bad >= 0:
            return _NAN, denominator, bad
    grad_scale = _grad_scale(mean, denominator)
    loss = np.empty(x.shape[0])
    if threads <= 1:
        scratch = _scratch(x, soft, smoothing, z_scale)
        _rows(x, labels, z, w, has_w, mask, has_mask, ignore_index, soft, smoothing, z_scale,
              grad_scale, loss, grad, as_input(0), x.shape[0], scratch)  # fmt: skip
    else:
        _rows_parallel(x, labels, z, w, has_w, mask, has_mask, ignore_index, soft, smoothing,
                       z_scale, grad_scale, loss, grad,
                       min(x.shape[0], threads * _BLOCKS_PER_THREAD))  # fmt: skip
    total = host_sums.numpy_sum(loss)
    return (host_sums.counted_mean(total, denominator) if mean else total), denominator, -1


@njit(**OPTIONS)
def probability_row_weights(z, w, mask, has_mask, out):
    """Each row's weight in the mean's denominator for probability targets and class weights
    ``w``: ``sum_c w_c z_c`` in float64 (the products are exact for float32 inputs), summed in
    class order, 0 where ``mask`` (if ``has_mask``) does not count the row; into ``out``."""
    for i in range(z.shape[0]):
        total = 0.0
        if not has_mask or mask[i]:
            zs = z[i]
            for c in range(zs.size):
                total += np.float64(w[c]) * np.float64(zs[c])
        out[i] = total
    return out


def run(
    x: np.ndarray,
    labels: np.ndarray,
    z: np.ndarray,
    w: np.ndarray,
    mask: np.ndarray,
    *,
    has_w: bool,
    has_mask: bool,
    soft: bool,
    ignore_index: int,
    smoothing: float,
    z_scale: float,
    mean: bool,
    denominator: float,
    grad: np.ndarray,
) -> tuple[float, float, int]:
    """``(the reduced loss, the mean's denominator, first bad row or -1)`` of the C-contiguous
    ``(N, C)`` float32, float64 or bfloat16 logits ``x`` (bfloat16 as its bits, uint16); the
    gradient (divided by the denominator for the ``mean``) written into ``grad`` (``x``'s
    dtype and shape, C-contiguous) unless a label is bad (the loss is then NaN).

    ``labels`` int64 ``(N,)`` for index targets (the denominator is then found here, with the
    labels' check), or ``z`` ``(N, C)`` C-contiguous probabilities with their ``denominator``
    given; the other an empty stand-in of the same kind (one compiled kernel per dtype).
    ``w`` float64 ``(C,)`` and ``mask`` bool ``(N,)`` are read where ``has_w`` / ``has_mask``.
    On the calling thread for small inputs, else shared among numba's threads.
    """
    threads = runtime.threads_for(x.size)
    args = (x, labels, z, w, has_w, mask, has_mask, ignore_index, soft, float(smoothing),
            float(z_scale), mean, float(denominator), grad, threads)  # fmt: skip
    return runtime.call(fused, (x.dtype, z.dtype), args, threads=threads)


# int64_labels: the labels as the kernels read them, for the host side (``_losses.training``).
__all__ = ["fused", "index_denominator", "int64_labels", "probability_row_weights", "run"]
