"""Array-library plumbing: which namespace, which dtypes, which device.

Everything goes through the Python Array API standard (array-api-compat), so NumPy, PyTorch, JAX,
CuPy, Dask and array-api-strict arrays all take the same path; TensorFlow tensors through
``_core.tf_namespace``, a thin Array-API layer on ``tf.math`` (array-api-compat has none). No array
library other than NumPy is imported here: an array is recognised by its type without importing
its library (TensorFlow's tensors only once ``tensorflow`` is in ``sys.modules``).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
from collections.abc import Iterator
from typing import Any

import array_api_compat
import numpy as np

Array = Any

_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")


def is_torch_tensor(value: object) -> bool:
    """Whether ``value`` is a ``torch.Tensor`` (without importing torch: if torch is not
    imported, nothing is one). Faster than array-api-compat's check, for the per-call paths."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_tf_tensor(value: object) -> bool:
    """Whether ``value`` is a TensorFlow tensor: eager, symbolic (inside ``tf.function``) or a
    ``tf.Variable`` (read as a tensor). Without importing TensorFlow: if it is not imported,
    nothing is one."""
    tf = sys.modules.get("tensorflow")
    # getattr: a TensorFlow still being imported may not have its classes yet.
    tensor, variable = getattr(tf, "Tensor", None), getattr(tf, "Variable", None)
    return tensor is not None and variable is not None and isinstance(value, (tensor, variable))


def is_tf_symbolic(value: object) -> bool:
    """A TensorFlow tensor whose values cannot be read now (traced in ``tf.function``, a graph)."""
    if not is_tf_tensor(value):
        return False
    import tensorflow as tf

    if isinstance(value, tf.Variable):
        return not tf.executing_eagerly()
    return not hasattr(value, "numpy") or not tf.executing_eagerly()


def opaque_to_autograph(fn: Any) -> Any:
    """Mark a public function so that TensorFlow's AutoGraph calls it as it is, rather than
    converting its source (and every function it calls) when a ``tf.function`` calls it: the
    package is plain Python over TF operations, and conversion only costs tracing time (and
    warnings where it fails). The mark is AutoGraph's own for converted functions (what
    ``tf.autograph.experimental.do_not_convert`` sets); nothing is imported."""
    fn.autograph_info__ = frozenset()
    return fn


def is_array(value: object) -> bool:
    return is_torch_tensor(value) or is_tf_tensor(value) or array_api_compat.is_array_api_obj(value)


def is_numpy_array(value: object) -> bool:
    return isinstance(value, np.ndarray) or array_api_compat.is_numpy_array(value)


def is_jax_array(value: object) -> bool:
    return array_api_compat.is_jax_array(value)


# NumPy 2.1 and newer implement the Array API in their own namespace (``numpy.astype`` came in
# 2.1). Using it directly skips array-api-compat's wrapper module, whose import reads every
# attribute of ``numpy`` and so imports ``numpy.f2py``, ``numpy.testing`` and ``numpy.ma``:
# 85 ms of a process's first call.
_NUMPY_IS_STANDARD = hasattr(np, "astype") and hasattr(np, "__array_namespace_info__")


def namespace(*arrays: Array) -> Any:
    if all(is_torch_tensor(a) for a in arrays if a is not None) and any(
        a is not None for a in arrays
    ):
        return _torch_namespace()
    if _NUMPY_IS_STANDARD and all(
        isinstance(a, (np.ndarray, np.generic)) for a in arrays if a is not None
    ) and any(a is not None for a in arrays):  # fmt: skip
        return np
    if any(is_tf_tensor(a) for a in arrays):
        others = [a for a in arrays if a is not None and not is_tf_tensor(a)]
        if others:
            kinds = ", ".join(sorted({f"{type(a).__module__}.{type(a).__name__}" for a in others}))
            raise TypeError(f"Multiple namespaces for array types: tensorflow and {kinds}")
        from . import tf_namespace

        return tf_namespace
    return array_api_compat.array_namespace(*arrays)


def _torch_namespace() -> Any:
    from array_api_compat import torch as compat_torch

    return compat_torch


def device(x: Array) -> Any:
    if is_torch_tensor(x):
        return x.device
    if is_tf_tensor(x):
        # A device string; empty for a symbolic tensor not yet placed.
        return x.device
    return array_api_compat.device(x)


def dtype_name(dtype: Any) -> str:
    """``'float32'`` for ``numpy.float32``, ``torch.float32``, ``array_api_strict.float32``..."""
    # Keyed by type too: dtypes of two libraries may hash alike, and comparing them can warn.
    key = (type(dtype), dtype)
    try:
        return _DTYPE_NAMES[key]
    except (KeyError, TypeError):  # TypeError: an unhashable dtype-like object
        pass
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        name = str(dtype)
    name = name.rsplit(".", 1)[-1]
    # NumPy's dtype.name costs microseconds; dtypes are few. Only NumPy's (JAX's, ml_dtypes')
    # and torch's are kept: torch.compile traces this lookup, hashing every key, and cannot
    # hash a TensorFlow DType (its C __hash__ is opaque to Dynamo: a graph break).
    if len(_DTYPE_NAMES) < 256 and isinstance(dtype, _cached_dtypes()):
        try:
            _DTYPE_NAMES[key] = name
        except TypeError:
            pass
    return name


_DTYPE_NAMES: dict[tuple[type, Any], str] = {}


def _cached_dtypes() -> tuple[type, ...]:
    torch = sys.modules.get("torch")
    return (np.dtype,) if torch is None else (np.dtype, torch.dtype)


def float_name(xp: Any, dtype: Any) -> str | None:
    """The name of a real floating dtype this library supports, else None.

    bfloat16 counts where the library has it: torch, JAX and NumPy arrays of
    ``ml_dtypes.bfloat16`` (which ``numpy.isdtype`` does not know).
    """
    name = dtype_name(dtype)
    if name == "bfloat16":
        return name
    try:
        floating = isdtype(xp, dtype, "real floating")
    except (TypeError, ValueError):
        return None
    return name if floating and name in _FLOAT_NAMES else None


def is_integer_dtype(xp: Any, dtype: Any) -> bool:
    try:
        return isdtype(xp, dtype, "integral")
    except (TypeError, ValueError):
        return False


def isdtype(xp: Any, dtype: Any, kind: str | tuple[str, ...]) -> bool:
    """``xp.isdtype(dtype, kind)``, remembered for NumPy's own dtypes: NumPy answers in about a
    microsecond, several times a call (a small training step's budget)."""
    if xp is np and isinstance(dtype, np.dtype):
        return _numpy_isdtype(dtype, kind)
    return bool(xp.isdtype(dtype, kind))


@functools.cache
def _numpy_isdtype(dtype: np.dtype, kind: str | tuple[str, ...]) -> bool:
    return bool(np.isdtype(dtype, kind))


def is_real_dtype(xp: Any, dtype: Any) -> bool:
    """Real numbers of any kind (bool, integer, floating), which labels may be cast from."""
    if dtype_name(dtype) == "bfloat16":
        return True
    try:
        return isdtype(xp, dtype, ("bool", "integral", "real floating"))
    except (TypeError, ValueError):
        return False


_FLOAT32_INTERNALS: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "logitloss_float32_internals", default=False
)


@contextlib.contextmanager
def float32_internals() -> Iterator[None]:
    """Compute float16, bfloat16 and float32 losses with float32 internals in this block.

    By default they are computed in float64 and rounded once (within 1 ULP). float64 is missing
    on TPUs and with JAX without ``jax_enable_x64``, where float32 is used anyway, and slow on
    most GPUs and under XLA on the CPU: this switch asks for float32 everywhere else too. The
    same stable formulas run in float32; their measured bound is in the README ("TensorFlow":
    a few ULP, more for results near the subnormal range). float64 logits stay float64, and
    the CPU kernels (NumPy, PyTorch CPU tensors) keep their float64 internals, which cost them
    nothing. A context variable: the calls of this thread (or asyncio task) only; inside
    ``tf.function`` and ``jax.jit`` it applies to the calls traced in the block (a function
    traced before keeps the precision it was traced with).

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> x = np.linspace(-30, 30, 7, dtype=np.float32)
    >>> with logitloss.float32_internals():
    ...     fast = logitloss.sigmoid_cross_entropy_with_logits(np.ones_like(x), x)
    >>> exact = logitloss.sigmoid_cross_entropy_with_logits(np.ones_like(x), x)
    >>> fast.dtype, bool(np.all(np.abs(fast - exact) <= 4 * np.spacing(exact)))
    (dtype('float32'), True)
    """
    token = _FLOAT32_INTERNALS.set(True)
    try:
        yield
    finally:
        _FLOAT32_INTERNALS.reset(token)


def compute_dtype(xp: Any, x: Array) -> Any:
    """float64 wherever the library offers it on ``x``'s device, else float32.

    Narrow dtypes (float16, bfloat16, float32) are computed in float64 and rounded once, which
    keeps every loss within 1 ULP. JAX without ``jax_enable_x64`` (and devices without float64,
    TPUs) have no float64: there float32 is used and the bound is the float32 formulas' own, as
    inside :func:`float32_internals` for every dtype but float64.
    """
    if _FLOAT32_INTERNALS.get() and dtype_name(x.dtype) != "float64":
        return xp.float32
    try:
        floats = xp.__array_namespace_info__().dtypes(device=device(x), kind="real floating")
    except (AttributeError, TypeError, ValueError):
        return xp.float64
    return floats.get("float64", xp.float32)


def widen(xp: Any, x: Array, *others: Array | None) -> tuple[Array, ...]:
    """``x`` and ``others`` (``None`` stays ``None``) in :func:`compute_dtype`; autodiff
    follows the cast back."""
    wide = compute_dtype(xp, x)
    return tuple(None if a is None else xp.astype(a, wide, copy=False) for a in (x, *others))


def is_tracer(x: Array) -> bool:
    """True for a JAX value being traced (under ``jax.jit``, ``grad``, ``vmap``)."""
    if "jax" not in sys.modules or not array_api_compat.is_jax_array(x):
        return False
    import jax

    return isinstance(x, jax.core.Tracer)


def can_read_values(x: Array) -> bool:
    """Whether reading ``x``'s values now is cheap and possible (not lazy, not traced)."""
    if is_tf_tensor(x):
        return not is_tf_symbolic(x)
    if array_api_compat.is_dask_array(x):
        return False
    if array_api_compat.is_jax_array(x):
        return not is_tracer(x)
    return not array_api_compat.is_lazy_array(x)


def scalar(value: float, like: Array, *, xp: Any) -> Array:
    """A 0-d array of ``like``'s dtype and device (strict namespaces refuse Python scalars)."""
    return xp.asarray(value, dtype=like.dtype, device=device(like))


def fix_where(value: Array, mask: Array, fix: Any, args: tuple, *, xp: Any) -> Array:
    """``value`` with ``fix(*args)`` where ``mask`` (rare: a cheap common path).

    NumPy, PyTorch and CuPy arrays: ``fix`` computed for the masked elements only.
    TensorFlow: a conditional on ``any(mask)`` (``tf.cond``), so that a graph skips ``fix``
    when no element needs it, where a plain ``where`` would compute it for every element (XLA
    evaluates both sides of a select): the sigmoid loss's jit-compiled forward and backward
    at 2048 x 2048 went from 20x to 6x ``tf.nn``'s time. Elsewhere (JAX, Dask, ...):
    ``where``, so that tracing and lazy evaluation still work. (``jax.lax.cond`` could save
    JAX the same work under ``jit``; not measured yet.)"""
    import array_api_compat as compat

    if compat.is_numpy_array(value) or compat.is_torch_array(value) or compat.is_cupy_array(value):
        if not bool(xp.any(mask)):
            return value
        shape = value.shape
        picked = tuple(None if a is None else xp.broadcast_to(a, shape)[mask] for a in args)
        out = xp.asarray(value, copy=True)
        out[mask] = fix(*picked, xp=xp)
        return out

    def fixed() -> Array:
        return xp.where(mask, fix(*args, xp=xp), value)

    if is_tf_tensor(value):
        import tensorflow as tf

        return tf.cond(tf.reduce_any(mask), fixed, lambda: value)
    return fixed()


def broadcast_shape(*operands: Array) -> Any:
    """The shape ``operands`` broadcast to: a tuple, or for TensorFlow tensors whose shapes are
    not all known when traced (a ``None`` batch), the dynamic shape as a tensor."""
    shapes = [tuple(a.shape) for a in operands]
    if any(None in s for s in shapes) and any(is_tf_tensor(a) for a in operands):
        import tensorflow as tf

        result = tf.shape(operands[0])
        for a in operands[1:]:
            result = tf.broadcast_dynamic_shape(result, tf.shape(a))
        return result
    return tuple(np.broadcast_shapes(*shapes))


def quiet() -> np.errstate:
    """NumPy's warnings off for what the formulas do on purpose: inf - inf in the error-free
    difference of an infinite logit and 0 / 0, both selected away by ``where``, and the final
    rounding of a loss beyond the dtype's range to inf (the correctly rounded result)."""
    return np.errstate(invalid="ignore", over="ignore", divide="ignore")
