"""The training losses' reduced path on the kernels: ``cross_entropy``'s and
``binary_cross_entropy_with_logits``' reduced loss and the logits' gradient, already divided by
the mean's denominator, in one pass (NumPy arrays and PyTorch CPU tensors, any size).

``_api.training`` calls these for a reduced loss whose caller wants the gradient with it: the
torch adapter (``_autodiff.torch_training``, whose backward only scales the saved gradient by its
upstream) and the ``*_value_and_grad`` functions (JAX's adapter calls the same compiled
entries from an XLA custom call: ``_autodiff.jax_ffi``). A value alone takes the composed path,
which writes no gradient. The options mean what ``_api.training`` documents; each loss is one
compiled call (``softmax/reduced.py``, ``logistic/reduced.py``; the drivers of
``logistic/kernel.py`` for operand layouts the fused entry does not read).
"""

from __future__ import annotations

import functools
import importlib
import math
from typing import Any, NamedTuple

import numpy as np

from .._core import checks, reductions, route
from .._core.arrays import Array


class Reduced(NamedTuple):
    """A reduced loss (a Python float, unrounded) and the logits' gradient of that loss (in the
    logits' library, dtype and shape)."""

    value: float
    grad: Any


@functools.cache
def _kernels(name: str) -> Any:
    """A family's kernel module by name (``"softmax.reduced"``, ``"logistic.reduced"``,
    ``"logistic.kernel"``), imported (with numba) on first use."""
    return importlib.import_module(f"{__package__}.{name}")


def applies(x: Array) -> bool:
    """Whether the fused path takes logits ``x`` (validated): NumPy arrays and PyTorch CPU
    tensors of any size, numba installed, not inside ``reference_path()``."""
    return route.kernels_take(x)


def reduced(loss: str, x: Array, operands: tuple, options: dict[str, Any]) -> Reduced:
    """The fused computation of ``loss`` by name: ``"cross_entropy"`` (``operands`` the index
    labels, the probabilities, the class weights, the row mask) or ``"binary_cross_entropy"``
    (the labels, ``pos_weight``, the counted weights); ``options`` the keywords of
    :func:`cross_entropy` / :func:`binary_cross_entropy`."""
    if loss == "cross_entropy":
        return cross_entropy(x, *operands, **options)
    return binary_cross_entropy(x, *operands, **options)


def cross_entropy(
    x: Array,
    labels: Array | None,
    z: Array | None,
    w: Array | None,
    mask: Array | None,
    *,
    axis: int,
    ignore_index: int,
    smoothing: float,
    z_scale: float,
    reduction: str,
) -> Reduced:
    """``cross_entropy`` reduced ("mean" or "sum"), index ``labels`` or probabilities ``z``
    (the other None; validated, ``z`` broadcasting to ``x``); ``w`` class weights ``(C,)``,
    ``mask`` a boolean per row (broadcasting to the rows). A counted index label outside
    ``[0, C)`` is a ValueError naming ``cross_entropy``."""
    reduced = _kernels("softmax.reduced")
    xn = route.to_numpy(x)
    # bfloat16 (ml_dtypes'): the kernel reads and writes its bits, a row at a time through
    # float32; float16 is copied to float32 and back.
    bits = xn.dtype.kind == "V" and xn.dtype.itemsize == 2
    narrow = xn.dtype.itemsize <= 2 and not bits
    work = _copy(xn, _FLOAT32, x) if narrow else xn
    cols = work.shape[axis]
    last = axis % work.ndim == work.ndim - 1
    moved = work if last else np.moveaxis(work, axis, -1)
    rows_shape = moved.shape[:-1]
    flat = (moved if moved.flags.c_contiguous else np.ascontiguousarray(moved)).reshape(-1, cols)
    if bits:
        flat = flat.view(np.uint16)
    has_w, has_mask, soft = w is not None, mask is not None, labels is None
    wn = route.to_numpy(w).astype(np.float64) if has_w else _EMPTY_FLOAT64
    mn = _EMPTY_BOOL
    if has_mask:
        mn = np.broadcast_to(route.to_numpy(mask), rows_shape).reshape(-1)
    denominator = 0.0
    if soft:
        zn = np.broadcast_to(route.to_numpy(z), work.shape)
        zn = np.ascontiguousarray(zn if last else np.moveaxis(zn, axis, -1))
        zn = zn.reshape(-1, cols).astype(_FLOAT32 if bits else work.dtype, copy=False)
        ln = _EMPTY_INT64
        denominator = _probability_denominator(zn, wn if has_w else None, mn if has_mask else None)
    else:
        ln = reduced.int64_labels(route.to_numpy(labels).reshape(-1))
        zn = flat[:0]
    # The gradient in the kernel's layout; where that is the logits' own (classes last, not
    # widened) it is allocated in the logits' library, and returned as it is.
    native = None
    if last and not narrow:
        grad, native = route.empty_like(work, x)
    else:
        grad = route.empty(moved.shape, work.dtype, x)
    kernel_grad = grad.reshape(-1, cols)
    if bits:
        kernel_grad = kernel_grad.view(np.uint16)
    value, denominator, bad = reduced.run(
        flat, ln, zn, wn, mn, has_w=has_w, has_mask=has_mask, soft=soft,
        ignore_index=ignore_index, smoothing=smoothing, z_scale=z_scale,
        mean=reduction == "mean", denominator=denominator, grad=kernel_grad,
    )  # fmt: skip
    if bad >= 0:
        counted = ln != ignore_index
        if has_mask:
            counted &= mn
        raise ValueError(label_error(ln[counted], cols))
    if native is not None:
        return Reduced(value, native)
    g = grad if last else np.moveaxis(grad, -1, axis)
    if narrow:
        g = _copy(g, xn.dtype, x)
    return Reduced(value, route.like(g, x))


def _copy(a: np.ndarray, dtype: np.dtype, like: Array) -> np.ndarray:
    """``a`` converted to ``dtype`` (widened exactly, or rounded once), in memory from
    ``route.empty``."""
    from .._kernels import narrow  # numba's, imported with the kernels

    out = route.empty(a.shape, dtype, like)
    return narrow.widen(a, out) if a.itemsize == 2 else narrow.round_into(out, a)


# Stand-ins for the absent operands (the kernels take arrays of a fixed type), never written.
_EMPTY_FLOAT64 = np.empty(0, np.float64)
_EMPTY_BOOL = np.empty(0, np.bool_)
_EMPTY_INT64 = np.empty(0, np.int64)
_FLOAT32 = np.dtype(np.float32)


def _probability_denominator(
    z: np.ndarray, w: np.ndarray | None, counted: np.ndarray | None
) -> float:
    """The mean's denominator for probability targets: the counted rows, each weighted by
    ``sum_c w_c z_c`` with class weights (``softmax.reduced.probability_row_weights``: a fixed
    order of float64 additions, which the JAX FFI handler repeats)."""
    if w is None:
        return float(z.shape[0] if counted is None else np.count_nonzero(counted))
    has_mask = counted is not None
    mask = counted if has_mask else _EMPTY_BOOL
    row_weight = _kernels("softmax.reduced").probability_row_weights(
        z, w, mask, has_mask, np.empty(z.shape[0], np.float64)
    )
    return float(np.sum(row_weight))


def label_error(counted: np.ndarray, cols: int) -> str:
    """The message for counted index labels (``counted``, non-empty) of which one is not a
    class: ``checks.labels_in_range``'s."""
    return checks.labels_range_message(
        "cross_entropy", cols, int(counted.min()), int(counted.max())
    )


def binary_cross_entropy(
    x: Array,
    z: Array,
    q: Array | None,
    w: Array | None,
    *,
    smoothing: float,
    reduction: str,
) -> Reduced:
    """``binary_cross_entropy_with_logits`` reduced ("mean" or "sum"); ``w`` each element's
    weight in the reduction (zero where masked; None: every element once), ``q``
    ``pos_weight``, both broadcasting to ``x``."""
    xn, zn, qn, wn = map(route.to_numpy, (x, z, q, w))
    grad, native = route.empty_like(xn, x)
    mean = reduction == "mean"
    # Contiguous operands of the usual layouts: one compiled call, no Python sums; float16 and
    # bfloat16 read as their bits a tile at a time through float32 (exact), the gradient
    # rounded into them once, as the drivers do (no float32 copies).
    fused_bce = _kernels("logistic.reduced")
    if xn.dtype.itemsize > 2:
        value = fused_bce.run(xn, zn, qn, wn, smoothing=smoothing, mean=mean, grad=grad)
        if value is not None:
            return Reduced(value, native)
    elif xn.flags.c_contiguous:
        value = fused_bce.run_narrow(xn, zn, qn, wn, smoothing=smoothing, mean=mean, grad=grad)
        if value is not None:
            return Reduced(value, native)
    size = math.prod(xn.shape)
    if wn is None:
        denominator = float(size)
    else:
        # Each weight is repeated size / w.size times in the broadcast.
        denominator = float(np.sum(wn, dtype=np.float64)) * (size / max(1, wn.size))
    grad_scale = 1.0
    if mean:
        grad_scale = 1.0 / denominator if denominator else 0.0
    kernel = _kernels("logistic.kernel")
    total, _ = kernel.logistic_loss_sum_and_grad(xn, zn, qn, wn, smoothing, grad_scale, grad)
    value = reductions.counted_mean(total, denominator) if mean else total
    return Reduced(value, native)


__all__ = [
    "Reduced",
    "applies",
    "binary_cross_entropy",
    "cross_entropy",
    "label_error",
    "reduced",
]
