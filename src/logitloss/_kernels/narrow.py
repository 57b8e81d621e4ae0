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
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

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


@njit(**OPTIONS)
def widen_half_span(bits, out, start, stop):
    """``out[start:stop]`` (uint32, a float32 array's bits) from the float16 bits
    ``bits[start:stop]`` (uint16): exact (numba has no float16 on the CPU)."""
    source, target = bits[start:stop], out[start:stop]
    for i in range(source.size):
        h = np.uint32(source[i])
        sign = (h & np.uint32(0x8000)) << np.uint32(16)
        em = h & np.uint32(0x7FFF)
        # Normal: the exponent rebiased (127 - 15 = 112); infinity and NaN: the float32 ones,
        # the payload kept; subnormal (and zero): em * 2^-24, exact in float32.
        normal = (em << np.uint32(13)) + np.uint32(112 << 23)
        special = np.uint32(0x7F800000) | ((em & np.uint32(0x3FF)) << np.uint32(13))
        tiny = np.float32(np.int32(em)) * np.float32(2.0**-24)
        small = _float_bits(tiny)
        body = special if em >= np.uint32(0x7C00) else normal
        target[i] = sign | (body if em >= np.uint32(0x400) else small)


@intrinsic
def _float_bits(typingctx, f):
    """The bits of a float32 as a uint32 (a bit cast)."""
    if f != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


@njit(**OPTIONS)
def round_half_span(bits, out, start, stop):
    """``out[start:stop]`` (uint16, float16 bits) from the float32 bits ``bits[start:stop]``
    (uint32), rounded to nearest even as NumPy rounds (subnormal results included), overflow
    to infinity, NaN kept NaN (quiet, sign and the payload's high bits kept)."""
    source, target = bits[start:stop], out[start:stop]
    for i in range(source.size):
        b = source[i]
        sign = (b >> np.uint32(16)) & np.uint32(0x8000)
        a = b & np.uint32(0x7FFFFFFF)
        nan = np.uint32(0x7E00) | ((a >> np.uint32(13)) & np.uint32(0x3FF))
        # A float16 normal (from 2^-14): 13 bits dropped, to nearest even, the exponent
        # rebiased; a carry into the exponent is right (up to infinity past 65504).
        odd = (a >> np.uint32(13)) & np.uint32(1)
        normal = (a - np.uint32(112 << 23) + np.uint32(0xFFF) + odd) >> np.uint32(13)
        # Below 2^-14: units of 2^-24 are the significand (implicit bit set) shifted right by
        # 126 - exponent, to nearest even; at 25 and more the value is below half a unit
        # (float32 subnormals included): 0.
        shift = min(np.uint32(126) - min(a >> np.uint32(23), np.uint32(112)), np.uint32(25))
        m = (a & np.uint32(0x7FFFFF)) | np.uint32(0x800000)
        half_unit = (np.uint32(1) << (shift - np.uint32(1))) - np.uint32(1)
        small = (m + half_unit + ((m >> shift) & np.uint32(1))) >> shift
        body = small if a < np.uint32(0x38800000) else normal
        body = np.uint32(0x7C00) if a >= np.uint32(0x477FF000) else body
        target[i] = np.uint16(sign | (nan if a > np.uint32(0x7F800000) else body))


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


__all__ = [
    "round_half_span",
    "round_into",
    "round_span",
    "widen",
    "widen_half_span",
    "widen_span",
]
