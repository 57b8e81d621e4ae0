"""The chunked softmax cross-entropy of ``hidden @ weight.T + bias``, written once for NumPy and
PyTorch over a backend adaptor (``ops``).

One chunk of ``R`` rows at a time:

1. ``x = hidden[rows] @ weight.T (+ bias)``: one BLAS matmul in the input dtype (float32 stays
   float32, the speed of the layer) into a buffer reused by every chunk.
2. The stable softmax of the row: ``m = x[argmax]``, ``x <- exp(x - m)`` in place, ``T`` = the
   sum of the row *without* its maximum's 1 (that entry is zeroed for the sum and restored), in
   float64 on NumPy. Then ``logsumexp = m + log1p(T)`` and the cross-entropy
   ``log1p(T) + (m - x_y)``: two non-negative terms, so a loss of 1e-10 keeps its digits
   (``log(1 + T)`` would round it to 0 in float32; ``log(S)`` of the full sum loses them).
   :func:`row_loss` adds the smoothing and z-loss terms.
3. With gradients wanted (the forward of training), the chunk of ``exp`` is turned into the
   gradient of the logits, ``G = w (1 + 2 z lse) p - w (1 - eps) onehot(y) - w eps / V``,
   in place, with the label entry recomputed in float64 by :func:`label_gradient`; then
   ``d_hidden[rows] = G @ weight``, ``d_weight += G.T @ hidden[rows]`` and
   ``d_bias += G.sum(0)``. ``w`` is the row's weight in the reduction (``1 / count`` for
   "mean", ``0`` for an ignored row) times the upstream gradient.

So one call costs the three matmuls of the materialised forward and backward, and peak extra
memory is one chunk of logits plus the gradients themselves.

The adaptor supplies the few big-chunk operations whose spelling differs between the libraries
(``host.NumpyOps``, ``_autodiff.torch_linear.TorchOps``): ``float64``, ``row_sum_dtype``,
``work_dtype(dtype)``, ``logits(hc, weight, bias, out)``, ``exp_(x)``,
``grad_hidden(g, weight, out)`` and ``accumulate_weight(d_weight, g, hc, scratch)``.
Everything else here is written with operators and methods both libraries share.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..._core import arrays, reductions
from ..._core.arrays import Array

# Chunk logits (in the work dtype) of at most this many bytes when chunk_size is None: 64 MiB is
# 512 rows at V = 32768 float32, enough inner dimension for the d_weight gemm (measured at
# N = 8192, H = 1024: 10.8 s with 512 rows, 15.4 s with 256, 11.5 s with 1024, on a busy CPU).
CHUNK_BYTES = 64 * 2**20


class Options(NamedTuple):
    """``linear_cross_entropy``'s options, validated."""

    ignore_index: int
    label_smoothing: float
    z_loss: float
    reduction: str
    chunk_size: int | None


class Result(NamedTuple):
    """What :func:`chunked` returns: per-row float64 values, gradients in the work dtype."""

    loss: Array  # per row, 0 on ignored rows (the reduction is :func:`reduced`'s)
    counted: Array  # per row, 1.0 where counted and 0.0 where ignored: the mean's denominator
    d_hidden: Array | None
    d_weight: Array | None
    d_bias: Array | None


def default_chunk_size(num_classes: int, itemsize: int) -> int:
    """Rows per chunk so that one chunk of logits takes at most :data:`CHUNK_BYTES`.

    >>> default_chunk_size(32768, 4)
    512
    """
    return max(1, CHUNK_BYTES // max(1, num_classes * itemsize))


def row_loss(
    log1p_t: Array, m: Array, x_y: Array, mean_x: Array | None, eps: float, z: float
) -> tuple[Array, Array]:
    r"""A chunk's loss per row from its streamed pieces, and the rows' ``logsumexp``.

    ``log1p_t`` is :math:`\log(1 + T)`, ``m`` the row maximum, ``x_y`` the label's logit and
    ``mean_x`` the mean logit (None without smoothing), all float64:

    .. math::

        (1 - \varepsilon) (\log(1 + T) + (m - x_y))
        + \varepsilon (\log(1 + T) + (m - \bar x)) + z\, \mathrm{lse}^2

    The streaming form of ``cross_entropy``'s loss for index labels (``_api.training``):
    :func:`.softmax.formula.softmax_loss`'s ``log1p(T) + (-d_y)`` with ``d_y = x_y - m``, the
    smoothing term :math:`\frac{\varepsilon}{C}\sum_c (\mathrm{lse} - x_c)` (there the softmax
    loss with ones as labels) and the z-loss term (there ``m`` plus the sparse loss of the
    first maximum). A chunk is overwritten in place by ``exp`` and cannot call those row
    formulas; ``tests/test_training_options.py::test_linear_cross_entropy_every_option`` holds
    this to ``cross_entropy`` of the materialised logits for every option combination.
    """
    lse = m + log1p_t
    row = (1 - eps) * (log1p_t + (m - x_y))
    if eps:
        row = row + eps * (log1p_t + (m - mean_x))
    if z:
        row = row + z * lse * lse
    return row, lse


def label_gradient(e_y: Array, t: Array, lse: Array, eps: float, z: float, v: int) -> Array:
    r"""``d row_loss / d x_y`` per unit weight, formed in float64 without cancellation.

    With :math:`e_y = e^{x_y - m}` and :math:`p_y = e_y / (1 + T)`, the derivative is
    :math:`(1 + 2 z\,\mathrm{lse})\, p_y - (1 - \varepsilon) - \varepsilon / V`, written as

    .. math::

        \frac{(e_y - 1) - T + 2 z\, \mathrm{lse}\, e_y + \varepsilon (1 + T)}{1 + T}
        - \frac{\varepsilon}{V}

    so that ``p_y - 1`` is not the float32 ``softmax - 1`` (0 for a confident row). The
    streaming form of :func:`.softmax.formula.softmax_grad_logits` at the label (its "at a
    maximum" and "far" numerators, ``S - z_j D``), plus the smoothing's and the z-loss's
    derivatives; ``tests/test_linear_cross_entropy.py`` holds the gradients to PyTorch's
    autograd through the materialised float64 loss with every option.
    """
    one_plus_t = 1 + t
    return ((e_y - 1) - t + 2 * z * lse * e_y + eps * one_plus_t) / one_plus_t - eps / v


def chunked(
    hidden: Array,
    weight: Array,
    bias: Array | None,
    labels: Array,
    options: Options,
    *,
    ops: Any,
    upstream: Array | float | None = None,
    grads: tuple[bool, bool, bool] = (False, False, False),
) -> Result:
    """The chunked loss and, for each flag in ``grads``, the gradient of ``upstream * loss``.

    ``hidden`` is (N, H), ``weight`` (V, H), ``bias`` (V,) or None, ``labels`` (N,) integers,
    all validated and of one library (``ops``). Returns the loss per row in float64 (see
    :func:`reduced`) and the gradients with respect to ``hidden``, ``weight`` and ``bias`` (the
    flags of ``grads``; None for the others) in the input dtype. ``upstream`` is a scalar for
    "sum"/"mean" and a length-N vector for "none"; None means 1.
    """
    n, h = hidden.shape
    v = weight.shape[0]
    eps, z = options.label_smoothing, options.z_loss
    want_dh, want_dw, want_db = grads
    want_db = want_db and bias is not None
    want_grad = want_dh or want_dw or want_db
    f64 = ops.float64

    counted = labels != options.ignore_index
    safe_labels = labels * counted  # ignored rows point at class 0; their weight is 0
    counted64 = _cast(counted, f64)
    loss = counted64 * 0  # float64 zeros of the right library and device

    d_hidden = d_weight = d_bias = None
    if want_grad:
        base = 1.0
        if options.reduction == "mean":
            base = reductions.counted_mean(1.0, int(counted.sum()))
        row_weight = counted64 * base  # per row, float64
        if upstream is not None:
            row_weight = row_weight * upstream
        if want_dh:
            d_hidden = _empty_like(hidden, (n, h))
        if want_dw:
            # Accumulated over the chunks: in float32 at least (half precision would round
            # every chunk's contribution), cast to weight's dtype at the end.
            d_weight = _zeros_like(weight, (v, h), dtype=ops.work_dtype(weight.dtype))
        if want_db:
            d_bias = _zeros_like(bias, (v,), dtype=f64)

    rows = options.chunk_size or default_chunk_size(v, weight.dtype.itemsize)
    rows = min(rows, max(n, 1))
    buf = _zeros_like(weight, (rows, v), dtype=ops.work_dtype(weight.dtype))
    arange = _arange_like(labels, rows)
    scratch: list = []
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        k = r1 - r0
        hc = hidden[r0:r1]
        x = ops.logits(hc, weight, bias, buf[:k])
        ar = arange[:k]
        y = safe_labels[r0:r1]
        x_y = _cast(x[ar, y], f64)
        # mean_j x_j for the smoothing term, summed in float64 before x is overwritten.
        mean_x = x.sum(1, dtype=f64) / v if eps else None
        top = x.argmax(1)
        m = x[ar, top]
        x -= m[:, None]
        ops.exp_(x)
        e_y = _cast(x[ar, y], f64)
        x[ar, top] = 0  # T: the row's sum without its maximum's exact 1
        t = _cast(x.sum(1, dtype=ops.row_sum_dtype), f64)
        x[ar, top] = 1
        m = _cast(m, f64)
        row, lse = row_loss(_log1p(t), m, x_y, mean_x, eps, z)
        row[~counted[r0:r1]] = 0  # an ignored row is 0, also where its logits overflow
        loss[r0:r1] = row
        if not want_grad:
            continue
        w = row_weight[r0:r1]
        scale = w * (1 + 2 * z * lse) / (1 + t)
        x *= _cast(scale, x.dtype)[:, None]
        if eps:
            x -= _cast(w * (eps / v), x.dtype)[:, None]
        x[ar, y] = _cast(w * label_gradient(e_y, t, lse, eps, z, v), x.dtype)
        if want_dh:
            ops.grad_hidden(x, weight, d_hidden[r0:r1])
        if want_dw:
            ops.accumulate_weight(d_weight, x, hc, scratch)
        if want_db:
            d_bias += x.sum(0, dtype=f64)
    if want_db:
        d_bias = _cast(d_bias, bias.dtype)
    if want_dw:
        d_weight = _cast(d_weight, weight.dtype)
    return Result(loss, counted64, d_hidden, d_weight, d_bias)


def reduced(result: Result, reduction: str, dtype: Any, shape: tuple[int, ...]) -> Array:
    """The loss of :func:`chunked` reduced as ``cross_entropy``'s (``reductions.reduce``: "mean"
    over the counted rows, 0 when none is) and rounded once to ``dtype``; "none" gives the rows
    in ``shape`` (the labels')."""
    xp = arrays.namespace(result.loss)
    out = reductions.reduce(result.loss, result.counted, reduction, dtype=dtype, xp=xp)
    return xp.reshape(out, tuple(shape)) if reduction == "none" else out


def _cast(a: Array, dtype: Any) -> Array:
    if a.dtype == dtype:
        return a  # no copy: d_weight is V x H
    return a.astype(dtype) if hasattr(a, "astype") else a.to(dtype)


def _log1p(a: Array) -> Array:
    return np.log1p(a) if isinstance(a, np.ndarray) else a.log1p()


def _empty_like(like: Array, shape: tuple[int, ...]) -> Array:
    if isinstance(like, np.ndarray):
        return np.empty(shape, like.dtype)
    return like.new_empty(shape)


def _zeros_like(like: Array, shape: tuple[int, ...], dtype: Any = None) -> Array:
    if isinstance(like, np.ndarray):
        return np.zeros(shape, dtype or like.dtype)
    return like.new_zeros(shape, dtype=dtype or like.dtype)


def _arange_like(like: Array, n: int) -> Array:
    if isinstance(like, np.ndarray):
        return np.arange(n)
    import torch

    return torch.arange(n, device=like.device)
