"""The public ``tf.nn``-style losses: docstring, validation, pick the namespace, compute.

Each function takes TensorFlow's argument names in TensorFlow's order, accepts and ignores
``name``, returns the unreduced loss as an array of the logits' library, device and dtype, and
never modifies its inputs.
"""

from __future__ import annotations

from typing import Any

from .._core import arrays, checks
from .._core.arrays import Array
from .._losses.logistic.formula import LOGISTIC
from .._losses.softmax.formula import SOFTMAX, SPARSE_SOFTMAX
from . import dispatch


@arrays.opaque_to_autograph
def sigmoid_cross_entropy_with_logits(
    labels: Any = None, logits: Any = None, name: str | None = None
) -> Array:
    r"""Elementwise sigmoid cross-entropy, as ``tf.nn.sigmoid_cross_entropy_with_logits``.

    For each class independently (multi-label classification), with :math:`x` the logit and
    :math:`z` the label:

    .. math::

        z \cdot -\log\sigma(x) + (1 - z) \cdot -\log(1 - \sigma(x))

    TensorFlow computes ``max(x, 0) - x * z + log(1 + exp(-|x|))``, whose ``x - x z`` cancels for
    labels near 1 (4.2e6 ULP off at ``x = 24, z = 1 - 2^-23`` in float32) and gives NaN at
    ``x = +inf, z = 1``. logitloss adds two non-negative terms instead,

    .. math::

        x \ge 0:\ (1 - z)\,x + \log(1 + e^{-x}), \qquad x < 0:\ z\,(-x) + \log(1 + e^{x}),

    in float64 for narrower dtypes, rounded once: within 1 ULP of the exact value for float16,
    bfloat16 and float32, a few ULP for float64 (labels in [0, 1]), and the exact limits at
    infinite logits.

    Parameters
    ----------
    labels : array_like
        Labels ``z`` (usually in [0, 1]), the shape of ``logits``; cast to the logits' dtype.
    logits : array
        Real floating logits ``x`` of any shape (float16, bfloat16, float32, float64).
    name : str, optional
        Accepted for compatibility with TensorFlow and ignored.

    Returns
    -------
    array
        The loss per element: the shape, dtype, library and device of ``logits``.

    Raises
    ------
    TypeError
        If ``logits`` is not real floating or ``labels`` is not real-valued.
    ValueError
        If ``labels`` and ``logits`` have different shapes.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logits = np.array([[0.2, 0.2], [0.3, 0.1]], dtype=np.float32)
    >>> labels = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    >>> logitloss.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    array([[0.79813886, 0.59813887],
           [0.55435526, 0.7443967 ]], dtype=float32)
    >>> logitloss.sigmoid_cross_entropy_with_logits(labels=[1.0, 0.0], logits=[np.inf, np.inf])
    array([ 0., inf])
    """
    fn = "sigmoid_cross_entropy_with_logits"
    xp, device = checks.namespace_of(fn, labels=labels, logits=logits)
    x = checks.logits_array(fn, logits, xp, device)
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.same_shape(fn, "labels", z, x)
    return dispatch.loss(LOGISTIC, x, (z, None), {}, xp=xp)


@arrays.opaque_to_autograph
def weighted_cross_entropy_with_logits(
    labels: Any = None,
    logits: Any = None,
    pos_weight: Any = None,
    name: str | None = None,
    *,
    targets: Any = None,
) -> Array:
    r"""Elementwise weighted sigmoid cross-entropy, as ``tf.nn.weighted_cross_entropy_with_logits``.

    ``pos_weight`` :math:`q` scales the cost of an error on a positive label: :math:`q > 1`
    raises recall, :math:`q < 1` raises precision.

    .. math::

        q z \cdot -\log\sigma(x) + (1 - z) \cdot -\log(1 - \sigma(x))

    TensorFlow computes ``(1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))`` with
    ``l = 1 + (q - 1) z``; for negative logits the small log term is lost next to ``-x`` (0 at
    ``x = -20, z = 0``, exact 2.06e-9), and ``l`` itself cancels. logitloss uses
    :math:`l = (1 - z) + q z` and two non-negative terms,

    .. math::

        x \ge 0:\ (1 - z)\,x + l \log(1 + e^{-x}), \qquad x < 0:\ q z\,(-x) + l \log(1 + e^{x}),

    in float64 for narrower dtypes, rounded once (1 ULP for float16, bfloat16, float32; a few ULP
    for float64), with exact limits at infinite logits, for labels in [0, 1] and ``q >= 0``.

    Parameters
    ----------
    labels : array_like
        Labels ``z``, the shape of ``logits``; cast to the logits' dtype. ``targets`` is TF1's
        name for the same argument (give one of the two).
    logits : array
        Real floating logits ``x`` (float16, bfloat16, float32, float64).
    pos_weight : float or array_like
        The weight ``q`` of positive labels: a scalar, or an array that broadcasts to the logits'
        shape without enlarging it (per class, for instance); cast to the logits' dtype.
    name : str, optional
        Accepted for compatibility with TensorFlow and ignored.
    targets : array_like, optional
        TensorFlow 1's spelling of ``labels``.

    Returns
    -------
    array
        The loss per element: the shape, dtype, library and device of ``logits``.

    Raises
    ------
    TypeError
        For a missing argument, both ``labels`` and ``targets``, or a wrong dtype.
    ValueError
        If ``labels`` and ``logits`` differ in shape, or ``pos_weight`` would enlarge the result.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logitloss.weighted_cross_entropy_with_logits(
    ...     labels=[1.0, 0.0, 0.0], logits=[0.5, 0.5, -20.0], pos_weight=2.0)
    array([9.48153968e-01, 9.74076984e-01, 2.06115362e-09])
    """
    fn = "weighted_cross_entropy_with_logits"
    if targets is not None:
        if labels is not None:
            raise TypeError(f"{fn}: give `labels` or its TF1 name `targets`, not both")
        labels = targets
    xp, device = checks.namespace_of(fn, labels=labels, logits=logits, pos_weight=pos_weight)
    x = checks.logits_array(fn, logits, xp, device)
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.same_shape(fn, "labels", z, x)
    q = checks.float_labels(fn, "pos_weight", pos_weight, x, xp)
    checks.broadcasts_into(fn, "pos_weight", q, tuple(x.shape))
    return dispatch.loss(LOGISTIC, x, (z, q), {}, xp=xp)


@arrays.opaque_to_autograph
def softmax_cross_entropy_with_logits(
    labels: Any = None, logits: Any = None, axis: int = -1, name: str | None = None
) -> Array:
    r"""Softmax cross-entropy along ``axis``, as ``tf.nn.softmax_cross_entropy_with_logits``.

    For mutually exclusive classes; each row of ``labels`` is a probability distribution (soft
    labels are fine):

    .. math::

        -\sum_j z_j \log \operatorname{softmax}(x)_j = \sum_j z_j
        \bigl(\operatorname{logsumexp}(x) - x_j\bigr)

    With :math:`m = \max x`, :math:`T = \sum_{j \ne \arg\max} e^{x_j - m}`, logitloss computes
    :math:`\sum_j z_j (\log(1 + T) + (m - x_j))`: non-negative terms, ``log1p`` where TF, PyTorch
    and optax round ``log(1 + T)`` to 0 (logits ``[20, 0]``, labels ``[1, 0]``: exact 2.06e-9),
    the difference ``x_j - m`` formed without error. A row with a single ``+inf`` logit is
    one-hot; a zero label contributes zero even against a ``-inf`` logit.

    Parameters
    ----------
    labels : array_like
        Label distributions; broadcast to the logits' shape (never enlarging it) and cast to the
        logits' dtype.
    logits : array
        Real floating logits (float16, bfloat16, float32, float64), at least one dimension.
    axis : int, default -1
        The class axis; negative values count from the end.
    name : str, optional
        Accepted for compatibility with TensorFlow and ignored.

    Returns
    -------
    array
        The loss per row: the logits' shape without ``axis``, and their dtype, library and device.

    Raises
    ------
    TypeError
        If ``logits`` is not real floating, ``labels`` not real-valued, ``axis`` not an int.
    ValueError
        For an invalid ``axis``, zero classes, or labels that do not broadcast to the logits.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> labels = np.array([[0, 1], [1, 0], [1, 0]], dtype=np.float32)
    >>> logits = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]], dtype=np.float32)
    >>> logitloss.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    array([0.43748796, 0.5130153 , 0.6931472 ], dtype=float32)
    >>> logitloss.softmax_cross_entropy_with_logits(labels=[1.0, 0.0], logits=[20.0, 0.0])
    array(2.06115362e-09)
    """
    fn = "softmax_cross_entropy_with_logits"
    xp, device = checks.namespace_of(fn, labels=labels, logits=logits)
    x = checks.logits_array(fn, logits, xp, device)
    axis = checks.class_axis(fn, axis, x)
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.broadcasts_into(fn, "labels", z, tuple(x.shape))
    return dispatch.loss(SOFTMAX, x, (z,), {"axis": axis}, xp=xp)


@arrays.opaque_to_autograph
def sparse_softmax_cross_entropy_with_logits(
    labels: Any = None, logits: Any = None, name: str | None = None
) -> Array:
    r"""Softmax cross-entropy against class indices, as
    ``tf.nn.sparse_softmax_cross_entropy_with_logits``.

    .. math::

        \operatorname{logsumexp}(x) - x_{\mathrm{label}}

    computed as :func:`softmax_cross_entropy_with_logits` with one-hot labels (same accuracy,
    same limits) over the last axis.

    Labels outside ``[0, num_classes)`` raise ValueError on eager backends (NumPy, PyTorch, CuPy,
    array-api-strict, concrete JAX arrays). Where the values cannot be read without computing
    them, under ``jax.jit`` / ``grad`` / ``vmap`` and on lazy Dask arrays, such a row's loss is
    NaN instead (as TensorFlow does on GPUs).

    Parameters
    ----------
    labels : array_like of int
        Class indices, shape ``logits.shape[:-1]``, any integer dtype.
    logits : array
        Real floating logits (float16, bfloat16, float32, float64); classes on the last axis.
    name : str, optional
        Accepted for compatibility with TensorFlow and ignored.

    Returns
    -------
    array
        The loss per row: shape ``logits.shape[:-1]``, the logits' dtype, library and device.

    Raises
    ------
    TypeError
        If ``labels`` is not integer or ``logits`` not real floating.
    ValueError
        For a wrong labels shape, zero classes, or (eagerly) labels out of range.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logits = np.array([[0.2, 0.8], [0.7, 0.3], [20.0, 0.0]])
    >>> logitloss.sparse_softmax_cross_entropy_with_logits(labels=[1, 0, 0], logits=logits)
    array([4.37487950e-01, 5.13015252e-01, 2.06115362e-09])
    """
    fn = "sparse_softmax_cross_entropy_with_logits"
    xp, device = checks.namespace_of(fn, labels=labels, logits=logits)
    x = checks.logits_array(fn, logits, xp, device)
    labels = checks.sparse_labels(fn, labels, x, xp)
    return dispatch.loss(SPARSE_SOFTMAX, x, (labels,), {}, xp=xp)
