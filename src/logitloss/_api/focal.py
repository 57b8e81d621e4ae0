"""The focal losses (RetinaNet): sigmoid and softmax, each with its modulating factor formed
in log space, so that no probability is rounded to 1 and no factor to 0 before its time."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._core import arrays, checks, options, reductions
from .._core.arrays import Array
from .._losses.softmax import formula as softmax_formula
from . import dispatch


@arrays.opaque_to_autograph
def sigmoid_focal_loss(
    logits: Any,
    labels: Any,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> Array:
    r"""Sigmoid focal loss (Lin et al., RetinaNet), as ``torchvision.ops.sigmoid_focal_loss``.

    With :math:`p = \sigma(x)` and :math:`p_t = p z + (1 - p)(1 - z)`:

    .. math::

        \ell = \alpha_t\, (1 - p_t)^\gamma\, \mathrm{CE}(x, z), \qquad
        \alpha_t = \alpha z + (1 - \alpha)(1 - z)

    where CE is :func:`sigmoid_cross_entropy_with_logits` (exact). torchvision forms
    ``(1 - p_t) ** gamma`` from a rounded ``p``: ``1 - p_t`` is 0 for a confident correct
    prediction (``x = 40, z = 1`` in float32), and for :math:`\gamma < 1` the derivative
    :math:`\gamma (1 - p_t)^{\gamma - 1}` is infinite there, so autograd gives ``0 * inf = NaN``.
    logitloss computes the factor as :math:`e^{\gamma \log(1 - p_t)}`, with

    .. math::

        1 - p_t = z\,\sigma(-x) + (1 - z)\,\sigma(x), \qquad
        \log(1 - p_t) = \log\bigl(a + b\,e^{-|x|}\bigr) - \log\bigl(1 + e^{-|x|}\bigr)

    (:math:`a = 1 - z, b = z` for :math:`x \ge 0`; :math:`a = z, b = 1 - z` for :math:`x < 0`;
    for a label of 0 or 1 this is :math:`-\mathrm{softplus}(\pm x)`), which is finite wherever
    the logit is, so every derivative is finite and none multiplies 0 by infinity. In float64
    for narrower dtypes, rounded once.

    Parameters
    ----------
    logits : array
        Real floating logits (float16, bfloat16, float32, float64), any shape.
    labels : array_like
        Labels in [0, 1] (soft labels too), the shape of ``logits``. Differentiable.
    alpha : float or None, default 0.25
        The weight of positives in [0, 1]; None or -1 (torchvision's value) for no weighting.
    gamma : float, default 2.0
        The focusing exponent, ``>= 0``; 0 gives the (alpha-weighted) cross-entropy.
    label_smoothing : float, default 0.0
        :math:`\varepsilon` in [0, 1]: labels move toward 0.5 (Keras),
        :math:`z' = z (1 - \varepsilon) + \varepsilon / 2`, in the compute dtype, before
        :math:`\alpha_t`, :math:`p_t` and CE are formed (as Keras' ``BinaryFocalCrossentropy``).
    reduction : {"none", "mean", "sum"}, default "none"
        torchvision's default. "mean" of an empty batch is 0 (torchvision: NaN).

    Returns
    -------
    array
        The logits' shape ("none") or a 0-d array, in the logits' dtype, library and device;
        differentiable in PyTorch and JAX with respect to ``logits`` and ``labels``.

    Raises
    ------
    TypeError
        For a wrong dtype or option type.
    ValueError
        For mismatched shapes, ``alpha`` outside [0, 1] (but -1), a negative ``gamma``,
        ``label_smoothing`` outside [0, 1], or an unknown ``reduction``.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logits = np.array([3.0, -1.0, 40.0], dtype=np.float32)
    >>> labels = np.array([1.0, 1.0, 1.0], dtype=np.float32)
    >>> logitloss.sigmoid_focal_loss(logits, labels)
    array([2.7320832e-05, 1.7546707e-01, 0.0000000e+00], dtype=float32)
    >>> logitloss.sigmoid_focal_loss(logits, labels, gamma=0.5, alpha=None)
    array([1.0581102e-02, 1.1228645e+00, 8.7565109e-27], dtype=float32)
    """
    fn = "sigmoid_focal_loss"
    reduction = options.reduction(fn, reduction)
    gamma = options.real(fn, "gamma", gamma, low=0.0)
    smoothing = options.real(fn, "label_smoothing", label_smoothing, low=0.0, high=1.0)
    if alpha is not None:
        alpha = options.real(fn, "alpha", alpha, low=-math.inf)
        if not (0 <= alpha <= 1 or alpha == -1):
            raise ValueError(f"{fn}: `alpha` must be in [0, 1], or -1 or None, got {alpha!r}")
    xp, device = checks.namespace_of(fn, logits=logits, labels=labels)
    x = checks.logits_array(fn, logits, xp, device)
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.same_shape(fn, "labels", z, x)
    with arrays.quiet():
        wx, wz = arrays.widen(xp, x, z)
        if smoothing:
            wz = wz * (1 - smoothing) + smoothing / 2
        loss = dispatch.logistic(wx, wz, None, xp=xp)
        if gamma:
            # gamma = 0 is skipped: exp(0 * log 0) would be NaN where the factor is 1.
            loss = loss * xp.exp(gamma * _log_one_minus_pt(wx, wz, xp=xp))
        if alpha is not None and alpha >= 0:
            loss = (alpha * wz + (1 - alpha) * (1 - wz)) * loss
        return reductions.reduce(loss, None, reduction, dtype=x.dtype, xp=xp)


def _log_one_minus_pt(x: Array, z: Array, *, xp: Any) -> Array:
    r""":math:`\log(1 - p_t) = \log(a + b e^{-|x|}) - \log(1 + e^{-|x|})`, finite for finite x.

    ``a + b e^{-|x|}`` adds non-negative terms (labels in [0, 1]). It underflows to 0 only for
    ``a = 0`` (a label of exactly 0 or 1 on the correct side) and ``|x| > 745``; there the
    value is ``log(b) - |x|``. Both wheres keep the unused branch finite, so that its zero
    cotangent never meets an infinite derivative.
    """
    zero = arrays.scalar(0.0, x, xp=xp)
    one = arrays.scalar(1.0, x, xp=xp)
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    e = xp.exp(-magnitude)
    a = xp.where(nonneg, 1 - z, z)
    b = xp.where(nonneg, z, 1 - z)
    inner = a + b * e
    normal = inner != 0
    near = xp.log(xp.where(normal, inner, one))
    far = xp.log(xp.where(b > 0, b, one)) - xp.where(normal, zero, magnitude)
    return xp.where(normal, near, far) - xp.log1p(e)


@arrays.opaque_to_autograph
def softmax_focal_loss(
    logits: Any,
    labels: Any,
    *,
    alpha: Any = None,
    gamma: float = 2.0,
    axis: int = -1,
    label_smoothing: float = 0.0,
    reduction: str = "none",
) -> Array:
    r"""Softmax (categorical) focal loss from logits, as Keras' ``CategoricalFocalCrossentropy``
    with ``from_logits=True``, without its probability clipping.

    With :math:`p = \operatorname{softmax}(x)` along ``axis``, labels :math:`z` (probabilities,
    or the one-hot of class indices), class weights :math:`\alpha_c` and smoothing
    :math:`\varepsilon` over :math:`C` classes (:math:`z' = (1 - \varepsilon) z + \varepsilon/C`):

    .. math::

        \ell = \sum_c \alpha_c\, z'_c\, (1 - p_c)^\gamma\, (-\log p_c)

    Keras forms :math:`p` by a softmax, clips it to :math:`[10^{-7}, 1 - 10^{-7}]` and takes
    ``log`` and ``power`` of the clipped value: logits ``[0, 40]`` with label 0,
    :math:`\gamma = 0`, :math:`\alpha = 1` give :math:`-\log 10^{-7} = 16.12`; the exact value
    is :math:`40 + \log(1 + e^{-40}) = 40`. Here :math:`-\log p_c` is the exact softmax
    cross-entropy's term (:func:`softmax_cross_entropy_with_logits`, whose exact gradients it
    keeps), taking :math:`z'_c \alpha_c (1 - p_c)^\gamma` as its labels, and the factor is
    :math:`e^{\gamma \log(1 - p_c)}` with, for :math:`m = \max_j x_j` and
    :math:`T = \sum_j e^{x_j - m} - 1` (the sum without one maximum),

    .. math::

        \log(1 - p_c) =
        \begin{cases}
            \operatorname{log1p}(-p_c) & p_c \le 1/2 \\
            \log T - \operatorname{log1p}(T) & p_c > 1/2
        \end{cases}

    (:math:`p_c > 1/2` only for the single largest logit, where :math:`1 - p_c = T / (1 + T)`).
    Neither branch cancels: :math:`1 - p_c` is never formed by a subtraction near 1, so a
    confident prediction keeps its tiny factor instead of 0 (or Keras' :math:`10^{-7 \gamma}`),
    and every term is non-negative. Computed in float64 for narrower dtypes (float32 on JAX
    without x64) and rounded once; differentiable by the library's autodiff through this
    formula (the cross-entropy's own exact rule inside).

    Parameters
    ----------
    logits : array
        Real floating logits (float16, bfloat16, float32, float64), classes along ``axis``.
    labels : array_like
        Probabilities (floating, broadcasting to the logits' shape; cast to the logits' dtype)
        or integer class indices (the logits' shape without ``axis``, in ``[0, C)``).
    alpha : float, sequence of floats, or None, default None
        Class weights :math:`\alpha_c \ge 0`: one number for every class, or ``C`` of them
        (host values, not differentiated). None weighs every class 1 (Keras' default, 0.25,
        only scales the loss).
    gamma : float, default 2.0
        The focusing exponent, ``>= 0``; 0 gives the (alpha-weighted) cross-entropy.
    axis : int, default -1
        The class axis.
    label_smoothing : float, default 0.0
        :math:`\varepsilon` in [0, 1], toward :math:`1/C` (Keras, PyTorch).
    reduction : {"none", "mean", "sum"}, default "none"
        "none" gives one loss per row (the logits' shape without ``axis``); "mean" of no rows
        is 0.

    Returns
    -------
    array
        One loss per row, or a 0-d array, in the logits' dtype, library and device;
        differentiable in PyTorch and JAX with respect to ``logits`` and probability ``labels``.

    Raises
    ------
    TypeError
        For a wrong dtype or option type.
    ValueError
        For a wrong labels or alpha shape, index labels out of range (where they can be read;
        NaN rows under ``jax.jit``), a negative or non-finite ``alpha`` or ``gamma``,
        ``label_smoothing`` outside [0, 1], or an unknown ``reduction``.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logits = np.array([[0.0, 40.0], [2.0, -1.0]], dtype=np.float32)
    >>> logitloss.softmax_focal_loss(logits, np.array([0, 0]), gamma=0.0)
    array([40.        ,  0.04858735], dtype=float32)

    A confident prediction keeps its tiny loss, ``(e^{-10})^2 \cdot 4.5 \cdot 10^{-5}``;
    index and one-hot labels agree:

    >>> logits = np.array([[0.0, 10.0], [2.0, -1.0]], dtype=np.float32)
    >>> logitloss.softmax_focal_loss(logits, np.array([[0.0, 1.0], [1.0, 0.0]], np.float32))
    array([9.35656107e-14, 1.09283326e-04], dtype=float32)
    >>> logitloss.softmax_focal_loss(logits, np.array([1, 0]), alpha=[0.5, 2.0], reduction="sum")
    array(5.4641663e-05, dtype=float32)
    """
    fn = "softmax_focal_loss"
    reduction = options.reduction(fn, reduction)
    gamma = options.real(fn, "gamma", gamma, low=0.0)
    smoothing = options.real(fn, "label_smoothing", label_smoothing, low=0.0, high=1.0)
    xp, device = checks.namespace_of(fn, logits=logits, labels=labels)
    x = checks.logits_array(fn, logits, xp, device)
    axis = checks.class_axis(fn, axis, x)
    num_classes = x.shape[axis]
    weights = _class_weights(fn, alpha, num_classes)
    if labels is None:
        raise TypeError(f"{fn}: `labels` is required, got None")
    labels = checks.in_namespace_of(fn, "labels", labels, x, xp)
    indices = None
    if arrays.is_integer_dtype(xp, labels.dtype):
        indices = _index_labels(fn, labels, x, axis, xp=xp)
        # Classes last, where the one-hot of the indices lies; the rows keep their order.
        if axis != x.ndim - 1:
            x = xp.permute_dims(x, (*(i for i in range(x.ndim) if i != axis), axis))
        axis = x.ndim - 1
        z = softmax_formula.one_hot(indices, num_classes, x.dtype, xp=xp)
    else:
        z = checks.float_labels(fn, "labels", labels, x, xp)
        checks.broadcasts_into(fn, "labels", z, tuple(x.shape))
    with arrays.quiet():
        wx, wz = arrays.widen(xp, x, z)
        if smoothing:
            wz = (1 - smoothing) * wz + smoothing / num_classes
        target = xp.broadcast_to(wz, tuple(wx.shape))
        if gamma:
            # gamma = 0 is skipped: exp(0 * log 0) would be NaN where the factor is 1.
            target = target * xp.exp(gamma * _log_one_minus_p(wx, axis=axis, xp=xp))
        if weights is not None:
            target = target * _along_axis(weights, wx, axis, xp=xp)
        loss = dispatch.softmax(_floor_unlabelled(wx, wz, axis=axis, xp=xp), target, axis=axis,
                                xp=xp)  # fmt: skip
        if indices is not None:
            loss = softmax_formula.nan_out_of_range(loss, indices, num_classes, xp=xp)
        return reductions.reduce(loss, None, reduction, dtype=x.dtype, xp=xp)


def _class_weights(fn: str, alpha: Any, num_classes: int) -> np.ndarray | None:
    """``alpha`` as float64 host values of shape ``(num_classes,)`` (one number broadcast), each
    finite and ``>= 0``; None for None."""
    if alpha is None:
        return None
    if isinstance(alpha, (bool, np.bool_)):
        raise TypeError(f"{fn}: `alpha` must be a real number, a sequence of them or None, "
                        f"got {checks.describe(alpha)}")  # fmt: skip
    try:
        values = np.asarray(alpha, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{fn}: `alpha` must be a real number, a sequence of them or None, "
            f"got {checks.describe(alpha)}"
        ) from None
    if values.ndim > 1 or (values.ndim == 1 and values.shape[0] != num_classes):
        raise ValueError(
            f"{fn}: `alpha` must be one number or one per class ({num_classes},), "
            f"got shape {values.shape}"
        )
    if not (np.all(np.isfinite(values)) and np.all(values >= 0)):
        raise ValueError(f"{fn}: `alpha` must be finite and >= 0, got {alpha!r}")
    return np.array(np.broadcast_to(values, (num_classes,)))  # writable: torch warns otherwise


def _index_labels(fn: str, labels: Array, x: Array, axis: int, *, xp: Any) -> Array:
    """Integer class labels of the logits' shape without ``axis``, in range where readable."""
    rows = tuple(n for i, n in enumerate(x.shape) if i != axis)
    if tuple(labels.shape) != rows:
        raise ValueError(
            f"{fn}: integer `labels` (class indices) must have the shape of `logits` without "
            f"axis {axis}, {rows}; got {tuple(labels.shape)}"
        )
    checks.labels_in_range(fn, labels, x.shape[axis], xp)
    return labels


def _along_axis(weights: np.ndarray, wx: Array, axis: int, *, xp: Any) -> Array:
    """Host class weights as an array of ``wx``'s dtype and device, along ``axis``."""
    shape = [1] * wx.ndim
    shape[axis] = wx.shape[axis]
    values = xp.asarray(np.reshape(weights, tuple(shape)), dtype=wx.dtype,
                        device=arrays.device(wx))  # fmt: skip
    return values


def _log_one_minus_p(wx: Array, *, axis: int, xp: Any) -> Array:
    r""":math:`\log(1 - p_c)` for every class: ``log1p(-p)`` where :math:`p \le 1/2`, else
    (the single largest logit) :math:`\log T - \operatorname{log1p}(T)`.

    ``e^{x - m}`` is formed as it is, without pinning the maxima to 1 (as the loss's
    ``softmax_parts`` does): autodiff then follows the shift by :math:`m` exactly, also between
    tied maxima, whose derivative a constant 1 would lose. The ``where``\ s keep the unused
    branches finite (``log1p(-1)``, ``log(0)``, ``inf - inf``), so that their zero cotangent
    never meets an infinite derivative. :math:`T = 0` (the other logits ``e^{-745}`` below the
    largest in float64, or ``-inf``) gives :math:`-\infty` and the factor 0, its limit; the
    loss term it multiplies, :math:`\operatorname{log1p}(T)`, is 0 there. A row with one
    ``+inf`` logit is one-hot on it: :math:`-\infty` there, 0 elsewhere.
    """
    zero = arrays.scalar(0.0, wx, xp=xp)
    one = arrays.scalar(1.0, wx, xp=xp)
    m = xp.max(wx, axis=axis, keepdims=True)
    finite = xp.isfinite(m)
    xs = xp.where(finite, wx, zero)
    e = xp.exp(xs - xp.where(finite, m, zero))
    p = e / xp.sum(e, axis=axis, keepdims=True)
    small = p <= 0.5
    near_zero = xp.log1p(-xp.where(small, p, zero))
    first = softmax_formula.first_max(xs, axis=axis, xp=xp)
    tail = xp.sum(xp.where(first, zero, e), axis=axis, keepdims=True)
    has_tail = tail > 0
    log_tail = xp.log(xp.where(has_tail, tail, one))
    near_one = xp.where(has_tail, log_tail - xp.log1p(tail), -xp.inf * one)
    log_rest = xp.where(small, near_zero, near_one)
    at_inf = xp.where(wx == xp.inf, -xp.inf * one, zero)
    return xp.where(m == xp.inf, at_inf, log_rest)


def _floor_unlabelled(wx: Array, wz: Array, *, axis: int, xp: Any) -> Array:
    r"""``wx`` with each ``-inf`` logit of zero label raised to a finite floor far below the row.

    The loss is the same (a zero label contributes 0, and ``e^{floor - max}`` is 0), but the
    cross-entropy's derivative with respect to that label, :math:`\operatorname{logsumexp}(x)
    - x_c`, becomes finite: it meets the focal factor's zero derivative there, and
    ``inf * 0`` would make every gradient of the row NaN. Rows without a limit (all ``-inf``)
    are left as they are.
    """
    m = xp.max(wx, axis=axis, keepdims=True)
    # At least 1e4 below the maximum, e^(floor - m) = 0 in every dtype; finite but for
    # maxima near the float64 range's bottom, where -inf stays.
    floor = 2 * xp.where(m < 0, m, arrays.scalar(0.0, wx, xp=xp)) - 1e4
    raise_it = (wx == -xp.inf) & (xp.broadcast_to(wz, tuple(wx.shape)) == 0) & xp.isfinite(floor)
    return xp.where(raise_it, floor, wx)
