"""NumPy for :mod:`.chunked`: the backend adaptor and the entry point of NumPy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._core.arrays import Array
from .chunked import CHUNK_BYTES, Options, chunked, reduced


class NumpyOps:
    """NumPy: ``matmul(out=)`` into reused buffers, NumPy's own BLAS only.

    SciPy's ``sgemm`` could accumulate ``d_weight`` in place (``beta = 1``), but SciPy ships a
    second OpenBLAS: alternating calls between the two thread pools measured 1.6x slower at
    N = 2048, H = 256, V = 32000 (0.99 vs 0.66 s), and no faster at the issue's size.
    """

    float64 = np.float64
    row_sum_dtype = np.float64  # 8.7 vs 2.9 ms per 256 x 32768 chunk: ~1% of the step

    @staticmethod
    def work_dtype(dtype: Any) -> Any:
        return dtype  # half precision was widened to float32 before (no half BLAS in NumPy)

    @staticmethod
    def logits(hc: Array, weight: Array, bias: Array | None, out: Array) -> Array:
        np.matmul(hc, weight.T, out=out)
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def exp_(x: Array) -> None:
        np.exp(x, out=x)

    @staticmethod
    def grad_hidden(g: Array, weight: Array, out: Array) -> None:
        np.matmul(g, weight, out=out)

    @staticmethod
    def accumulate_weight(d_weight: Array, g: Array, hc: Array, scratch: list) -> None:
        # NumPy's matmul has no "C += A B": G.T @ hc is formed in vocabulary blocks of 16 MiB
        # (a buffer reused by every chunk, not a V x H temporary) and added in place.
        v, h = d_weight.shape
        block = max(1, min(v, CHUNK_BYTES // 4 // (d_weight.itemsize * h)))
        if not scratch:
            scratch.append(np.empty((block, h), d_weight.dtype))
        buf = scratch[0]
        for v0 in range(0, v, block):
            v1 = min(v0 + block, v)
            part = buf[: v1 - v0]
            np.matmul(g[:, v0:v1].T, hc, out=part)
            d_weight[v0:v1] += part


def numpy_pass(
    h: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    b: np.ndarray | None,
    options: Options,
    *,
    grads: tuple[bool, bool, bool],
    upstream: Any = None,
) -> tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(loss, d_hidden, d_weight, d_bias)`` of validated NumPy arrays, in their dtype and
    shapes: the loss reduced (a NumPy scalar for "mean"/"sum"), the gradients of
    ``sum(upstream * loss)`` for the flags of ``grads`` (None for the others)."""
    dtype = h.dtype
    shape = y.shape
    # NumPy has no half-precision BLAS: float16 (and bfloat16) go through float32 copies.
    if dtype.itemsize < 4:
        h, w = h.astype(np.float32), w.astype(np.float32)
        b = None if b is None else b.astype(np.float32)
    h2 = h.reshape(-1, h.shape[-1])
    y1 = y.reshape(-1).astype(np.intp)
    if upstream is not None and options.reduction == "none":
        upstream = np.asarray(upstream, np.float64).reshape(-1)
    result = chunked(h2, w, b, y1, options, ops=NumpyOps, upstream=upstream, grads=grads)
    out = reduced(result, options.reduction, dtype, shape)
    out = out if options.reduction == "none" else out[()]
    dh, dw, db = result.d_hidden, result.d_weight, result.d_bias
    if dh is not None:
        dh = dh.reshape(h.shape).astype(dtype, copy=False)
    if dw is not None:
        dw = dw.astype(dtype, copy=False)
    if db is not None:
        db = db.astype(dtype, copy=False)
    return out, dh, dw, db
