"""The training losses: PyTorch's and optax's options on the exact ``tf.nn`` formulas.

Each function validates, widens every array to the compute dtype (float64 where the library has
it), builds the per-element loss from the public dispatch (``dispatch.logistic``,
``dispatch.softmax``, ``dispatch.sparse_softmax``: the exact formulas, their exact autodiff
rules, and the fast kernels where those apply), applies weights, smoothing, z-loss and masks in
the compute dtype, reduces, and rounds once to the logits' dtype. No loss formula is written here
a second time: what is new is how the options combine the exact pieces.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._core import arrays, checks, options, reductions, route
from .._core.arrays import Array
from .._losses import training as fused
from .._losses.softmax import formula as softmax_formula
from . import dispatch

#: Set by the ``*_value_and_grad`` functions: a list that receives the logits' gradient.
GRADIENT: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar(
    "logitloss_gradient", default=None
)


def _fused(
    loss: str, x: Array, operands: tuple, options: dict[str, Any], *, xp: Any
) -> Array | None:
    """The reduced loss by the fused kernels (``_losses.training``: the loss and the logits'
    gradient in one pass) where the gradient is wanted with it: PyTorch CPU logits that need
    one (and nothing else that does), or a ``value_and_grad`` call; JAX arrays where
    ``_autodiff.jax_training`` takes them. None elsewhere: the composed path, which computes
    the value alone."""
    adapter = None
    if not isinstance(x, np.ndarray):
        if not arrays.is_torch_tensor(x):
            if not arrays.is_jax_array(x):
                return None
            from .._autodiff import jax_training

            return jax_training.reduced(loss, x, operands, options, composed)
        adapter = _torch_adapter()
        if adapter.compiling():
            # Under torch.compile, before the context variables below, which Dynamo cannot read.
            if not (adapter.fusable(x, operands) and adapter.compiled_kernels_take(x)):
                return None
            return adapter.reduced(loss, x, operands, options, _recompute(loss, operands, options))
    if not fused.applies(x):
        return None
    gradient = GRADIENT.get()
    if gradient is not None:
        result = fused.reduced(loss, x, operands, options)
        gradient.append(result.grad)
        return reductions.scalar(result.value, like=x, xp=xp)
    if adapter is None or not adapter.fusable(x, operands):
        return None
    return adapter.reduced(loss, x, operands, options, _recompute(loss, operands, options))


def composed(loss: str, x: Array, *operands: Array | None, **options: Any) -> Array:
    """The fused path's call (``loss``, ``operands`` and ``options`` as ``_fused`` takes them)
    on the composed path: the public function inside ``reference_path()``. The autodiff
    adapters differentiate it where the fused kernels give no derivative: torch's
    ``create_graph``, JAX's tangents of the operands and second order."""
    with route.reference_path():
        if loss == "cross_entropy":
            labels, z, w, mask = operands
            return cross_entropy(
                x, z if labels is None else labels, axis=options["axis"], weight=w,
                ignore_index=options["ignore_index"], label_smoothing=options["smoothing"],
                z_loss=options["z_scale"], where=mask, reduction=options["reduction"],
            )  # fmt: skip
        # The mask is in the counted weights (0 where not counted): the same sums.
        z, q, w = operands
        return binary_cross_entropy_with_logits(
            x, z, pos_weight=q, weight=w, label_smoothing=options["smoothing"],
            reduction=options["reduction"],
        )  # fmt: skip


def _recompute(loss: str, operands: tuple, options: dict[str, Any]) -> Callable[[Array], Array]:
    """:func:`composed` as a function of the logits alone (torch's backward)."""
    return lambda x: composed(loss, x, *operands, **options)


def _torch_autocast(x: Any) -> Any:
    """Logits as ``torch.autocast`` hands them to torch's own losses (float32)."""
    if isinstance(x, np.ndarray) or not arrays.is_torch_tensor(x):
        return x
    return _torch_adapter().autocast_input(x)


def _torch_adapter() -> Any:
    """``_autodiff.torch_training``, imported on the first torch call (an import statement in
    the function costs a microsecond on every call; a ``functools.cache`` would make Dynamo
    warn under ``torch.compile``)."""
    global _TORCH_TRAINING
    if _TORCH_TRAINING is None:
        from .._autodiff import torch_training

        _TORCH_TRAINING = torch_training
    return _TORCH_TRAINING


_TORCH_TRAINING: Any = None


def _times(weight: Array, loss: Array, *, xp: Any) -> Array:
    """``weight * loss``, where a zero weight drops an infinite loss (``0 * inf`` is NaN)."""
    zero = arrays.scalar(0.0, loss, xp=xp)
    return weight * xp.where((weight == 0) & xp.isinf(loss), zero, loss)


def _counted_weight(w: Array | None, mask: Array | None, x: Array, *, xp: Any) -> Array | None:
    """Each element's weight in the reduction: ``w`` where ``mask`` counts it, else 0 (None when
    neither is given: every element counts once)."""
    if mask is None:
        return w
    if w is None:
        return xp.astype(mask, x.dtype)
    return xp.where(mask, w, arrays.scalar(0.0, x, xp=xp))


def _counted(
    loss: Array, weight: Array | None, counted: Array | None, *, xp: Any
) -> tuple[Array, Array | None]:
    """The loss, zero where not counted, and each element's weight in the mean's denominator."""
    if counted is None:
        return loss, weight
    zero = arrays.scalar(0.0, loss, xp=xp)
    loss = xp.where(counted, loss, zero)
    if weight is None:
        return loss, xp.astype(counted, loss.dtype)
    return loss, xp.where(counted, weight, zero)


@arrays.opaque_to_autograph
def binary_cross_entropy_with_logits(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any = None,
    weight: Any = None,
    label_smoothing: float = 0.0,
    where: Any = None,
    reduction: str = "mean",
) -> Array:
    r"""Sigmoid cross-entropy with PyTorch's, Keras' and optax's options, reduced.

    For each element, with logit :math:`x`, label :math:`z`, ``pos_weight`` :math:`q`, weight
    :math:`w` and smoothing :math:`\varepsilon` (toward 0.5, as Keras;
    :math:`z' = z (1 - \varepsilon) + \varepsilon / 2`):

    .. math::

        \ell = w \bigl(q z' \cdot -\log\sigma(x) + (1 - z') \cdot -\log(1 - \sigma(x))\bigr)

    computed by :func:`weighted_cross_entropy_with_logits`'s exact formula (non-negative terms,
    no cancellation, true limits at infinite logits), in float64 for narrower dtypes; weights,
    smoothing, mask and reduction are applied in float64 too, and the result rounded once.

    Reductions: ``"none"`` (the logits' shape, 0 where ``where`` is False), ``"sum"``, and
    ``"mean"``, the weighted mean over the counted elements

    .. math::

        \frac{\sum_i [\mathrm{where}_i]\, \ell_i}{\sum_i [\mathrm{where}_i]\, w_i}

    which is 0 when nothing is counted. Without ``weight`` this is PyTorch's and Keras' mean.
    **With** ``weight`` PyTorch divides by the number of elements instead of the weights' sum:
    logitloss's mean does not change when all weights are scaled by the same factor, and a 0/1
    weight averages over the elements it keeps.

    Parameters
    ----------
    logits : array
        Real floating logits ``x`` (float16, bfloat16, float32, float64), any shape.
    labels : array_like
        Labels ``z`` in [0, 1], the shape of ``logits``; cast to the logits' dtype.
    pos_weight : array_like, optional
        The weight ``q`` of the positive term (per class, for instance); broadcasts to the logits'
        shape without enlarging it. Differentiable.
    weight : array_like, optional
        The weight ``w`` of each element; broadcasts to the logits' shape without enlarging it.
        Differentiable (numerator and denominator of "mean").
    label_smoothing : float, default 0.0
        :math:`\varepsilon` in [0, 1]: labels move toward 0.5.
    where : array_like of bool, optional
        Which elements count (optax); broadcasts to the logits' shape. Others give 0 and are left
        out of the mean.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    array
        A 0-d array ("mean", "sum") or the logits' shape ("none"), in the logits' dtype,
        library and device; differentiable in PyTorch and JAX with respect to ``logits``,
        ``labels``, ``pos_weight`` and ``weight``.

    Raises
    ------
    TypeError
        For a wrong dtype (logits not real floating, a non-boolean ``where``) or option type.
    ValueError
        For mismatched shapes, an unknown ``reduction`` or ``label_smoothing`` outside [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logits = np.array([[2.0, -1.0], [0.5, 30.0]], dtype=np.float32)
    >>> labels = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    >>> logitloss.binary_cross_entropy_with_logits(logits, labels)
    array(0.35356668, dtype=float32)
    >>> logitloss.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    array([[1.2692802e-01, 3.1326169e-01],
           [9.7407699e-01, 9.3576229e-14]], dtype=float32)

    A 0/1 weight averages over the elements it keeps; nothing kept gives 0, not NaN:

    >>> logitloss.binary_cross_entropy_with_logits(logits, labels, weight=[[1, 1], [0, 0]])
    array(0.22009484, dtype=float32)
    >>> logitloss.binary_cross_entropy_with_logits(logits, labels, where=np.zeros((2, 2), bool))
    array(0., dtype=float32)
    """
    fn = "binary_cross_entropy_with_logits"
    reduction = options.reduction(fn, reduction)
    smoothing = options.real(fn, "label_smoothing", label_smoothing, low=0.0, high=1.0)
    xp, device = checks.namespace_of(
        fn, logits=logits, labels=labels, pos_weight=pos_weight, weight=weight, where=where
    )
    x = _torch_autocast(checks.logits_array(fn, logits, xp, device))
    z = checks.float_labels(fn, "labels", labels, x, xp)
    checks.same_shape(fn, "labels", z, x)
    shape = tuple(x.shape)
    q = options.optional_floats(fn, "pos_weight", pos_weight, x, xp, shape, "`logits`")
    w = options.optional_floats(fn, "weight", weight, x, xp, shape, "`logits`")
    mask = options.mask(fn, where, x, xp, shape)
    if reduction == "none" and w is None and mask is None and not smoothing:
        # The plain loss: the core's, rounded once from the compute dtype by the kernels or
        # the reference (no float64 copies of the inputs here).
        return dispatch.logistic(x, z, q, xp=xp)
    if reduction != "none":
        operands = (z, q, _counted_weight(w, mask, x, xp=xp))
        fast_options = {"smoothing": smoothing, "reduction": reduction}
        fast = _fused("binary_cross_entropy", x, operands, fast_options, xp=xp)
        if fast is not None:
            return fast
        # Sum or mean: one kernel pass over the inputs, the per-element loss never written.
        sums = dispatch.logistic_sum(x, z, q, _counted_weight(w, mask, x, xp=xp), smoothing)
        if sums is not None:
            total, denominator = sums
            if reduction == "mean":
                total = reductions.counted_mean(total, denominator)
            return reductions.scalar(total, like=x, xp=xp)
    with arrays.quiet():
        wx, wz, wq, ww = arrays.widen(xp, x, z, q, w)
        if smoothing:
            wz = wz * (1 - smoothing) + smoothing / 2
        loss = dispatch.logistic(wx, wz, wq, xp=xp)
        if ww is not None:
            loss = _times(ww, loss, xp=xp)
        loss, denominator = _counted(loss, ww, mask, xp=xp)
        return reductions.reduce(loss, denominator, reduction, dtype=x.dtype, xp=xp)


@arrays.opaque_to_autograph
def cross_entropy(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    where: Any = None,
    reduction: str = "mean",
) -> Array:
    r"""Softmax cross-entropy with PyTorch's options (and optax's mask, PaLM's z-loss), reduced.

    ``labels`` are class indices (an integer dtype, the logits' shape without ``axis``) or
    probabilities (a floating dtype, broadcasting to the logits' shape). With
    :math:`p = \operatorname{softmax}(x)`, class weights :math:`w_c`, smoothing
    :math:`\varepsilon` and :math:`C` classes, a row's loss is

    .. math::

        \ell = (1 - \varepsilon)\, w_y (-\log p_y)
            + \frac{\varepsilon}{C} \sum_c w_c (-\log p_c)
            + \lambda\, r \operatorname{logsumexp}(x)^2

    for an index :math:`y` (PyTorch's convention), and with probabilities :math:`z`
    smoothed as :math:`z' = (1 - \varepsilon) z + \varepsilon / C`,

    .. math::

        \ell = \sum_c w_c z'_c (-\log p_c) + \lambda\, r \operatorname{logsumexp}(x)^2 .

    :math:`\lambda` is ``z_loss`` (PaLM, Liger-Kernel) and :math:`r` the row's weight,
    :math:`w_y` or :math:`\sum_c w_c z_c` (1 without ``weight``). Each sum is formed by the exact
    softmax loss (:func:`softmax_cross_entropy_with_logits`, non-negative terms, float64 for
    narrower dtypes): the smoothing term is the softmax loss with the class weights (or ones)
    as labels, so integer labels never become a one-hot matrix, and
    :math:`\operatorname{logsumexp}(x) = \max(x) + (-\log p_{\arg\max})` is formed without
    cancellation.

    Reductions: ``"none"`` (a loss per row, 0 for ignored or masked rows), ``"sum"``, and
    ``"mean"``, the weighted mean over the counted rows (label not ``ignore_index``, ``where``
    True), :math:`\sum_i \ell_i / \sum_i r_i`, 0 when nothing is counted (PyTorch: NaN). For
    index targets this is PyTorch's mean. For probability targets PyTorch divides by the number
    of rows whatever the weights; logitloss divides by :math:`\sum_i r_i`, so one-hot
    probabilities and the same indices give the same loss under every option.

    Parameters
    ----------
    logits : array
        Real floating logits (float16, bfloat16, float32, float64), classes along ``axis``.
    labels : array_like
        Integer class indices, the logits' shape without ``axis``, in ``[0, C)`` or equal to
        ``ignore_index``; or real-valued probabilities broadcasting to the logits' shape (cast
        to the logits' dtype, differentiable).
    axis : int, default -1
        The class axis (PyTorch's modules use 1; see ``logitloss.torch.CrossEntropyLoss``).
    weight : array_like, optional
        Class weights :math:`w`, shape ``(C,)``. Differentiable.
    ignore_index : int, default -100
        An index label that is left out (loss 0, not in the mean). Not used for probabilities.
    label_smoothing : float, default 0.0
        :math:`\varepsilon` in [0, 1], PyTorch's :math:`\varepsilon / C` convention.
    z_loss : float, default 0.0
        :math:`\lambda \ge 0`, the weight of :math:`\operatorname{logsumexp}(x)^2`.
    where : array_like of bool, optional
        Which rows count (optax's mask, here with the loss's shape); broadcasts to it.
    reduction : {"mean", "sum", "none"}, default "mean"

    Returns
    -------
    array
        A 0-d array ("mean", "sum") or one loss per row ("none"), in the logits' dtype,
        library and device; differentiable in PyTorch and JAX with respect to ``logits``,
        probability ``labels`` and ``weight``.

    Raises
    ------
    TypeError
        For a wrong dtype or option type.
    ValueError
        For a wrong labels or weight shape, index labels out of range (eager backends; NaN rows
        under ``jax.jit`` and on Dask), an unknown ``reduction``, ``label_smoothing`` outside
        [0, 1] or a negative ``z_loss``.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 1.0]], dtype=np.float32)
    >>> logitloss.cross_entropy(logits, np.array([0, 2, -100]))
    array(0.17545637, dtype=float32)
    >>> logitloss.cross_entropy(logits, np.array([0, 2, 1]), label_smoothing=0.1,
    ...                         reduction="none")
    array([0.3913113 , 0.29960147, 1.0986123 ], dtype=float32)

    Index and one-hot targets agree, also with class weights:

    >>> w = np.array([1.0, 2.0, 0.5], dtype=np.float32)
    >>> logitloss.cross_entropy(logits, np.array([0, 2, 1]), weight=w)
    array(0.7123819, dtype=float32)
    >>> logitloss.cross_entropy(logits, np.eye(3, dtype=np.float32)[[0, 2, 1]], weight=w)
    array(0.7123819, dtype=float32)
    """
    fn = "cross_entropy"
    reduction = options.reduction(fn, reduction)
    smoothing = options.real(fn, "label_smoothing", label_smoothing, low=0.0, high=1.0)
    z_scale = options.real(fn, "z_loss", z_loss, low=0.0)
    ignore_index = options.integer(fn, "ignore_index", ignore_index)
    xp, device = checks.namespace_of(fn, logits=logits, labels=labels, weight=weight, where=where)
    x = _torch_autocast(checks.logits_array(fn, logits, xp, device))
    axis = checks.class_axis(fn, axis, x)
    num_classes = x.shape[axis]
    rows = tuple(n for i, n in enumerate(x.shape) if i != axis)
    if labels is None:
        raise TypeError(f"{fn}: `labels` is required, got None")
    labels = checks.in_namespace_of(fn, "labels", labels, x, xp)
    w = options.optional_floats(
        fn, "weight", weight, x, xp, (num_classes,), f"the classes ({num_classes},)"
    )
    mask = options.mask(fn, where, x, xp, rows)
    softmax_options = _SoftmaxOptions(axis, num_classes, smoothing, z_scale)
    fused_options = {"axis": axis, "ignore_index": ignore_index, "smoothing": smoothing,
                     "z_scale": z_scale, "reduction": reduction}  # fmt: skip
    if arrays.is_integer_dtype(xp, labels.dtype):
        if not checks.compatible(tuple(labels.shape), rows):
            raise ValueError(
                f"{fn}: integer `labels` (class indices) must have the shape of `logits` "
                f"without axis {axis}, {rows}; got {tuple(labels.shape)}"
            )
        if reduction != "none":
            operands = (labels, None, w, mask)
            fast = _fused("cross_entropy", x, operands, fused_options, xp=xp)
            if fast is not None:
                return fast
        counted = labels != ignore_index
        if mask is not None:
            counted = counted & mask
        # Ignored and masked rows take class 0, so that only real labels meet the range check.
        labels = xp.where(counted, labels, xp.zeros_like(labels))
        labels = checks.sparse_labels(fn, labels, _classes_last(x, axis, xp=xp), xp)
        with arrays.quiet():
            # The logits stay in their dtype: the sparse loss comes back in the compute dtype.
            ww = None if w is None else xp.astype(w, arrays.compute_dtype(xp, x), copy=False)
            loss, row_weight = _index_loss(x, labels, ww, softmax_options, xp=xp)
    else:
        z = checks.float_labels(fn, "labels", labels, x, xp)
        checks.broadcasts_into(fn, "labels", z, tuple(x.shape))
        if reduction != "none":
            operands = (None, z, w, mask)
            fast = _fused("cross_entropy", x, operands, fused_options, xp=xp)
            if fast is not None:
                return fast
        counted = mask
        with arrays.quiet():
            if w is None and not (smoothing or z_scale) and tuple(z.shape) == tuple(x.shape):
                # The plain loss: from the logits in their dtype, in the compute dtype.
                loss = dispatch.softmax_wide(x, z, axis=softmax_options.axis, xp=xp)
                row_weight = None
            else:
                wx, wz, ww = arrays.widen(xp, x, z, w)
                loss, row_weight = _probability_loss(wx, wz, ww, softmax_options, xp=xp)
    with arrays.quiet():
        loss, denominator = _counted(loss, row_weight, counted, xp=xp)
        return reductions.reduce(loss, denominator, reduction, dtype=x.dtype, xp=xp)


class _SoftmaxOptions(NamedTuple):
    axis: int
    num_classes: int
    smoothing: float
    z_scale: float


def _classes_last(x: Array, axis: int, *, xp: Any) -> Array:
    """``x`` with the class axis moved last (the sparse loss's layout), rows in their order."""
    if axis == x.ndim - 1:
        return x
    return xp.permute_dims(x, (*(i for i in range(x.ndim) if i != axis), axis))


def _along_classes(w: Array, x: Array, axis: int, *, xp: Any) -> Array:
    """Class weights of shape (C,) shaped to broadcast against ``x`` along ``axis``."""
    shape = [1] * x.ndim
    shape[axis] = x.shape[axis]
    return xp.reshape(xp.broadcast_to(w, (x.shape[axis],)), tuple(shape))


def _index_loss(
    x: Array, labels: Array, ww: Array | None, o: _SoftmaxOptions, *, xp: Any
) -> tuple[Array, Array | None]:
    """Per-row loss (compute dtype) and row weight ``w[label]`` for (in-range) index labels;
    ``x`` in the caller's dtype, widened here only for smoothing and z-loss."""
    row_weight = None
    if ww is not None:
        flat = xp.reshape(labels, (-1,))
        row_weight = xp.reshape(xp.take(xp.broadcast_to(ww, (o.num_classes,)), flat, axis=0),
                                tuple(labels.shape))  # fmt: skip
    loss = None
    if o.smoothing < 1:
        loss = dispatch.sparse_softmax_wide(_classes_last(x, o.axis, xp=xp), labels, xp=xp)
        if row_weight is not None:
            loss = _times(row_weight, loss, xp=xp)
        if o.smoothing:
            loss = (1 - o.smoothing) * loss
    if o.smoothing or o.z_scale:
        (wx,) = arrays.widen(xp, x)
    if o.smoothing:
        # sum_c w_c (-log p_c): the softmax loss with the class weights (or ones) as labels.
        spread = dispatch.softmax(wx, _class_labels(wx, ww, o.axis, xp=xp), axis=o.axis, xp=xp)
        spread = (o.smoothing / o.num_classes) * spread
        loss = spread if loss is None else loss + spread
    if o.z_scale:
        loss = loss + _z_term(_classes_last(wx, o.axis, xp=xp), row_weight, o.z_scale, xp=xp)
    return loss, row_weight


def _probability_loss(
    wx: Array, wz: Array, ww: Array | None, o: _SoftmaxOptions, *, xp: Any
) -> tuple[Array, Array | None]:
    """Per-row loss and row weight ``sum_c w_c z_c`` for probability labels."""
    target = wz
    if o.smoothing:
        target = (1 - o.smoothing) * wz + o.smoothing / o.num_classes
    row_weight = None
    if ww is not None:
        w_along = _along_classes(ww, wx, o.axis, xp=xp)
        target = target * w_along
        row_weight = xp.sum(xp.broadcast_to(wz * w_along, tuple(wx.shape)), axis=o.axis)
    loss = dispatch.softmax(wx, target, axis=o.axis, xp=xp)
    if o.z_scale:
        loss = loss + _z_term(_classes_last(wx, o.axis, xp=xp), row_weight, o.z_scale, xp=xp)
    return loss, row_weight


def _class_labels(wx: Array, ww: Array | None, axis: int, *, xp: Any) -> Array:
    """The class weights, or ones, as labels that broadcast against ``wx`` along ``axis``."""
    if ww is None:
        ones = xp.ones((wx.shape[axis],), dtype=wx.dtype, device=arrays.device(wx))
        return _along_classes(ones, wx, axis, xp=xp)
    return _along_classes(ww, wx, axis, xp=xp)


def _z_term(x_last: Array, row_weight: Array | None, z_scale: float, *, xp: Any) -> Array:
    r"""``z_scale * r * logsumexp(x)^2`` per row, classes on the last axis.

    :math:`\operatorname{logsumexp}(x) = m + \log(1 + T)`, and :math:`\log(1 + T)` is exactly
    the sparse softmax loss of the first maximum's class: both pieces come from the exact
    formulas (and their exact derivatives, ``softmax - one_hot`` plus the one-hot of ``m``).
    """
    zero = arrays.scalar(0.0, x_last, xp=xp)
    top = xp.argmax(x_last, axis=-1)
    first = softmax_formula.first_max(x_last, axis=-1, xp=xp)
    # m as the first maximum's entry: its derivative is that one-hot, which the sparse loss's
    # softmax - one_hot(top) completes to softmax (max() would split it between ties).
    m = xp.sum(xp.where(first, x_last, zero), axis=-1)
    lse = dispatch.sparse_softmax(x_last, top, xp=xp) + m
    term = z_scale * (lse * lse)
    return term if row_weight is None else _times(row_weight, term, xp=xp)
