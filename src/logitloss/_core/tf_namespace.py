"""TensorFlow as an Array-API namespace: the subset of the standard that the package uses.

array-api-compat has no TensorFlow namespace, and ``tf.experimental.numpy`` lacks parts of the
standard (no ``astype``; ``exp`` and ``log1p`` of bfloat16 only after a process-wide switch). So
this module is a thin layer on ``tf.math`` / ``tf`` operations, one function per name the
formulas, checks and reductions call (``grep -rhoE "\\bxp\\.[a-zA-Z_]+" src``), each with the
Array API's meaning. The loss formulas and the gradient tables run on it unchanged, eagerly, in
``tf.function`` and under XLA (every function here is a TF operation, traced and differentiated
like any other).

Shapes: inside ``tf.function`` a dimension may be unknown (``None``, the batch of a
``tf.data`` pipeline). :func:`broadcast_to` and :func:`reshape` accept such shapes where the
unknown dimensions are the array's own (the usual case: labels with the logits' batch); a
broadcast that would stretch a dimension of size 1 to an unknown size is refused with a
ValueError rather than guessed.

Imported only when TensorFlow arrays arrive (``_core.arrays.namespace``): importing this module
imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

Array = Any

__array_api_version__ = "2023.12"

bool = tf.bool
int8, int16, int32, int64 = tf.int8, tf.int16, tf.int32, tf.int64
uint8 = tf.uint8
float16, bfloat16, float32, float64 = tf.float16, tf.bfloat16, tf.float32, tf.float64
inf = math.inf
nan = math.nan

_NUMPY_DTYPES = {"bfloat16": tf.bfloat16}


def _dtype(dtype: Any) -> Any:
    """A ``tf.DType`` from a TF dtype, a NumPy dtype (``ml_dtypes.bfloat16`` included) or None."""
    if dtype is None or isinstance(dtype, tf.DType):
        return dtype
    name = np.dtype(dtype).name
    return _NUMPY_DTYPES.get(name) or tf.as_dtype(np.dtype(dtype))


def _is_tensor(a: Any) -> bool:
    return isinstance(a, (tf.Tensor, tf.Variable))


def _like(value: Any, other: Any) -> Any:
    """A Python number as a tensor of ``other``'s dtype (TF does not promote types)."""
    if _is_tensor(value) or not _is_tensor(other):
        return value
    return tf.constant(value, dtype=other.dtype)


# Creation


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: Any = None) -> Array:
    """``obj`` as a tensor (of ``dtype`` if given); placed on ``device`` where one is named.
    A tensor of the right dtype comes back as it is (TF tensors are immutable: no copy needed)."""
    dtype = _dtype(dtype)
    if _is_tensor(obj):
        obj = tf.convert_to_tensor(obj)
        return obj if dtype is None or obj.dtype == dtype else tf.cast(obj, dtype)
    with tf.device(device) if device else contextlib.nullcontext():
        if isinstance(obj, np.ndarray) and dtype is not None and _dtype(obj.dtype) != dtype:
            return tf.cast(tf.constant(obj), dtype)
        return tf.constant(obj, dtype=dtype)


def zeros_like(a: Array, /, *, dtype: Any = None, device: Any = None) -> Array:
    return tf.zeros_like(a, dtype=_dtype(dtype))


def ones_like(a: Array, /, *, dtype: Any = None, device: Any = None) -> Array:
    return tf.ones_like(a, dtype=_dtype(dtype))


def full_like(a: Array, /, fill_value: float, *, dtype: Any = None, device: Any = None) -> Array:
    dtype = _dtype(dtype) or a.dtype
    return tf.fill(tf.shape(a), tf.constant(fill_value, dtype=dtype))


def ones(shape: Any, *, dtype: Any = None, device: Any = None) -> Array:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    with tf.device(device) if device else contextlib.nullcontext():
        return tf.ones(shape, dtype=_dtype(dtype) or tf.float64)


def zeros(shape: Any, *, dtype: Any = None, device: Any = None) -> Array:
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    with tf.device(device) if device else contextlib.nullcontext():
        return tf.zeros(shape, dtype=_dtype(dtype) or tf.float64)


def arange(
    start: int, /, stop: int | None = None, step: int = 1, *, dtype: Any = None, device: Any = None
) -> Array:
    if stop is None:
        start, stop = 0, start
    with tf.device(device) if device else contextlib.nullcontext():
        return tf.range(start, stop, step, dtype=_dtype(dtype) or tf.int64)


# Dtypes


def astype(a: Array, dtype: Any, /, *, copy: bool = True, device: Any = None) -> Array:
    dtype = _dtype(dtype)
    return a if a.dtype == dtype else tf.cast(a, dtype)


_KINDS = {
    "bool": lambda d: d.is_bool,
    "signed integer": lambda d: d.is_integer and not d.is_unsigned,
    "unsigned integer": lambda d: d.is_integer and d.is_unsigned,
    "integral": lambda d: d.is_integer,
    "real floating": lambda d: d.is_floating,
    "complex floating": lambda d: d.is_complex,
    "numeric": lambda d: d.is_integer or d.is_floating or d.is_complex,
}


def isdtype(dtype: Any, kind: Any) -> bool:
    """The standard's ``isdtype`` for TF dtypes (bfloat16 is real floating)."""
    dtype = _dtype(dtype)
    kinds = kind if isinstance(kind, tuple) else (kind,)
    for k in kinds:
        if isinstance(k, str):
            if k not in _KINDS:
                raise ValueError(f"isdtype: unknown kind {k!r}")
            if _KINDS[k](dtype):
                return True
        elif _dtype(k) == dtype:
            return True
    return False


class _Info:
    """``__array_namespace_info__()``: float64 everywhere but on TPUs, which have none."""

    def default_device(self) -> str:
        return ""

    def dtypes(self, *, device: Any = None, kind: Any = None) -> dict[str, Any]:
        floats = {"float32": tf.float32}
        if not on_tpu(device):
            floats["float64"] = tf.float64
        return floats


def __array_namespace_info__() -> _Info:
    return _Info()


def on_tpu(device: Any) -> bool:
    """Whether ``device`` (a device string, possibly empty inside ``tf.function``) is a TPU, or
    the current distribution strategy runs on TPUs: there is no float64 there."""
    if isinstance(device, str) and "TPU" in device.upper():
        return True
    strategy = tf.distribute.get_strategy()
    return "TPU" in type(strategy).__name__


# Elementwise


def where(condition: Array, x1: Any, x2: Any, /) -> Array:
    x1, x2 = _like(x1, x2), _like(x2, x1)
    return tf.where(condition, x1, x2)


def maximum(x1: Any, x2: Any, /) -> Array:
    return tf.maximum(_like(x1, x2), _like(x2, x1))


def pow(x1: Any, x2: Any, /) -> Array:
    return tf.pow(_like(x1, x2), _like(x2, x1))


def exp(x: Array, /) -> Array:
    return tf.exp(x)


def expm1(x: Array, /) -> Array:
    return tf.math.expm1(x)


def log(x: Array, /) -> Array:
    return tf.math.log(x)


def log1p(x: Array, /) -> Array:
    return tf.math.log1p(x)


def tanh(x: Array, /) -> Array:
    return tf.math.tanh(x)


def abs(x: Array, /) -> Array:
    return tf.abs(x)


def round(x: Array, /) -> Array:
    # Half to even, as the standard asks (and as tf.round does).
    return tf.round(x)


def isfinite(x: Array, /) -> Array:
    if not x.dtype.is_floating:
        return tf.ones_like(x, dtype=tf.bool)
    return tf.math.is_finite(x)


def isinf(x: Array, /) -> Array:
    if not x.dtype.is_floating:
        return tf.zeros_like(x, dtype=tf.bool)
    return tf.math.is_inf(x)


def isnan(x: Array, /) -> Array:
    if not x.dtype.is_floating:
        return tf.zeros_like(x, dtype=tf.bool)
    return tf.math.is_nan(x)


# Reductions and searching


def _axis(axis: Any) -> Any:
    return list(axis) if isinstance(axis, tuple) else axis


def sum(x: Array, /, *, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Array:
    if dtype is not None:
        x = astype(x, dtype)
    elif x.dtype.is_bool:
        x = tf.cast(x, tf.int64)
    return tf.reduce_sum(x, axis=_axis(axis), keepdims=keepdims)


def max(x: Array, /, *, axis: Any = None, keepdims: bool = False) -> Array:
    return tf.reduce_max(x, axis=_axis(axis), keepdims=keepdims)


def min(x: Array, /, *, axis: Any = None, keepdims: bool = False) -> Array:
    return tf.reduce_min(x, axis=_axis(axis), keepdims=keepdims)


def any(x: Array, /, *, axis: Any = None, keepdims: bool = False) -> Array:
    return tf.reduce_any(tf.cast(x, tf.bool), axis=_axis(axis), keepdims=keepdims)


def argmax(x: Array, /, *, axis: int | None = None, keepdims: bool = False) -> Array:
    """The first maximum's index (int64), as the standard and NumPy."""
    if axis is None:
        x, axis = tf.reshape(x, (-1,)), 0
    index = tf.argmax(x, axis=axis, output_type=tf.int64)
    return tf.expand_dims(index, axis) if keepdims else index


# Shapes and indexing


def _static_or_dynamic(a: Array, shape: Sequence[Any], fn: str) -> Any:
    """``shape`` for ``a`` with its unknown (None) entries read from ``a``'s own dynamic shape,
    aligned on the right as broadcasting aligns. A dimension ``a`` would have to stretch from 1
    (or gain) to an unknown size cannot be resolved without the other operand: refused."""
    shape = tuple(shape)
    if all(n is not None for n in shape):
        return shape
    own = tuple(a.shape)
    lead = len(shape) - len(own)
    dynamic = tf.shape(a)
    resolved: list[Any] = []
    for i, n in enumerate(shape):
        if n is not None:
            resolved.append(n)
            continue
        j = i - lead
        if j < 0 or (own[j] is not None and own[j] == 1):
            raise ValueError(
                f"{fn}: cannot broadcast an array of shape {own} to {shape}: dimension {i} is "
                "unknown when the function is traced (None); give every argument that "
                "dimension's size (for example labels of the logits' shape)"
            )
        resolved.append(own[j] if own[j] is not None else dynamic[j])
    return tf.stack([tf.cast(n, tf.int32) for n in resolved]) if resolved else ()


def broadcast_to(x: Array, /, shape: Any) -> Array:
    if isinstance(shape, tf.Tensor):
        return tf.broadcast_to(x, shape)
    shape = tuple(shape)
    if tuple(x.shape) == shape and None not in shape:
        return x
    if None in shape and tuple(x.shape) == shape:
        return x  # the unknown dimensions are x's own
    return tf.broadcast_to(x, _static_or_dynamic(x, shape, "broadcast_to"))


def reshape(x: Array, /, shape: Any, *, copy: bool | None = None) -> Array:
    shape = tuple(shape)
    unknown = [i for i, n in enumerate(shape) if n is None]
    if len(unknown) == 1:
        shape = tuple(-1 if n is None else n for n in shape)
    elif unknown:
        shape = _static_or_dynamic(x, shape, "reshape")
    return tf.reshape(x, shape)


def expand_dims(x: Array, /, *, axis: int = 0) -> Array:
    return tf.expand_dims(x, axis)


def squeeze(x: Array, /, axis: Any) -> Array:
    return tf.squeeze(x, axis=_axis(axis))


def permute_dims(x: Array, /, axes: tuple[int, ...]) -> Array:
    return tf.transpose(x, perm=list(axes))


def concat(arrays: Sequence[Array], /, *, axis: int | None = 0) -> Array:
    if axis is None:
        return tf.concat([tf.reshape(a, (-1,)) for a in arrays], axis=0)
    return tf.concat(list(arrays), axis=axis)


def take(x: Array, indices: Array, /, *, axis: int | None = None) -> Array:
    if axis is None:
        x, axis = tf.reshape(x, (-1,)), 0
    return tf.gather(x, indices, axis=axis)
