"""Keras 3 losses on logitloss's exact losses: ``BinaryCrossentropy``,
``CategoricalCrossentropy``, ``SparseCategoricalCrossentropy``, ``BinaryFocalCrossentropy`` and
``CategoricalFocalCrossentropy``, with ``keras.losses``' names and constructor arguments::

    import logitloss.keras
    model.compile(optimizer="adam",
                  loss=logitloss.keras.SparseCategoricalCrossentropy(from_logits=True))

Each is a ``keras.losses.Loss`` whose per-sample loss is logitloss's (within 1 ULP of the exact
value, with the true limits at infinite logits, float64 inside for narrower dtypes) and whose
reductions, ``sample_weight``, masks (``_keras_mask``, ``ignore_class``) and per-replica scaling
under ``tf.distribute`` are Keras' own (``keras.src.losses.loss.reduce_weighted_values``), on
the TensorFlow, JAX and PyTorch Keras backends, with gradients by logitloss's exact rules.

The differences from Keras:

- ``from_logits`` must be True (a ValueError otherwise): logitloss computes from logits only.
  Its default stays Keras' False, so that swapping the import on a model that ends in a
  softmax or sigmoid fails loudly instead of training on probabilities read as logits.
- Integer labels never pass through a float cast: Keras converts ``y_true`` to the loss's
  dtype, and a ``float16`` loss reads label 2049 as 2048. Float labels of the sparse loss
  (Keras' JAX and torch data paths) are checked to be whole numbers where their values can be
  read (eagerly) and cast to integers.
- Exact values where Keras' are not: the limits at infinite logits (Keras: NaN), and no
  probability clipping in the focal losses (Keras clips to ``[1e-7, 1 - 1e-7]``:
  ``CategoricalFocalCrossentropy(gamma=0, alpha=1)`` on logits ``[0, 40]`` with label 0 gives
  16.12 in Keras, 40 here).
- Label smoothing of the categorical losses counts the classes along ``axis`` (Keras counts
  the last axis whatever ``axis`` is); ``get_config`` records ``dtype`` and, for the sparse
  loss, ``axis`` (Keras' drop them).

Registered for serialization under the package ``"logitloss"``: a model compiled with one of
these losses saves to ``.keras`` and loads without ``custom_objects`` once ``logitloss.keras``
is imported. This module imports Keras; ``import logitloss`` does not.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

# Keras' own reduction, mask merging and rank alignment (not exported by ``keras`` itself):
# reusing them keeps "sum_over_batch_size", masks and the tf.distribute scaling Keras'.
from keras.src.backend import get_keras_mask, set_keras_mask
from keras.src.losses.loss import reduce_weighted_values, squeeze_or_expand_to_same_rank

from ._api.focal import sigmoid_focal_loss, softmax_focal_loss
from ._api.training import binary_cross_entropy_with_logits, cross_entropy
from ._core import checks, options

__all__ = [
    "BinaryCrossentropy",
    "BinaryFocalCrossentropy",
    "CategoricalCrossentropy",
    "CategoricalFocalCrossentropy",
    "SparseCategoricalCrossentropy",
]

_PACKAGE = "logitloss"

# The ignore_index passed to cross_entropy when there is no ignore_class: int32's minimum, which
# every integer label dtype holds and no class index equals.
_NO_CLASS = -(2**31)


def _logits_only(cls: str, from_logits: Any) -> None:
    if from_logits is not True:
        raise ValueError(
            f"{cls}: `from_logits` must be True, got {from_logits!r}: logitloss computes the "
            "loss from logits only (exactly, without clipping probabilities); give the loss "
            "the model's logits (no final softmax or sigmoid activation) and from_logits=True"
        )


def _axis(cls: str, axis: Any) -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{cls}: `axis` must be an int, got {checks.describe(axis)}")
    return int(axis)


def _both(a: Any, b: Any) -> Any:
    """The combination of two Keras masks, either of which may be None."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


class _FromLogits(keras.losses.Loss):
    """A Keras loss computed by logitloss from logits.

    ``__call__`` is Keras' ``Loss.__call__`` but for the labels: ``y_pred`` is converted to
    the loss's dtype as Keras does, ``y_true`` by :meth:`_labels` (the sparse loss keeps
    integers). The reduction, the masks and ``sample_weight`` go through Keras' own
    ``reduce_weighted_values``.
    """

    #: The constructor's options that ``get_config`` records besides Keras' own.
    _CONFIG: tuple[str, ...] = ()

    def __init__(self, *, from_logits: Any, reduction: Any, name: str | None, dtype: Any) -> None:
        _logits_only(type(self).__name__, from_logits)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.from_logits = True

    def _smoothing_and_axis(self, label_smoothing: Any, axis: Any) -> None:
        """The checked ``label_smoothing`` (in [0, 1]) and ``axis`` of the losses that have
        both."""
        cls = type(self).__name__
        self.label_smoothing = options.real(cls, "label_smoothing", label_smoothing, low=0.0,
                                            high=1.0)  # fmt: skip
        self.axis = _axis(cls, axis)

    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        in_mask = get_keras_mask(y_pred)
        with keras.name_scope(self.name):
            y_pred = ops.convert_to_tensor(y_pred, dtype=self.dtype)
            y_true = self._labels(y_true)
            losses = self.call(y_true, y_pred)
            mask = _both(in_mask, get_keras_mask(losses))
            return reduce_weighted_values(
                losses,
                sample_weight=sample_weight,
                mask=mask,
                reduction=self.reduction,
                dtype=self.dtype,
            )

    def _labels(self, y_true: Any) -> Any:
        """Real-valued labels in the loss's dtype (Keras' conversion)."""
        return ops.convert_to_tensor(y_true, dtype=self.dtype)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "from_logits": True,
            "dtype": self._dtype_policy.name,
            **{name: getattr(self, name) for name in self._CONFIG},
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryCrossentropy(_FromLogits):
    r"""``keras.losses.BinaryCrossentropy(from_logits=True)`` by
    :func:`logitloss.binary_cross_entropy_with_logits`.

    Per element, with labels smoothed toward 0.5 (:math:`z' = z (1 - \varepsilon) +
    \varepsilon / 2`), :math:`-z' \log\sigma(x) - (1 - z') \log(1 - \sigma(x))`, exact; then the
    mean over ``axis`` and Keras' reduction, in the loss's dtype as Keras does.

    Parameters
    ----------
    from_logits : bool, default False
        Must be True (see the module's notes).
    label_smoothing : float, default 0.0
        In [0, 1].
    axis : int, default -1
        The axis the per-element losses are averaged over.
    reduction : str or None, default "sum_over_batch_size"
        Keras' reductions: "sum_over_batch_size", "sum", "mean", "mean_with_sample_weight",
        "none" or None.
    name : str, default "binary_crossentropy"
    dtype : str or keras.DTypePolicy, optional
        The loss's dtype (Keras' ``floatx()`` by default).

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss.keras
    >>> loss = logitloss.keras.BinaryCrossentropy(from_logits=True)
    >>> logits = np.array([[-18.6, 0.51], [2.94, -12.8]], dtype=np.float32)
    >>> labels = np.array([[0.0, 1.0], [0.0, 0.0]], dtype=np.float32)
    >>> print(f"{float(loss(labels, logits)):.6f}")
    0.865458
    """

    _CONFIG = ("label_smoothing", "axis")

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "binary_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        self._smoothing_and_axis(label_smoothing, axis)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        loss = binary_cross_entropy_with_logits(
            y_pred, y_true, label_smoothing=self.label_smoothing, reduction="none"
        )
        return ops.mean(loss, axis=self.axis)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CategoricalCrossentropy(_FromLogits):
    r"""``keras.losses.CategoricalCrossentropy(from_logits=True)`` by
    :func:`logitloss.cross_entropy` with probability labels.

    Per row, with labels smoothed toward :math:`1/C` (:math:`z' = z (1 - \varepsilon) +
    \varepsilon / C`, :math:`C` the classes along ``axis``),
    :math:`\sum_c z'_c (\operatorname{logsumexp}(x) - x_c)`, exact.

    Parameters
    ----------
    from_logits : bool, default False
        Must be True (see the module's notes).
    label_smoothing : float, default 0.0
        In [0, 1].
    axis : int, default -1
        The class axis.
    reduction : str or None, default "sum_over_batch_size"
        As :class:`BinaryCrossentropy`.
    name : str, default "categorical_crossentropy"
    dtype : str or keras.DTypePolicy, optional

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss.keras
    >>> loss = logitloss.keras.CategoricalCrossentropy(from_logits=True, reduction=None)
    >>> logits = np.array([[0.0, 40.0], [2.0, -1.0]], dtype=np.float32)
    >>> np.asarray(loss(np.array([[1.0, 0.0], [1.0, 0.0]]), logits))
    array([40.        ,  0.04858735], dtype=float32)
    """

    _CONFIG = ("label_smoothing", "axis")

    def __init__(
        self,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "categorical_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        self._smoothing_and_axis(label_smoothing, axis)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return cross_entropy(
            y_pred, y_true, axis=self.axis, label_smoothing=self.label_smoothing,
            reduction="none",
        )  # fmt: skip


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SparseCategoricalCrossentropy(_FromLogits):
    r"""``keras.losses.SparseCategoricalCrossentropy(from_logits=True)`` by
    :func:`logitloss.cross_entropy` with class indices.

    Labels stay integers (they are never cast to the loss's float dtype, where float16 reads
    2049 as 2048); float labels are checked to be whole numbers where their values can be read
    and cast to int32. Labels equal to ``ignore_class`` give 0 and are masked out of Keras'
    reduction, as in Keras; other labels must lie in ``[0, C)`` (a ValueError eagerly).

    Parameters
    ----------
    from_logits : bool, default False
        Must be True (see the module's notes).
    ignore_class : int, optional
        A label to leave out (0 loss, masked).
    reduction : str or None, default "sum_over_batch_size"
        As :class:`BinaryCrossentropy`.
    axis : int, default -1
        The class axis of the logits; labels have the logits' shape without it (or with a
        size-1 axis there).
    name : str, default "sparse_categorical_crossentropy"
    dtype : str or keras.DTypePolicy, optional

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss.keras
    >>> loss = logitloss.keras.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1)
    >>> logits = np.array([[2.0, -1.0, 0.5], [0.1, 3.0, 0.2], [9.0, 9.0, 9.0]], np.float32)
    >>> print(f"{float(loss(np.array([0, 1, -1]), logits)):.6f}")
    0.175456
    """

    _CONFIG = ("ignore_class", "axis")

    def __init__(
        self,
        from_logits: bool = False,
        ignore_class: int | None = None,
        reduction: str | None = "sum_over_batch_size",
        axis: int = -1,
        name: str | None = "sparse_categorical_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        cls = type(self).__name__
        self.ignore_class = options.optional_integer(cls, "ignore_class", ignore_class)
        self.axis = _axis(cls, axis)

    def _labels(self, y_true: Any) -> Any:
        """Integer labels as they are; float labels, whole numbers, as int32."""
        y_true = ops.convert_to_tensor(y_true)
        if "int" in keras.backend.standardize_dtype(y_true.dtype):
            return y_true
        _whole_numbers(type(self).__name__, y_true)
        return ops.cast(y_true, "int32")

    def call(self, y_true: Any, y_pred: Any) -> Any:
        rank = len(y_pred.shape)
        if len(y_true.shape) == rank and y_true.shape[self.axis] == 1:
            y_true = ops.squeeze(y_true, axis=self.axis)
        ignore = _NO_CLASS if self.ignore_class is None else self.ignore_class
        loss = cross_entropy(y_pred, y_true, axis=self.axis, ignore_index=ignore,
                             reduction="none")  # fmt: skip
        if self.ignore_class is not None:
            set_keras_mask(loss, mask=ops.not_equal(y_true, self.ignore_class))
        return loss


def _whole_numbers(cls: str, y_true: Any) -> None:
    """A ValueError for float labels that are not whole numbers, where their values can be
    read now (not while a graph is traced: there they are cast as Keras casts them)."""
    if not _concrete(y_true):
        return
    values = np.asarray(ops.convert_to_numpy(y_true))
    bad = values[values != np.trunc(values)]
    if bad.size:
        raise ValueError(
            f"{cls}: float labels must be whole numbers (class indices), got {bad.flat[0]!r}"
        )


def _concrete(value: Any) -> bool:
    """Whether ``value``'s values can be read now on this Keras backend."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return tf.executing_eagerly()
    if backend == "jax":
        import jax

        return not isinstance(value, jax.core.Tracer)
    if backend == "torch":
        import torch

        return not torch.compiler.is_compiling()
    return False


@keras.saving.register_keras_serializable(package=_PACKAGE)
class BinaryFocalCrossentropy(_FromLogits):
    r"""``keras.losses.BinaryFocalCrossentropy(from_logits=True)`` by
    :func:`logitloss.sigmoid_focal_loss`.

    Per element, with :math:`z'` smoothed toward 0.5,
    :math:`\alpha_t (1 - p_t)^\gamma \mathrm{CE}(x, z')`, :math:`\alpha_t = \alpha z' + (1 -
    \alpha)(1 - z')` with ``apply_class_balancing`` (else 1); then the mean over ``axis``. The
    factor is formed in log space: Keras' rounds :math:`\sigma(x)` and clips it to
    :math:`[10^{-7}, 1 - 10^{-7}]`, which changes confident predictions' losses.

    Parameters
    ----------
    apply_class_balancing : bool, default False
        Weigh class 1 by ``alpha`` and class 0 by ``1 - alpha``.
    alpha : float, default 0.25
        In [0, 1].
    gamma : float, default 2.0
        The focusing exponent, ``>= 0``.
    from_logits : bool, default False
        Must be True (see the module's notes).
    label_smoothing : float, default 0.0
        In [0, 1].
    axis : int, default -1
        The axis the per-element losses are averaged over.
    reduction : str or None, default "sum_over_batch_size"
        As :class:`BinaryCrossentropy`.
    name : str, default "binary_focal_crossentropy"
    dtype : str or keras.DTypePolicy, optional
    """

    _CONFIG = ("apply_class_balancing", "alpha", "gamma", "label_smoothing", "axis")

    def __init__(
        self,
        apply_class_balancing: bool = False,
        alpha: float = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "binary_focal_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        cls = type(self).__name__
        if not isinstance(apply_class_balancing, (bool, np.bool_)):
            raise TypeError(
                f"{cls}: `apply_class_balancing` must be a bool, "
                f"got {checks.describe(apply_class_balancing)}"
            )
        self.apply_class_balancing = bool(apply_class_balancing)
        self.alpha = options.real(cls, "alpha", alpha, low=0.0, high=1.0)
        self.gamma = options.real(cls, "gamma", gamma, low=0.0)
        self._smoothing_and_axis(label_smoothing, axis)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        loss = sigmoid_focal_loss(
            y_pred, y_true, alpha=self.alpha if self.apply_class_balancing else None,
            gamma=self.gamma, label_smoothing=self.label_smoothing, reduction="none",
        )  # fmt: skip
        return ops.mean(loss, axis=self.axis)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class CategoricalFocalCrossentropy(_FromLogits):
    r"""``keras.losses.CategoricalFocalCrossentropy(from_logits=True)`` by
    :func:`logitloss.softmax_focal_loss`.

    Per row, :math:`\sum_c \alpha_c z'_c (1 - p_c)^\gamma (-\log p_c)` with
    :math:`p = \operatorname{softmax}(x)` along ``axis``, exact: Keras clips :math:`p` to
    :math:`[10^{-7}, 1 - 10^{-7}]`, so logits ``[0, 40]`` with label 0, ``gamma=0, alpha=1``
    give 16.12 there and 40 here.

    Parameters
    ----------
    alpha : float or sequence of float, default 0.25
        One weight for every class, or one per class, each ``>= 0``.
    gamma : float, default 2.0
        The focusing exponent, ``>= 0``.
    from_logits : bool, default False
        Must be True (see the module's notes).
    label_smoothing : float, default 0.0
        In [0, 1], toward :math:`1/C`.
    axis : int, default -1
        The class axis.
    reduction : str or None, default "sum_over_batch_size"
        As :class:`BinaryCrossentropy`.
    name : str, default "categorical_focal_crossentropy"
    dtype : str or keras.DTypePolicy, optional

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss.keras
    >>> loss = logitloss.keras.CategoricalFocalCrossentropy(from_logits=True, alpha=1.0,
    ...                                                      gamma=0.0)
    >>> print(float(loss(np.array([[1.0, 0.0]]), np.array([[0.0, 40.0]], np.float32))))
    40.0
    """

    _CONFIG = ("alpha", "gamma", "label_smoothing", "axis")

    def __init__(
        self,
        alpha: float | list[float] = 0.25,
        gamma: float = 2.0,
        from_logits: bool = False,
        label_smoothing: float = 0.0,
        axis: int = -1,
        reduction: str | None = "sum_over_batch_size",
        name: str | None = "categorical_focal_crossentropy",
        dtype: Any = None,
    ) -> None:
        super().__init__(from_logits=from_logits, reduction=reduction, name=name, dtype=dtype)
        cls = type(self).__name__
        self.alpha = _class_alpha(cls, alpha)
        self.gamma = options.real(cls, "gamma", gamma, low=0.0)
        self._smoothing_and_axis(label_smoothing, axis)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y_true, y_pred = squeeze_or_expand_to_same_rank(y_true, y_pred)
        return softmax_focal_loss(
            y_pred, y_true, alpha=self.alpha, gamma=self.gamma, axis=self.axis,
            label_smoothing=self.label_smoothing, reduction="none",
        )  # fmt: skip


def _class_alpha(cls: str, alpha: Any) -> float | list[float]:
    """One non-negative weight, or a list of them (one per class; their number is checked
    against the logits at the call), as plain Python numbers for ``get_config``."""
    if isinstance(alpha, (list, tuple, np.ndarray)):
        values = np.asarray(alpha, dtype=np.float64).ravel().tolist()
        return [options.real(cls, "alpha", a, low=0.0) for a in values]
    return options.real(cls, "alpha", alpha, low=0.0)
