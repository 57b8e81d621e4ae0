"""The exact gradients of the four losses, as functions: for NumPy users (training in NumPy,
logistic regression, teaching), and the reference for every autodiff path.

Each returns the gradient of ``sum(upstream * loss)`` (``upstream`` = ones by default) with
respect to one argument, ``wrt``, in the logits' dtype, library and device, and the shape of that
argument. Same argument names, validation and array-library support as the losses.
"""

from __future__ import annotations

from typing import Any

from .._core import arrays, checks
from .._core.arrays import Array
from .._losses.logistic.formula import LOGISTIC
from .._losses.softmax.formula import SOFTMAX, SPARSE_SOFTMAX
from . import dispatch


def _upstream(fn: str, upstream: Any, x: Array, xp: Any, axis: int | None = None) -> Array:
    """``upstream`` cast to the logits' dtype and broadcast to the loss's shape (the logits'
    without ``axis``), ones if None."""
    loss_shape = tuple(n for d, n in enumerate(x.shape) if d != axis)
    target: Any = loss_shape
    if None in loss_shape:
        # A traced TF tensor of unknown dimensions: the loss's shape when the graph runs.
        import tensorflow as tf

        dynamic = tf.shape(x)
        target = dynamic if axis is None else tf.concat([dynamic[:axis], dynamic[axis + 1 :]], 0)
    if upstream is None:
        # A broadcast 1, not an array of ones: nothing to allocate, fill or read per element.
        one = xp.ones((), dtype=x.dtype, device=checks.device_of(x))
        return xp.broadcast_to(one, target)
    g = checks.float_labels(fn, "upstream", upstream, x, xp)
    checks.broadcasts_into(fn, "upstream", g, loss_shape, "the loss")
    return xp.broadcast_to(g, target)


def _check_wrt(fn: str, wrt: Any, allowed: tuple[str, ...]) -> str:
    if wrt not in allowed:
        names = ", ".join(repr(a) for a in allowed)
        raise ValueError(f"{fn}: `wrt` must be one of {names}; got {wrt!r}")
    return wrt


@arrays.opaque_to_autograph
def sigmoid_cross_entropy_with_logits_grad(
    labels: Any, logits: Any, *, upstream: Any = None, wrt: str = "logits"
) -> Array:
    r"""Gradient of ``sum(upstream * sigmoid_cross_entropy_with_logits(labels, logits))``.

    .. math::

        \frac{\partial}{\partial x} = \sigma(x) - z, \qquad
        \frac{\partial}{\partial z} = -x

    computed without the cancellation of ``sigma(x) - z``: for :math:`|x| < \ln 3` as
    :math:`\tanh(x/2)/2 + (1 - 2z)/2`, beyond as :math:`(1 - z) - \sigma(-x)` or
    :math:`\sigma(x) - z` with the small sigmoid formed directly. ``x = 1e-10, z = 0.5`` gives
    ``2.5e-11`` (every framework returns 0); ``x = +inf`` gives ``1 - z``.

    Parameters
    ----------
    labels, logits : array_like
        As for :func:`logitloss.sigmoid_cross_entropy_with_logits`.
    upstream : array_like, optional
        The cotangent of the loss (broadcast to its shape); ones by default.
    wrt : {"logits", "labels"}
        The argument to differentiate with respect to.

    Returns
    -------
    array
        The gradient, shaped like ``wrt``'s argument, in the logits' dtype and library.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logitloss.sigmoid_cross_entropy_with_logits_grad([0.5, 1.0, 0.0], [1e-10, np.inf, np.inf])
    array([2.5e-11, 0.0e+00, 1.0e+00])
    """
    fn = "sigmoid_cross_entropy_with_logits_grad"
    wrt = _check_wrt(fn, wrt, ("logits", "labels"))
    xp, device = checks.namespace_of(fn, labels=labels, logits=logits, upstream=upstream)
    x = checks.logits_array(fn, logits, xp, device)
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.same_shape(fn, "labels", z, x)
    g = _upstream(fn, upstream, x, xp)
    return dispatch.grad(LOGISTIC, x, (z, None), {}, g, wrt=wrt, xp=xp)


@arrays.opaque_to_autograph
def weighted_cross_entropy_with_logits_grad(
    labels: Any, logits: Any, pos_weight: Any, *, upstream: Any = None, wrt: str = "logits"
) -> Array:
    r"""Gradient of ``sum(upstream * weighted_cross_entropy_with_logits(...))``.

    .. math::

        \frac{\partial}{\partial x} = (1 - z)\,\sigma(x) - q z\,\sigma(-x), \qquad
        \frac{\partial}{\partial z} = q\,\mathrm{softplus}(-x) - \mathrm{softplus}(x), \qquad
        \frac{\partial}{\partial q} = z\,\mathrm{softplus}(-x)

    The logits' derivative is formed as :math:`\tfrac{l}{2}\tanh(x/2) + \tfrac{(1-z) - qz}{2}`
    for :math:`|x| < \ln 3` and as :math:`(1 - z) - l\sigma(-x)` or :math:`l\sigma(x) - qz`
    beyond (:math:`l = (1 - z) + qz`), so only the gradient's own zero cancels. The
    ``pos_weight`` gradient is summed to ``pos_weight``'s shape (a 0-d array for a scalar).

    Parameters
    ----------
    labels, logits, pos_weight : array_like
        As for :func:`logitloss.weighted_cross_entropy_with_logits`.
    upstream : array_like, optional
        The cotangent of the loss (broadcast to its shape); ones by default.
    wrt : {"logits", "labels", "pos_weight"}
        The argument to differentiate with respect to.

    Returns
    -------
    array
        The gradient, shaped like ``wrt``'s argument, in the logits' dtype and library.

    Examples
    --------
    >>> import logitloss
    >>> logitloss.weighted_cross_entropy_with_logits_grad([0.0, 1.0], [0.0, 0.0], 3.0)
    array([ 0.5, -1.5])
    >>> logitloss.weighted_cross_entropy_with_logits_grad([0.0, 1.0], [0.0, 0.0], 3.0,
    ...                                                   wrt="pos_weight")
    array(0.69314718)
    """
    fn = "weighted_cross_entropy_with_logits_grad"
    wrt = _check_wrt(fn, wrt, ("logits", "labels", "pos_weight"))
    xp, device = checks.namespace_of(
        fn, labels=labels, logits=logits, pos_weight=pos_weight, upstream=upstream
    )
    x = checks.logits_array(fn, logits, xp, device)
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.same_shape(fn, "labels", z, x)
    q = checks.float_labels(fn, "pos_weight", pos_weight, x, xp)
    checks.broadcasts_into(fn, "pos_weight", q, tuple(x.shape))
    g = _upstream(fn, upstream, x, xp)
    return dispatch.grad(LOGISTIC, x, (z, q), {}, g, wrt=wrt, xp=xp)


@arrays.opaque_to_autograph
def softmax_cross_entropy_with_logits_grad(
    labels: Any, logits: Any, axis: int = -1, *, upstream: Any = None, wrt: str = "logits"
) -> Array:
    r"""Gradient of ``sum(upstream * softmax_cross_entropy_with_logits(labels, logits, axis))``.

    .. math::

        \frac{\partial}{\partial x_j} = \mathrm{softmax}(x)_j \sum_k z_k - z_j, \qquad
        \frac{\partial}{\partial z_j} = \operatorname{logsumexp}(x) - x_j

    The true derivative, as PyTorch and optax compute it. TensorFlow's kernel returns
    ``softmax(x) - z``, which equals it only when each row of labels sums to 1. The entry of
    the maximum is formed as :math:`(\sum_{k \ne a} z_k - z_a T)/(1 + T)`, so a confident
    softmax keeps its small gradient. The labels' gradient is summed to the labels' shape when
    they were broadcast.

    Parameters
    ----------
    labels, logits, axis : array_like, array_like, int
        As for :func:`logitloss.softmax_cross_entropy_with_logits`.
    upstream : array_like, optional
        The cotangent of the loss (shape of the loss, broadcast); ones by default.
    wrt : {"logits", "labels"}
        The argument to differentiate with respect to.

    Returns
    -------
    array
        The gradient, shaped like ``wrt``'s argument, in the logits' dtype and library.

    Examples
    --------
    >>> import logitloss
    >>> logitloss.softmax_cross_entropy_with_logits_grad([1.0, 0.0], [20.0, 0.0])
    array([-2.06115362e-09,  2.06115362e-09])
    """
    fn = "softmax_cross_entropy_with_logits_grad"
    wrt = _check_wrt(fn, wrt, ("logits", "labels"))
    xp, device = checks.namespace_of(fn, labels=labels, logits=logits, upstream=upstream)
    x = checks.logits_array(fn, logits, xp, device)
    axis = checks.class_axis(fn, axis, x)
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.broadcasts_into(fn, "labels", z, tuple(x.shape))
    g = _upstream(fn, upstream, x, xp, axis)
    return dispatch.grad(SOFTMAX, x, (z,), {"axis": axis}, g, wrt=wrt, xp=xp)


@arrays.opaque_to_autograph
def sparse_softmax_cross_entropy_with_logits_grad(
    labels: Any, logits: Any, *, upstream: Any = None
) -> Array:
    r"""Gradient of ``sum(upstream * sparse_softmax_cross_entropy_with_logits(labels, logits))``
    with respect to the logits: :math:`\mathrm{softmax}(x) - \mathrm{onehot}(\mathrm{labels})`.

    Parameters
    ----------
    labels, logits : array_like
        As for :func:`logitloss.sparse_softmax_cross_entropy_with_logits`.
    upstream : array_like, optional
        The cotangent of the loss (shape ``logits.shape[:-1]``, broadcast); ones by default.

    Returns
    -------
    array
        The gradient, shaped like the logits, in their dtype and library.

    Examples
    --------
    >>> import logitloss
    >>> logitloss.sparse_softmax_cross_entropy_with_logits_grad([0], [[20.0, 0.0]])
    array([[-2.06115362e-09,  2.06115362e-09]])
    """
    fn = "sparse_softmax_cross_entropy_with_logits_grad"
    xp, device = checks.namespace_of(fn, labels=labels, logits=logits, upstream=upstream)
    x = checks.logits_array(fn, logits, xp, device)
    labels = checks.sparse_labels(fn, labels, x, xp)
    g = _upstream(fn, upstream, x, xp, x.ndim - 1)
    return dispatch.grad(SPARSE_SOFTMAX, x, (labels,), {}, g, wrt="logits", xp=xp)
