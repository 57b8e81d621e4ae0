"""Checks on the caller's arguments, with messages that name the function, the argument and
what was received. TypeError for a wrong dtype or kind of object, ValueError for a wrong shape or
value. Conversions happen here too, since what is checked and what is converted go together:
the rest of the package sees arrays of the logits' library, device and dtype.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np

from . import arrays
from .arrays import Array

_FLOATS = "float16, bfloat16, float32 or float64"


def describe(value: Any) -> str:
    """``value``'s type as messages name it: ``builtins.float``, ``torch.Tensor``..."""
    return f"{type(value).__module__}.{type(value).__qualname__}"


def is_numpy_like(value: Any) -> bool:
    """NumPy arrays and array-likes (lists, scalars), which join the other arrays' library."""
    if isinstance(value, (np.ndarray, np.generic, float, int)):  # the common cases, at once
        return True
    if arrays.is_torch_tensor(value) or arrays.is_tf_tensor(value):
        return False
    return not arrays.is_array(value) or arrays.is_numpy_array(value)


def namespace_of(fn: str, **arguments: Any) -> tuple[Any, Any]:
    """The array library of the arguments and the device to put NumPy inputs on.

    The library is that of the arrays passed that are not NumPy arrays (NumPy arrays, lists
    and scalars are converted to it, as TF converts them); NumPy when all are NumPy-like. Arrays
    of two different libraries are refused: moving one could silently copy across devices.
    """
    foreign = {k: v for k, v in arguments.items() if v is not None and not is_numpy_like(v)}
    if not foreign:
        return _numpy_namespace(), None
    try:
        xp = arrays.namespace(*foreign.values())
    except TypeError:
        kinds = ", ".join(f"`{k}` is a {describe(v)}" for k, v in foreign.items())
        raise TypeError(
            f"{fn}: arrays of different libraries ({kinds}); pass arrays of one library "
            "(NumPy arrays and lists are converted to it)"
        ) from None
    return xp, arrays.device(next(iter(foreign.values())))


@functools.cache
def _numpy_namespace() -> Any:
    """The namespace of NumPy arrays (NumPy itself, or array-api-compat's wrapper of an older
    NumPy), found once."""
    return arrays.namespace(np.empty(0))


def _as_numpy(fn: str, arg: str, value: Any) -> np.ndarray:
    try:
        value = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{fn}: `{arg}` must be an array or array-like, got {describe(value)}"
        ) from err
    if value.dtype.kind not in "biuf" and value.dtype.name != "bfloat16":
        raise TypeError(f"{fn}: `{arg}` must hold real numbers, got dtype {value.dtype}")
    return value


def logits_array(fn: str, logits: Any, xp: Any, device: Any) -> Array:
    """The logits as a real floating array of library ``xp`` (on ``device`` if converted)."""
    return float_array(fn, "logits", logits, xp, device)


def float_array(fn: str, arg: str, value: Any, xp: Any, device: Any) -> Array:
    """``value`` as a real floating array of library ``xp`` (on ``device`` if converted), its
    dtype kept."""
    if value is None:
        raise TypeError(f"{fn}: `{arg}` is required, got None")
    if is_numpy_like(value):
        value = _as_numpy(fn, arg, value)
        if device is not None and value.dtype.kind in "biuf":
            value = xp.asarray(value, device=device)
    value = _read_variable(value)
    if arrays.float_name(xp, value.dtype) is None:
        raise TypeError(
            f"{fn}: `{arg}` must have a real floating dtype ({_FLOATS}), "
            f"got {arrays.dtype_name(value.dtype)}"
        )
    return value


def _read_variable(value: Any) -> Any:
    """A ``tf.Variable`` as the tensor of its value (a read a GradientTape follows), so that the
    rest of the package sees tensors; anything else as it is."""
    if arrays.is_tf_tensor(value) and hasattr(value, "read_value"):
        import tensorflow as tf

        return tf.convert_to_tensor(value)
    return value


def on_device(fn: str, arg: str, value: Array | None, device: Any) -> None:
    """``value`` (None passes) lies on ``device``: no silent copy between devices."""
    if value is not None and arrays.device(value) != device:
        raise ValueError(f"{fn}: `{arg}` is on {arrays.device(value)}, the others on {device}")


def in_namespace_of(fn: str, arg: str, value: Any, x: Array, xp: Any) -> Array:
    """``value`` as an array of ``x``'s library on ``x``'s device, keeping its kind of dtype."""
    if not is_numpy_like(value) or arrays.is_numpy_array(x):
        return _read_variable(value) if arrays.is_array(value) else _as_numpy(fn, arg, value)
    value = _as_numpy(fn, arg, value)
    if value.dtype.kind == "f":
        # Straight to the logits' dtype: one rounding, and no float64 request on a library
        # that may not have it (JAX without x64).
        return xp.asarray(value, dtype=x.dtype, device=arrays.device(x))
    return xp.asarray(value, device=arrays.device(x))


def float_labels(fn: str, arg: str, value: Any, x: Array, xp: Any) -> Array:
    """Real-valued labels (or pos_weight) cast to the logits' dtype, as TF casts them."""
    if value is None:
        raise TypeError(f"{fn}: `{arg}` is required, got None")
    z = in_namespace_of(fn, arg, value, x, xp)
    if not arrays.is_real_dtype(xp, z.dtype):
        raise TypeError(
            f"{fn}: `{arg}` must hold real numbers (bool, integer or floating), "
            f"got dtype {arrays.dtype_name(z.dtype)}"
        )
    return xp.astype(z, x.dtype, copy=False)


def compatible(a: tuple, b: tuple) -> bool:
    """Equal shapes, an unknown (None) dimension of a traced TF tensor matching any size; TF
    checks those when the function runs."""
    if len(a) != len(b):
        return False
    return all(m is None or n is None or m == n for m, n in zip(a, b, strict=True))


def same_shape(fn: str, arg: str, z: Array, x: Array) -> None:
    if not compatible(tuple(z.shape), tuple(x.shape)):
        raise ValueError(
            f"{fn}: `{arg}` and `logits` must have the same shape; "
            f"got {arg} {tuple(z.shape)} and logits {tuple(x.shape)}"
        )


def broadcasts_into(
    fn: str, arg: str, z: Array, shape: tuple[int, ...], target: str = "`logits`"
) -> None:
    """``z`` broadcasts to ``shape`` without enlarging it (TF silently enlarges). Unknown (None)
    dimensions of traced TF tensors: a None of ``z`` matches any size of ``shape``, and a None
    of ``shape`` takes a ``z`` dimension of the same position only if that is not 1 (stretching
    1 to an unknown size is left to the caller's static shapes)."""
    if None in tuple(z.shape) or None in tuple(shape):
        fits = _broadcasts_unknown(tuple(z.shape), tuple(shape))
    elif tuple(z.shape) == tuple(shape):
        fits = True  # the usual case, without NumPy's broadcast (microseconds)
    else:
        try:
            fits = np.broadcast_shapes(tuple(z.shape), tuple(shape)) == tuple(shape)
        except ValueError:
            fits = False
    if not fits:
        raise ValueError(
            f"{fn}: `{arg}` of shape {tuple(z.shape)} must broadcast to the shape of {target} "
            f"{tuple(shape)} without enlarging it"
        )


def _broadcasts_unknown(source: tuple, target: tuple) -> bool:
    if len(source) > len(target):
        return False
    trailing = target[len(target) - len(source) :]
    for n, m in zip(source, trailing, strict=True):
        if n is None or m is None:
            continue  # left to the run (TF's own broadcasting checks it there)
        if n != m and n != 1:
            return False
    return True


def device_of(x: Array) -> Any:
    return arrays.device(x)


def class_axis(fn: str, axis: Any, x: Array) -> int:
    """A valid class axis of ``x`` as a non-negative int, with at least one class."""
    ndim = len(x.shape)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{fn}: `axis` must be an int, got {describe(axis)}")
    if ndim == 0:
        raise ValueError(
            f"{fn}: `logits` must have at least one dimension (the classes), got a scalar"
        )
    if not -ndim <= axis < ndim:
        raise ValueError(
            f"{fn}: `axis` must be in [{-ndim}, {ndim}) for logits of shape {tuple(x.shape)}, "
            f"got {axis}"
        )
    axis = int(axis) % ndim
    if x.shape[axis] == 0:
        raise ValueError(
            f"{fn}: `logits` must have at least one class along axis {axis}, "
            f"got shape {tuple(x.shape)}"
        )
    return axis


def sparse_labels(fn: str, labels: Any, x: Array, xp: Any) -> Array:
    """Integer class labels of shape ``logits.shape[:-1]``, in range where that can be read."""
    if labels is None:
        raise TypeError(f"{fn}: `labels` is required, got None")
    class_axis(fn, -1, x)
    labels = index_labels(fn, labels, x, xp)
    if not compatible(tuple(labels.shape), tuple(x.shape[:-1])):
        raise ValueError(
            f"{fn}: `labels` must have the shape of `logits` without its last (class) axis, "
            f"{tuple(x.shape[:-1])}; got {tuple(labels.shape)}"
        )
    return labels_in_range(fn, labels, x.shape[-1], xp)


def index_labels(fn: str, labels: Any, x: Array, xp: Any) -> Array:
    """Labels of an integer dtype (class indices), as an array of ``x``'s library and device."""
    if labels is None:
        raise TypeError(f"{fn}: `labels` is required, got None")
    labels = in_namespace_of(fn, "labels", labels, x, xp)
    if not arrays.is_integer_dtype(xp, labels.dtype):
        raise TypeError(
            f"{fn}: `labels` must have an integer dtype (class indices), "
            f"got {arrays.dtype_name(labels.dtype)}"
        )
    return labels


def labels_in_range(
    fn: str, labels: Array, num_classes: int, xp: Any, *, ignore_index: int | None = None
) -> Array:
    """Integer ``labels`` lie in ``[0, num_classes)`` (or equal ``ignore_index``), checked where
    the values can be read (not under ``jax.jit``, not on Dask); returns ``labels``.

    TensorFlow in ``tf.function``: the labels come back behind an assertion, which raises
    ``tf.errors.InvalidArgumentError`` when the graph runs (as TF's own sparse losses on the
    CPU); XLA drops assertions (``jit_compile=True``), and such a row's loss is NaN there.
    """
    if arrays.is_tf_tensor(labels):
        if arrays.is_tf_symbolic(labels):
            return _tf_assert_in_range(fn, labels, num_classes, ignore_index)
        labels_in_range(fn, labels.numpy(), num_classes, np, ignore_index=ignore_index)
        return labels
    if not (arrays.can_read_values(labels) and math.prod(labels.shape)):
        return labels
    where = f"[0, {num_classes}) (the number of classes)"
    if ignore_index is not None:
        flat = xp.reshape(labels, (-1,))
        bad = (flat != ignore_index) & ((flat < 0) | (flat >= num_classes))
        if bool(xp.any(bad)):
            raise ValueError(
                f"{fn}: `labels` must lie in {where} or equal ignore_index={ignore_index}; "
                f"got {int(flat[bad][0])}"
            )
        return labels
    # A concrete JAX array may be closed over by a function being traced: read it through
    # NumPy, since jnp.min would then return a tracer.
    ns, values = (np, np.asarray(labels)) if arrays.is_jax_array(labels) else (xp, labels)
    low, high = int(ns.min(values)), int(ns.max(values))
    if low < 0 or high >= num_classes:
        raise ValueError(labels_range_message(fn, num_classes, low, high))
    return labels


def _tf_assert_in_range(fn: str, labels: Array, num_classes: int, ignore: int | None) -> Array:
    """``labels`` behind a TF assertion that they lie in ``[0, num_classes)`` (or equal
    ``ignore``): ``InvalidArgumentError`` with the library's message when the graph runs."""
    import tensorflow as tf

    where = f"[0, {num_classes}) (the number of classes)"
    if ignore is not None:
        where += f" or equal ignore_index={ignore}"
    bad = (labels < 0) | (labels >= num_classes)
    if ignore is not None:
        bad = bad & (labels != ignore)
    check = tf.debugging.Assert(
        ~tf.reduce_any(bad), [f"{fn}: `labels` must lie in {where}; got", labels], summarize=8
    )
    with tf.control_dependencies([check]):
        return tf.identity(labels)


def labels_range_message(fn: str, num_classes: int, low: int, high: int) -> str:
    """The message for index labels from ``low`` to ``high`` of which one is not a class."""
    where = f"[0, {num_classes}) (the number of classes)"
    return f"{fn}: `labels` must lie in {where}; got values from {low} to {high}"
