"""The logistic kernels' entry points (sigmoid and weighted cross-entropy): loss, logits'
gradient, both in one pass, and the summed loss for reductions; NumPy in, NumPy out.

Importing this module imports numba (``import logitloss`` does not): the kernels compile on
first use and are cached on disk.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..._kernels import drivers, layout, runtime
from . import kernel as logistic_kernel

__all__ = ["logistic_grad_logits", "logistic_loss", "logistic_loss_and_grad", "logistic_loss_sum"]


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
    x, z, q, _, out = drivers.arguments("logistic_loss", x, z, q, None, out)
    return drivers.run_pair(
        logistic_kernel.loss_serial, logistic_kernel.loss_parallel, x, [z, q], out
    )


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
    x, z, q, upstream, out = drivers.arguments("logistic_grad_logits", x, z, q, upstream, out)
    kernels = (logistic_kernel.grad_serial, logistic_kernel.grad_parallel)
    return drivers.run_pair(*kernels, x, [z, q, upstream], out)


def logistic_loss_and_grad(x: np.ndarray, z: Any, q: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(logistic_loss(x, z, q), logistic_grad_logits(x, z, q))`` in one pass: each element
    is read once for both (the caller multiplies the gradient by its upstream later). The
    same element formulas as the two separate kernels: the same numbers."""
    fn = "logistic_loss_and_grad"
    x, z, q, _, _ = drivers.arguments(fn, x, z, q, None, None)
    if drivers.dtype_name(x.dtype) in drivers.THROUGH_FLOAT32:
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
    x, z, q, _, _ = drivers.arguments(fn, x, z, q, None, None)
    # Without weights and smoothing the kernel is compiled without them (w None): a shorter loop.
    plain = weight is None and not smoothing
    w = drivers.operand(fn, "weight", 1.0 if weight is None else weight, x, elementwise=False)
    if drivers.dtype_name(x.dtype) in drivers.THROUGH_FLOAT32:
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
