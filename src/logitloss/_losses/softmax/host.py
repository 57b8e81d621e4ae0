"""The softmax kernels' entry points (soft and sparse labels): loss, logits' gradient and both
in one pass, a row per thread; NumPy in, NumPy out.

Importing this module imports numba (``import logitloss`` does not): the kernels compile on
first use and are cached on disk.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..._kernels import drivers, layout
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

    The kernel version of ``reference.softmax`` (formula: ``formula.softmax_loss``): float16,
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
    loss, _ = _softmax_run(
        x, {"z": z}, {"loss": out, "grad": None}, axis=axis, want_loss=True, want_grad=False
    )
    return loss


def softmax_grad_logits(
    x: np.ndarray,
    z: Any,
    axis: int = -1,
    upstream: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``upstream * d loss / d x`` of :func:`softmax_loss`: ``(softmax(x) sum(z) - z) *
    upstream``, the true derivative for labels of any sum (``formula.softmax_grad_logits``).

    ``upstream``: ``None`` (ones) or anything that broadcasts to the loss's shape (one value per
    row). ``out``: ``x``'s dtype and shape.
    """
    fn = "softmax_grad_logits"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    upstream = drivers.per_row(fn, upstream, x, axis)
    out = drivers.output(fn, "out", out, x.dtype, x.shape)
    _, grad = _softmax_run(
        x, {"z": z, "u": upstream}, {"loss": None, "grad": out}, axis=axis, want_loss=False,
        want_grad=True,
    )  # fmt: skip
    return grad


def softmax_loss_and_grad(x: np.ndarray, z: Any, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(softmax_loss(x, z, axis), softmax_grad_logits(x, z, axis))`` in one call: each row is
    read once for both (the caller multiplies the gradient by its upstream later)."""
    fn = "softmax_loss_and_grad"
    x, axis = _softmax_logits(fn, x, axis)
    z = _soft_labels(fn, z, x)
    ones = drivers.per_row(fn, None, x, axis)
    loss, grad = _softmax_run(
        x, {"z": z, "u": ones}, {"loss": None, "grad": None}, axis=axis, want_loss=True,
        want_grad=True,
    )  # fmt: skip
    return loss, grad


def sparse_softmax_loss(x: np.ndarray, labels: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax cross-entropy against integer ``labels`` (shape ``x.shape[:-1]``) over the last
    axis of ``x`` (``formula.sparse_softmax_loss``); NaN for a row whose label is not in
    ``[0, num_classes)``, as the reference's ``_nan_out_of_range``."""
    fn = "sparse_softmax_loss"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    out = drivers.output(fn, "out", out, x.dtype, x.shape[:-1], wide_ok=True)
    loss, _ = _softmax_run(
        x, {"labels": labels}, {"loss": out, "grad": None}, axis=-1, want_loss=True,
        want_grad=False,
    )  # fmt: skip
    return loss


def sparse_softmax_grad_logits(
    x: np.ndarray, labels: Any, upstream: Any = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``upstream * (softmax(x) - one_hot(labels))`` (``formula.sparse_softmax_grad_logits``),
    NaN in the rows of out-of-range labels."""
    fn = "sparse_softmax_grad_logits"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    upstream = drivers.per_row(fn, upstream, x, x.ndim - 1)
    out = drivers.output(fn, "out", out, x.dtype, x.shape)
    _, grad = _softmax_run(
        x, {"labels": labels, "u": upstream}, {"loss": None, "grad": out}, axis=-1,
        want_loss=False, want_grad=True,
    )  # fmt: skip
    return grad


def sparse_softmax_loss_and_grad(x: np.ndarray, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """``(sparse_softmax_loss(x, labels), sparse_softmax_grad_logits(x, labels))`` in one
    call."""
    fn = "sparse_softmax_loss_and_grad"
    x, _ = _softmax_logits(fn, x, -1)
    labels = _integer_labels(fn, labels, x)
    ones = drivers.per_row(fn, None, x, x.ndim - 1)
    loss, grad = _softmax_run(
        x, {"labels": labels, "u": ones}, {"loss": None, "grad": None}, axis=-1,
        want_loss=True, want_grad=True,
    )  # fmt: skip
    return loss, grad


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


@drivers.through_float32
def _softmax_run(
    x: np.ndarray,
    inputs: dict[str, np.ndarray],
    outs: dict[str, np.ndarray | None],
    *,
    axis: int,
    want_loss: bool,
    want_grad: bool,
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Run the soft (``inputs["z"]``) or sparse (``inputs["labels"]``) kernels, with the
    upstream ``inputs["u"]`` (one per row) for the gradient; returns ``(loss, grad)``, each
    ``None`` unless wanted (into ``outs["loss"]`` / ``outs["grad"]`` where given)."""
    z, labels, upstream = inputs.get("z"), inputs.get("labels"), inputs.get("u")
    loss_out, grad_out = outs["loss"], outs["grad"]
    axis %= x.ndim
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
    classes = {"x": moved_x} | ({} if moved_z is None else {"z": moved_z})
    per_row = {name: a for name, a in (("labels", labels), ("u", upstream)) if a is not None}
    # Outputs written through a temporary where they overlap an input other than as the very
    # same view (the kernels read a row whole before writing it, element j of the gradient after
    # element j of the inputs), or where the kernels cannot write them in place.
    loss_target = loss
    if loss is not None and any(np.may_share_memory(loss, a) for a in classes.values()):
        loss_target = np.empty(loss.shape, loss_dtype)
    grad_target = None if grad is None else np.moveaxis(grad, axis, -1)
    if grad_target is not None and any(
        np.may_share_memory(grad_target, a) and not drivers.same_view(grad_target, a)
        for a in classes.values()
    ):
        grad_target = np.empty(moved_x.shape, x.dtype)
    for attempt in range(2):
        full = {name: (a, False) for name, a in classes.items()}
        if grad_target is not None:
            full["grad"] = (grad_target, True)
        rows = {name: (a, False) for name, a in per_row.items()}
        if loss_target is not None:
            rows["loss"] = (loss_target, True)
        try:
            plan = layout.class_rows(full, rows)
            break
        except layout.LayoutError:
            if attempt:
                raise AssertionError("unreachable: contiguous operands have rows") from None
            classes = {name: _contiguous(a) for name, a in classes.items()}
            per_row = {name: _contiguous(a) for name, a in per_row.items()}
            if grad_target is not None and not drivers.c_contiguous(grad_target):
                grad_target = np.empty(moved_x.shape, x.dtype)
            if loss_target is not None and not drivers.c_contiguous(loss_target):
                loss_target = np.empty(loss_target.shape, loss_dtype)
    soft = z is not None
    if want_grad:
        kernels = softmax_kernel.soft_grad if soft else softmax_kernel.sparse_grad
        # Without a loss wanted, a one-element stand-in of the same type (one compiled kernel).
        plan.operands.setdefault("loss", layout.RowOperand(np.empty(1, x.dtype), 0, 0))
        drivers.launch(kernels, [plan], lambda _: {"want_loss": want_loss})
    else:
        drivers.launch(softmax_kernel.soft_loss if soft else softmax_kernel.sparse_loss, [plan])
    if loss is not None and loss_target is not loss:
        loss[...] = loss_target
    if grad is not None:
        moved_grad = np.moveaxis(grad, axis, -1)
        if not drivers.same_view(moved_grad, grad_target):
            moved_grad[...] = grad_target
    return loss, grad


def _contiguous(a: np.ndarray) -> np.ndarray:
    return a if drivers.c_contiguous(a) else np.ascontiguousarray(a)
