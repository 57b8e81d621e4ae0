"""Where the polynomial coefficients in ``vector_math`` come from (run by the tests; needs mpmath).

Each is a Chebyshev fit (``mpmath.chebyfit``, 80 digits) of the function the kernel evaluates,
close to the minimax polynomial of its degree, rounded to float64:

- ``exp_fast``: ``e^r`` on ``|r| <= ln(2)/2``, degree 6;
- ``exp_precise``: ``(e^r - 1 - r) / r^2`` on the same interval, degree 9 (so ``e^r`` to degree 11
  with the leading ``1 + r`` exact);
- ``log_fast`` / ``log_precise``: ``(2 atanh(s) - 2 s) / s^3`` as a polynomial in ``w = s^2`` on
  ``[0, 1/9]`` (``s = e / (2 + e)`` for ``e`` in ``[0, 1]``), degrees 4 and 9.

:func:`relative_error` measures what matters: the relative error of the whole approximation
(``p(r) ~ e^r``, ``2 s + s^3 P(s^2) ~ log1p(e)``) on a fine grid of its interval.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DIGITS = 80


def _mp() -> Any:
    import mpmath

    return mpmath


def _fit(f: Callable[[Any], Any], a: Any, b: Any, degree: int) -> tuple[float, ...]:
    mp = _mp()
    with mp.workdps(DIGITS):
        coefficients = mp.chebyfit(f, [a, b], degree + 1)
    return tuple(float(c) for c in reversed(coefficients))  # lowest degree first


def _exp_tail(r: Any) -> Any:
    mp = _mp()
    if abs(r) < mp.mpf(10) ** -25:
        return mp.mpf(1) / 2 + r / 6
    return (mp.exp(r) - 1 - r) / r**2


def _atanh_tail(w: Any) -> Any:
    mp = _mp()
    if w < mp.mpf(10) ** -40:
        return mp.mpf(2) / 3 + 2 * w / 5
    s = mp.sqrt(w)
    return (2 * mp.atanh(s) - 2 * s) / s**3


def fit_all() -> dict[str, tuple[float, ...]]:
    """The coefficients of ``vector_math``, recomputed."""
    mp = _mp()
    with mp.workdps(DIGITS):
        half_ln2 = mp.log(2) / 2
        return {
            "exp_fast": _fit(mp.exp, -half_ln2, half_ln2, 6),
            "exp_precise": _fit(_exp_tail, -half_ln2, half_ln2, 9),
            "log_fast": _fit(_atanh_tail, 0, mp.mpf(1) / 9, 4),
            "log_precise": _fit(_atanh_tail, 0, mp.mpf(1) / 9, 9),
        }


def _horner(coefficients: tuple[float, ...], t: Any) -> Any:
    mp = _mp()
    acc = mp.mpf(0)
    for c in reversed(coefficients):
        acc = acc * t + mp.mpf(c)
    return acc


def relative_error(name: str, coefficients: tuple[float, ...], points: int = 2000) -> float:
    """The largest relative error of the approximation ``name`` uses, over its interval, with
    exact arithmetic on the float64 coefficients (so: the approximation error alone)."""
    mp = _mp()
    worst = mp.mpf(0)
    with mp.workdps(DIGITS):
        half_ln2 = mp.log(2) / 2
        for i in range(points + 1):
            if name.startswith("exp"):
                r = -half_ln2 + 2 * half_ln2 * i / points
                if name == "exp_fast":
                    approx = _horner(coefficients, r)
                else:
                    approx = 1 + r + r**2 * _horner(coefficients, r)
                exact = mp.exp(r)
            else:
                s = mp.mpf(i) / points / 3 + mp.mpf(10) ** -30
                approx = 2 * s + s**3 * _horner(coefficients, s * s)
                exact = 2 * mp.atanh(s)
            worst = max(worst, abs(approx / exact - 1))
    return float(worst)
