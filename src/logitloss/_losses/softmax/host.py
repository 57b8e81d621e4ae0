"""The softmax kernels' entry points (soft and sparse labels): loss, logits' gradient and both
in one pass, a row per thread; NumPy in, NumPy out.

Importing this module imports numba (``import logitloss`` does not): the kernels compile on
first use and are cached on disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._kernels import drivers, layout, runtime
from . import kernel as softmax_kernel

__all__ = [
    "softmax_grad_logits",
    "softmax_loss",
    "softmax_loss_and_grad",
    "sparse_softmax_grad_logits",
    "sparse_softmax_loss",
    "sparse_softmax_loss_and_grad",
]


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
    out = drivers.output(fn, "out", out, x.dtype, drivers.loss_shape(x, axis), wide_ok=True)
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
    upstream = drivers.per_row(fn, upstream, x, axis)
    out = drivers.output(fn, "out", out, x.dtype, x.shape)
    _, grad = _softmax_run(x, z, None, axis, upstream, None, out, want_loss=False, want_grad=True)
    return grad


def softmax_loss_and_grad(x: np.ndarray, z: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(softmax_loss(x, z, axis), softmax_grad_logits(x, z, axis))`` in one call: each row is
    read once for both (the caller multiplies the gradient by its upstream later)."""
    fn = "softmax_loss_and_grad"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    ones = drivers.per_row(fn, None, x, axis)
    loss, grad = _softmax_run(x, z, None, axis, ones, None, None, want_loss=True, want_grad=True)
    return loss, grad


def sparse_softmax_loss(x: np.ndarray, labels: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax cross-entropy against integer ``labels`` (shape ``x.shape[:-1]``) over the last
    axis of ``x`` (``_formulas.sparse_softmax_loss``); NaN for a row whose label is not in
    ``[0, num_classes)``, as the reference's ``_nan_out_of_range``."""
    fn = "sparse_softmax_loss"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    out = drivers.output(fn, "out", out, x.dtype, x.shape[:-1], wide_ok=True)
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
    upstream = drivers.per_row(fn, upstream, x, x.ndim - 1)
    out = drivers.output(fn, "out", out, x.dtype, x.shape)
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
    ones = drivers.per_row(fn, None, x, x.ndim - 1)
    return _softmax_run(x, None, labels, -1, ones, None, None, want_loss=True, want_grad=True)


def _softmax_logits(fn: str, x: Any, axis: int) -> tuple[np.ndarray, int]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: logits must be a NumPy array, got {type(x).__name__}")
    name = drivers.dtype_name(x.dtype)
    if name not in drivers.DIRECT + drivers.THROUGH_FLOAT32:
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


def _soft_labels(fn: str, z: Any, x: np.ndarray) -> np.ndarray:
    """Soft labels of ``x``'s dtype broadcast to ``x``'s shape: a view, so labels shared along
    the batch (a class-weight row for label smoothing) are read with a zero row stride."""
    return np.broadcast_to(drivers.operand(fn, "labels", z, x, elementwise=False), x.shape)


def _integer_labels(fn: str, labels: Any, x: np.ndarray) -> np.ndarray:
    """``labels`` as int64 of shape ``x.shape[:-1]`` (values are not checked: an out-of-range
    label gives a NaN row)."""
    a = np.asarray(labels)
    if a.dtype.kind not in "iu":
        raise TypeError(
            f"{fn}: labels must have an integer dtype, got {drivers.dtype_name(a.dtype)}"
        )
    if a.shape != x.shape[:-1]:
        raise ValueError(f"{fn}: labels must have shape {x.shape[:-1]}, got {a.shape}")
    wide = a.astype(np.int64, copy=False)
    if a.dtype == np.uint64:
        # Beyond int64 a label is out of range anyway: keep it so (not wrapped to a class).
        wide = wide.copy()
        wide[a > np.iinfo(np.int64).max] = -1
    return wide


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
    if drivers.dtype_name(x.dtype) in drivers.THROUGH_FLOAT32:
        wide_loss, wide_grad = _softmax_run(
            x.astype(np.float32),
            None if z is None else z.astype(np.float32),
            labels,
            axis,
            None if upstream is None else upstream.astype(np.float32),
            loss_out if drivers.is_wide(loss_out) else None,
            None,
            want_loss=want_loss,
            want_grad=want_grad,
        )
        if drivers.is_wide(loss_out):
            return loss_out, drivers.cast_into(wide_grad, grad_out, x.dtype) if want_grad else None
        # A float32 result beyond the narrow range rounds to inf: correct, not worth a warning.
        with np.errstate(over="ignore"):
            return (
                drivers.cast_into(wide_loss, loss_out, x.dtype) if want_loss else None,
                drivers.cast_into(wide_grad, grad_out, x.dtype) if want_grad else None,
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
        np.may_share_memory(grad_target, a) and not drivers.same_view(grad_target, a)
        for a in inputs
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
            inputs = [a if drivers.c_contiguous(a) else np.ascontiguousarray(a) for a in inputs]
            per_row_inputs = [
                a if drivers.c_contiguous(a) else np.ascontiguousarray(a) for a in per_row_inputs
            ]
            if grad_target is not None and not drivers.c_contiguous(grad_target):
                grad_target = np.empty(moved_x.shape, x.dtype)
            if loss_target is not None and not drivers.c_contiguous(loss_target):
                loss_target = np.empty(loss_target.shape, loss_dtype)
    _launch(ops, rows, cols, z is not None, want_loss, want_grad, x.dtype, loss_dtype)
    if loss is not None and loss_target is not loss:
        loss[...] = loss_target
    if grad is not None:
        moved_grad = np.moveaxis(grad, axis, -1)
        if not drivers.same_view(moved_grad, grad_target):
            moved_grad[...] = grad_target
    return loss, grad


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
