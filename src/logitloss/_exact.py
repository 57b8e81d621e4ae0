"""Exact values with mpmath, and errors in ULPs: the oracle for tests, the accuracy report and
the demo.

The losses are evaluated from their definitions (``-z log sigma(x) - (1 - z) log(1 - sigma(x))``
and ``sum_j z_j (logsumexp(x) - x_j)``) at high precision on the exact binary values of the
inputs, independently of ``_formulas``. A term whose coefficient is zero is zero (its limit),
also against an infinite logit. mpmath is imported on first use (``pip install mpmath``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

# Precision (p, counting the implicit bit) and minimum normal exponent of each format.
FORMATS: dict[str, tuple[int, int]] = {
    "float16": (11, -14),
    "bfloat16": (8, -126),
    "float32": (24, -126),
    "float64": (53, -1022),
}

DIGITS = 50


def _mp() -> Any:
    import mpmath

    return mpmath


def _term(coef: Any, softplus_arg: Any) -> Any:
    """``coef * log(1 + e^t)`` with ``0 * anything = 0``."""
    mp = _mp()
    if coef == 0:
        return mp.mpf(0)
    return coef * mp.log1p(mp.exp(softplus_arg))


def logistic(x: float, z: float, q: float = 1.0) -> Any:
    """Exact ``q z softplus(-x) + (1 - z) softplus(x)`` as an mpmath number."""
    mp = _mp()
    if math.isnan(x) or math.isnan(z) or math.isnan(q):
        return mp.nan
    with mp.workdps(DIGITS):
        x, z, q = mp.mpf(x), mp.mpf(z), mp.mpf(q)
        return _term(q * z, -x) + _term(1 - z, x)


def softmax(x: Sequence[float], z: Sequence[float]) -> Any:
    """Exact ``sum_j z_j (logsumexp(x) - x_j)`` as an mpmath number (NaN where no limit)."""
    mp = _mp()
    if any(math.isnan(v) for v in (*x, *z)):
        return mp.nan
    top = max(x)
    if top == -math.inf or sum(v == math.inf for v in x) > 1:
        return mp.nan
    with mp.workdps(DIGITS):
        total = mp.mpf(0)
        for j, (xj, zj) in enumerate(zip(x, z, strict=True)):
            if zj == 0:
                continue
            if xj == -math.inf or (top == math.inf and xj != math.inf):
                gap = mp.inf  # logsumexp - x_j
            else:
                # logsumexp(x) - x_j = log1p(sum_{k != j} e^{x_k - x_j}), differences exact.
                rest = mp.fsum(
                    mp.exp(mp.fsub(xk, xj, exact=True))
                    for k, xk in enumerate(x)
                    if k != j and xk != -math.inf
                )
                gap = mp.log1p(rest)
            total += mp.mpf(zj) * gap
        return total


def sparse_softmax(x: Sequence[float], label: int) -> Any:
    """Exact ``logsumexp(x) - x[label]``."""
    return softmax(x, [1.0 if j == label else 0.0 for j in range(len(x))])


def rounds_to_infinity(fmt: str) -> Any:
    """The smallest magnitude that rounds to infinity in ``fmt``: the largest finite value plus
    half its ULP, ``(2 - 2^-p) 2^emax`` (65520 in float16), as an mpmath number."""
    mp = _mp()
    precision, emin = FORMATS[fmt]
    with mp.workdps(DIGITS):
        return (2 - mp.mpf(2) ** -precision) * mp.mpf(2) ** (1 - emin)


def ulp_error(computed: float, exact: Any, fmt: str) -> float:
    """``|computed - exact|`` in units of the last place of ``exact`` in format ``fmt``.

    Subnormal results are measured in the smallest subnormal; a result that rounds to infinity
    (``exact`` beyond the largest finite value by half an ULP) is exact if ``computed`` is inf.
    NaN against NaN is 0, NaN against a number is inf.
    """
    mp = _mp()
    precision, emin = FORMATS[fmt]
    if mp.isnan(exact) or math.isnan(computed):
        return 0.0 if (mp.isnan(exact) and math.isnan(computed)) else math.inf
    if math.isinf(computed):
        overflow = mp.isinf(exact) or abs(exact) >= rounds_to_infinity(fmt)
        same_sign = (computed > 0) == (exact > 0)
        return 0.0 if overflow and same_sign else math.inf
    if mp.isinf(exact):
        return math.inf
    with mp.workdps(DIGITS):
        exponent = emin if exact == 0 else max(int(mp.frexp(exact)[1]) - 1, emin)
        ulp = mp.ldexp(1, exponent - precision + 1)
        return float(abs(mp.mpf(computed) - exact) / ulp)
