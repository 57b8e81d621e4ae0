"""Error-free transformations, double-float arithmetic and compensated sums, in Array API form.

The few steps of the formulas that need more than float64's 53 bits: ``two_sum`` (Knuth) and
``two_prod`` (Dekker, no FMA in the Array API), double-float products and sums, ``e^a`` as a
double-float, and sums along the class axis with about one rounding error whatever their length.
The kernels mirror these with FMA (``_kernels.vector_math``).
"""

from __future__ import annotations

import math
from typing import Any

from . import arrays
from .arrays import Array


def two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """Knuth's error-free sum: ``a + b == hi + lo`` exactly (for finite a, b)."""
    hi = a + b
    b_virtual = hi - a
    lo = (a - (hi - b_virtual)) + (b - b_virtual)
    return hi, lo


# Up to this many terms a plain sum is kept: its error, at most (n - 1) roundings of
# non-negative terms, stays within the bounds, and small rows pay no extra array operations.
_PLAIN_SUM_MAX = 32


def class_sum(v: Array, *, axis: int, xp: Any) -> Array:
    """``sum(v, axis, keepdims=True)`` with about one rounding error whatever the length.

    Pairwise: each level adds the two halves of the axis with :func:`two_sum` and collects
    the rounding errors, whose own sum needs no care (they are 2^-53 of the terms). A plain
    running sum gathers one error per term (951 float64 ULP at 20 000 classes of smoothed
    labels), and how a backend orders its sum is its own; this order is the library's. Infinite
    and NaN sums pass through (their error terms, NaN, are dropped).
    """
    if v.shape[axis] <= _PLAIN_SUM_MAX:
        return xp.sum(v, axis=axis, keepdims=True)
    axis %= v.ndim
    zero = arrays.scalar(0.0, v, xp=xp)
    errors = None
    while v.shape[axis] > 1:
        n = v.shape[axis]
        half = n // 2
        head = tuple(slice(None) if d != axis else slice(0, half) for d in range(v.ndim))
        tail = tuple(slice(None) if d != axis else slice(half, 2 * half) for d in range(v.ndim))
        hi, lo = two_sum(v[head], v[tail])
        lo = xp.sum(xp.where(xp.isfinite(hi), lo, zero), axis=axis, keepdims=True)
        errors = lo if errors is None else errors + lo
        if n % 2:
            odd = tuple(slice(None) if d != axis else slice(n - 1, n) for d in range(v.ndim))
            hi = xp.concat([hi, v[odd]], axis=axis)
        v = hi
    return v + xp.where(xp.isfinite(v), errors, zero)


_SPLITTER = 134217729.0  # 2^27 + 1


def _split(a: Array) -> tuple[Array, Array]:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def two_prod(a: Array, b: Array) -> tuple[Array, Array]:
    """Dekker's error-free product: ``a b == p + e`` exactly (no overflow, no underflow)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def fast_two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``a + b == s + e`` exactly for ``|a| >= |b|``."""
    s = a + b
    return s, b - (s - a)


def dd_mul(a: tuple, b: tuple) -> tuple[Array, Array]:
    p, e = two_prod(a[0], b[0])
    return fast_two_sum(p, e + (a[0] * b[1] + a[1] * b[0]))


def dd_add(a: tuple, b: tuple) -> tuple[Array, Array]:
    s, e = two_sum(a[0], b[0])
    return fast_two_sum(s, e + (a[1] + b[1]))


def _dd_const(value: str) -> tuple[float, float]:
    """A decimal constant as a double-float (hi, lo)."""
    from fractions import Fraction

    exact = Fraction(value)
    hi = float(exact)
    return hi, float(exact - Fraction(hi))


# ln 2 = DD_LN2[0] + DD_LN2[1] + DD_LN2[2]; the first with 32 bits, so that k * it is exact.
_LN2_EXACT = "0.69314718055994530941723212145817656807550013436025525412068000949339362196969"


def _ln2_parts() -> tuple[float, float, float]:
    from fractions import Fraction

    exact = Fraction(_LN2_EXACT)
    first = float(Fraction(math.floor(exact * 2**32), 2**32))
    rest = exact - Fraction(first)
    second = float(Fraction(math.floor(rest * 2**84), 2**84))
    return first, second, float(rest - Fraction(second))


DD_LN2 = _ln2_parts()


# 1/2, 1/6, 1/24, 1/120 as double-floats; 1/720 ... 1/10! in float64 (their terms are below
# 2^-51 of e^s - 1 for |s| <= 2^-9.5, where float64 is enough).
DD_TAYLOR = tuple(_dd_const(f"1/{math.factorial(k)}") for k in (2, 3, 4, 5))


TAYLOR_TAIL = tuple(1.0 / math.factorial(k) for k in (6, 7, 8, 9, 10))


_SQUARINGS = 8


def exp_dd(a: Array, *, xp: Any) -> tuple[Array, Array]:
    """``e^a`` as a double-float ``(hi, lo)``, relative error about 2^-100, for float64 ``a``
    in ``[-745, 0]`` with ``e^a`` normal (the caller keeps to that).

    ``a = k ln 2 + r`` (ln 2 in three parts: ``k ln2_1`` and ``a - k ln2_1`` exact), ``r`` a
    double-float with ``|r| <= 0.35``; ``e^(r/256) - 1`` by its Taylor series (terms above
    2^-51 of it in double-float), squared back 8 times as ``u (2 + u)``, ``e^a = 2^k (1 + u)``.
    """
    k = xp.round(a * (1.0 / math.log(2.0)))
    reduced = a - k * DD_LN2[0]
    p, p_err = two_prod(k, xp.full_like(k, DD_LN2[1]))
    r_hi, r_lo = two_sum(reduced, -p)
    r_hi, r_lo = fast_two_sum(r_hi, r_lo - p_err - k * DD_LN2[2])
    s = (r_hi / 256.0, r_lo / 256.0)
    tail = TAYLOR_TAIL[-1]
    for c in reversed(TAYLOR_TAIL[:-1]):
        tail = c + s[0] * tail
    poly: tuple = (tail, xp.zeros_like(tail))
    for c in reversed(DD_TAYLOR):
        poly = dd_add(dd_mul(s, poly), c)
    poly = dd_add(dd_mul(s, poly), (1.0, 0.0))
    u = dd_mul(s, poly)
    for _ in range(_SQUARINGS):
        u = dd_mul(u, dd_add(u, (2.0, 0.0)))
    # 1 + u error-free. Not fast_two_sum(1, u): under jax.jit XLA's simplifier rewrites its
    # (1 + u) - 1 to u (a constant 1 cancelled algebraically), which zeroes the error term;
    # two_sum with the constant second is left as written (tests/test_autodiff.py, jit).
    one_hi, one_lo = two_sum(u[0], xp.ones_like(u[0]))
    scale = xp.pow(xp.full_like(k, 2.0), k)
    return one_hi * scale, (one_lo + u[1]) * scale
