"""The training loss's fused kernel for ``binary_cross_entropy``: the reduced loss and its
logits' gradient in one compiled call, for C-contiguous operands.

:func:`fused` is what ``kernel.logistic_loss_sum_and_grad`` does through the generic drivers
(``_kernels.drivers``: checks, broadcast plan, tiles, launch, Python sums), written for the
layouts a training step brings: logits and labels of one shape, ``pos_weight`` and the counted
weights each one value (:data:`SINGLE`), one per class along the last axis (:data:`CLASS`) or
one per element (:data:`FULL`). It takes the same tiles in the same order
(``layout``'s contiguous plan, short rows grouped as ``layout.group_rows`` groups them), runs
the same tile kernel (``kernel.sum_and_grad``) and sums the partial sums as ``math.fsum``
(``_kernels.host_sums``), so the value and gradient are the drivers' bit for bit, without the
tens of microseconds of Python around a small call. ``_losses.training`` calls it for those
layouts (and the drivers for any other); the JAX FFI handler calls it on XLA's buffers.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from ..._kernels import host_sums, narrow, runtime
from ..._kernels.loops import INLINE, OPTIONS, as_input
from ..._kernels.vector_math import prefer_wide_vectors
from .kernel import SumGradOperands, sum_and_grad, sum_and_grad_span

# How an operand broadcasts to the logits (layout's contiguous plan).
SINGLE, CLASS, FULL = 0, 1, 2

_TILE = runtime.TILE
_PARALLEL_MIN = runtime.PARALLEL_MIN
_serial = sum_and_grad.serial
_parallel = sum_and_grad.parallel


def kind(a: np.ndarray, shape: tuple[int, ...]) -> int:
    """The kind of a C-contiguous operand that broadcasts to ``shape``: :data:`SINGLE`,
    :data:`CLASS`, :data:`FULL`, or -1 for another broadcast (the drivers take it)."""
    if a.shape == shape:
        return FULL
    if a.size == 1:
        return SINGLE
    cols = shape[-1]
    if cols > 1 and a.size == cols and a.shape[-1] == cols:
        return CLASS
    return -1


@njit(**OPTIONS)
def _tile(a, k):
    """``np.tile(a, k)`` (``layout.group_rows``'s per-class operand of grouped rows)."""
    out = np.empty(a.size * k, a.dtype)
    for i in range(k):
        out[i * a.size : (i + 1) * a.size] = a
    return out


@njit(**OPTIONS)
def _piece(x, z, q, q_kind, w, w_kind, a, b, scale, grad, rows, cols, k, threads, half):
    """One piece of ``drivers.tiles``' plan: ``rows`` rows of ``cols``, or of ``k`` rows
    grouped as one (``k > 1``), the serial or the parallel kernel by size; returns the tiles'
    partial sums. ``x``, ``z`` and ``grad`` start at the piece."""
    length = cols * k
    # The row stride of the operands that vary everywhere (read only past the first row).
    stride = length
    q_base, q_stride = q, 0
    if q_kind == FULL:
        q_stride = stride
    elif q_kind == CLASS and k > 1:
        q_base = _tile(q, k)
    w_base, w_stride = w, 0
    if w_kind == FULL:
        w_stride = stride
    elif w_kind == CLASS and k > 1:
        w_base = _tile(w, k)
    partial = np.empty((rows * ((length + _TILE - 1) // _TILE), 2))
    parallel = threads > 1 and rows * length >= _PARALLEL_MIN
    _tiles(x, z, q_base, q_stride, q_kind != SINGLE, w_base, w_stride, w_kind != SINGLE, a, b,
           scale, grad, stride, partial, rows, length, parallel, half)  # fmt: skip
    return partial


def _tiles(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad, stride,
           partial, rows, length, parallel, half):  # fmt: skip
    """The tile kernel over a piece: ``kernel.sum_and_grad`` for float32 and float64 logits,
    :func:`_narrow_serial` / :func:`_narrow_parallel` for float16 and bfloat16 bits (uint16),
    picked at compile time."""


@overload(_tiles, inline="always")
def _tiles_typed(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad, stride,
                 partial, rows, length, parallel, half):  # fmt: skip
    if x.dtype == types.uint16:

        def narrow_tiles(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad,
                         stride, partial, rows, length, parallel, half):  # fmt: skip
            if parallel:
                _narrow_parallel(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b,
                                 scale, grad, stride, partial, rows, length, _TILE,
                                 half)  # fmt: skip
            else:
                _narrow_serial(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale,
                               grad, stride, partial, rows, length, _TILE, half)  # fmt: skip

        return narrow_tiles

    def wide_tiles(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad, stride,
                   partial, rows, length, parallel, half):  # fmt: skip
        ops = SumGradOperands(
            x, stride, z, stride, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale,
            grad, stride, partial,
        )  # fmt: skip
        if parallel:
            _parallel(ops, rows, length, _TILE)
        else:
            _serial(ops, rows, length, _TILE)

    return wide_tiles


# --- float16 and bfloat16: each tile through float32 scratch ---------------------------------
#
# The logits, the labels and a per-element pos_weight or weight of a narrow dtype come as their
# bits (uint16; ``half``: float16, else bfloat16). A tile's spans are widened (exactly) into
# float32 arrays, ``kernel.sum_and_grad_span`` runs on them as on float32 operands (the same
# loop: the same partial sum and float32 gradient), and the gradient is rounded once into the
# narrow output: what float32 copies, the float32 kernel and one rounding gave, without the
# copies (five full-size arrays and two more passes over memory).


def _staged(a, start, n, half):
    """``a[start:start + n]`` as float32: the span itself (float32 operands), or widened from
    float16 or bfloat16 bits (uint16) into a new array."""


@overload(_staged, inline="always")
def _staged_typed(a, start, n, half):
    if a.dtype != types.uint16:
        return lambda a, start, n, half: a[start : start + n]

    def widened(a, start, n, half):
        out = np.empty(n, np.float32)
        bits = out.view(np.uint32)
        if half:
            narrow.widen_half_span(a[start : start + n], bits, 0, n)
        else:
            narrow.widen_span(a[start : start + n], bits, 0, n)
        return out

    return widened


@njit(**INLINE)
def _narrow_tile(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad, stride,
                 partial, t, row, c0, c1, half):  # fmt: skip
    """Tile ``t`` (columns ``c0:c1`` of row ``row``) of narrow logits: ``kernel.sum_and_grad``
    on float32 spans, the gradient rounded into ``grad`` (bits)."""
    start = row * stride + c0
    n = c1 - c0
    xs = _staged(x, start, n, half)
    zs = _staged(z, start, n, half)
    # pos_weight and weights: the span, or the row's one value (``loops.span_or_first``).
    qs = _staged(q, row * q_stride + (c0 if q_varies else 0), n if q_varies else 1, half)
    ws = _staged(w, row * w_stride + (c0 if w_varies else 0), n if w_varies else 1, half)
    gs = np.empty(n, np.float32)
    partial[t, 0] = sum_and_grad_span(xs, zs, qs, q_varies, ws, w_varies, a, b, scale, gs, False)
    if half:
        narrow.round_half_span(gs.view(np.uint32), grad[start : start + n], 0, n)
    else:
        narrow.round_span(gs.view(np.uint32), grad[start : start + n], 0, n)


@njit(**OPTIONS)
def _narrow_serial(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad,
                   stride, partial, rows, cols, tile, half):  # fmt: skip
    """The tiles of narrow logits on the calling thread (``loops``' tile loop)."""
    per_row = (cols + tile - 1) // tile
    for t in range(rows * per_row):
        row = t // per_row
        c0 = (t - row * per_row) * tile
        c1 = min(cols, c0 + tile)
        prefer_wide_vectors()  # as loops' tile loop: the same sums as the float32 kernel's
        _narrow_tile(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad,
                     stride, partial, t, row, c0, c1, half)  # fmt: skip


@njit(parallel=True, **OPTIONS)
def _narrow_parallel(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad,
                     stride, partial, rows, cols, tile, half):  # fmt: skip
    """:func:`_narrow_serial`'s tiles shared among numba's threads."""
    per_row = (cols + tile - 1) // tile
    for t in prange(rows * per_row):
        row = t // per_row
        c0 = (t - row * per_row) * tile
        c1 = min(cols, c0 + tile)
        prefer_wide_vectors()  # as loops' tile loop: the same sums as the float32 kernel's
        _narrow_tile(x, z, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad,
                     stride, partial, t, row, c0, c1, half)  # fmt: skip


def _weights_sum(w, half):
    """``np.sum(w, dtype=np.float64)`` of float32 weights (``host_sums.numpy_cast_sum``), or
    of narrow weights' bits as of their float32 copy: each of NumPy's buffers widened first."""


@overload(_weights_sum, inline="always")
def _weights_sum_typed(w, half):
    if w.dtype != types.uint16:
        return lambda w, half: host_sums.numpy_cast_sum(w)

    def staged(w, half):
        total = 0.0
        lo = 0
        while lo < w.size:
            n = min(host_sums.BUFFER, w.size - lo)
            total += host_sums.pairwise(_staged(w, lo, n, half), 0, n)
            lo += n
        return total

    return staged


@njit(**OPTIONS)
def fused(x, z, q, q_kind, w, w_kind, weighted, wide_weights, w_size, mean, smoothing, grad,
          threads):  # fmt: skip
    """The reduced loss (a float64, not rounded) of the logits ``x``, the gradient, already
    divided by the mean's denominator, into ``grad``.

    ``x``, ``z``, ``grad`` C-contiguous ``(rows, cols)``, ``cols`` the logits' last axis;
    ``q`` and ``w`` flat, of their kinds (``w``
    ones of kind :data:`SINGLE` when not ``weighted``); ``w_size`` the weights' size as given
    (each is repeated ``x.size / w_size`` times in the broadcast); ``wide_weights``: sum them
    as float64 values (else cast, as ``np.sum(w, dtype=float64)``). ``threads`` as
    ``runtime.threads_for`` (numba's thread count set by the caller)."""
    return _fused(x, z, q, q_kind, w, w_kind, weighted, wide_weights, w_size, mean, smoothing,
                  grad, threads, False)  # fmt: skip


@njit(**OPTIONS)
def fused_narrow(x, z, q, q_kind, w, w_kind, weighted, w_size, mean, smoothing, grad, threads,
                 half):  # fmt: skip
    """:func:`fused` for float16 (``half``) or bfloat16 logits, as their bits (uint16), the
    gradient written rounded into ``grad`` (bits); ``z``, ``q`` and ``w`` float32, or bits of
    the logits' dtype (``q``, ``w`` then of kind :data:`FULL`). The result of float32 copies
    through :func:`fused`, the gradient rounded once, bit for bit."""
    return _fused(x, z, q, q_kind, w, w_kind, weighted, False, w_size, mean, smoothing, grad,
                  threads, half)  # fmt: skip


@njit(**INLINE)
def _fused(x, z, q, q_kind, w, w_kind, weighted, wide_weights, w_size, mean, smoothing, grad,
           threads, half):  # fmt: skip
    # The inputs as read-only arrays and ``half`` as a plain value (as_input): _piece's loops
    # are then compiled once per dtype, not again for each caller's mix of array flags.
    x, z, q, w, half = as_input(x), as_input(z), as_input(q), as_input(w), as_input(half)
    rows, cols = x.shape
    size = rows * cols
    denominator = np.float64(size)
    if weighted:
        total_w = host_sums.numpy_sum(w) if wide_weights else _weights_sum(w, half)
        denominator = total_w * (np.float64(size) / np.float64(max(1, w_size)))
    scale = 1.0
    if mean:
        scale = 1.0 / denominator if denominator != 0.0 else 0.0
    a, b = 1.0 - smoothing, smoothing / 2
    xf, zf, gf = x.reshape(size), z.reshape(size), grad.reshape(size)
    # layout's contiguous plan: rows of classes where an operand is per class, else one row;
    # then group_rows: k short rows read as one (a per-class operand repeated k times).
    if q_kind != CLASS and w_kind != CLASS:
        rows, cols = 1, size
    k = min(_TILE // max(cols, 1), rows)
    if k >= 2:
        groups = rows // k
        first = _piece(xf, zf, q, q_kind, w, w_kind, a, b, scale, gf, groups, cols, k, threads,
                       half)  # fmt: skip
        start = groups * k * cols
        rest = rows - groups * k
        second = np.empty((0, 2))
        if rest:
            q_rest = q[start:] if q_kind == FULL else q
            w_rest = w[start:] if w_kind == FULL else w
            second = _piece(xf[start:], zf[start:], q_rest, q_kind, w_rest, w_kind, a, b, scale,
                            gf[start:], rest, cols, 1, threads, half)  # fmt: skip
    else:
        first = _piece(xf, zf, q, q_kind, w, w_kind, a, b, scale, gf, rows, cols, 1, threads,
                       half)  # fmt: skip
        second = np.empty((0, 2))
    sums = np.empty(first.shape[0] + second.shape[0])
    sums[: first.shape[0]] = first[:, 0]
    sums[first.shape[0] :] = second[:, 0]
    total = host_sums.fsum(sums)
    return host_sums.counted_mean(total, denominator) if mean else total


_ONE = {np.dtype(np.float32): np.ones(1, np.float32), np.dtype(np.float64): np.ones(1, np.float64)}


def run(
    x: np.ndarray,
    z: np.ndarray,
    q: np.ndarray | None,
    w: np.ndarray | None,
    *,
    smoothing: float,
    mean: bool,
    grad: np.ndarray,
) -> float | None:
    """The reduced loss of float32 or float64 logits ``x`` and labels ``z``, the gradient into
    ``grad`` (new, C-contiguous, ``x``'s shape and dtype); ``q`` (``pos_weight``) and ``w``
    (the counted weights) None or broadcasting to ``x``. None, nothing written, unless all are
    C-contiguous of ``x``'s dtype, ``z`` of its shape, ``q`` and ``w`` of the kinds
    :func:`fused` reads, ``x`` not 0-d nor empty: the caller then takes the drivers."""
    shape = x.shape
    dtype = x.dtype
    if not (x.size and x.ndim and x.flags.c_contiguous and z.shape == shape
            and z.dtype == dtype and z.flags.c_contiguous):  # fmt: skip
        return None
    operands, kinds = [], []
    for a in (q, w):
        if a is None:
            operands.append(_ONE[dtype])
            kinds.append(SINGLE)
            continue
        a_kind = kind(a, shape)
        if a_kind < 0 or a.dtype != dtype or not a.flags.c_contiguous:
            return None
        operands.append(a.reshape(-1))
        kinds.append(a_kind)
    cols = shape[-1]
    rows = x.size // cols
    threads = runtime.threads_for(x.size)
    args = (x.reshape(rows, cols), z.reshape(rows, cols), operands[0], kinds[0], operands[1],
            kinds[1], w is not None, x.dtype.itemsize == 8, 1 if w is None else w.size, mean,
            float(smoothing), grad.reshape(rows, cols), threads)  # fmt: skip
    return runtime.call(fused, (x.dtype,), args, threads=threads)


_FLOAT32 = np.dtype(np.float32)


def run_narrow(
    x: np.ndarray,
    z: np.ndarray,
    q: np.ndarray | None,
    w: np.ndarray | None,
    *,
    smoothing: float,
    mean: bool,
    grad: np.ndarray,
) -> float | None:
    """:func:`run` for float16 or bfloat16 logits ``x`` (C-contiguous), the gradient rounded
    into ``grad`` (new, C-contiguous, ``x``'s shape and dtype): the value and gradient of
    float32 copies of every operand of ``x``'s dtype through :func:`run`, the gradient rounded
    once, bit for bit, without the copies (:func:`fused_narrow`). ``z``, ``q``, ``w`` of
    ``x``'s dtype or float32; None, nothing written, where :func:`run` would refuse the copies
    (another dtype, layout or broadcast)."""
    shape = x.shape
    dtype = x.dtype
    if not (x.size and x.ndim and x.flags.c_contiguous and grad.flags.c_contiguous
            and z.shape == shape and z.dtype in (dtype, _FLOAT32)):  # fmt: skip
        return None
    # An operand of x's dtype is read as its bits (a float32 copy would be C-contiguous: a
    # contiguous narrow copy is what the kernel reads then), one of kind SINGLE or CLASS
    # widened here (at most a row); a float32 one must be contiguous, as run() requires.
    if z.dtype == dtype:
        z = np.ascontiguousarray(z).view(np.uint16)
    elif not z.flags.c_contiguous:
        return None
    operands, kinds = [], []
    for a in (q, w):
        if a is None:
            operands.append(_ONE[_FLOAT32])
            kinds.append(SINGLE)
            continue
        a_kind = kind(a, shape)
        if a_kind < 0 or a.dtype not in (dtype, _FLOAT32):
            return None
        if a.dtype == _FLOAT32:
            if not a.flags.c_contiguous:
                return None
        elif a_kind == FULL:
            a = np.ascontiguousarray(a).view(np.uint16)
        else:
            a = a.astype(_FLOAT32)
        operands.append(a.reshape(-1))
        kinds.append(a_kind)
    cols = shape[-1]
    rows = x.size // cols
    threads = runtime.threads_for(x.size)
    args = (x.reshape(rows, cols).view(np.uint16), z.reshape(rows, cols), operands[0],
            kinds[0], operands[1], kinds[1], w is not None, 1 if w is None else w.size, mean,
            float(smoothing), grad.reshape(rows, cols).view(np.uint16), threads,
            dtype == np.float16)  # fmt: skip
    key = ("narrow", *(a.dtype for a in args[:2]), operands[0].dtype, operands[1].dtype)
    return runtime.call(fused_narrow, key, args, threads=threads)


__all__ = ["CLASS", "FULL", "SINGLE", "fused", "fused_narrow", "kind", "run", "run_narrow"]
