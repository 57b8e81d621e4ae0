"""Fused, multi-threaded CPU kernels (numba) for the logistic losses and their logit gradient.

The same numbers as the reference path (``_reference``, ``_formulas``), in one pass over memory
with no temporaries: float16, bfloat16 and float32 within 1 ULP of the exact value, float64
within 4 ULP (normal range), the exact limits at infinite logits, NaN in -> NaN out. Close to the
memory limit: about the time of ``np.add(logits, labels)`` (``benchmarks/bench_logistic.py``).

NumPy arrays only; ``_dispatch`` decides when to come here. Importing this package imports numba
(``import logitloss`` does not import this package); the kernels are compiled on first use and
cached on disk (numba's ``cache=True``), and the threading layer is picked then (``_runtime``).

How the work is split:

- ``_math``: ``exp``, ``log1p`` and ``tanh`` as polynomials that vectorise (numba's ``math.exp``
  is a libm call that does not), at float32 and at float64 accuracy;
- ``_logistic``: one element of each formula, and the row/tile loops, serial and parallel;
- ``_layout``: any shape and strides described as rows for the loops, copying only what they
  cannot read;
- ``_runtime``: compile options, threading layer, serial below 65536 elements.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _layout, _logistic, _runtime

__all__ = ["logistic_grad_logits", "logistic_loss"]

# Computed through float32 (exact widening), rounded to their own dtype at the end: the float32
# result carries 13 (float16) or 16 (bfloat16) more bits, so the double rounding stays within
# 0.5 + 2^-13 ULP of the float32 result's own error.
_THROUGH_FLOAT32 = ("float16", "bfloat16")
_DIRECT = ("float32", "float64")


def logistic_loss(
    x: np.ndarray, z: Any, q: Any = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Elementwise sigmoid (``q is None``) or weighted cross-entropy from logits ``x``.

    The kernel version of ``_reference.logistic`` (formula: ``_formulas.logistic_loss``).
    ``z`` (labels) and ``q`` (``pos_weight``: a scalar, per class, per element, anything that
    broadcasts to ``x`` without enlarging it) are cast to ``x``'s dtype first, as TensorFlow
    does. ``out``, if given, must be a writeable array of ``x``'s dtype and shape; it may be
    ``x`` itself. Returns ``out`` or a new array.
    """
    x, z, q, _, out = _arguments("logistic_loss", x, z, q, None, out)
    return _run(_logistic.loss_serial, _logistic.loss_parallel, x, [z, q], out)


def logistic_grad_logits(
    x: np.ndarray,
    z: Any,
    q: Any = None,
    upstream: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``upstream * d loss / d x`` of :func:`logistic_loss`, elementwise.

    The kernel version of ``_reference.logistic_grad(..., wrt="logits")`` (formula:
    ``_formulas.logistic_grad_logits``): ``(1 - z) sigma(x) - q z sigma(-x)``, times
    ``upstream`` (``None`` = ones; anything that broadcasts to ``x``), rounded once.
    """
    x, z, q, upstream, out = _arguments("logistic_grad_logits", x, z, q, upstream, out)
    return _run(_logistic.grad_serial, _logistic.grad_parallel, x, [z, q, upstream], out)


# --- Arguments ---------------------------------------------------------------------------------


def _dtype_name(dtype: np.dtype) -> str:
    return dtype.name if dtype.name != "void" else str(dtype)


def _arguments(
    fn: str, x: Any, z: Any, q: Any, upstream: Any, out: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: logits must be a NumPy array, got {type(x).__name__}")
    name = _dtype_name(x.dtype)
    if name not in _DIRECT + _THROUGH_FLOAT32:
        raise TypeError(f"{fn}: logits must be float16, bfloat16, float32 or float64, got {name}")
    z = _operand(fn, "labels", z, x, elementwise=True)
    q = _operand(fn, "pos_weight", 1.0 if q is None else q, x, elementwise=False)
    upstream = _operand(fn, "upstream", 1.0 if upstream is None else upstream, x, elementwise=False)
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{fn}: out must be a NumPy array, got {type(out).__name__}")
        if out.dtype != x.dtype:
            raise TypeError(
                f"{fn}: out must have the logits' dtype {name}, got {_dtype_name(out.dtype)}"
            )
        if out.shape != x.shape:
            raise ValueError(f"{fn}: out must have the logits' shape {x.shape}, got {out.shape}")
        if not out.flags.writeable:
            raise ValueError(f"{fn}: out is read-only")
    return x, z, q, upstream, out


def _operand(fn: str, arg: str, value: Any, x: np.ndarray, *, elementwise: bool) -> np.ndarray:
    """``value`` as an array of ``x``'s dtype that broadcasts to ``x``'s shape."""
    try:
        a = np.asarray(value, dtype=x.dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{fn}: {arg} cannot be cast to {_dtype_name(x.dtype)}: {error}") from None
    if elementwise and a.shape != x.shape:
        raise ValueError(f"{fn}: {arg} must have the logits' shape {x.shape}, got {a.shape}")
    try:
        fits = np.broadcast_shapes(a.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{fn}: {arg} of shape {a.shape} must broadcast to the logits' shape {x.shape}"
        )
    return a


# --- Running -----------------------------------------------------------------------------------


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
        and a.dtype == b.dtype
    )


def _run(
    serial: Any, parallel: Any, x: np.ndarray, inputs: list[np.ndarray], out: np.ndarray | None
) -> np.ndarray:
    """Run the kernel pair on ``x`` and ``inputs`` (labels first, then the broadcast ones)."""
    result = out
    if _dtype_name(x.dtype) in _THROUGH_FLOAT32:
        wide = _run(
            serial, parallel, x.astype(np.float32), [a.astype(np.float32) for a in inputs], None
        )
        # A float32 result beyond the narrow range rounds to inf: correct, not worth a warning.
        with np.errstate(over="ignore"):
            if result is None:
                return wide.astype(x.dtype)
            result[...] = wide
        return result
    target = out
    # An output that overlaps an input other than as the very same view (the kernels read each
    # element before writing it) is written through a temporary.
    if out is not None and any(
        np.may_share_memory(out, a) and not _same_view(out, a) for a in (x, *inputs)
    ):
        target = None
    if target is None:
        target = np.empty(x.shape, x.dtype)
    if x.size:
        operands = [(x, False, False), (inputs[0], False, False)]
        operands += [(a, True, False) for a in inputs[1:]]
        operands.append((target, False, True))
        plan, arrays = _layout.plan(x, operands)
        for piece in _layout.group_rows(plan, _runtime.TILE):
            kernel = _runtime.pick(serial, parallel, piece.rows * piece.cols)
            logits, labels, *broadcast, written = piece.operands
            args: list[Any] = [logits.base, logits.row_stride, labels.base, labels.row_stride]
            for op in broadcast:  # these also say whether they vary along the row
                args += [op.base, op.row_stride, op.varies]
            args += [written.base, written.row_stride, piece.rows, piece.cols, _runtime.TILE]
            _runtime.call(kernel, (x.dtype.char,), tuple(args))
        if arrays[-1] is not target:
            target[...] = arrays[-1]
    if result is None:
        return target
    if target is not result:
        result[...] = target
    return result
