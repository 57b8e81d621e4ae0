"""Fused, multi-threaded CPU kernels (numba) for the four losses and their logit gradients.

The same numbers as the reference path (``_reference``, ``_formulas``), in one pass over memory
with no temporaries: float16, bfloat16 and float32 within 1 ULP of the exact value, float64
within 4 ULP (normal range), the exact limits at infinite logits, NaN in -> NaN out. Close to the
memory limit: the logistic losses at about the time of ``np.add(logits, labels)``
(``logitloss bench``). Loss, gradient, fused loss and gradient (``*_loss_and_grad``), and the
summed logistic loss (``logistic_loss_sum``, for reductions).

NumPy arrays only; ``_dispatch`` decides when to come here. Importing this package imports numba
(``import logitloss`` does not import this package); the kernels are compiled on first use and
cached on disk (numba's ``cache=True``), and the threading layer is picked then (``_runtime``).

How the work is split:

- ``_math``: ``exp``, ``log1p`` and ``tanh`` as polynomials that vectorise (numba's ``math.exp``
  is a libm call that does not), at float32 and at float64 accuracy;
- ``_logistic``: one element of each formula, and the row/tile loops, serial and parallel;
- ``_softmax``: the softmax losses, a row per thread, in passes that stay in its cache;
- ``_layout``: any shape and strides described as rows for the loops, copying only what they
  cannot read;
- ``_runtime``: compile options, threading layer, serial below 65536 elements.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._losses.logistic import kernel as logistic_kernel
from .._losses.softmax import kernel as softmax_kernel
from . import layout, runtime

__all__ = [
    "logistic_grad_logits",
    "logistic_loss",
    "logistic_loss_and_grad",
    "logistic_loss_sum",
    "softmax_grad_logits",
    "softmax_loss",
    "softmax_loss_and_grad",
    "sparse_softmax_grad_logits",
    "sparse_softmax_loss",
    "sparse_softmax_loss_and_grad",
]

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
    return _run(logistic_kernel.loss_serial, logistic_kernel.loss_parallel, x, [z, q], out)


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
    kernels = (logistic_kernel.grad_serial, logistic_kernel.grad_parallel)
    return _run(*kernels, x, [z, q, upstream], out)


def logistic_loss_and_grad(x: np.ndarray, z: Any, q: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(logistic_loss(x, z, q), logistic_grad_logits(x, z, q))`` in one pass: each element
    is read once for both (the caller multiplies the gradient by its upstream later). The
    same element formulas as the two separate kernels: the same numbers."""
    fn = "logistic_loss_and_grad"
    x, z, q, _, _ = _arguments(fn, x, z, q, None, None)
    if _dtype_name(x.dtype) in _THROUGH_FLOAT32:
        loss, grad = logistic_loss_and_grad(x.astype(np.float32), z.astype(np.float32),
                                            q.astype(np.float32))  # fmt: skip
        with np.errstate(over="ignore"):
            return loss.astype(x.dtype), grad.astype(x.dtype)
    # In the logits' memory order (a transposed input gives transposed outputs: no copy back).
    loss, grad = np.empty_like(x), np.empty_like(x)
    if not x.size:
        return loss, grad
    operands = [(x, False, False), (z, False, False), (q, True, False)]
    operands += [(loss, False, True), (grad, False, True)]
    plan, arrays = layout.plan(x, operands)
    for piece in layout.group_rows(plan, runtime.TILE):
        kernel = runtime.pick(
            logistic_kernel.both_serial, logistic_kernel.both_parallel, piece.rows * piece.cols
        )
        logits, labels, weight, loss_op, grad_op = piece.operands
        args = (
            logits.base, logits.row_stride, labels.base, labels.row_stride,
            weight.base, weight.row_stride, weight.varies, loss_op.base, loss_op.row_stride,
            grad_op.base, grad_op.row_stride, piece.rows, piece.cols, runtime.TILE,
        )  # fmt: skip
        runtime.call(kernel, (x.dtype.char,), args)
    # An output replaced by a contiguous copy (x not walkable as it is) is copied back.
    for target, used in zip((loss, grad), arrays[-2:], strict=True):
        if used is not target:
            target[...] = used
    return loss, grad


def logistic_loss_sum(
    x: np.ndarray, z: Any, q: Any = None, weight: Any = None, smoothing: float = 0.0
) -> tuple[float, float]:
    """``(sum of weight * logistic_loss(x, z_s, q), sum of weight)`` over all elements, in
    float64, without writing the per-element loss (the reductions of the training losses need
    only these), in one pass over the inputs.

    ``z_s = z (1 - smoothing) + smoothing / 2`` (label smoothing toward 1/2, formed in float64);
    ``weight`` broadcasts to ``x`` like ``q``, and a zero weight drops an infinite loss. Each
    element's loss is computed as :func:`logistic_loss` computes it, before rounding; the tiles'
    float64 partial sums (reassociated within a tile of at most 16384 terms) are added exactly
    with ``math.fsum`` in tile order, so the result does not depend on the threads. Meant for
    narrow dtypes: float64 callers should prefer a compensated sum.
    """
    fn = "logistic_loss_sum"
    x, z, q, _, _ = _arguments(fn, x, z, q, None, None)
    # Without weights and smoothing the kernel is compiled without them (w None): a shorter loop.
    plain = weight is None and not smoothing
    w = _operand(fn, "weight", 1.0 if weight is None else weight, x, elementwise=False)
    if _dtype_name(x.dtype) in _THROUGH_FLOAT32:
        x, z, q, w = (a.astype(np.float32) for a in (x, z, q, w))
    if not x.size:
        return 0.0, 0.0
    a, b = 1.0 - smoothing, smoothing / 2
    partials = []
    operands = [(x, False, False), (z, False, False), (q, True, False), (w, True, False)]
    plan, _ = layout.plan(x, operands[:3] if plain else operands)
    for piece in layout.group_rows(plan, runtime.TILE):
        kernel = runtime.pick(
            logistic_kernel.sum_serial, logistic_kernel.sum_parallel, piece.rows * piece.cols
        )
        tiles = piece.rows * -(-piece.cols // runtime.TILE)
        partial = np.empty((tiles, 2), np.float64)
        logits, labels, pos, *weights = piece.operands
        wargs = (None, 0, False) if plain else (
            weights[0].base, weights[0].row_stride, weights[0].varies
        )  # fmt: skip
        args = (
            logits.base, logits.row_stride, labels.base, labels.row_stride,
            pos.base, pos.row_stride, pos.varies, *wargs,
            a, b, partial, piece.rows, piece.cols, runtime.TILE,
        )  # fmt: skip
        runtime.call(kernel, (x.dtype.char, plain), args)
        partials.append(partial)
    sums = np.concatenate(partials)
    return math.fsum(sums[:, 0].tolist()), math.fsum(sums[:, 1].tolist())


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
        plan, arrays = layout.plan(x, operands)
        for piece in layout.group_rows(plan, runtime.TILE):
            kernel = runtime.pick(serial, parallel, piece.rows * piece.cols)
            logits, labels, *broadcast, written = piece.operands
            args: list[Any] = [logits.base, logits.row_stride, labels.base, labels.row_stride]
            for op in broadcast:  # these also say whether they vary along the row
                args += [op.base, op.row_stride, op.varies]
            args += [written.base, written.row_stride, piece.rows, piece.cols, runtime.TILE]
            runtime.call(kernel, (x.dtype.char,), tuple(args))
        if arrays[-1] is not target:
            target[...] = arrays[-1]
    if result is None:
        return target
    if target is not result:
        result[...] = target
    return result


# --- Softmax -----------------------------------------------------------------------------------


def softmax_loss(
    x: np.ndarray, z: Any, axis: int = -1, out: np.ndarray | None = None
) -> np.ndarray:
    """Softmax cross-entropy of logits ``x`` against soft labels ``z`` along ``axis``.

    The kernel version of ``_reference.softmax`` (formula: ``_formulas.softmax_loss``): float16,
    bfloat16 and float32 within 1 ULP of the exact value, float64 within a few ULP, the exact
    limits at infinite logits, NaN for rows without a limit. ``z`` must broadcast to ``x``'s
    shape (it is cast to ``x``'s dtype; one row of labels shared by every row is read in
    place); ``out``, if given, a writeable array of ``x``'s dtype (or float64) and the loss's
    shape (``x.shape`` without ``axis``). Returns ``out`` or a new array.
    """
    fn = "softmax_loss"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    out = _output(fn, "out", out, x.dtype, _loss_shape(x, axis), wide_ok=True)
    loss, _ = _softmax_run(x, z, None, axis, None, out, None, want_loss=True, want_grad=False)
    return loss


def softmax_grad_logits(
    x: np.ndarray,
    z: Any,
    axis: int = -1,
    upstream: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``upstream * d loss / d x`` of :func:`softmax_loss`: ``(softmax(x) sum(z) - z) *
    upstream``, the true derivative for labels of any sum (``_formulas.softmax_grad_logits``).

    ``upstream``: ``None`` (ones) or anything that broadcasts to the loss's shape (one value per
    row). ``out``: ``x``'s dtype and shape.
    """
    fn = "softmax_grad_logits"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    upstream = _per_row(fn, upstream, x, axis)
    out = _output(fn, "out", out, x.dtype, x.shape)
    _, grad = _softmax_run(x, z, None, axis, upstream, None, out, want_loss=False, want_grad=True)
    return grad


def softmax_loss_and_grad(x: np.ndarray, z: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(softmax_loss(x, z, axis), softmax_grad_logits(x, z, axis))`` in one call: each row is
    read once for both (the caller multiplies the gradient by its upstream later)."""
    fn = "softmax_loss_and_grad"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    ones = _per_row(fn, None, x, axis)
    loss, grad = _softmax_run(x, z, None, axis, ones, None, None, want_loss=True, want_grad=True)
    return loss, grad


def sparse_softmax_loss(x: np.ndarray, labels: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax cross-entropy against integer ``labels`` (shape ``x.shape[:-1]``) over the last
    axis of ``x`` (``_formulas.sparse_softmax_loss``); NaN for a row whose label is not in
    ``[0, num_classes)``, as the reference's ``_nan_out_of_range``."""
    fn = "sparse_softmax_loss"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    out = _output(fn, "out", out, x.dtype, x.shape[:-1], wide_ok=True)
    loss, _ = _softmax_run(x, None, labels, -1, None, out, None, want_loss=True, want_grad=False)
    return loss


def sparse_softmax_grad_logits(
    x: np.ndarray, labels: Any, upstream: Any = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``upstream * (softmax(x) - one_hot(labels))`` (``_formulas.sparse_softmax_grad_logits``),
    NaN in the rows of out-of-range labels."""
    fn = "sparse_softmax_grad_logits"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    upstream = _per_row(fn, upstream, x, x.ndim - 1)
    out = _output(fn, "out", out, x.dtype, x.shape)
    _, grad = _softmax_run(
        x, None, labels, -1, upstream, None, out, want_loss=False, want_grad=True
    )
    return grad


def sparse_softmax_loss_and_grad(x: np.ndarray, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sparse_softmax_loss(x, labels), sparse_softmax_grad_logits(x, labels))`` in one
    call."""
    fn = "sparse_softmax_loss_and_grad"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    ones = _per_row(fn, None, x, x.ndim - 1)
    return _softmax_run(x, None, labels, -1, ones, None, None, want_loss=True, want_grad=True)


def _softmax_logits(fn: str, x: Any, axis: int) -> tuple[np.ndarray, int]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: logits must be a NumPy array, got {type(x).__name__}")
    name = _dtype_name(x.dtype)
    if name not in _DIRECT + _THROUGH_FLOAT32:
        raise TypeError(f"{fn}: logits must be float16, bfloat16, float32 or float64, got {name}")
    if x.ndim == 0:
        raise ValueError(f"{fn}: logits must have a class axis, got a 0-d array")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{fn}: axis must be an integer, got {type(axis).__name__}")
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{fn}: axis {axis} is out of range for logits of shape {x.shape}")
    axis = int(axis) % x.ndim
    if x.shape[axis] == 0:
        # As the reference (a maximum over no classes): there is no loss to give.
        raise ValueError(f"{fn}: logits have zero classes (shape {x.shape}, axis {axis})")
    return x, axis


def _loss_shape(x: np.ndarray, axis: int) -> tuple[int, ...]:
    return x.shape[:axis] + x.shape[axis + 1 :]


def _output(
    fn: str,
    arg: str,
    out: np.ndarray | None,
    dtype: np.dtype,
    shape: tuple[int, ...],
    *,
    wide_ok: bool = False,
) -> np.ndarray | None:
    """``out`` checked: ``dtype`` (or float64 too, with ``wide_ok``), ``shape``, writeable."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: {arg} must be a NumPy array, got {type(out).__name__}")
    if out.dtype != dtype and not (wide_ok and out.dtype == np.float64):
        allowed = "the logits' dtype" + (" or float64" if wide_ok else "")
        raise TypeError(
            f"{fn}: {arg} must have {allowed} {_dtype_name(dtype)}, got {_dtype_name(out.dtype)}"
        )
    if out.shape != shape:
        raise ValueError(f"{fn}: {arg} must have shape {shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: {arg} is read-only")
    return out


def _per_row(fn: str, upstream: Any, x: np.ndarray, axis: int) -> np.ndarray:
    """``upstream`` (``None``: ones) as an array of ``x``'s dtype broadcast to the loss's shape."""
    shape = _loss_shape(x, axis)
    try:
        a = np.asarray(1.0 if upstream is None else upstream, dtype=x.dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{fn}: upstream cannot be cast to {_dtype_name(x.dtype)}: {error}"
        ) from None
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(
            f"{fn}: upstream of shape {a.shape} must broadcast to the loss's shape {shape}"
        ) from None


def _soft_labels(fn: str, z: Any, x: np.ndarray) -> np.ndarray:
    """Soft labels of ``x``'s dtype broadcast to ``x``'s shape: a view, so labels shared along
    the batch (a class-weight row for label smoothing) are read with a zero row stride."""
    return np.broadcast_to(_operand(fn, "labels", z, x, elementwise=False), x.shape)


def _integer_labels(fn: str, labels: Any, x: np.ndarray) -> np.ndarray:
    """``labels`` as int64 of shape ``x.shape[:-1]`` (values are not checked: an out-of-range
    label gives a NaN row)."""
    a = np.asarray(labels)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{fn}: labels must have an integer dtype, got {_dtype_name(a.dtype)}")
    if a.shape != x.shape[:-1]:
        raise ValueError(f"{fn}: labels must have shape {x.shape[:-1]}, got {a.shape}")
    wide = a.astype(np.int64, copy=False)
    if a.dtype == np.uint64:
        # Beyond int64 a label is out of range anyway: keep it so (not wrapped to a class).
        wide = wide.copy()
        wide[a > np.iinfo(np.int64).max] = -1
    return wide


def _c_contiguous(a: np.ndarray) -> bool:
    return a.flags.c_contiguous


def _softmax_run(
    x: np.ndarray,
    z: np.ndarray | None,
    labels: np.ndarray | None,
    axis: int,
    upstream: np.ndarray | None,
    loss_out: np.ndarray | None,
    grad_out: np.ndarray | None,
    *,
    want_loss: bool,
    want_grad: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Run the soft (``z``) or sparse (``labels``) kernels; returns ``(loss, grad)``, each
    ``None`` unless wanted (into ``loss_out`` / ``grad_out`` where given)."""
    axis %= x.ndim
    if _dtype_name(x.dtype) in _THROUGH_FLOAT32:
        wide_loss, wide_grad = _softmax_run(
            x.astype(np.float32),
            None if z is None else z.astype(np.float32),
            labels,
            axis,
            None if upstream is None else upstream.astype(np.float32),
            loss_out if _is_wide(loss_out) else None,
            None,
            want_loss=want_loss,
            want_grad=want_grad,
        )
        if _is_wide(loss_out):
            return loss_out, _cast_into(wide_grad, grad_out, x.dtype) if want_grad else None
        # A float32 result beyond the narrow range rounds to inf: correct, not worth a warning.
        with np.errstate(over="ignore"):
            return (
                _cast_into(wide_loss, loss_out, x.dtype) if want_loss else None,
                _cast_into(wide_grad, grad_out, x.dtype) if want_grad else None,
            )
    moved_x = np.moveaxis(x, axis, -1)
    moved_z = None if z is None else np.moveaxis(z, axis, -1)
    loss = loss_out if want_loss else None
    grad = grad_out if want_grad else None
    if want_loss and loss is None:
        loss = np.empty(moved_x.shape[:-1], x.dtype)
    loss_dtype = None if loss is None else loss.dtype
    if want_grad and grad is None:
        # The gradient in the logits' memory order when the kernels can read that, else with
        # the classes contiguous (the kernels' order), the axis moved back.
        if moved_x.strides[-1] == x.itemsize or moved_x.shape[-1] == 1:
            grad = np.empty_like(x)
        else:
            grad = np.moveaxis(np.empty(moved_x.shape, x.dtype), -1, axis)
    if moved_x.size == 0:
        return loss, grad
    inputs = [moved_x] + ([moved_z] if moved_z is not None else [])
    # Outputs written through a temporary where they overlap an input other than as the very
    # same view (the kernels read a row whole before writing it, element j of the gradient after
    # element j of the inputs), or where the kernels cannot write them in place.
    loss_target = loss
    if loss is not None and any(np.may_share_memory(loss, a) for a in inputs):
        loss_target = np.empty(loss.shape, loss_dtype)
    grad_target = None if grad is None else np.moveaxis(grad, axis, -1)
    if grad_target is not None and any(
        np.may_share_memory(grad_target, a) and not _same_view(grad_target, a) for a in inputs
    ):
        grad_target = np.empty(moved_x.shape, x.dtype)
    per_row_inputs = [a for a in (labels, upstream) if a is not None]
    for attempt in range(2):
        full = [(a, False) for a in inputs]
        if grad_target is not None:
            full.append((grad_target, True))
        per_row = [(a, False) for a in per_row_inputs]
        if loss_target is not None:
            per_row.append((loss_target, True))
        try:
            rows, cols, ops = layout.class_rows(full, per_row)
            break
        except layout.LayoutError:
            if attempt:
                raise AssertionError("unreachable: contiguous operands have rows") from None
            inputs = [a if _c_contiguous(a) else np.ascontiguousarray(a) for a in inputs]
            per_row_inputs = [
                a if _c_contiguous(a) else np.ascontiguousarray(a) for a in per_row_inputs
            ]
            if grad_target is not None and not _c_contiguous(grad_target):
                grad_target = np.empty(moved_x.shape, x.dtype)
            if loss_target is not None and not _c_contiguous(loss_target):
                loss_target = np.empty(loss_target.shape, loss_dtype)
    _launch(ops, rows, cols, z is not None, want_loss, want_grad, x.dtype, loss_dtype)
    if loss is not None and loss_target is not loss:
        loss[...] = loss_target
    if grad is not None:
        moved_grad = np.moveaxis(grad, axis, -1)
        if not _same_view(moved_grad, grad_target):
            moved_grad[...] = grad_target
    return loss, grad


def _is_wide(out: np.ndarray | None) -> bool:
    return out is not None and out.dtype == np.float64


def _cast_into(wide: np.ndarray | None, out: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    assert wide is not None
    if out is None:
        return wide.astype(dtype)
    out[...] = wide
    return out


def _launch(
    ops: list[layout.RowOperand],
    rows: int,
    cols: int,
    soft: bool,
    want_loss: bool,
    want_grad: bool,
    dtype: np.dtype,
    loss_dtype: np.dtype | None,
) -> None:
    """Call the kernel for the operands ``class_rows`` described: ``[x, z?, grad?]`` then
    ``[labels?, upstream?, loss?]``; ``loss_dtype`` may be float64 for narrower logits."""
    ops = list(ops)
    x = ops.pop(0)
    z = ops.pop(0) if soft else None
    grad = ops.pop(0) if want_grad else None
    labels = None if soft else ops.pop(0)
    upstream = ops.pop(0) if want_grad else None
    loss = ops.pop(0) if want_loss else None
    key = (dtype.char, "" if loss_dtype is None else loss_dtype.char)
    size = rows * cols

    def triple(op: layout.RowOperand) -> list[Any]:
        return [op.base, op.offset, op.row_stride]

    second = triple(z) if soft else triple(labels)
    if not want_grad:
        serial, parallel = (
            (softmax_kernel.soft_loss_serial, softmax_kernel.soft_loss_parallel)
            if soft
            else (softmax_kernel.sparse_loss_serial, softmax_kernel.sparse_loss_parallel)
        )
        args = [*triple(x), *second, *triple(loss), rows, cols]
    else:
        serial, parallel = (
            (softmax_kernel.soft_grad_serial, softmax_kernel.soft_grad_parallel)
            if soft
            else (softmax_kernel.sparse_grad_serial, softmax_kernel.sparse_grad_parallel)
        )
        # Without a loss wanted, a one-element stand-in of the same type (one compiled kernel).
        loss_args = triple(loss) if loss is not None else [np.empty(1, dtype), 0, 0]
        args = [*triple(x), *second, *triple(upstream), *loss_args, *triple(grad), rows, cols]
        args.append(want_loss)
    kernel = runtime.pick(serial, parallel, size)
    runtime.call(kernel, key, tuple(args))
