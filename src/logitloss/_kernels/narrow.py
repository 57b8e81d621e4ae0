"""bfloat16 to float32 and back, for the kernels that compute narrow logits through float32
(``drivers.through_float32``, the training losses' fused path).

NumPy converts ml_dtypes' bfloat16 one element at a time (measured: 0.94 ms to widen and
2.4 ms to round 4 M elements, about what the cross-entropy kernel takes for the whole loss and
gradient); these are integer loops LLVM vectorises, on numba's threads for large arrays.
Widening is exact (a bfloat16 is the high half of a float32); rounding is to nearest, ties to
even, as ml_dtypes' and PyTorch's, overflow to infinity, NaN kept NaN (quiet, sign kept).
float16 and non-contiguous arrays take NumPy's conversions (NumPy's float16 ones are
vectorised).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit, prange

from . import runtime
from .loops import OPTIONS

# Elements per block of the parallel loops.
_BLOCK = 1 << 16


@njit(**OPTIONS)
def widen_span(bits, out, start, stop):
    """``out[start:stop]`` (uint32, a float32 array's bits) from the bfloat16 bits
    ``bits[start:stop]`` (uint16): exact."""
    # Slices, indexed from 0: an index LLVM cannot prove non-negative stops vectorisation.
    source, target = bits[start:stop], out[start:stop]
    for i in range(source.size):
        target[i] = np.uint32(source[i]) << np.uint32(16)


@njit(**OPTIONS)
def round_span(bits, out, start, stop):
    """``out[start:stop]`` (uint16, bfloat16 bits) from the float32 bits ``bits[start:stop]``
    (uint32), rounded to nearest even."""
    source, target = bits[start:stop], out[start:stop]
    for i in range(source.size):
        b = source[i]
        nan = (b & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
        # Round to nearest even on the 16 bits dropped; a carry into the exponent is right
        # (up to the next binade, or to infinity past the largest bfloat16).
        rounded = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
        target[i] = np.uint16(((b >> np.uint32(16)) | np.uint32(0x40)) if nan else rounded)


@njit(parallel=True, **OPTIONS)
def _widen_parallel(bits, out):
    n = bits.size
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        widen_span(bits, out, block * _BLOCK, min(n, (block + 1) * _BLOCK))


@njit(parallel=True, **OPTIONS)
def _round_parallel(bits, out):
    n = bits.size
    for block in prange((n + _BLOCK - 1) // _BLOCK):
        round_span(bits, out, block * _BLOCK, min(n, (block + 1) * _BLOCK))


def _run(span: Any, parallel: Any, source: np.ndarray, out: np.ndarray) -> None:
    if runtime.threads_for(source.size) > 1:
        runtime.call(parallel, (), (source, out))
    else:
        runtime.call(span, (), (source, out, 0, source.size))


def _is_bfloat16(a: np.ndarray) -> bool:
    return a.dtype.kind == "V" and a.itemsize == 2  # ml_dtypes' bfloat16 (name costs more)


def widen(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``a`` (float16 or bfloat16) as float32, exactly: into ``out`` (C-contiguous, ``a``'s
    shape) if given, else a new array."""
    out = np.empty(a.shape, np.float32) if out is None else out
    if not (_is_bfloat16(a) and a.flags.c_contiguous and out.flags.c_contiguous):
        out[...] = a
    elif a.size:
        _run(widen_span, _widen_parallel, a.reshape(-1).view(np.uint16),
             out.reshape(-1).view(np.uint32))  # fmt: skip
    return out


def round_into(out: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``out[...] = a``: float32 ``a`` rounded once to ``out``'s float16 or bfloat16 (same
    shape); returns ``out``."""
    fast = a.dtype == np.float32 and a.flags.c_contiguous and out.flags.c_contiguous
    if not (fast and _is_bfloat16(out)):
        # A float32 result beyond the narrow range rounds to inf: correct, not worth a warning.
        with np.errstate(over="ignore"):
            out[...] = a
        return out
    if a.size:
        _run(round_span, _round_parallel, a.reshape(-1).view(np.uint32),
             out.reshape(-1).view(np.uint16))  # fmt: skip
    return out


__all__ = ["round_into", "round_span", "widen", "widen_span"]
