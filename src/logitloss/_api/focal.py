"""The sigmoid focal loss (RetinaNet), with its modulating factor formed in log space."""

from __future__ import annotations

import math
from typing import Any

from .._core import arrays, checks, options, reductions
from .._core.arrays import Array
from . import dispatch


def sigmoid_focal_loss(
    logits: Any,
    labels: Any,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
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
        For mismatched shapes, ``alpha`` outside [0, 1] (but -1), a negative ``gamma``, or an
        unknown ``reduction``.

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
