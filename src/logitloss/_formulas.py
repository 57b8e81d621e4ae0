"""The stable math, written once.

Every function here takes arrays that are already validated, broadcast and converted to the
*compute* dtype (float64 for every input dtype where the library has it, see ``_arrays``), and
the array namespace ``xp`` as a keyword. Nothing here validates, converts or picks a backend.

The forms are chosen so that every term added is non-negative for labels in [0, 1] and
``pos_weight >= 0``: a sum of non-negative terms has no cancellation, so each loss is computed to
a few float64 rounding errors, and rounds once to the caller's dtype. Limits at infinite logits
come from guards that give a term with a zero coefficient the value zero (``0 * inf`` would be
NaN), which is the true limit of every such term.
"""

from __future__ import annotations

import math
from typing import Any

Array = Any


def _scalar(value: float, like: Array, *, xp: Any) -> Array:
    """A 0-d array of ``like``'s dtype and device (strict namespaces refuse Python scalars)."""
    return xp.asarray(value, dtype=like.dtype, device=_device(like))


def _device(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


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
    zero = _scalar(0.0, x, xp=xp)
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
    return linear + _weighted_log1p_exp_neg(magnitude, log_weight, xp=xp)


# Beyond this, e^-m < 2^-738: log1p(e^-m) == e^-m, which may be subnormal in float64.
_FAR = 512.0
_EXP_NEG_FAR = math.exp(-_FAR)


def _weighted_log1p_exp_neg(m: Array, weight: Array | None, *, xp: Any) -> Array:
    """``weight * log(1 + e^-m)`` for ``m >= 0``, also where ``e^-m`` is subnormal.

    Past ``m = 512`` the value is ``(weight * e^(512 - m)) * e^-512``: the weight scales a
    normal number before the result is rounded to the subnormal range, once (``512 - m`` is
    exact by Sterbenz's lemma up to ``m = 1024``, beyond which the result is 0 anyway).
    """
    far = m > _FAR
    e = xp.exp(xp.where(far, _FAR - m, -m))
    near = xp.log1p(e)
    if weight is not None:
        e, near = weight * e, weight * near
    return xp.where(far, e * _EXP_NEG_FAR, near)


def _two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """Knuth's error-free sum: ``a + b == hi + lo`` exactly (for finite a, b)."""
    hi = a + b
    b_virtual = hi - a
    lo = (a - (hi - b_virtual)) + (b - b_virtual)
    return hi, lo


def softmax_loss(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    r"""Softmax cross-entropy ``sum_j z_j (logsumexp(x) - x_j)`` along ``axis``.

    With :math:`m = \max_j x_j`, :math:`d_j = x_j - m \le 0` and
    :math:`T = \sum_{j \ne \arg\max} e^{d_j}` (ties with the maximum count 1 each),

    .. math::

        \mathrm{loss} = \sum_j z_j \bigl(\log(1 + T) + (-d_j)\bigr)

    Every term is non-negative, and ``log1p(T)`` keeps the small ``T`` that ``log(1 + T)`` (TF,
    PyTorch, optax) rounds away: logits ``[20, 0]`` with labels ``[1, 0]`` give ``2.06e-9``, not
    ``0``. ``d_j`` is formed error-free (:func:`_two_sum`) and ``e^{d_j}`` corrected by the
    rounding error ``lo``: ``e^{hi + lo} ~ e^{hi} (1 + lo)``.

    Limits: a row with a single ``+inf`` logit is one-hot on it; a label of zero contributes zero
    even where its logit is ``-inf``; a row whose maximum is ``-inf`` (all ``-inf``), or holds
    more than one ``+inf``, has no limit and gives NaN, as does any NaN in the row.
    """
    zero = _scalar(0.0, x, xp=xp)
    nan = _scalar(float("nan"), x, xp=xp)
    m = xp.max(x, axis=axis, keepdims=True)
    is_max = x == m
    hi, lo = _two_sum(x, -m)
    hi = xp.where(is_max, zero, hi)
    # lo is NaN where hi is infinite (x = -inf); e^{-inf} = 0 needs no correction there.
    lo = xp.where(is_max | ~xp.isfinite(lo), zero, lo)
    exp_d = xp.exp(hi)
    exp_d = exp_d + exp_d * lo
    ties = xp.sum(xp.astype(is_max, x.dtype), axis=axis)
    tail = xp.sum(xp.where(is_max, zero, exp_d), axis=axis) + (ties - 1)
    log_sum = xp.log1p(tail)
    log_sum_j = xp.expand_dims(log_sum, axis=axis)
    # x_j - m overflows only for float64 logits further apart than the float64 range; there
    # the term is formed from halves, 2 z (log_sum / 2 + (m / 2 - x_j / 2)).
    overflow = xp.isinf(hi) & xp.isfinite(x) & xp.isfinite(m)
    halves = 2 * (z * (log_sum_j / 2 + (m / 2 - x / 2)))
    terms = xp.where(z == 0, zero, xp.where(overflow, halves, z * (log_sum_j - hi)))
    loss = xp.sum(terms, axis=axis)
    m = xp.squeeze(m, axis=axis)
    no_limit = xp.isnan(log_sum) | (m == -xp.inf) | ((m == xp.inf) & (ties > 1))
    return xp.where(no_limit, nan, loss)


def one_hot(labels: Array, num_classes: int, dtype: Any, *, xp: Any) -> Array:
    """``labels[..., None] == arange(num_classes)`` as ``dtype``, on ``labels``' device."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=_device(labels))
    return xp.astype(xp.expand_dims(labels, axis=-1) == classes, dtype)


def sparse_softmax_loss(x: Array, labels: Array, *, xp: Any) -> Array:
    """Softmax cross-entropy against integer ``labels`` over the last axis of ``x``.

    The same formula as :func:`softmax_loss` with one-hot labels; a label outside
    ``[0, num_classes)`` gives NaN for its row (eager backends raise before getting here).
    """
    num_classes = x.shape[-1]
    loss = softmax_loss(x, one_hot(labels, num_classes, x.dtype, xp=xp), axis=-1, xp=xp)
    out_of_range = (labels < 0) | (labels >= num_classes)
    return xp.where(out_of_range, _scalar(float("nan"), x, xp=xp), loss)
