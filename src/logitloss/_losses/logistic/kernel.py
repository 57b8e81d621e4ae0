"""numba kernels for the logistic (sigmoid and weighted) cross-entropy and its gradient, and
their entry points (loss, logits' gradient, both in one pass, the summed loss; NumPy in and out).

Each kernel works on 2-D "row" views prepared by ``_kernels.layout``: every operand is a
``layout.Operand``, a 1-D contiguous base array, a row stride and, for ``pos_weight``,
``upstream`` and the reduction's weights, a flag saying whether they vary along the row (per
element or per class) or are constant along it (a scalar, or per row). A kernel's operands come
in a NamedTuple (:class:`LossOperands` ...). Rows are cut into tiles; this module writes what one
tile does, and ``_kernels.loops.over_tiles`` makes each tile function a serial and a parallel
kernel (the tiles shared among numba's threads). Within a tile every operand is a contiguous
slice (``loops.span``), which is what lets LLVM vectorise the loop.

Inputs are loaded in their dtype, computed in float64 and stored rounded once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import njit

from ..._core import buffers, compensated
from ..._kernels import drivers, runtime
from ..._kernels.loops import (
    BROADCAST,
    ELEMENTWISE,
    VALUE,
    operands,
    over_tiles,
    span,
    span_or_first,
)
from ..._kernels.vector_math import (
    LN3,
    add_reassoc,
    any_nan,
    exp_expm1_nonpos,
    exp_nonpos,
    fma,
    log1p_unit,
    two_sum,
)

_NAN = math.nan


# --- One element -------------------------------------------------------------------------------

_FAR = 512.0
_EXP_NEG_FAR = math.exp(-_FAR)


@njit(inline="always", error_model="numpy")
def loss_wide(x: float, z: float, q: float) -> float:
    """The weighted logistic loss of one float64 element; mirrors
    ``formula.logistic_loss``.

    ``q z softplus(-x) + (1 - z) softplus(x)`` as ``(1 - z) x + l log1p(e^-x)`` for ``x >= 0``
    and ``q z (-x) + l log1p(e^x)`` for ``x < 0``, ``l = (1 - z) + q z``: all terms
    non-negative. The sigmoid loss is ``q = 1`` (the reference's ``q is None`` branch, with
    products by 1, which are exact). Every guard of the reference is here, as a select.
    """
    nonneg = x >= 0.0
    m = x if nonneg else -x
    one_minus_z = 1.0 - z
    # A zero coefficient contributes exactly zero, also against an infinite logit.
    linear_pos = one_minus_z * (0.0 if one_minus_z == 0.0 else m)
    masked = 0.0 if (z == 0.0 or q == 0.0) else m
    q_x = q * masked
    # q z |x| as (q |x|) z: z |x| can be subnormal and lose the bits q would scale back up;
    # q |x| can only overflow, and then q (z |x|) has no subnormal step.
    linear_neg = q_x * z if abs(q_x) < np.inf else q * (z * masked)
    linear = linear_pos if nonneg else linear_neg
    weight = one_minus_z + q * z
    # Past |x| = 512, e^-|x| is e^(512 - |x|) e^-512: the weight scales a normal number before
    # the result is rounded, once, into the subnormal range.
    far = m > _FAR
    e = exp_nonpos(_FAR - m if far else -m, True, True)
    near = weight * log1p_unit(e, True)
    return linear + ((weight * e) * _EXP_NEG_FAR if far else near)


@njit(inline="always", error_model="numpy")
def loss_narrow(x: float, z: float, q: float) -> float:
    """:func:`loss_wide` for values of a float16, bfloat16 or float32 input, in float64.

    The same formula with the guards that such inputs cannot need removed (this is the kernel's
    hot path, and each select is a cycle per element):

    - ``q z`` is exact in float64 (two significands of at most 24 bits, an exponent of at least
      -298), so ``(q z) |x|`` is rounded once: no subnormal step, no overflow (below 1.2e77);
    - the coefficient of ``|x|`` is zero exactly when ``z = 0`` or ``q = 0`` (or ``1 - z = 0``),
      the reference's masks, as one test;
    - ``e^-|x|`` below ``e^-708`` (and the reference's subnormal branch past ``|x| = 512``)
      changes nothing: the log term is then below ``3.4e38 e^-708 = 1e-269``, which rounds to 0
      in every narrow dtype and cannot move a rounding of the linear term.
    """
    nonneg = x >= 0.0
    m = abs(x)
    qz = q * z
    one_minus_z = 1.0 - z
    coef = one_minus_z if nonneg else qz
    linear = coef * (0.0 if coef == 0.0 else m)
    e = exp_nonpos(-m, False, False)
    return linear + (one_minus_z + qz) * log1p_unit(e, False)


@njit(inline="always", error_model="numpy")
def grad_element(x: float, z: float, q: float, wide: bool) -> tuple[float, bool]:
    """``d/dx`` of the loss of one element, and whether it lies next to the gradient's zero;
    mirrors ``formula.logistic_grad_logits``.

    ``(1 - z) sigma(x) - q z sigma(-x)``, with ``l = (1 - z) + q z`` and ``s = e / (1 + e)``,
    ``e = e^-|x|``: ``(l/2) tanh(x/2) + ((1 - z) - q z)/2`` for ``|x| < ln 3``,
    ``(1 - z) - l s`` for ``x >= ln 3`` and ``l s - q z`` for ``x <= -ln 3``.

    The float64-accurate ``exp`` in every dtype: the two terms cancel near the gradient's zero,
    which multiplies their relative error, so float32 results need float64-accurate terms too.
    ``wide`` (float64 inputs) keeps ``e`` below ``e^-708`` and forms ``l s`` past ``|x| = 512``
    as ``(l e^(512 - |x|)) e^-512`` (one rounding into the subnormal range). For narrow inputs
    the flag says the result is below ``2^-22`` of its terms, where the float64 error (2^-53 of
    the terms) may exceed half an ULP: the caller recomputes those with :func:`grad_near_zero`.
    """
    qz = q * z
    one_minus_z = 1.0 - z
    weight = one_minus_z + qz
    nonneg = x >= 0.0
    m = abs(x)
    far = wide and m > _FAR
    e, e_minus_one = exp_expm1_nonpos(_FAR - m if far else -m, wide)
    d = 1.0 + e
    s = e / d
    weighted_s = (weight * e) * _EXP_NEG_FAR if far else weight * s
    # tanh(x/2) = sign(x) (1 - e) / (1 + e), with 1 - e formed without cancellation: a second
    # division costs less than a float64-accurate tanh polynomial (degree 10 in x^2, measured
    # 20 % slower for float32) and is about as accurate.
    tanh = -e_minus_one / d
    tanh = tanh if nonneg else -tanh
    outer = one_minus_z - weighted_s if nonneg else weighted_s - qz
    near_zero = (0.5 * weight) * tanh + 0.5 * (one_minus_z - qz)
    g = near_zero if m < LN3 else outer
    if wide:
        return g, False
    return g, abs(g) < (_DEEP * weight) * s


@njit(inline="always", error_model="numpy")
def loss_element(x: float, z: float, q: float, wide: bool) -> float:
    return loss_wide(x, z, q) if wide else loss_narrow(x, z, q)


# --- Double-float arithmetic: the gradient next to its zero (rare, scalar) ---------------------

_DEEP = 2.0**-22
_LOG2E = 1.4426950408889634
_LN2_1, _LN2_2, _LN2_3 = compensated.DD_LN2
(_C2_HI, _C2_LO), (_C3_HI, _C3_LO), (_C4_HI, _C4_LO), (_C5_HI, _C5_LO) = compensated.DD_TAYLOR
_T6, _T7, _T8, _T9, _T10 = compensated.TAYLOR_TAIL


@njit(inline="always", error_model="numpy")
def _two_prod(a: float, b: float) -> tuple[float, float]:
    p = a * b
    return p, fma(a, b, -p)


@njit(inline="always", error_model="numpy")
def _fast_two_sum(a: float, b: float) -> tuple[float, float]:
    s = a + b
    return s, b - (s - a)


@njit(inline="always", error_model="numpy")
def _dd_mul(ah: float, al: float, bh: float, bl: float) -> tuple[float, float]:
    p, e = _two_prod(ah, bh)
    return _fast_two_sum(p, e + (ah * bl + al * bh))


@njit(inline="always", error_model="numpy")
def _dd_add(ah: float, al: float, bh: float, bl: float) -> tuple[float, float]:
    s, e = two_sum(ah, bh)
    return _fast_two_sum(s, e + (al + bl))


@njit(inline="always", error_model="numpy")
def exp_dd(a: float) -> tuple[float, float]:
    """``e^a`` as a double-float, relative error about 2^-100 for ``-600 <= a <= 0``: the
    reference's ``compensated.exp_dd`` (same steps and constants) with FMA products."""
    k = np.round(a * _LOG2E)
    reduced = a - k * _LN2_1
    p, p_err = _two_prod(k, _LN2_2)
    r_hi, r_lo = two_sum(reduced, -p)
    r_hi, r_lo = _fast_two_sum(r_hi, r_lo - p_err - k * _LN2_3)
    sh, sl = r_hi / 256.0, r_lo / 256.0
    tail = _T9 + sh * _T10
    tail = _T8 + sh * tail
    tail = _T7 + sh * tail
    tail = _T6 + sh * tail
    ph, pl = _dd_mul(sh, sl, tail, 0.0)
    ph, pl = _dd_add(ph, pl, _C5_HI, _C5_LO)
    ph, pl = _dd_mul(sh, sl, ph, pl)
    ph, pl = _dd_add(ph, pl, _C4_HI, _C4_LO)
    ph, pl = _dd_mul(sh, sl, ph, pl)
    ph, pl = _dd_add(ph, pl, _C3_HI, _C3_LO)
    ph, pl = _dd_mul(sh, sl, ph, pl)
    ph, pl = _dd_add(ph, pl, _C2_HI, _C2_LO)
    ph, pl = _dd_mul(sh, sl, ph, pl)
    ph, pl = _dd_add(ph, pl, 1.0, 0.0)
    uh, ul = _dd_mul(sh, sl, ph, pl)
    for _ in range(8):
        vh, vl = _dd_add(uh, ul, 2.0, 0.0)
        uh, ul = _dd_mul(uh, ul, vh, vl)
    one_hi, one_lo = _fast_two_sum(1.0, uh)
    scale = 2.0**k
    return one_hi * scale, (one_lo + ul) * scale


@njit(error_model="numpy")
def grad_near_zero(x: float, z: float, q: float) -> float:
    """``d/dx`` next to its zero: ``+-(R - P e) / (1 + e)``, ``e = e^-|x|``, the numerator in
    double-float; mirrors ``formula.near_zero_logistic_grad``."""
    nonneg = x >= 0.0
    eh, el = exp_dd(-min(abs(x), 745.0))
    ah, al = two_sum(1.0, -z)
    bh, bl = _two_prod(q, z)
    rh, rl = (ah, al) if nonneg else (bh, bl)
    ph, pl = (bh, bl) if nonneg else (ah, al)
    peh, pel = _dd_mul(ph, pl, eh, el)
    numerator, _ = _dd_add(rh, rl, -peh, -pel)
    grad = numerator / (1.0 + eh)
    return grad if nonneg else -grad


# --- Operands ----------------------------------------------------------------------------------
#
# ``x`` (logits), ``z`` (labels) and the outputs vary along the row; ``q`` (pos_weight), ``u``
# (upstream) and ``w`` (weights) may be constant along it. ``partial``: a ``(tiles, 2)`` float64
# array, a row per tile; ``a``, ``b``: the labels ``a z + b`` (smoothing).

LossOperands = operands(
    "LossOperands", __name__, x=ELEMENTWISE, z=ELEMENTWISE, q=BROADCAST, out=ELEMENTWISE
)
GradOperands = operands(
    "GradOperands", __name__, x=ELEMENTWISE, z=ELEMENTWISE, q=BROADCAST, u=BROADCAST,
    out=ELEMENTWISE,
)  # fmt: skip
BothOperands = operands(
    "BothOperands", __name__, x=ELEMENTWISE, z=ELEMENTWISE, q=BROADCAST, loss=ELEMENTWISE,
    grad=ELEMENTWISE,
)  # fmt: skip
SumOperands = operands(
    "SumOperands", __name__, x=ELEMENTWISE, z=ELEMENTWISE, q=BROADCAST, partial=VALUE
)
WeightedSumOperands = operands(
    "WeightedSumOperands", __name__, x=ELEMENTWISE, z=ELEMENTWISE, q=BROADCAST, w=BROADCAST,
    a=VALUE, b=VALUE, partial=VALUE,
)  # fmt: skip


# --- Tiles -------------------------------------------------------------------------------------


@over_tiles(LossOperands)
def loss(x, x_stride, z, z_stride, q, q_stride, q_varies, out, out_stride, t, row, c0, c1, wide):
    """The loss over one tile."""
    xs = span(x, x_stride, row, c0, c1)
    zs = span(z, z_stride, row, c0, c1)
    os = span(out, out_stride, row, c0, c1)
    if q_varies:
        qs = span(q, q_stride, row, c0, c1)
        for j in range(xs.size):
            os[j] = loss_element(np.float64(xs[j]), np.float64(zs[j]), np.float64(qs[j]), wide)
    else:
        qv = np.float64(q[row * q_stride])
        for j in range(xs.size):
            os[j] = loss_element(np.float64(xs[j]), np.float64(zs[j]), qv, wide)


@over_tiles(GradOperands)
def grad(
    x, x_stride, z, z_stride, q, q_stride, q_varies, u, u_stride, u_varies, out, out_stride,
    t, row, c0, c1, wide,
):  # fmt: skip
    """``upstream * d loss / d x`` over one tile."""
    xs = span(x, x_stride, row, c0, c1)
    zs = span(z, z_stride, row, c0, c1)
    os = span(out, out_stride, row, c0, c1)
    qs = span_or_first(q, q_stride, q_varies, row, c0, c1)
    us = span_or_first(u, u_stride, u_varies, row, c0, c1)
    # Four copies of the loop, so that a constant pos_weight or upstream is a register, not a
    # load (and the loops vectorise without a select on the layout). An element next to the
    # gradient's zero (narrow inputs only) is stored as NaN and recomputed after the loop.
    if q_varies:
        if u_varies:
            for j in range(xs.size):
                g, d = grad_element(np.float64(xs[j]), np.float64(zs[j]), np.float64(qs[j]), wide)
                os[j] = _NAN if d else g * np.float64(us[j])
        else:
            uv = np.float64(us[0])
            for j in range(xs.size):
                g, d = grad_element(np.float64(xs[j]), np.float64(zs[j]), np.float64(qs[j]), wide)
                os[j] = _NAN if d else g * uv
    else:
        qv = np.float64(qs[0])
        if u_varies:
            for j in range(xs.size):
                g, d = grad_element(np.float64(xs[j]), np.float64(zs[j]), qv, wide)
                os[j] = _NAN if d else g * np.float64(us[j])
        else:
            uv = np.float64(us[0])
            for j in range(xs.size):
                g, d = grad_element(np.float64(xs[j]), np.float64(zs[j]), qv, wide)
                os[j] = _NAN if d else g * uv
    if not wide and any_nan(os):
        _fix_near_zero(xs, zs, qs, q_varies, us, u_varies, os)


@njit(error_model="numpy")
def _fix_near_zero(xs, zs, qs, q_varies, us, u_varies, os):
    """The marked (NaN) elements of a tile: next to the gradient's zero, recomputed in
    double-float; the others (NaN inputs) recomputed as they were. Rare, scalar."""
    for j in range(xs.size):
        if os[j] == os[j]:
            continue
        xv, zv = np.float64(xs[j]), np.float64(zs[j])
        qv = np.float64(qs[j] if q_varies else qs[0])
        g, d = grad_element(xv, zv, qv, False)
        g = grad_near_zero(xv, zv, qv) if d else g
        os[j] = g * np.float64(us[j] if u_varies else us[0])


# --- Loss and gradient together ----------------------------------------------------------------


@over_tiles(BothOperands)
def both(
    x, x_stride, z, z_stride, q, q_stride, q_varies, loss, loss_stride, grad, grad_stride,
    t, row, c0, c1, wide,
):  # fmt: skip
    """The loss and ``d loss / d x`` (per unit upstream) of one tile, each element read once
    for both."""
    xs = span(x, x_stride, row, c0, c1)
    zs = span(z, z_stride, row, c0, c1)
    ls = span(loss, loss_stride, row, c0, c1)
    gs = span(grad, grad_stride, row, c0, c1)
    qs = span_or_first(q, q_stride, q_varies, row, c0, c1)
    if q_varies:
        for j in range(xs.size):
            a, b, c = np.float64(xs[j]), np.float64(zs[j]), np.float64(qs[j])
            ls[j] = loss_element(a, b, c, wide)
            g, d = grad_element(a, b, c, wide)
            gs[j] = _NAN if d else g
    else:
        qv = np.float64(qs[0])
        for j in range(xs.size):
            a, b = np.float64(xs[j]), np.float64(zs[j])
            ls[j] = loss_element(a, b, qv, wide)
            g, d = grad_element(a, b, qv, wide)
            gs[j] = _NAN if d else g
    if not wide and any_nan(gs):
        _fix_near_zero(xs, zs, qs, q_varies, _ONE, False, gs)


_ONE = np.ones(1)


# --- Reduced with the gradient: the training loss's one pass -----------------------------------

SumGradOperands = operands(
    "SumGradOperands", __name__, x=ELEMENTWISE, z=ELEMENTWISE, q=BROADCAST, w=BROADCAST,
    a=VALUE, b=VALUE, scale=VALUE, grad=ELEMENTWISE, partial=VALUE,
)  # fmt: skip


@over_tiles(SumGradOperands)
def sum_and_grad(
    x, x_stride, z, z_stride, q, q_stride, q_varies, w, w_stride, w_varies, a, b, scale, grad,
    grad_stride, partial, t, row, c0, c1, wide,
):  # fmt: skip
    """One tile's ``sum of w * loss`` into ``partial[t]`` and ``scale * w * d loss / d x``
    into ``grad``, with the labels ``a z + b`` (smoothing): :func:`sum_and_grad_span`."""
    xs = span(x, x_stride, row, c0, c1)
    zs = span(z, z_stride, row, c0, c1)
    gs = span(grad, grad_stride, row, c0, c1)
    qs = span_or_first(q, q_stride, q_varies, row, c0, c1)
    ws = span_or_first(w, w_stride, w_varies, row, c0, c1)
    partial[t, 0] = sum_and_grad_span(xs, zs, qs, q_varies, ws, w_varies, a, b, scale, gs, wide)


@njit(inline="always", error_model="numpy")
def sum_and_grad_span(xs, zs, qs, q_varies, ws, w_varies, a, b, scale, gs, wide):
    """:func:`sum_and_grad`'s tile on its spans (``qs``, ``ws`` one element where they do
    not vary): returns the ``sum of w * loss``, writes the gradient into ``gs``; an element
    next to the gradient's zero (narrow inputs) marked NaN and recomputed after the loop.
    ``logistic.reduced`` calls it on float32 spans widened from bfloat16 or float16."""
    total = 0.0
    # A constant q or w read once (a register, and loops LLVM unswitches and vectorises).
    q0, w0 = np.float64(qs[0]), np.float64(ws[0])
    for j in range(xs.size):
        xv = np.float64(xs[j])
        zv = a * np.float64(zs[j]) + b
        qv = np.float64(qs[j]) if q_varies else q0
        wv = np.float64(ws[j]) if w_varies else w0
        total = add_reassoc(total, _weighted(wv, loss_element(xv, zv, qv, wide)))
        g, d = grad_element(xv, zv, qv, wide)
        gs[j] = _NAN if d else g * (wv * scale)
    if not wide and any_nan(gs):
        _fix_near_zero_smoothed(xs, zs, qs, q_varies, ws, w_varies, a, b, scale, gs)
    return total


@njit(error_model="numpy")
def _fix_near_zero_smoothed(xs, zs, qs, q_varies, ws, w_varies, a, b, scale, gs):
    """:func:`_fix_near_zero` for :func:`sum_and_grad`'s tile (smoothed labels, weights)."""
    for j in range(xs.size):
        if gs[j] == gs[j]:
            continue
        xv = np.float64(xs[j])
        zv = a * np.float64(zs[j]) + b
        qv = np.float64(qs[j] if q_varies else qs[0])
        g, d = grad_element(xv, zv, qv, False)
        g = grad_near_zero(xv, zv, qv) if d else g
        gs[j] = g * (np.float64(ws[j] if w_varies else ws[0]) * scale)


# --- Reduced: the sum of the loss, never written per element ------------------------------------
#
# Per tile, the float64 partial sums of ``w * loss`` and of ``w`` into row ``t`` of
# ``partial`` (the caller adds them: a fixed order, so the result does not depend on how the
# threads shared the tiles; the serial kernel adds the same tiles). Reassociable sums within a
# tile: LLVM vectorises them. One loop per case of ``q`` and ``w`` varying along the row or not:
# a select in the index would stop that.


@over_tiles(SumOperands)
def loss_sum(x, x_stride, z, z_stride, q, q_stride, q_varies, partial, t, row, c0, c1, wide):
    """``(sum of loss, number of elements)`` over one tile: no weights, no smoothing."""
    xs = span(x, x_stride, row, c0, c1)
    zs = span(z, z_stride, row, c0, c1)
    qs = span_or_first(q, q_stride, q_varies, row, c0, c1)
    total = 0.0
    if q_varies:
        for j in range(xs.size):
            value = loss_element(np.float64(xs[j]), np.float64(zs[j]), np.float64(qs[j]), wide)
            total = add_reassoc(total, value)
    else:
        qv = np.float64(qs[0])
        for j in range(xs.size):
            value = loss_element(np.float64(xs[j]), np.float64(zs[j]), qv, wide)
            total = add_reassoc(total, value)
    partial[t, 0], partial[t, 1] = total, np.float64(xs.size)


@njit(inline="always", error_model="numpy")
def _weighted(w: float, loss: float) -> float:
    """``w * loss``, where a zero weight drops an infinite loss (``0 * inf`` would be NaN)."""
    return 0.0 if w == 0.0 else w * loss


@njit(inline="always", error_model="numpy")
def _term(x, z, q, w, a, b, wide):
    """One element's ``w * loss`` with the label ``a z + b`` (smoothing), in float64."""
    loss = loss_element(np.float64(x), a * np.float64(z) + b, np.float64(q), wide)
    return _weighted(np.float64(w), loss)


@over_tiles(WeightedSumOperands)
def weighted_loss_sum(
    x, x_stride, z, z_stride, q, q_stride, q_varies, w, w_stride, w_varies, a, b, partial,
    t, row, c0, c1, wide,
):  # fmt: skip
    """``(sum of w * loss, sum of w)`` over one tile, with labels ``a z + b`` (label
    smoothing)."""
    xs = span(x, x_stride, row, c0, c1)
    zs = span(z, z_stride, row, c0, c1)
    qs = span_or_first(q, q_stride, q_varies, row, c0, c1)
    ws = span_or_first(w, w_stride, w_varies, row, c0, c1)
    total = 0.0
    weights = 0.0
    if q_varies and w_varies:
        for j in range(xs.size):
            total = add_reassoc(total, _term(xs[j], zs[j], qs[j], ws[j], a, b, wide))
            weights = add_reassoc(weights, np.float64(ws[j]))
    elif q_varies:
        for j in range(xs.size):
            total = add_reassoc(total, _term(xs[j], zs[j], qs[j], ws[0], a, b, wide))
    elif w_varies:
        for j in range(xs.size):
            total = add_reassoc(total, _term(xs[j], zs[j], qs[0], ws[j], a, b, wide))
            weights = add_reassoc(weights, np.float64(ws[j]))
    else:
        for j in range(xs.size):
            total = add_reassoc(total, _term(xs[j], zs[j], qs[0], ws[0], a, b, wide))
    if not w_varies:
        weights = np.float64(ws[0]) * xs.size
    partial[t, 0], partial[t, 1] = total, weights


# --- Entry points: operands checked, laid out as rows, launched ------------------------------

__all__ = [
    "logistic_grad_logits",
    "logistic_loss",
    "logistic_loss_and_grad",
    "logistic_loss_sum",
    "logistic_loss_sum_and_grad",
]


def logistic_loss(
    x: np.ndarray, z: Any, q: Any = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Elementwise sigmoid (``q is None``) or weighted cross-entropy from logits ``x``.

    The kernel version of ``reference.logistic`` (formula: ``formula.logistic_loss``).
    ``z`` (labels) and ``q`` (``pos_weight``: a scalar, per class, per element, anything that
    broadcasts to ``x`` without enlarging it) are cast to ``x``'s dtype first, as TensorFlow
    does. ``out``, if given, must be a writeable array of ``x``'s dtype and shape; it may be
    ``x`` itself. Returns ``out`` or a new array.
    """
    x, z, q, _, out = drivers.arguments("logistic_loss", x, z, q, None, out)
    (result,) = drivers.elementwise(x, {"z": z, "q": q}, {"out": out}, kernels=loss)
    return result


def logistic_grad_logits(
    x: np.ndarray,
    z: Any,
    q: Any = None,
    upstream: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``upstream * d loss / d x`` of :func:`logistic_loss`, elementwise.

    The kernel version of ``reference.logistic_grad(..., wrt="logits")`` (formula:
    ``formula.logistic_grad_logits``): ``(1 - z) sigma(x) - q z sigma(-x)``, times
    ``upstream`` (``None`` = ones; anything that broadcasts to ``x``), rounded once.
    """
    x, z, q, upstream, out = drivers.arguments("logistic_grad_logits", x, z, q, upstream, out)
    inputs = {"z": z, "q": q, "u": upstream}
    (result,) = drivers.elementwise(x, inputs, {"out": out}, kernels=grad)
    return result


def logistic_loss_and_grad(x: np.ndarray, z: Any, q: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(logistic_loss(x, z, q), logistic_grad_logits(x, z, q))`` in one pass: each element
    is read once for both (the caller multiplies the gradient by its upstream later). The
    same element formulas as the two separate kernels: the same numbers."""
    x, z, q, _, _ = drivers.arguments("logistic_loss_and_grad", x, z, q, None, None)
    # In the logits' memory order (a transposed input gives transposed outputs: no copy back).
    loss, grad = drivers.elementwise(
        x, {"z": z, "q": q}, {"loss": None, "grad": None}, kernels=both,
        x_order=True,
    )  # fmt: skip
    return loss, grad


def logistic_loss_sum(
    x: np.ndarray, z: Any, q: Any = None, weight: Any = None, smoothing: float = 0.0
) -> tuple[float, float]:
    """``(sum of weight * logistic_loss(x, z_s, q), sum of weight)`` over all elements, in
    float64, without writing the per-element loss (the reductions of the training losses need
    only these), in one pass over the inputs.

    ``z_s = z (1 - smoothing) + smoothing / 2`` (label smoothing toward 1/2, formed in float64);
    ``weight`` broadcasts to ``x`` like ``q``, and a zero weight drops an infinite loss. Each
    element's loss is computed as :func:`logistic_loss` computes it, before rounding; the tiles'
    float64 partial sums (reassociated within a tile of at most 16384 terms) are added exactly
    with ``math.fsum`` in tile order, so the result does not depend on the threads. Meant for
    narrow dtypes: float64 callers should prefer a compensated sum.
    """
    fn = "logistic_loss_sum"
    x, z, q, _, _ = drivers.arguments(fn, x, z, q, None, None)
    w = drivers.operand(fn, "weight", 1.0 if weight is None else weight, x, elementwise=False)
    # Without weights and smoothing the kernel without them: a shorter loop.
    plain = weight is None and not smoothing
    return _loss_sum(x, {"z": z, "q": q, "w": w}, {}, plain=plain, smoothing=smoothing)


def logistic_loss_sum_and_grad(
    x: np.ndarray,
    z: Any,
    q: Any = None,
    weight: Any = None,
    smoothing: float = 0.0,
    scale: float = 1.0,
    out: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """``(sum of weight * loss, scale * weight * d loss / d x)`` in one pass: the training
    loss's value (as :func:`logistic_loss_sum`, labels smoothed toward 1/2 in float64) and its
    logits' gradient already scaled (``scale``: the mean's ``1 / sum of weights``), rounded
    once to ``x``'s dtype, into ``out`` if given (``x``'s dtype and shape), else a new array
    in ``x``'s memory order."""
    fn = "logistic_loss_sum_and_grad"
    x, z, q, _, out = drivers.arguments(fn, x, z, q, None, out)
    w = drivers.operand(fn, "weight", 1.0 if weight is None else weight, x, elementwise=False)
    grad, total = _sum_and_grad(x, {"z": z, "q": q, "w": w}, {"grad": out},
                                smoothing=smoothing, scale=scale)  # fmt: skip
    return total, grad


@drivers.through_float32
def _sum_and_grad(
    x: np.ndarray,
    inputs: dict[str, np.ndarray],
    outs: dict[str, np.ndarray | None],
    *,
    smoothing: float,
    scale: float,
) -> tuple[Any, ...]:
    """:func:`logistic_loss_sum_and_grad` once its operands are checked: ``(grad, total)``."""
    grad = outs["grad"] if outs["grad"] is not None else buffers.empty_like(x)
    if not x.size:
        return grad, 0.0
    a, b = 1.0 - smoothing, smoothing / 2
    partials = []

    def values(piece: Any) -> dict[str, Any]:
        partial = np.empty((piece.rows * -(-piece.cols // runtime.TILE), 2), np.float64)
        partials.append(partial)
        return {"partial": partial, "a": a, "b": b, "scale": scale}

    pieces, used = drivers.tiles(sum_and_grad, x, inputs, {"grad": grad})
    drivers.launch(sum_and_grad, pieces, values)
    if used["grad"] is not grad:
        grad[...] = used["grad"]
    sums = np.concatenate(partials)
    return grad, math.fsum(sums[:, 0].tolist())


@drivers.through_float32
def _loss_sum(
    x: np.ndarray,
    inputs: dict[str, np.ndarray],
    outs: dict[str, np.ndarray],
    *,
    plain: bool,
    smoothing: float,
) -> tuple[float, float]:
    """:func:`logistic_loss_sum` once its operands are checked (``outs``: none)."""
    if not x.size:
        return 0.0, 0.0
    kernels = loss_sum if plain else weighted_loss_sum
    if plain:
        inputs = {"z": inputs["z"], "q": inputs["q"]}
    a, b = 1.0 - smoothing, smoothing / 2
    partials = []

    def values(piece: Any) -> dict[str, Any]:
        partial = np.empty((piece.rows * -(-piece.cols // runtime.TILE), 2), np.float64)
        partials.append(partial)
        return {"partial": partial} if plain else {"partial": partial, "a": a, "b": b}

    pieces, _ = drivers.tiles(kernels, x, inputs, outs)
    drivers.launch(kernels, pieces, values)
    sums = np.concatenate(partials)
    return math.fsum(sums[:, 0].tolist()), math.fsum(sums[:, 1].tolist())
