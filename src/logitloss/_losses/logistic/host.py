"""The logistic kernels' entry points (sigmoid and weighted cross-entropy): loss, logits'
gradient, both in one pass, and the summed loss for reductions; NumPy in, NumPy out.

Importing this module imports numba (``import logitloss`` does not): the kernels compile on
first use and are cached on disk.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..._kernels import drivers, runtime
from . import kernel as logistic_kernel

__all__ = ["logistic_grad_logits", "logistic_loss", "logistic_loss_and_grad", "logistic_loss_sum"]


def logistic_loss(
    x: np.ndarray, z: Any, q: Any = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Elementwise sigmoid (``q is None``) or weighted cross-entropy from logits ``x``.

    The kernel version of ``reference.logistic`` (formula: ``formula.logistic_loss``).
    ``z`` (labels) and ``q`` (``pos_weight``: a scalar, per class, per element, anything that
    broadcasts to ``x`` without enlarging it) are cast to ``x``'s dtype first, as TensorFlow
    does. ``out``, if given, must be a writeable array of ``x``'s dtype and shape; it may be
    ``x`` itself. Returns ``out`` or a new array.
    """
    x, z, q, _, out = drivers.arguments("logistic_loss", x, z, q, None, out)
    (loss,) = drivers.elementwise(x, {"z": z, "q": q}, {"out": out}, kernels=logistic_kernel.loss)
    return loss


def logistic_grad_logits(
    x: np.ndarray,
    z: Any,
    q: Any = None,
    upstream: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``upstream * d loss / d x`` of :func:`logistic_loss`, elementwise.

    The kernel version of ``reference.logistic_grad(..., wrt="logits")`` (formula:
    ``formula.logistic_grad_logits``): ``(1 - z) sigma(x) - q z sigma(-x)``, times
    ``upstream`` (``None`` = ones; anything that broadcasts to ``x``), rounded once.
    """
    x, z, q, upstream, out = drivers.arguments("logistic_grad_logits", x, z, q, upstream, out)
    (grad,) = drivers.elementwise(
        x, {"z": z, "q": q, "u": upstream}, {"out": out}, kernels=logistic_kernel.grad
    )
    return grad


def logistic_loss_and_grad(x: np.ndarray, z: Any, q: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """``(logistic_loss(x, z, q), logistic_grad_logits(x, z, q))`` in one pass: each element
    is read once for both (the caller multiplies the gradient by its upstream later). The
    same element formulas as the two separate kernels: the same numbers."""
    x, z, q, _, _ = drivers.arguments("logistic_loss_and_grad", x, z, q, None, None)
    # In the logits' memory order (a transposed input gives transposed outputs: no copy back).
    loss, grad = drivers.elementwise(
        x, {"z": z, "q": q}, {"loss": None, "grad": None}, kernels=logistic_kernel.both,
        x_order=True,
    )  # fmt: skip
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
    w = drivers.operand(fn, "weight", 1.0 if weight is None else weight, x, elementwise=False)
    # Without weights and smoothing the kernel without them: a shorter loop.
    plain = weight is None and not smoothing
    return _loss_sum(x, {"z": z, "q": q, "w": w}, {}, plain=plain, smoothing=smoothing)


@drivers.through_float32
def _loss_sum(
    x: np.ndarray,
    inputs: dict[str, np.ndarray],
    outs: dict[str, np.ndarray],
    *,
    plain: bool,
    smoothing: float,
) -> tuple[float, float]:
    """:func:`logistic_loss_sum` once its operands are checked (``outs``: none)."""
    if not x.size:
        return 0.0, 0.0
    kernels = logistic_kernel.loss_sum if plain else logistic_kernel.weighted_loss_sum
    if plain:
        inputs = {"z": inputs["z"], "q": inputs["q"]}
    a, b = 1.0 - smoothing, smoothing / 2
    partials = []

    def values(piece: Any) -> dict[str, Any]:
        partial = np.empty((piece.rows * -(-piece.cols // runtime.TILE), 2), np.float64)
        partials.append(partial)
        return {"partial": partial} if plain else {"partial": partial, "a": a, "b": b}

    pieces, _ = drivers.tiles(kernels, x, inputs, outs)
    drivers.launch(kernels, pieces, values)
    sums = np.concatenate(partials)
    return math.fsum(sums[:, 0].tolist()), math.fsum(sums[:, 1].tolist())
