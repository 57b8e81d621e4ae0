"""Exact values with mpmath, and errors in ULPs: the oracle for tests, the accuracy report and
the demo.

The losses are evaluated from their definitions (``-z log sigma(x) - (1 - z) log(1 - sigma(x))``
and ``sum_j z_j (logsumexp(x) - x_j)``) at high precision on the exact binary values of the
inputs, independently of the library's formulas (``_losses``). A term whose coefficient is
zero is zero (its limit), also against an infinite logit. mpmath is imported on first use
(``pip install mpmath``).

The gradients likewise (``logistic_grad``, ``softmax_grad``), each the difference of two
non-negative terms evaluated at the precision that resolves it, with the larger term as the
scale of ``scale_ulp_error`` (the error no formula avoids near the gradient's zero).

The tools reach these through the registry's losses: :data:`LOSSES` maps each loss name
(``logitloss._api.registry``) to its :class:`Exact` formulas, and :func:`point` turns one point
of a loss (a logit or a row, its label, its pos_weight) into their arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._api.registry import INDICES, Loss

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


# --- Gradients ---------------------------------------------------------------------------------
#
# The gradients are evaluated from their definitions as the difference of two non-negative
# terms, each computed to full relative precision. Only the gradient's own zero cancels; there
# the evaluation is repeated at doubled precision until the difference is resolved, so the
# oracle is correct to ``DIGITS`` digits of the result, not only of the terms.

LOGISTIC_WRT = ("logits", "labels", "pos_weight")
SOFTMAX_WRT = ("logits", "labels")
_MAX_DIGITS = 1600  # resolves differences down to 1e-1580 of the terms: any float64 gradient


def _resolved(terms: Any) -> Any:
    """``a - b`` for ``a, b = terms()``, at the precision that resolves the difference.

    ``terms`` is called under successively larger ``mp.workdps`` until ``|a - b|`` is at least
    ``10^(20 - digits)`` of ``max(|a|, |b|)`` (or ``_MAX_DIGITS`` is reached, where what is left
    is far below every format's smallest subnormal relative to the terms).
    """
    mp = _mp()
    digits = DIGITS
    while True:
        with mp.workdps(digits):
            a, b = terms()
            if mp.isinf(a) or mp.isinf(b):
                return a - b if not (mp.isinf(a) and mp.isinf(b)) else mp.nan
            difference = mp.fsub(a, b)
            scale = max(abs(a), abs(b))
            resolved = scale == 0 or abs(difference) >= scale * mp.mpf(10) ** (20 - digits)
            if resolved or digits >= _MAX_DIGITS:
                return difference
        digits *= 2


def _sigmoid(x: Any) -> Any:
    """``1 / (1 + e^-x)``, 0 and 1 at ``-inf`` and ``+inf``."""
    mp = _mp()
    return 1 / (1 + mp.exp(-x))


def _scaled_sigmoid(coef: Any, x: Any) -> Any:
    """``coef * sigma(x)`` with ``0 * anything = 0``."""
    mp = _mp()
    return mp.mpf(0) if coef == 0 else coef * _sigmoid(x)


def _logistic_terms(x: float, z: float, q: float, wrt: str) -> tuple[Any, Any]:
    """The two non-negative terms whose difference is the gradient, at the current precision.

    logits: ``(1 - z) sigma(x)`` and ``q z sigma(-x)``; labels: ``q softplus(-x)`` and
    ``softplus(x)``; pos_weight: ``z softplus(-x)`` and 0. ``1 - z`` and ``q z`` are exact.
    """
    mp = _mp()
    xm, zm, qm = mp.mpf(x), mp.mpf(z), mp.mpf(q)
    one_minus_z = mp.fsub(1, zm, exact=True)
    qz = mp.fmul(qm, zm, exact=True)
    if wrt == "logits":
        return _scaled_sigmoid(one_minus_z, xm), _scaled_sigmoid(qz, -xm)
    if wrt == "labels":
        return _term(qm, -xm), _term(mp.mpf(1), xm)
    if wrt == "pos_weight":
        return _term(zm, -xm), mp.mpf(0)
    raise ValueError(f"wrt must be one of {LOGISTIC_WRT}; got {wrt!r}")


def logistic_grad(x: float, z: float, q: float = 1.0, wrt: str = "logits") -> Any:
    """Exact derivative of ``q z softplus(-x) + (1 - z) softplus(x)`` with respect to ``wrt``.

    - ``"logits"``: ``(1 - z) sigma(x) - q z sigma(-x)`` (limits ``1 - z`` at ``+inf`` and
      ``-q z`` at ``-inf``);
    - ``"labels"``: ``q softplus(-x) - softplus(x)`` (``-x`` for ``q = 1``);
    - ``"pos_weight"``: ``z softplus(-x)``.

    A term whose coefficient is zero is zero, also against an infinite logit. NaN where an
    input the derivative depends on is NaN (the labels' derivative does not depend on ``z``,
    nor the pos_weight derivative on ``q``); NaN where both terms are infinite (``inf - inf``).
    """
    mp = _mp()
    used = {"logits": (x, z, q), "labels": (x, q), "pos_weight": (x, z)}.get(wrt)
    if used is None:
        raise ValueError(f"wrt must be one of {LOGISTIC_WRT}; got {wrt!r}")
    if any(math.isnan(v) for v in used):
        return mp.nan
    return _resolved(lambda: _logistic_terms(x, z, q, wrt))


def logistic_grad_scale(x: float, z: float, q: float = 1.0, wrt: str = "logits") -> Any:
    """The larger of the two terms of :func:`logistic_grad`: the scale of its rounding errors.

    ``max((1 - z) sigma(x), q z sigma(-x))`` for the logits, ``max(q softplus(-x),
    softplus(x))`` for the labels, ``z softplus(-x)`` (the value) for ``pos_weight``.
    """
    mp = _mp()
    if any(math.isnan(v) for v in (x, z, q)):
        return mp.nan
    with mp.workdps(DIGITS):
        a, b = _logistic_terms(x, z, q, wrt)
        return max(abs(a), abs(b))


def _softmax_row_state(x: Sequence[float]) -> str:
    """``"nan"`` (NaN in the row, all ``-inf``, or two ``+inf``), ``"onehot"`` (one ``+inf``),
    or ``"finite"`` (finite maximum)."""
    if any(math.isnan(v) for v in x):
        return "nan"
    if max(x) == -math.inf or sum(v == math.inf for v in x) > 1:
        return "nan"
    return "onehot" if max(x) == math.inf else "finite"


def _exact_sum(values: Sequence[float]) -> Any:
    """The exact sum of binary floating-point values, as an mpmath number."""
    mp = _mp()
    total = mp.mpf(0)
    for v in values:
        total = mp.fadd(total, v, exact=True)
    return total


def _softmax_logits_terms(x: Sequence[float], z: Sequence[float], j: int) -> tuple[Any, Any]:
    """``softmax_j * S`` and ``z_j`` for a row with a finite maximum, at the current precision.

    ``softmax_j = 1 / (1 + R)``, ``R = sum_{k != j} e^(x_k - x_j)`` with the differences exact,
    so ``softmax_j S - z_j = ((S - z_j) - z_j R) / (1 + R)``; the two terms returned are the
    numerator's, divided by ``1 + R`` (``S - z_j`` is the exact sum of the other labels).
    """
    mp = _mp()
    if x[j] == -math.inf:
        return mp.mpf(0), mp.mpf(z[j])
    rest = mp.fsum(
        mp.exp(mp.fsub(xk, x[j], exact=True))
        for k, xk in enumerate(x)
        if k != j and xk != -math.inf
    )
    others = _exact_sum([zk for k, zk in enumerate(z) if k != j])
    zj = mp.mpf(z[j])
    return others / (1 + rest), (zj * rest if zj != 0 else mp.mpf(0)) / (1 + rest)


def _softmax_gap(x: Sequence[float], j: int) -> Any:
    """``logsumexp(x) - x_j`` for a row with a finite maximum or one ``+inf`` (``+inf`` where
    ``x_j`` is ``-inf`` or below an infinite maximum)."""
    mp = _mp()
    if x[j] == -math.inf or (max(x) == math.inf and x[j] != math.inf):
        return mp.inf
    if x[j] == math.inf:
        return mp.mpf(0)
    rest = mp.fsum(
        mp.exp(mp.fsub(xk, x[j], exact=True))
        for k, xk in enumerate(x)
        if k != j and xk != -math.inf
    )
    return mp.log1p(rest)


def softmax_grad(x: Sequence[float], z: Sequence[float], wrt: str = "logits") -> list[Any]:
    """Exact derivative of ``sum_j z_j (logsumexp(x) - x_j)``, one mpmath number per class.

    - ``"logits"``: ``softmax(x)_j * sum(z) - z_j`` (the true derivative, for labels of any
      sum); a row with one ``+inf`` logit has the one-hot softmax, a ``-inf`` logit softmax 0;
    - ``"labels"``: ``logsumexp(x) - x_j`` (``+inf`` where that has no finite value).

    Rows without a limit (a NaN logit, all ``-inf``, more than one ``+inf``) are NaN in every
    class, as is the logits' derivative of a row with a NaN label. The labels' derivative does
    not depend on the labels.
    """
    mp = _mp()
    if wrt not in SOFTMAX_WRT:
        raise ValueError(f"wrt must be one of {SOFTMAX_WRT}; got {wrt!r}")
    n = len(x)
    state = _softmax_row_state(x)
    if state == "nan" or (wrt == "logits" and any(math.isnan(v) for v in z)):
        return [mp.nan] * n
    if wrt == "labels":
        with mp.workdps(DIGITS):
            return [_softmax_gap(x, j) for j in range(n)]
    if state == "onehot":
        top = list(x).index(math.inf)
        with mp.workdps(DIGITS):
            others = _exact_sum([zk for k, zk in enumerate(z) if k != top])
            return [others if j == top else -mp.mpf(z[j]) for j in range(n)]
    return [_resolved(lambda j=j: _softmax_logits_terms(x, z, j)) for j in range(n)]


def softmax_grad_scale(x: Sequence[float], z: Sequence[float], wrt: str = "logits") -> list[Any]:
    """The scale of each class's derivative: ``max(softmax_j * sum(z), |z_j|)`` for the logits,
    the value ``logsumexp(x) - x_j`` for the labels (NaN where the derivative is NaN)."""
    mp = _mp()
    if wrt == "labels":
        return softmax_grad(x, z, wrt)
    n = len(x)
    state = _softmax_row_state(x)
    if state == "nan" or any(math.isnan(v) for v in z):
        return [mp.nan] * n
    with mp.workdps(DIGITS):
        total = _exact_sum(z)
        if state == "onehot":
            top = list(x).index(math.inf)
            return [max(abs(total) if j == top else 0, abs(mp.mpf(z[j]))) for j in range(n)]
        out = []
        for j in range(n):
            if x[j] == -math.inf:
                out.append(abs(mp.mpf(z[j])))
                continue
            rest = mp.fsum(
                mp.exp(mp.fsub(xk, x[j], exact=True))
                for k, xk in enumerate(x)
                if k != j and xk != -math.inf
            )
            out.append(max(abs(total / (1 + rest)), abs(mp.mpf(z[j]))))
        return out


def _ulp(value: Any, fmt: str) -> Any:
    """The unit in the last place of ``value`` in ``fmt`` (the smallest subnormal below the
    normal range; the exponent is not capped above)."""
    mp = _mp()
    precision, emin = FORMATS[fmt]
    exponent = emin if value == 0 else max(int(mp.frexp(value)[1]) - 1, emin)
    return mp.ldexp(1, exponent - precision + 1)


def scale_ulp_error(computed: float, exact: Any, scale: Any, fmt: str) -> float:
    """``|computed - exact|`` in units of the last place of ``scale`` in ``fmt``.

    For a gradient that is the difference of two terms, ``scale`` is the larger term: the error
    is then measured relative to what the cancellation leaves no formula able to avoid. Never
    more than :func:`ulp_error` for ``scale >= |exact|``. NaN, infinite and overflowing values
    are judged as by :func:`ulp_error` (0 or inf).
    """
    mp = _mp()
    if (
        mp.isnan(exact)
        or math.isnan(computed)
        or math.isinf(computed)
        or mp.isinf(exact)
        or mp.isnan(scale)
        or mp.isinf(scale)
    ):
        return ulp_error(computed, exact, fmt)
    with mp.workdps(DIGITS):
        reference = max(abs(mp.mpf(scale)), abs(exact))
        return float(abs(mp.mpf(computed) - exact) / _ulp(reference, fmt))


# --- The registry's losses ---------------------------------------------------------------------


@dataclass(frozen=True)
class Exact:
    """One exact formula: its name (shared by the losses it serves: a cache key), its value, and
    its derivative with respect to the logits and that derivative's scale, as lists (one entry
    per class of a row; one for an elementwise point). Elementwise formulas take ``(x, z, q)``,
    row formulas ``(xs, zs)``."""

    name: str
    value: Callable[..., Any]
    grad: Callable[..., list[Any]]
    grad_scale: Callable[..., list[Any]]


LOGISTIC = Exact(
    "logistic",
    logistic,
    lambda x, z, q: [logistic_grad(x, z, q)],
    lambda x, z, q: [logistic_grad_scale(x, z, q)],
)
SOFTMAX = Exact("softmax", softmax, softmax_grad, softmax_grad_scale)

# The exact formula of each loss, by its registry name.
LOSSES: dict[str, Exact] = {
    "sigmoid": LOGISTIC,
    "weighted": LOGISTIC,
    "softmax": SOFTMAX,
    "sparse": SOFTMAX,
}


def point(loss: Loss, logits: Any, labels: Any, pos_weight: Any = None) -> tuple[Exact, tuple]:
    """The exact formula of ``loss`` and its arguments at one point, as floats.

    Elementwise: ``(x, z, q)``, ``q`` 1 for a loss without pos_weight (or none given). With a
    class axis: ``(xs, zs)`` for the row ``logits``, the class index ``labels`` as one-hot.
    """
    formula = LOSSES[loss.name]
    if not loss.class_axis:
        q = 1.0 if pos_weight is None or not loss.pos_weight else float(pos_weight)
        return formula, (float(logits), float(labels), q)
    xs = tuple(float(v) for v in logits)
    if loss.labels == INDICES:
        return formula, (xs, tuple(1.0 if j == labels else 0.0 for j in range(len(xs))))
    return formula, (xs, tuple(float(v) for v in labels))


def exact(loss: Loss, logits: Any, labels: Any, pos_weight: Any = None) -> Any:
    """The exact loss of ``loss`` at one point (:func:`point`), as an mpmath number."""
    formula, arguments = point(loss, logits, labels, pos_weight)
    return formula.value(*arguments)
