"""Checks on the caller's arguments, with messages that name the function, the argument and
what was received. TypeError for a wrong dtype or kind of object, ValueError for a wrong shape or
value. Conversions happen here too, since what is checked and what is converted go together:
the rest of the package sees arrays of the logits' library, device and dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import arrays
from .arrays import Array

_FLOATS = "float16, bfloat16, float32 or float64"


def _describe(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _is_numpy_like(value: Any) -> bool:
    """NumPy arrays and array-likes (lists, scalars), which join the other arrays' library."""
    return not arrays.is_array(value) or arrays.is_numpy_array(value)


def namespace_of(fn: str, **arguments: Any) -> tuple[Any, Any]:
    """The array library of the arguments and the device to put NumPy inputs on.

    The library is that of the arrays passed that are not NumPy arrays (NumPy arrays, lists
    and scalars are converted to it, as TF converts them); NumPy when all are NumPy-like. Arrays
    of two different libraries are refused: moving one could silently copy across devices.
    """
    foreign = {k: v for k, v in arguments.items() if v is not None and not _is_numpy_like(v)}
    if not foreign:
        return arrays.namespace(np.empty(0)), None
    try:
        xp = arrays.namespace(*foreign.values())
    except TypeError:
        kinds = ", ".join(f"`{k}` is a {_describe(v)}" for k, v in foreign.items())
        raise TypeError(
            f"{fn}: arrays of different libraries ({kinds}); pass arrays of one library "
            "(NumPy arrays and lists are converted to it)"
        ) from None
    return xp, arrays.device(next(iter(foreign.values())))


def _as_numpy(fn: str, arg: str, value: Any) -> np.ndarray:
    try:
        value = np.asarray(value)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{fn}: `{arg}` must be an array or array-like, got {_describe(value)}"
        ) from err
    if value.dtype.kind not in "biuf" and value.dtype.name != "bfloat16":
        raise TypeError(f"{fn}: `{arg}` must hold real numbers, got dtype {value.dtype}")
    return value


def logits_array(fn: str, logits: Any, xp: Any, device: Any) -> Array:
    """The logits as a real floating array of library ``xp`` (on ``device`` if converted)."""
    if logits is None:
        raise TypeError(f"{fn}: `logits` is required, got None")
    if _is_numpy_like(logits):
        logits = _as_numpy(fn, "logits", logits)
        if device is not None and logits.dtype.kind in "biuf":
            logits = xp.asarray(logits, device=device)
    if arrays.float_name(xp, logits.dtype) is None:
        raise TypeError(
            f"{fn}: `logits` must have a real floating dtype ({_FLOATS}), "
            f"got {arrays.dtype_name(logits.dtype)}"
        )
    return logits


def _in_namespace_of(fn: str, arg: str, value: Any, x: Array, xp: Any) -> Array:
    """``value`` as an array of ``x``'s library on ``x``'s device, keeping its kind of dtype."""
    if not _is_numpy_like(value) or arrays.is_numpy_array(x):
        return value if arrays.is_array(value) else _as_numpy(fn, arg, value)
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
    z = _in_namespace_of(fn, arg, value, x, xp)
    if not arrays.is_real_dtype(xp, z.dtype):
        raise TypeError(
            f"{fn}: `{arg}` must hold real numbers (bool, integer or floating), "
            f"got dtype {arrays.dtype_name(z.dtype)}"
        )
    return xp.astype(z, x.dtype, copy=False)


def same_shape(fn: str, arg: str, z: Array, x: Array) -> None:
    if tuple(z.shape) != tuple(x.shape):
        raise ValueError(
            f"{fn}: `{arg}` and `logits` must have the same shape; "
            f"got {arg} {tuple(z.shape)} and logits {tuple(x.shape)}"
        )


def broadcasts_into(
    fn: str, arg: str, z: Array, shape: tuple[int, ...], target: str = "`logits`"
) -> None:
    """``z`` broadcasts to ``shape`` without enlarging it (TF silently enlarges)."""
    try:
        result = np.broadcast_shapes(tuple(z.shape), tuple(shape))
    except ValueError:
        result = None
    if result != tuple(shape):
        raise ValueError(
            f"{fn}: `{arg}` of shape {tuple(z.shape)} must broadcast to the shape of {target} "
            f"{tuple(shape)} without enlarging it"
        )


def device_of(x: Array) -> Any:
    return arrays.device(x)


def class_axis(fn: str, axis: Any, x: Array) -> int:
    """A valid class axis of ``x`` as a non-negative int, with at least one class."""
    ndim = len(x.shape)
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{fn}: `axis` must be an int, got {_describe(axis)}")
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
    labels = _in_namespace_of(fn, "labels", labels, x, xp)
    if not arrays.is_integer_dtype(xp, labels.dtype):
        raise TypeError(
            f"{fn}: `labels` must have an integer dtype (class indices), "
            f"got {arrays.dtype_name(labels.dtype)}"
        )
    if tuple(labels.shape) != tuple(x.shape[:-1]):
        raise ValueError(
            f"{fn}: `labels` must have the shape of `logits` without its last (class) axis, "
            f"{tuple(x.shape[:-1])}; got {tuple(labels.shape)}"
        )
    num_classes = x.shape[-1]
    if math.prod(labels.shape) and arrays.can_read_values(labels):
        # A concrete JAX array may be closed over by a function being traced: read it through
        # NumPy, since jnp.min would then return a tracer.
        ns, values = (np, np.asarray(labels)) if arrays.is_jax_array(labels) else (xp, labels)
        low, high = int(ns.min(values)), int(ns.max(values))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{fn}: `labels` must lie in [0, {num_classes}) (the number of classes); "
                f"got values from {low} to {high}"
            )
    return labels
