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
from numba import njit

from ..._kernels import host_sums, runtime
from ..._kernels.loops import OPTIONS
from .kernel import SumGradOperands, sum_and_grad

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
def _piece(x, z, q, q_kind, w, w_kind, a, b, scale, grad, rows, cols, k, threads):
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
    ops = SumGradOperands(
        x, stride, z, stride, q_base, q_stride, q_kind != SINGLE, w_base, w_stride,
        w_kind != SINGLE, a, b, scale, grad, stride, partial,
    )  # fmt: skip
    if threads > 1 and rows * length >= _PARALLEL_MIN:
        _parallel(ops, rows, length, _TILE)
    else:
        _serial(ops, rows, length, _TILE)
    return partial


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
    rows, cols = x.shape
    size = rows * cols
    denominator = np.float64(size)
    if weighted:
        total_w = host_sums.numpy_sum(w) if wide_weights else host_sums.numpy_cast_sum(w)
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
        first = _piece(xf, zf, q, q_kind, w, w_kind, a, b, scale, gf, groups, cols, k, threads)
        start = groups * k * cols
        rest = rows - groups * k
        second = np.empty((0, 2))
        if rest:
            q_rest = q[start:] if q_kind == FULL else q
            w_rest = w[start:] if w_kind == FULL else w
            second = _piece(xf[start:], zf[start:], q_rest, q_kind, w_rest, w_kind, a, b, scale,
                            gf[start:], rest, cols, 1, threads)  # fmt: skip
    else:
        first = _piece(xf, zf, q, q_kind, w, w_kind, a, b, scale, gf, rows, cols, 1, threads)
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


__all__ = ["CLASS", "FULL", "SINGLE", "fused", "kind", "run"]
