"""Large-vocabulary cross-entropy of a linear layer, without the N x V logits.

``linear_cross_entropy(hidden, weight, labels)`` is the softmax cross-entropy (integer labels) of
``hidden @ weight.T + bias``. The logits of a language-model head (N tokens x V words) are the
largest tensor of a training step; this never holds more than ``chunk_size`` rows of them.

This module holds the public functions: their validation (``_core.checks``, ``_core.options``,
the messages of every other loss) and the choice of engine. The algorithm, the same for NumPy
and PyTorch, is :mod:`.._losses.linear_ce.chunked` (NumPy's adaptor in ``linear_ce.host``); the
loss is reduced as ``cross_entropy``'s (``_core.reductions``). PyTorch's autograd path
(:mod:`.._autodiff.torch_linear`) runs the fused pass in its forward for
``reduction="mean"``/``"sum"`` (Liger-Kernel's choice: backward only scales the saved gradients
by the upstream scalar) and, for ``reduction="none"``, whose upstream gradient is a vector known
only in backward, recomputes the chunks in backward (Apple's cut cross-entropy's choice; one
extra matmul).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import array_api_compat

from .._core import arrays, checks, options
from .._core.arrays import Array
from .._losses.linear_ce import host
from .._losses.linear_ce.chunked import Options

_FN = "linear_cross_entropy"


class Inputs(NamedTuple):
    """The arrays, checked and of one library (NumPy or torch) and device."""

    hidden: Array
    weight: Array
    labels: Array
    bias: Array | None
    is_torch: bool


def validate(
    fn: str,
    hidden: Any,
    weight: Any,
    labels: Any,
    bias: Any,
    *,
    ignore_index: Any,
    label_smoothing: Any,
    z_loss: Any,
    reduction: Any,
    chunk_size: Any,
) -> tuple[Inputs, Options]:
    """The checked arrays and options; NumPy arrays and array-likes join torch tensors."""
    opts = Options(
        reduction=options.reduction(fn, reduction),
        label_smoothing=options.real(fn, "label_smoothing", label_smoothing, low=0.0, high=1.0),
        z_loss=options.real(fn, "z_loss", z_loss, low=0.0),
        ignore_index=options.integer(fn, "ignore_index", ignore_index),
        chunk_size=options.optional_integer(fn, "chunk_size", chunk_size, low=1),
    )
    given = {"hidden": hidden, "weight": weight, "labels": labels, "bias": bias}
    xp, device = checks.namespace_of(fn, **given)
    is_torch = array_api_compat.is_torch_namespace(xp)
    is_tf = any(arrays.is_tf_tensor(v) for v in given.values())
    if not (is_torch or is_tf or array_api_compat.is_numpy_namespace(xp)):
        name, value = next((k, v) for k, v in given.items() if not checks.is_numpy_like(v))
        raise TypeError(
            f"{fn}: supports NumPy arrays, torch tensors and TensorFlow tensors, `{name}` is a "
            f"{checks.describe(value)}"
        )
    h = checks.float_array(fn, "hidden", hidden, xp, device)
    w = checks.float_array(fn, "weight", weight, xp, device)
    b = None if bias is None else checks.float_array(fn, "bias", bias, xp, device)
    y = checks.index_labels(fn, labels, h, xp)
    if is_torch:
        for name, value in (("hidden", h), ("weight", w), ("labels", y), ("bias", b)):
            checks.on_device(fn, name, value, device)
    dtype = arrays.dtype_name(h.dtype)
    for name, value in (("weight", w), ("bias", b)):
        if value is not None and arrays.dtype_name(value.dtype) != dtype:
            raise TypeError(
                f"{fn}: `{name}` must have `hidden`'s dtype {dtype}, "
                f"got {arrays.dtype_name(value.dtype)}"
            )
    if h.ndim < 1:
        raise ValueError(f"{fn}: `hidden` must have shape (..., H), got a 0-d array")
    if w.ndim != 2:
        raise ValueError(f"{fn}: `weight` must have shape (V, H), got {tuple(w.shape)}")
    if w.shape[1] != h.shape[-1]:
        raise ValueError(
            f"{fn}: `weight` must have shape (V, {h.shape[-1]}) for `hidden` of shape "
            f"{tuple(h.shape)}, got {tuple(w.shape)}"
        )
    if w.shape[0] < 1:
        raise ValueError(
            f"{fn}: `weight` must have at least one class (row), got shape {tuple(w.shape)}"
        )
    if b is not None and tuple(b.shape) != (w.shape[0],):
        raise ValueError(f"{fn}: `bias` must have shape ({w.shape[0]},), got {tuple(b.shape)}")
    if tuple(y.shape) != tuple(h.shape[:-1]):
        raise ValueError(
            f"{fn}: `labels` must have shape {tuple(h.shape[:-1])} (`hidden`'s without H), "
            f"got {tuple(y.shape)}"
        )
    checks.labels_in_range(fn, y, w.shape[0], xp, ignore_index=opts.ignore_index)
    return Inputs(h, w, y, b, is_torch), opts


@arrays.opaque_to_autograph
def linear_cross_entropy(
    hidden: Array,
    weight: Array,
    labels: Array,
    *,
    bias: Array | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Array:
    r"""Softmax cross-entropy of ``hidden @ weight.T + bias`` without the N x V logits.

    For each row :math:`i` with logits :math:`x_i = W h_i + b` (V classes) and label :math:`y_i`,

    .. math::

        \ell_i = (1 - \varepsilon)\,(\mathrm{lse}(x_i) - x_{i y_i})
                 + \varepsilon\,(\mathrm{lse}(x_i) - \tfrac1V \textstyle\sum_j x_{ij})
                 + z\,\mathrm{lse}(x_i)^2

    (PyTorch's label smoothing with :math:`\varepsilon / V` on every class, computed without a
    one-hot matrix; the z-loss of PaLM and Liger-Kernel). Rows whose label is ``ignore_index``
    contribute nothing and get zero gradient. The logits are formed ``chunk_size`` rows at a time
    (by default as many as fit in 64 MiB) and never all at once; forward and backward together
    cost the three matmuls of the materialised computation. The loss is formed as
    ``log1p(T) + (m - x_y)`` with ``m`` the row's maximum and ``T`` the sum of the other
    ``exp(x_j - m)``, accumulated in float64 (NumPy), so small losses keep their digits.

    Parameters
    ----------
    hidden : array, shape (..., H)
        Inputs of the output layer; float16, bfloat16, float32 or float64. NumPy array, or
        TensorFlow tensor (differentiable; the logits are formed at once there, not chunked),
        or torch tensor (then differentiable: autograd gives gradients to ``hidden``, ``weight``
        and ``bias``).
    weight : array, shape (V, H)
        The output layer's weight (``torch.nn.Linear(H, V).weight``), ``hidden``'s dtype.
    labels : integer array, shape ``hidden.shape[:-1]``
        Class indices in ``[0, V)``, or ``ignore_index``.
    bias : array, shape (V,), optional
    ignore_index : int
        Rows with this label are not counted.
    label_smoothing : float in [0, 1]
    z_loss : float >= 0
        Coefficient of ``logsumexp(x_i) ** 2``.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the number of counted rows and is 0 (not NaN) when there is none;
        "none" returns the loss per row, shape ``hidden.shape[:-1]``, 0 on ignored rows.
    chunk_size : int, optional
        Rows of logits formed at once; None picks ``64 MiB / (V * itemsize)``.

    Returns
    -------
    array
        The loss, in ``hidden``'s dtype and library.

    See Also
    --------
    linear_cross_entropy_value_and_grad : the loss and its gradients in one pass (NumPy).

    Notes
    -----
    On PyTorch, ``reduction="mean"`` or ``"sum"`` computes the gradients in the forward pass
    when one of the tensors requires grad and keeps only them (N x H + V x H + V); backward
    scales them by the upstream gradient (a second backward through a retained graph recomputes
    them). ``reduction="none"`` recomputes the chunks in backward (one more matmul). Higher-order
    and forward-mode derivatives (``create_graph``, ``torch.func``) are not available.

    Examples
    --------
    >>> import numpy as np, logitloss
    >>> rng = np.random.default_rng(0)
    >>> hidden = rng.standard_normal((6, 4)).astype(np.float32)
    >>> weight = rng.standard_normal((10, 4)).astype(np.float32)
    >>> labels = np.array([1, 2, -100, 9, 0, 3])
    >>> loss = logitloss.linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    >>> logits = (hidden @ weight.T).astype(np.float64)             # what is never formed
    >>> lse = np.log(np.exp(logits).sum(1))
    >>> rows = np.array([0, 1, 3, 4, 5])                               # the counted rows
    >>> naive = np.mean(lse[rows] - logits[rows, labels[rows]])
    >>> bool(abs(loss - naive) < 1e-6 * naive), loss.dtype
    (True, dtype('float32'))
    """
    a, opts = validate(
        _FN, hidden, weight, labels, bias, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction,
        chunk_size=chunk_size,
    )  # fmt: skip
    if a.is_torch:
        from .._autodiff import torch_linear

        return torch_linear.linear_cross_entropy(a.hidden, a.weight, a.labels, a.bias, opts)
    if arrays.is_tf_tensor(a.hidden):
        return _tf_linear_cross_entropy(a, opts)
    loss, *_ = host.numpy_pass(
        a.hidden, a.weight, a.labels, a.bias, opts, grads=(False, False, False)
    )
    return loss


def linear_cross_entropy_value_and_grad(
    hidden: Array,
    weight: Array,
    labels: Array,
    *,
    bias: Array | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    upstream: Array | float | None = None,
) -> tuple[Array, tuple[Array, Array, Array | None]]:
    """:func:`linear_cross_entropy` and its gradients, in one chunked pass.

    Returns ``(loss, (d_hidden, d_weight, d_bias))``: the gradients of ``sum(upstream * loss)``
    with respect to ``hidden``, ``weight`` and ``bias`` (None without a bias), in the inputs'
    dtype and shapes. ``upstream`` is a scalar for "mean"/"sum" and an array of the loss's shape
    for "none"; None means 1. For NumPy training loops (a torch tensor gets torch tensors back,
    computed the same way, outside autograd). Three matmuls in all: the same work as the
    materialised forward and backward, with one chunk of logits in memory.

    Examples
    --------
    >>> import numpy as np, logitloss
    >>> hidden = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> weight = np.array([[1.0, 1.0], [0.0, -1.0], [2.0, 0.0]])
    >>> loss, (dh, dw, db) = logitloss.linear_cross_entropy_value_and_grad(
    ...     hidden, weight, np.array([2, 0]), reduction="sum")
    >>> p = np.exp(hidden @ weight.T); p /= p.sum(1, keepdims=True)  # softmax of the logits
    >>> g = p - np.eye(3)[[2, 0]]                                     # d loss / d logits
    >>> bool(np.allclose(dh, g @ weight) and np.allclose(dw, g.T @ hidden)), db is None
    (True, True)
    """
    a, opts = validate(
        _FN, hidden, weight, labels, bias, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction,
        chunk_size=chunk_size,
    )  # fmt: skip
    fn = "linear_cross_entropy_value_and_grad"
    up = _upstream(fn, upstream, a.labels, opts.reduction)
    if a.is_torch:
        from .._autodiff import torch_linear

        return torch_linear.value_and_grad(a.hidden, a.weight, a.labels, a.bias, opts, up)
    if arrays.is_tf_tensor(a.hidden):
        return _tf_value_and_grad(a, opts, up)
    loss, dh, dw, db = host.numpy_pass(
        a.hidden, a.weight, a.labels, a.bias, opts, grads=(True, True, True), upstream=up
    )
    return loss, (dh, dw, db)


def _tf_linear_cross_entropy(a: Inputs, opts: Options) -> Array:
    """TensorFlow: ``cross_entropy`` of the materialised logits (TF's matmul, the exact loss and
    its exact gradient; ``tf.function(jit_compile=True)`` lets XLA fuse what follows the
    matmul). Not chunked: ``chunk_size`` is accepted and has no effect here."""
    import tensorflow as tf

    from .training import cross_entropy

    logits = tf.linalg.matmul(a.hidden, a.weight, transpose_b=True)
    if a.bias is not None:
        logits = logits + a.bias
    return cross_entropy(
        logits, a.labels, ignore_index=opts.ignore_index, label_smoothing=opts.label_smoothing,
        z_loss=opts.z_loss, reduction=opts.reduction,
    )  # fmt: skip


def _tf_value_and_grad(
    a: Inputs, opts: Options, up: Array | float | None
) -> tuple[Array, tuple[Array, Array, Array | None]]:
    """TensorFlow: the loss and the gradient of ``upstream * loss`` by a ``GradientTape``
    (through the exact loss's custom gradient)."""
    import tensorflow as tf

    sources = [a.hidden, a.weight] + ([] if a.bias is None else [a.bias])
    with tf.GradientTape() as tape:
        tape.watch(sources)
        loss = _tf_linear_cross_entropy(a, opts)
    upstream = None if up is None else tf.cast(up, loss.dtype)
    grads = tape.gradient(loss, sources, output_gradients=upstream)
    return loss, (grads[0], grads[1], grads[2] if a.bias is not None else None)


def _upstream(fn: str, upstream: Any, labels: Array, reduction: str) -> Array | float | None:
    """The checked ``upstream``: a float for "mean"/"sum", else an array of the loss's shape in
    ``labels``' library and device."""
    if upstream is None:
        return None
    if reduction != "none":
        try:
            return float(upstream)
        except (TypeError, ValueError):
            raise ValueError(
                f"{fn}: `upstream` must be a scalar for reduction={reduction!r}, got "
                f"{checks.describe(upstream)}"
            ) from None
    up = arrays.namespace(labels).asarray(upstream, device=arrays.device(labels))
    if tuple(up.shape) != tuple(labels.shape):
        raise ValueError(
            f"{fn}: `upstream` must have the loss's shape {tuple(labels.shape)}, "
            f"got {tuple(up.shape)}"
        )
    return up
