"""The softmax losses' math (soft and sparse labels) and their exact gradients.

The conventions every formula keeps are in ``_losses/__init__.py``.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..._core import arrays, compensated
from ..._core.arrays import Array
from ..family import Family

# Entries this close below the row maximum keep e^(x - m) as 1 + expm1(x - m) in the gradient.
LN3 = math.log(3.0)


def softmax_loss(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    r"""Softmax cross-entropy ``sum_j z_j (logsumexp(x) - x_j)`` along ``axis``.

    With :math:`m = \max_j x_j`, :math:`d_j = x_j - m \le 0` and
    :math:`T = \sum_{j \ne \arg\max} e^{d_j}` (ties with the maximum count 1 each),

    .. math::

        \mathrm{loss} = \sum_j z_j \bigl(\log(1 + T) + (-d_j)\bigr)

    Every term is non-negative, and ``log1p(T)`` keeps the small ``T`` that ``log(1 + T)`` (TF,
    PyTorch, optax) rounds away: logits ``[20, 0]`` with labels ``[1, 0]`` give ``2.06e-9``, not
    ``0``. ``d_j`` is formed error-free (``compensated.two_sum``) and ``e^{d_j}`` corrected by
    the rounding error ``lo``: ``e^{hi + lo} ~ e^{hi} (1 + lo)``.

    Limits: a row with a single ``+inf`` logit is one-hot on it; a label of zero contributes zero
    even where its logit is ``-inf``; a row whose maximum is ``-inf`` (all ``-inf``), or holds
    more than one ``+inf``, has no limit and gives NaN, as does any NaN in the row.
    """
    zero = arrays.scalar(0.0, x, xp=xp)
    parts = softmax_parts(x, axis=axis, xp=xp)
    log_sum = xp.log1p(parts.tail)
    # x_j - m overflows only for float64 logits further apart than the float64 range; there
    # the term is formed from halves, 2 z (log_sum / 2 + (m / 2 - x_j / 2)).
    overflow = xp.isinf(parts.hi) & xp.isfinite(x) & xp.isfinite(parts.m)
    halves = 2 * (z * (log_sum / 2 + (parts.m / 2 - x / 2)))
    terms = xp.where(z == 0, zero, xp.where(overflow, halves, z * (log_sum - parts.hi)))
    loss = compensated.class_sum(terms, axis=axis, xp=xp)
    return xp.squeeze(nan_without_limit(loss, parts, xp=xp), axis=axis)


class SoftmaxParts(NamedTuple):
    m: Array  # the row maximum (keepdims)
    is_max: Array  # where x equals the maximum
    hi: Array  # x - m, error-free up to lo; 0 at the maxima
    e: Array  # e^(x - m), corrected by the rounding error of hi; 1 at the maxima
    ties: Array  # how many entries equal the maximum (keepdims)
    small_tail: Array  # the sum of e over the entries below the maximum (keepdims)
    tail: Array  # T = (ties - 1) + small_tail: the sum of e but for one maximum (keepdims)


def softmax_parts(x: Array, *, axis: int, xp: Any) -> SoftmaxParts:
    zero = arrays.scalar(0.0, x, xp=xp)
    m = xp.max(x, axis=axis, keepdims=True)
    is_max = x == m
    hi, lo = compensated.two_sum(x, -m)
    hi = xp.where(is_max, zero, hi)
    # lo is NaN where hi is infinite (x = -inf); e^{-inf} = 0 needs no correction there.
    lo = xp.where(is_max | ~xp.isfinite(lo), zero, lo)
    e = xp.exp(hi)
    e = e + e * lo
    ties = xp.sum(xp.astype(is_max, x.dtype), axis=axis, keepdims=True)
    small_tail = compensated.class_sum(xp.where(is_max, zero, e), axis=axis, xp=xp)
    return SoftmaxParts(m, is_max, hi, e, ties, small_tail, small_tail + (ties - 1))


def nan_without_limit(value: Array, parts: SoftmaxParts, *, xp: Any) -> Array:
    """NaN for rows with a NaN, all ``-inf`` or more than one ``+inf``: no limit exists."""
    m = parts.m
    no_limit = xp.isnan(parts.tail) | (m == -xp.inf) | ((m == xp.inf) & (parts.ties > 1))
    return xp.where(no_limit, arrays.scalar(float("nan"), value, xp=xp), value)


def one_hot(labels: Array, num_classes: int, dtype: Any, *, xp: Any) -> Array:
    """``labels[..., None] == arange(num_classes)`` as ``dtype``, on ``labels``' device."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=arrays.device(labels))
    return xp.astype(xp.expand_dims(labels, axis=-1) == classes, dtype)


def sparse_softmax_loss(x: Array, labels: Array, *, xp: Any) -> Array:
    """Softmax cross-entropy against integer ``labels`` over the last axis of ``x``.

    The same formula as :func:`softmax_loss` with one-hot labels; a label outside
    ``[0, num_classes)`` gives NaN for its row (eager backends raise before getting here).
    """
    z = one_hot(labels, x.shape[-1], x.dtype, xp=xp)
    return nan_out_of_range(softmax_loss(x, z, axis=-1, xp=xp), labels, x.shape[-1], xp=xp)


def nan_out_of_range(value: Array, labels: Array, num_classes: int, *, xp: Any) -> Array:
    """NaN for the rows (of the loss, or of a gradient) whose label is not a class."""
    out_of_range = (labels < 0) | (labels >= num_classes)
    if value.ndim > labels.ndim:
        out_of_range = xp.expand_dims(out_of_range, axis=-1)
    return xp.where(out_of_range, arrays.scalar(float("nan"), value, xp=xp), value)


def first_max(x: Array, *, axis: int, xp: Any) -> Array:
    """A mask of the first maximum of each row along ``axis``."""
    axis %= x.ndim
    index = xp.argmax(x, axis=axis, keepdims=True)
    positions = xp.arange(x.shape[axis], device=arrays.device(x))
    positions = xp.reshape(positions, tuple(-1 if d == axis else 1 for d in range(x.ndim)))
    return positions == index


def softmax_grad_logits(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    r"""``d/dx_j`` of :func:`softmax_loss`: :math:`\mathrm{softmax}(x)_j \sum_k z_k - z_j`.

    The true derivative for labels of any sum (TF's kernel returns ``softmax - z``, which is
    this only when the labels sum to 1). With ``e_j = e^{x_j - m}``, :math:`S = \sum_k z_k`
    and :math:`D = \sum_k e_k`, the derivative is :math:`(S e_j - z_j D) / D`.

    The entries below the maximum are split: "near" ones (``x_j - m > -ln 3``), whose ``e_j``
    is kept as ``1 + u_j``, ``u_j = expm1(x_j - m)`` (which keeps a difference of logits that
    float64 cannot resolve next to 1: ``[0, 1e-30]``), and "far" ones. With ``C`` the number
    of maxima and near entries, ``U`` the sum of their ``u`` and ``t`` the sum of the far
    ``e``, ``D = C + t + U`` and the numerator is

    - at a maximum: :math:`(S_j - z_j (C - 1)) - z_j (t + U)`, ``S_j`` the sum of the other
      labels (for the first maximum summed without ``z_j``; ``S - z_j`` at the other maxima),
      so that a softmax near one does not round ``1 / (1 + T) - 1`` to 0;
    - near: :math:`((S - z_j C) + S u_j) - z_j (t + U)`;
    - far: ``S e_j / D - z_j`` as it is.
    """
    zero = arrays.scalar(0.0, x, xp=xp)
    z = xp.broadcast_to(z, x.shape)
    parts = softmax_parts(x, axis=axis, xp=xp)
    firsts = first_max(x, axis=axis, xp=xp)
    total = xp.sum(z, axis=axis, keepdims=True)
    # S - z_j at the maxima: for the first one summed without it (no cancellation).
    others = xp.where(firsts, xp.sum(xp.where(firsts, zero, z), axis=axis, keepdims=True),
                      total - z)  # fmt: skip
    # e^(x - m) - 1 for the near entries, from the error-free x - m = hi + lo.
    _, lo = compensated.two_sum(x, -parts.m)
    near = ~parts.is_max & (parts.hi > -LN3)
    lo = xp.where(near & xp.isfinite(lo), lo, zero)
    u = xp.expm1(xp.where(near, parts.hi, zero))
    u = u + (1 + u) * lo
    count = parts.ties + xp.sum(xp.astype(near, x.dtype), axis=axis, keepdims=True)
    far_tail = xp.sum(xp.where(near | parts.is_max, zero, parts.e), axis=axis, keepdims=True)
    near_tail = xp.sum(u, axis=axis, keepdims=True)
    rest = far_tail + near_tail  # t + U
    # 1 + T = ties + small_tail, kept apart so that a tie's 1 does not absorb the small tail.
    denominator = parts.ties + parts.small_tail
    at_max = ((others - z * (count - 1)) - z * rest) / denominator
    near_value = (((total - z * count) + total * u) - z * rest) / denominator
    far_value = (total * parts.e) / denominator - z
    grad = xp.where(parts.is_max, at_max, xp.where(near, near_value, far_value))
    return nan_without_limit(grad, parts, xp=xp)


def softmax_grad_labels(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    r"""``d/dz_j`` of :func:`softmax_loss`: :math:`\operatorname{logsumexp}(x) - x_j \ge 0`
    (``+inf`` where that exceeds the float range)."""
    parts = softmax_parts(x, axis=axis, xp=xp)
    gap = nan_without_limit(xp.log1p(parts.tail) - parts.hi, parts, xp=xp)
    return xp.broadcast_to(gap, arrays.broadcast_shape(x, z))


def sparse_softmax_grad_logits(x: Array, labels: Array, *, xp: Any) -> Array:
    """``d/dx`` of :func:`sparse_softmax_loss`: ``softmax(x) - one_hot(labels)``."""
    z = one_hot(labels, x.shape[-1], x.dtype, xp=xp)
    grad = softmax_grad_logits(x, z, axis=-1, xp=xp)
    return nan_out_of_range(grad, labels, x.shape[-1], xp=xp)


# The families for the generic layers (``_losses.family``).
SOFTMAX = Family(
    name="softmax",
    operands=("labels",),
    loss=softmax_loss,
    grads={"logits": softmax_grad_logits, "labels": softmax_grad_labels},
    kernels=f"{__package__}.kernel",
    broadcast=frozenset({"labels"}),
    class_axis="axis",
)

SPARSE_SOFTMAX = Family(
    name="sparse_softmax",
    operands=("labels",),
    loss=sparse_softmax_loss,
    grads={"logits": sparse_softmax_grad_logits},
    kernels=f"{__package__}.kernel",
    integer=frozenset({"labels"}),
    class_axis=-1,
)
