"""Inline ``exp``, ``expm1`` and ``log1p`` in float64 for the kernels, written to vectorise.

numba compiles ``math.exp`` and ``math.log1p`` to scalar libm calls: pip's llvmlite has no SVML,
so a loop calling them does not vectorise and runs 3-12x slower than the memory limit
(``/work/shared/notes/exact-and-fast-kernels.md``). These are polynomials and bit manipulation
only, which LLVM turns into AVX-512 code.

``exp`` and ``log1p`` exist at two accuracies, picked by ``precise`` (a compile-time constant in
the kernels, so the branch folds away):

- ``precise=False``, for the loss of float16/bfloat16/float32 inputs: relative error 2^-28.6
  (exp) and 2^-31 (log1p), 1/16 of a float32 ULP or less; with the final rounding the loss
  stays within 0.53 ULP on the test grid (every term is non-negative: nothing amplifies them).
  Sizing the polynomials to float32 rather than to float64 is what keeps the kernel near the
  memory limit.
- ``precise=True``, for float64 inputs and for the gradient (whose two terms cancel near its
  zero, which multiplies their relative error): below 2^-55, so the float64 roundings dominate,
  as they do for libm.

The coefficients are Chebyshev fits (``mpmath.chebyfit``, 80 digits), near-minimax; the relative
error of each approximation is listed next to it. ``fit`` recomputes them, and the tests
check both the coefficients and the errors.

Also the small helpers both families' kernels use: ``is_float64`` (the compile-time choice of
the float64 path), ``any_nan``, ``two_sum``, ``add_reassoc``, ``max_nan``, ``min_ordered``,
``fma``, and ``prefer_wide_vectors`` (512-bit vectors for a kernel's function on AVX-512).

numba's on-disk cache tracks the source file of each compiled function, not of the functions it
inlines: after editing this file, delete the families' ``_losses/*/__pycache__``.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from . import runtime

# --- Bit manipulation and fused multiply-add ---------------------------------------------------


@intrinsic
def _float_from_bits(typingctx, bits):
    """Reinterpret an int64 as a float64 (an LLVM bitcast, which vectorises)."""
    sig = types.float64(types.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return sig, codegen


@intrinsic
def _bits_from_float(typingctx, value):
    """Reinterpret a float64 as an int64."""
    sig = types.int64(types.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return sig, codegen


@intrinsic
def fma(typingctx, a, b, c):
    """``a * b + c`` rounded once (``llvm.fma.f64``: one instruction on every x86-64 with FMA3,
    a correctly rounded libm call elsewhere)."""
    sig = types.float64(types.float64, types.float64, types.float64)

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        fnty = ir.FunctionType(double, [double, double, double])
        fn = builder.module.declare_intrinsic("llvm.fma", [double], fnty)
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def add_reassoc(typingctx, a, b):
    """``a + b`` that LLVM may reassociate (the ``reassoc`` fast-math flag on this addition only).

    A running sum ``s = add_reassoc(s, t)`` in a loop is then a reduction LLVM vectorises (into
    as many partial sums as vector lanes times interleaved streams), which it may not do for a
    plain addition (the order of a floating-point sum is part of its value). The flag is on the
    sum alone: the error-free transformations around it stay exact, which a function-wide
    ``fastmath`` would not guarantee.
    """
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):
        result = builder.fadd(args[0], args[1])
        result.flags.append("reassoc")
        return result

    return sig, codegen


@intrinsic
def max_nan(typingctx, a, b):
    """The larger of ``a`` and ``b``, NaN if either is (``llvm.maximum``), which LLVM vectorises
    as a reduction (a compare-and-select maximum it does not).

    In float32 when both are float32 (``llvm.maximum.f32``: twice the lanes of float64 and no
    widening; a maximum is exact in either), else in float64."""
    single = a == types.float32 and b == types.float32
    kind = types.float32 if single else types.float64
    sig = kind(kind, kind)

    def codegen(context, builder, signature, args):
        real = ir.FloatType() if single else ir.DoubleType()
        fnty = ir.FunctionType(real, [real, real])
        fn = builder.module.declare_intrinsic("llvm.maximum", [real], fnty)
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def min_ordered(typingctx, a, b):
    """The smaller of ``a`` and ``b``, for values that are never NaN (an index held as a
    float64): ``llvm.minnum`` with the ``nnan`` and ``nsz`` flags, one ``vminpd``, where
    ``llvm.minimum``'s NaN and signed-zero rules cost x86 about eight instructions a vector."""
    sig = types.float64(types.float64, types.float64)

    def codegen(context, builder, signature, args):
        double = ir.DoubleType()
        fnty = ir.FunctionType(double, [double, double])
        fn = builder.module.declare_intrinsic("llvm.minnum", [double], fnty)
        return builder.call(fn, args, fastmath=("nnan", "nsz"))

    return sig, codegen


# The function attribute clang's ``-mprefer-vector-width=512`` sets.
_PREFER_512_BIT = '"prefer-vector-width"="512"'


@intrinsic
def prefer_wide_vectors(typingctx):
    """In a kernel: let LLVM vectorise the function this is called in with 512-bit vectors
    where numba's target has AVX-512 (``runtime.wide_vectors``); nothing elsewhere.

    LLVM tunes recent Intel CPUs (Skylake-X on) to prefer 256-bit vectors: its loop vectoriser
    then runs 4 float64 lanes on a machine with 8. The function attribute
    ``"prefer-vector-width"="512"`` lifts that preference for this one function; its cost
    model still picks each loop's width (nothing is forced, so LLVM prints no remark for a loop
    it leaves alone, as it did under ``-force-vector-width=8``). The attribute belongs to the
    function being lowered: call this in each function whose loops should widen, a function
    compiled apart (a softmax row function) or a ``prange`` body (numba outlines it into a
    function of its own); functions numba inlines into it take it too.

    llvmlite's IR builder checks function attributes against LLVM's enumerated ones, which do
    not include this string attribute: it is added to the function's attribute set directly,
    and printed as written."""
    sig = types.none()

    def codegen(context, builder, signature, args):
        if runtime.wide_vectors():
            set.add(builder.function.attributes, _PREFER_512_BIT)
        return context.get_dummy_value()

    return sig, codegen


def is_float64(a):  # pragma: no cover - replaced in numba
    """In a kernel: whether the array ``a`` holds float64, a compile-time constant (float64
    data takes the wide, float64-accurate path)."""
    raise NotImplementedError


@overload(is_float64, inline="always")
def _is_float64_impl(a):
    wide = isinstance(a, types.Array) and a.dtype == types.float64
    if wide:
        return lambda a: True
    return lambda a: False


@njit(inline="always", error_model="numpy")
def any_nan(a):
    """Whether the 1-D array ``a`` holds a NaN: a pass over a tile or row while it is in cache
    (the kernels mark the rare elements they recompute as NaN), cheaper than a reduction in the
    main loop (measured)."""
    found = False
    for j in range(a.size):
        found |= a[j] != a[j]
    return found


@njit(inline="always", error_model="numpy")
def two_sum(a: float, b: float) -> tuple[float, float]:
    """Knuth's error-free sum: ``a + b == s + e`` exactly, for finite ``a`` and ``b`` (the
    kernels compile without fast-math, so LLVM keeps every step)."""
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


# --- exp(t) for t <= 0 -------------------------------------------------------------------------

_LOG2E = 1.4426950408889634
# ln 2 split so that k * _LN2_HI is exact for |k| < 2^11 (Cody and Waite): the reduced argument
# t - k ln 2 is then exact up to the tiny k * _LN2_LO term (the precise exp).
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
# ln 2 rounded to float64, for the fast exp: t - k ln 2 in one FMA is off by at most
# |k| |ln 2 - _LN2| <= 1077 * 2^-54 < 2^-43, a relative error of e^t far below the fast
# polynomial's 2^-28.6, for one FMA fewer per element (measured: the loss's exp pass 15 % faster).
_LN2 = 0.6931471805599453
# Adding 1.5 * 2^52 rounds to an integer (to nearest, ties to even) and leaves it in the low bits.
_SHIFT = 6755399441055744.0
_SHIFT_BITS = 0x4338000000000000
# Below this e^t is less than half the smallest subnormal: it rounds to 0.
_EXP_FLOOR = -746.0

# e^r on |r| <= ln(2)/2, degree 6, relative error 2.5e-9 (2^-28.6).
_EXP_FAST = (
    1.0,
    1.000000037716214,
    0.5000000047117757,
    0.16666415514653277,
    0.04166635289677516,
    0.008375126398153335,
    0.0013941108433972674,
)
# (e^r - 1 - r) / r^2 on |r| <= ln(2)/2, degree 9 (e^r to degree 11), relative error of e^r
# 1.6e-17 (2^-55.8).
_EXP_PRECISE = (
    0.5000000000000001,
    0.16666666666666669,
    0.041666666666624164,
    0.008333333333330065,
    0.0013888888917196719,
    0.00019841269863040545,
    2.4801521322368692e-05,
    2.7557268480310024e-06,
    2.7620075879983367e-07,
    2.5100375832561234e-08,
)


# Floor of the narrow (float16/bfloat16/float32 results) exp: e^-708 is still a normal float64,
# so 2^k is one bit pattern. What it leaves out, e^t < 3.3e-308, is below half the smallest
# float32 subnormal even after scaling by the largest float32 weight (3.4e38), so no narrow result
# can see it (see the narrow elements of the logistic kernels).
_EXP_FLOOR_NARROW = -708.0


@njit(inline="always", error_model="numpy")
def _reduce(t: float, subnormal: bool, precise: bool) -> tuple[int, float]:
    """``t = k ln 2 + r``, ``|r| <= ln(2)/2`` (a hair more: ``k`` is rounded from ``t log2(e)``),
    after flooring ``t`` (NaN stays NaN); ``r`` to float64 accuracy where ``precise``."""
    # NaN compares false and is not clamped: it stays NaN through the arithmetic.
    if subnormal:
        if t < _EXP_FLOOR:
            t = _EXP_FLOOR
    elif t < _EXP_FLOOR_NARROW:
        t = _EXP_FLOOR_NARROW
    shifted = fma(t, _LOG2E, _SHIFT)
    k = _bits_from_float(shifted) - _SHIFT_BITS
    kf = shifted - _SHIFT
    if precise:
        return k, fma(-kf, _LN2_LO, fma(-kf, _LN2_HI, t))
    return k, fma(-kf, _LN2, t)


@njit(inline="always", error_model="numpy")
def _precise_minus_one(r: float) -> float:
    """``e^r - 1 = r + r^2 Q(r)`` with the precise polynomial, formed without the 1."""
    c = _EXP_PRECISE
    q = fma(r, c[9], c[8])
    q = fma(r, q, c[7])
    q = fma(r, q, c[6])
    q = fma(r, q, c[5])
    q = fma(r, q, c[4])
    q = fma(r, q, c[3])
    q = fma(r, q, c[2])
    q = fma(r, q, c[1])
    q = fma(r, q, c[0])
    return fma(r * r, q, r)


@njit(inline="always", error_model="numpy")
def _two_to(k: int, subnormal: bool) -> tuple[float, float]:
    """``2^k`` as two factors whose product is applied one after the other: with
    ``subnormal``, halves of ``k`` (so ``k`` down to -1076 needs no special case), else
    ``(2^k, 1)``."""
    if subnormal:
        half = k >> 1
        return _float_from_bits((half + 1023) << 52), _float_from_bits((k - half + 1023) << 52)
    return _float_from_bits((k + 1023) << 52), 1.0


@njit(inline="always", error_model="numpy")
def exp_nonpos(t: float, precise: bool, subnormal: bool) -> float:
    """``e^t`` for ``t <= 0`` (also ``-inf``; NaN -> NaN).

    ``t = k ln 2 + r`` with ``|r| <= ln(2)/2``, ``e^t = 2^k e^r``. ``precise`` picks the
    polynomial. ``subnormal``: results down to the smallest subnormal, ``2^k`` built in two
    halves so that ``k`` down to -1076 needs no special case (``p 2^(k//2)`` is normal and the
    second scaling rounds once); else ``t`` is floored at -708 and scaled once.
    """
    k, r = _reduce(t, subnormal, precise)
    if precise:
        p = 1.0 + _precise_minus_one(r)
    else:
        c = _EXP_FAST
        p = fma(r, c[6], c[5])
        p = fma(r, p, c[4])
        p = fma(r, p, c[3])
        p = fma(r, p, c[2])
        p = fma(r, p, c[1])
        p = fma(r, p, c[0])
    scale_a, scale_b = _two_to(k, subnormal)
    return (p * scale_a) * scale_b


@njit(inline="always", error_model="numpy")
def exp_expm1_nonpos(t: float, subnormal: bool) -> tuple[float, float]:
    """``(e^t, e^t - 1)`` for ``t <= 0``, both float64-accurate (the precise polynomial).

    ``e^t - 1 = 2^k (p - 1) + (2^k - 1)`` with ``p - 1 = r + r^2 Q(r)`` formed without the 1, so
    it keeps its relative accuracy as ``t -> 0`` (``2^k - 1`` is exact; one FMA). Meant for
    ``t > -ln 3`` (``k >= -2``), where the terms cannot cancel; elsewhere it is not used.
    """
    k, r = _reduce(t, subnormal, True)
    p_minus_one = _precise_minus_one(r)
    p = 1.0 + p_minus_one
    scale_a, scale_b = _two_to(k, subnormal)
    e = (p * scale_a) * scale_b
    # A subnormal e^t is far from -ln 3, where e^t - 1 is wanted: the product scale is enough.
    scale = scale_a * scale_b
    return e, fma(scale, p_minus_one, scale - 1.0)


# --- log1p(e) for 0 <= e <= 1 ------------------------------------------------------------------

# log1p(e) = 2 atanh(s) with s = e / (2 + e) in [0, 1/3]: 2s + s^3 P(s^2).
# Degree 4 in s^2, relative error 3.9e-10 (2^-31.3).
_LOG_FAST = (
    0.6666666732052742,
    0.3999970633192972,
    0.28592357994302836,
    0.21706575800880373,
    0.2322432922402335,
)
# Degree 9 in s^2, relative error 7.1e-18 (2^-57).
_LOG_PRECISE = (
    0.6666666666666666,
    0.40000000000014585,
    0.2857142856710876,
    0.22222222717427864,
    0.18181789436132859,
    0.15385570064958623,
    0.13314144209654935,
    0.12001072809590713,
    0.08800738486144674,
    0.1616404561194353,
)


@njit(inline="always", error_model="numpy")
def log1p_unit(e: float, precise: bool) -> float:
    """``log(1 + e)`` for ``0 <= e <= 1`` (NaN -> NaN).

    Via ``s = e / (2 + e)``: no cancellation, and relative accuracy down to the smallest
    subnormal ``e`` (``2s`` is exact there). The precise version corrects ``s`` for the rounding
    of ``2 + e`` and of the division (one FMA each), which otherwise costs up to 1 ULP.
    """
    d = 2.0 + e
    s = e / d
    w = s * s
    if precise:
        c = _LOG_PRECISE
        p = fma(w, c[9], c[8])
        p = fma(w, p, c[7])
        p = fma(w, p, c[6])
        p = fma(w, p, c[5])
        p = fma(w, p, c[4])
        p = fma(w, p, c[3])
        p = fma(w, p, c[2])
        p = fma(w, p, c[1])
        p = fma(w, p, c[0])
        # 2 + e = d + d_lo exactly (Fast2Sum, 2 >= e); e - s (d + d_lo) = the division's error.
        d_lo = e - (d - 2.0)
        s_lo = fma(-s, d_lo, fma(-s, d, e)) / d
        return fma(2.0, s, fma(s * w, p, 2.0 * s_lo))
    c = _LOG_FAST
    p = fma(w, c[4], c[3])
    p = fma(w, p, c[2])
    p = fma(w, p, c[1])
    p = fma(w, p, c[0])
    return fma(s * w, p, 2.0 * s)


LN3 = math.log(3.0)
