"""The logistic losses' math (sigmoid and weighted cross-entropy) and their exact gradients.

The conventions every formula keeps are in ``_losses/__init__.py``.
"""

from __future__ import annotations

import math
from typing import Any

from ..._core import arrays, compensated
from ..._core.arrays import Array
from ..family import Family


def logistic_loss(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    r"""Elementwise weighted logistic loss ``q z softplus(-x) + (1 - z) softplus(x)``.

    With :math:`l = (1 - z) + q z` (the weight of the log term, never ``1 + (q - 1) z``, which
    cancels) the loss is computed as

    .. math::

        x \ge 0:\quad (1 - z)\,x + l \log(1 + e^{-x}) \qquad
        x < 0:\quad q z\,(-x) + l \log(1 + e^{x})

    Both terms are non-negative, so nothing cancels (TensorFlow's ``x - x z`` loses every bit
    at ``x = 24, z = 1 - 2^{-23}``; its ``log(1 + exp(-|x|)) + max(-x, 0)`` loses the small
    log term next to ``-x``). ``q = None`` is the unweighted loss (``q = 1``, ``l = 1``).

    The branch is chosen by the sign of ``x`` rather than written with ``|x|`` so that automatic
    differentiation sees the true derivative at ``x = 0``.
    """
    zero = arrays.scalar(0.0, x, xp=xp)
    nonneg = x >= 0
    # |x| with the derivative of the chosen branch (1 or -1 at x = 0, never abs's 0).
    magnitude = xp.where(nonneg, x, -x)
    one_minus_z = 1 - z
    # A zero coefficient contributes exactly zero, also at x = +-inf where 0 * inf is NaN.
    linear_pos = one_minus_z * xp.where(one_minus_z == 0, zero, magnitude)
    if q is None:
        linear_neg = z * xp.where(z == 0, zero, magnitude)
        log_weight = None
    else:
        masked = xp.where((z == 0) | (q == 0), zero, magnitude)
        # q z |x| as (q |x|) z: z |x| can be subnormal (z tiny) and lose the bits q would
        # scale back up; q |x| can only overflow, and then q (z |x|) has no subnormal step.
        q_x = q * masked
        linear_neg = xp.where(xp.isfinite(q_x), q_x * z, q * (z * masked))
        log_weight = one_minus_z + q * z
    linear = xp.where(nonneg, linear_pos, linear_neg)
    return linear + weighted_log1p_exp_neg(magnitude, log_weight, xp=xp)


# Beyond this, e^-m < 2^-738: log1p(e^-m) == e^-m, which may be subnormal in float64.
FAR = 512.0


EXP_NEG_FAR = math.exp(-FAR)


def weighted_log1p_exp_neg(m: Array, weight: Array | None, *, xp: Any) -> Array:
    """``weight * log(1 + e^-m)`` for ``m >= 0``, also where ``e^-m`` is subnormal.

    Past ``m = 512`` the value is ``(weight * e^(512 - m)) * e^-512``: the weight scales a
    normal number before the result is rounded to the subnormal range, once (``512 - m`` is
    exact by Sterbenz's lemma up to ``m = 1024``, beyond which the result is 0 anyway).
    """
    far = m > FAR
    e = xp.exp(xp.where(far, FAR - m, -m))
    near = xp.log1p(e)
    if weight is not None:
        e, near = weight * e, weight * near
    return xp.where(far, e * EXP_NEG_FAR, near)


LN3 = math.log(3.0)


# The float64 gradient is trusted where it is at least this fraction of its terms; closer to
# the gradient's zero a double-float step forms it (its error, ~2^-53 of the terms, would
# otherwise exceed a float32 ULP of the result below about 2^-28 of them).
DEEP = 2.0**-22


def logistic_grad_logits(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    r"""``d/dx`` of :func:`logistic_loss`: :math:`(1 - z)\,\sigma(x) - q z\,\sigma(-x)`.

    Written three ways, each free of cancellation that the exact value does not have, with
    :math:`l = (1 - z) + q z` and :math:`s = \sigma(-|x|) = e/(1 + e)`, :math:`e = e^{-|x|}`:

    - :math:`|x| < \ln 3`: :math:`\tfrac{l}{2}\tanh(x/2) + \tfrac{(1 - z) - q z}{2}` (keeps
      ``2.5e-11`` at ``x = 1e-10, z = 0.5``, where ``sigma(x) - z`` rounds to 0);
    - :math:`x \ge \ln 3`: :math:`(1 - z) - l s`;
    - :math:`x \le -\ln 3`: :math:`l s - q z`.

    Past ``|x| = 512`` the term ``l s`` is ``(l e^{512 - |x|}) e^{-512}``, rounded once into the
    subnormal range (as :func:`weighted_log1p_exp_neg`).

    What cancels in these is the gradient's own zero (where :math:`(1 - z)\sigma(x) = q z
    \sigma(-x)`): there, below ``2^-22`` of the terms, the numerator of
    :math:`\pm(R - P e)/(1 + e)` (``R, P`` = ``1 - z, q z`` for ``x >= 0``, swapped for
    ``x < 0``) is formed in double-float arithmetic with a double-float ``e``
    (:func:`near_zero_logistic_grad`), so that float32 results keep 1 ULP there too. Limits:
    ``1 - z`` at ``x = +inf``, ``-q z`` at ``x = -inf``.
    """
    qz = z if q is None else q * z
    one_minus_z = 1 - z
    weight = one_minus_z + qz
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    far = magnitude > FAR
    e = xp.exp(xp.where(far, FAR - magnitude, -magnitude))
    s = e / (1 + e)
    weighted_s = xp.where(far, (weight * e) * EXP_NEG_FAR, weight * s)
    near_zero = (weight / 2) * xp.tanh(x / 2) + (one_minus_z - qz) / 2
    outer = xp.where(nonneg, one_minus_z - weighted_s, weighted_s - qz)
    grad = xp.where(magnitude < LN3, near_zero, outer)
    # Deep cancellation: |grad| below 2^-22 of l sigma(-|x|) (at most twice the larger term
    # where the terms cancel). Never past |x| = 512 (no such zero there).
    deep = (xp.abs(grad) < DEEP * (weight * s)) & ~far
    return arrays.fix_where(grad, deep, near_zero_logistic_grad, (x, one_minus_z, z, q), xp=xp)


def near_zero_logistic_grad(
    x: Array, one_minus_z: Array, z: Array, q: Array | None, *, xp: Any
) -> Array:
    """:func:`logistic_grad_logits` next to its zero: ``+-(R - P e) / (1 + e)``, ``e = e^-|x|``,
    ``(R, P) = (1 - z, q z)`` for ``x >= 0`` and ``(q z, 1 - z)`` (negated) for ``x < 0``, the
    numerator in double-float arithmetic (``1 - z`` and ``q z`` error-free)."""
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    e = compensated.exp_dd(-xp.where(magnitude < 745.0, magnitude, 745.0), xp=xp)
    a = compensated.two_sum(xp.ones_like(z), -z)
    b = (z, xp.zeros_like(z)) if q is None else compensated.two_prod(q, z)
    r = tuple(xp.where(nonneg, u, v) for u, v in zip(a, b, strict=True))
    p = tuple(xp.where(nonneg, v, u) for u, v in zip(a, b, strict=True))
    pe = compensated.dd_mul(p, e)
    numerator = compensated.dd_add(r, (-pe[0], -pe[1]))[0]
    grad = numerator / (1 + e[0])
    return xp.where(nonneg, grad, -grad)


def logistic_grad_labels(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    r"""``d/dz`` of :func:`logistic_loss`: :math:`q\,\mathrm{softplus}(-x) - \mathrm{softplus}(x)`.

    ``-x`` exactly for the unweighted loss; with ``q``, :math:`(q - 1)\log(1 + e^{-x}) - x` for
    :math:`x \ge 0` and :math:`q(-x) + (q - 1)\log(1 + e^{x})` for :math:`x < 0`. Does not
    depend on ``z``; ``z`` sets the shape only.
    """
    if q is None:
        return xp.broadcast_to(-x, arrays.broadcast_shape(x, z))
    zero = arrays.scalar(0.0, x, xp=xp)
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    q_minus_one = q - 1
    log_term = q_minus_one * weighted_log1p_exp_neg(magnitude, None, xp=xp)
    # q (-x) with q = 0 is 0 also at x = -inf.
    linear = xp.where(nonneg, -x, q * xp.where(q == 0, zero, magnitude))
    return xp.broadcast_to(linear + log_term, arrays.broadcast_shape(x, z, q))


def logistic_grad_pos_weight(x: Array, z: Array, *, xp: Any) -> Array:
    r"""``d/dq`` of :func:`logistic_loss`, elementwise: :math:`z\,\mathrm{softplus}(-x)`."""
    zero = arrays.scalar(0.0, x, xp=xp)
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    linear = xp.where(nonneg, zero, z * xp.where(z == 0, zero, magnitude))
    return linear + z * weighted_log1p_exp_neg(magnitude, None, xp=xp)


def grad_pos_weight(x: Array, z: Array, q: Array, *, xp: Any) -> Array:
    """:func:`logistic_grad_pos_weight` in the gradient table's signature (it needs no ``q``)."""
    return logistic_grad_pos_weight(x, z, xp=xp)


# The family (sigmoid: ``pos_weight`` None; weighted) for the generic layers (``_losses.family``).
LOGISTIC = Family(
    name="logistic",
    operands=("labels", "pos_weight"),
    loss=logistic_loss,
    grads={
        "logits": logistic_grad_logits,
        "labels": logistic_grad_labels,
        "pos_weight": grad_pos_weight,
    },
    kernels=f"{__package__}.kernel",
    broadcast=frozenset({"pos_weight"}),
)
