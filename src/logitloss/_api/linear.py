"""Large-vocabulary cross-entropy of a linear layer, without the N x V logits.

``linear_cross_entropy(hidden, weight, labels)`` is the softmax cross-entropy (integer labels) of
``hidden @ weight.T + bias``. The logits of a language-model head (N tokens x V words) are the
largest tensor of a training step; this module never holds more than ``chunk_size`` rows of them.

The algorithm, one chunk of ``R`` rows at a time (the same for NumPy and PyTorch, written once
in :func:`_chunked` over a three-method backend adaptor):

1. ``x = hidden[rows] @ weight.T (+ bias)``: one BLAS matmul in the input dtype (float32 stays
   float32, the speed of the layer) into a buffer reused by every chunk.
2. The stable softmax of the row: ``m = x[argmax]``, ``x <- exp(x - m)`` in place, ``T`` = the
   sum of the row *without* its maximum's 1 (that entry is zeroed for the sum and restored), in
   float64 on NumPy. Then ``logsumexp = m + log1p(T)`` and the cross-entropy
   ``log1p(T) + (m - x_y)``: two non-negative terms, so a loss of 1e-10 keeps its digits
   (``log(1 + T)`` would round it to 0 in float32; ``log(S)`` of the full sum loses them).
3. With gradients wanted (the forward of training), the chunk of ``exp`` is turned into the
   gradient of the logits, ``G = w (1 + 2 z lse) p - w (1 - eps) onehot(y) - w eps / V``,
   in place, with the label entry recomputed in float64 as
   ``((e_y - 1) - T + 2 z lse e_y + eps (1 + T)) / (1 + T)`` (``p_y - 1`` formed without the
   float32 cancellation of ``softmax - 1``); then ``d_hidden[rows] = G @ weight``,
   ``d_weight += G.T @ hidden[rows]`` (torch: ``addmm_``; NumPy: in vocabulary blocks through a
   16 MiB buffer; never a V x H temporary) and ``d_bias += G.sum(0)``. ``w`` is the row's
   weight in the reduction (``1 / count`` for "mean", ``0`` for an ignored row) times the
   upstream gradient.

So one call costs the three matmuls of the materialised forward and backward, and peak extra
memory is one chunk of logits plus the gradients themselves. PyTorch's autograd path
(:mod:`._linear_torch`) runs this fused pass in its forward for ``reduction="mean"``/``"sum"``
(Liger-Kernel's choice: backward only scales the saved gradients by the upstream scalar) and,
for ``reduction="none"``, whose upstream gradient is a vector known only in backward, recomputes
the chunks in backward (Apple's cut cross-entropy's choice; one extra matmul).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

import numpy as np

from .._core.arrays import Array

_FN = "linear_cross_entropy"
_REDUCTIONS = ("none", "sum", "mean")
_FLOATS = ("float16", "bfloat16", "float32", "float64")
# Chunk logits (in the work dtype) of at most this many bytes when chunk_size is None: 64 MiB is
# 512 rows at V = 32768 float32, enough inner dimension for the d_weight gemm (measured at
# N = 8192, H = 1024: 10.8 s with 512 rows, 15.4 s with 256, 11.5 s with 1024, on a busy CPU).
CHUNK_BYTES = 64 * 2**20


# --------------------------------------------------------------------------------------------
# Backend adaptors: the few big-chunk operations whose spelling differs between NumPy and torch.
# Everything else in _chunked is written with operators and methods both libraries share.


class _NumpyOps:
    """NumPy: ``matmul(out=)`` into reused buffers, NumPy's own BLAS only.

    SciPy's ``sgemm`` could accumulate ``d_weight`` in place (``beta = 1``), but SciPy ships a
    second OpenBLAS: alternating calls between the two thread pools measured 1.6x slower at
    N = 2048, H = 256, V = 32000 (0.99 vs 0.66 s), and no faster at the issue's size.
    """

    float64 = np.float64
    row_sum_dtype = np.float64  # 8.7 vs 2.9 ms per 256 x 32768 chunk: ~1% of the step

    @staticmethod
    def work_dtype(dtype: Any) -> Any:
        return dtype  # half precision was widened to float32 before (no half BLAS in NumPy)

    @staticmethod
    def logits(hc: Array, weight: Array, bias: Array | None, out: Array) -> Array:
        np.matmul(hc, weight.T, out=out)
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def exp_(x: Array) -> None:
        np.exp(x, out=x)

    @staticmethod
    def grad_hidden(g: Array, weight: Array, out: Array) -> None:
        np.matmul(g, weight, out=out)

    @staticmethod
    def accumulate_weight(d_weight: Array, g: Array, hc: Array, scratch: list) -> None:
        # NumPy's matmul has no "C += A B": G.T @ hc is formed in vocabulary blocks of 16 MiB
        # (a buffer reused by every chunk, not a V x H temporary) and added in place.
        v, h = d_weight.shape
        block = max(1, min(v, CHUNK_BYTES // 4 // (d_weight.itemsize * h)))
        if not scratch:
            scratch.append(np.empty((block, h), d_weight.dtype))
        buf = scratch[0]
        for v0 in range(0, v, block):
            v1 = min(v0 + block, v)
            part = buf[: v1 - v0]
            np.matmul(g[:, v0:v1].T, hc, out=part)
            d_weight[v0:v1] += part


# --------------------------------------------------------------------------------------------
# The core


def default_chunk_size(num_classes: int, itemsize: int) -> int:
    """Rows per chunk so that one chunk of logits takes at most :data:`CHUNK_BYTES`.

    >>> default_chunk_size(32768, 4)
    512
    """
    return max(1, CHUNK_BYTES // max(1, num_classes * itemsize))


def _chunked(
    hidden: Array,
    weight: Array,
    bias: Array | None,
    labels: Array,
    *,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    reduction: str,
    chunk_size: int | None,
    ops: Any,
    upstream: Array | float | None = None,
    grads: tuple[bool, bool, bool] = (False, False, False),
) -> tuple[Array, Array | None, Array | None, Array | None]:
    """The chunked loss and, for each flag in ``grads``, the gradient of ``upstream * loss``.

    ``hidden`` is (N, H), ``weight`` (V, H), ``bias`` (V,) or None, ``labels`` (N,) integers,
    all validated and of one library (``ops``). Returns ``(loss, d_hidden, d_weight, d_bias)``:
    the loss per row in float64 (the reduction is the caller's), gradients in the input dtype.
    ``upstream`` is a scalar for "sum"/"mean" and a length-N vector for "none"; None means 1.
    """
    n, h = hidden.shape
    v = weight.shape[0]
    eps, z = float(label_smoothing), float(z_loss)
    want_dh, want_dw, want_db = grads
    want_db = want_db and bias is not None
    want_grad = want_dh or want_dw or want_db
    f64 = ops.float64

    counted = labels != ignore_index
    safe_labels = labels * counted  # ignored rows point at class 0; their weight is 0
    counted64 = _cast(counted, f64)
    loss = counted64 * 0  # float64 zeros of the right library and device

    d_hidden = d_weight = d_bias = None
    if want_grad:
        count = int(counted.sum())
        if reduction == "mean":
            base = 1.0 / count if count else 0.0
        else:
            base = 1.0
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

    rows = chunk_size or default_chunk_size(v, weight.dtype.itemsize)
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
        x_y = _to64(x[ar, y], f64)
        # mean_j x_j for the smoothing term, summed in float64 before x is overwritten.
        mean_x = x.sum(1, dtype=f64) / v if eps else None
        top = x.argmax(1)
        m = x[ar, top]
        x -= m[:, None]
        ops.exp_(x)
        e_y = _to64(x[ar, y], f64)
        x[ar, top] = 0  # T: the row's sum without its maximum's exact 1
        t = _to64(x.sum(1, dtype=ops.row_sum_dtype), f64)
        x[ar, top] = 1
        m = _to64(m, f64)
        log1p_t = _log1p(t)
        lse = m + log1p_t
        row = (1 - eps) * (log1p_t + (m - x_y))
        if eps:
            row = row + eps * (log1p_t + (m - mean_x))
        if z:
            row = row + z * lse * lse
        row[~counted[r0:r1]] = 0  # an ignored row is 0, also where its logits overflow
        loss[r0:r1] = row
        if not want_grad:
            continue
        w = row_weight[r0:r1]
        one_plus_t = 1 + t
        scale = w * (1 + 2 * z * lse) / one_plus_t
        x *= _cast(scale, x.dtype)[:, None]
        if eps:
            x -= _cast(w * (eps / v), x.dtype)[:, None]
        # The label's entry, formed in float64 without the cancellation of p_y - 1 in float32.
        g_y = ((e_y - 1) - t + 2 * z * lse * e_y + eps * one_plus_t) / one_plus_t - eps / v
        x[ar, y] = _cast(w * g_y, x.dtype)
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
    return loss, d_hidden, d_weight, d_bias


def _to64(a: Array, f64: Any) -> Array:
    return a.astype(f64) if hasattr(a, "astype") else a.to(f64)


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


def reduce_loss(loss: Array, counted_count: int, reduction: str) -> Array:
    """``"none"``: as is; ``"sum"``; ``"mean"`` over counted rows (0 when none is counted)."""
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "mean":
        total = total / counted_count if counted_count else total * 0
    return total


# --------------------------------------------------------------------------------------------
# Validation


def _describe(value: Any) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def _dtype_name(dtype: Any) -> str:
    name = getattr(dtype, "name", None)
    return (name if isinstance(name, str) else str(dtype)).rsplit(".", 1)[-1]


def _is_torch(value: Any) -> bool:
    return type(value).__module__.startswith("torch") and hasattr(value, "requires_grad")


def validate(
    hidden: Any,
    weight: Any,
    labels: Any,
    bias: Any,
    *,
    ignore_index: Any,
    label_smoothing: Any,
    z_loss: Any,
    reduction: Any,
    chunk_size: Any,
    fn: str = _FN,
) -> tuple[Array, Array, Array, Array | None, bool]:
    """Checked arrays ``(hidden, weight, labels, bias, is_torch)``; NumPy-likes join torch."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: `reduction` must be 'none', 'sum' or 'mean', got {reduction!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"{fn}: `ignore_index` must be an int, got {ignore_index!r}")
    for name, value in (("label_smoothing", label_smoothing), ("z_loss", z_loss)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
            raise TypeError(f"{fn}: `{name}` must be a float, got {value!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"{fn}: `label_smoothing` must be in [0, 1], got {label_smoothing!r}")
    if not (math.isfinite(float(z_loss)) and float(z_loss) >= 0.0):
        raise ValueError(f"{fn}: `z_loss` must be finite and >= 0, got {z_loss!r}")
    if chunk_size is not None:
        try:
            chunk_size = operator.index(chunk_size)
        except TypeError:
            raise TypeError(
                f"{fn}: `chunk_size` must be an int or None, got {chunk_size!r}"
            ) from None
        if chunk_size < 1:
            raise ValueError(f"{fn}: `chunk_size` must be >= 1, got {chunk_size}")

    args = {"hidden": hidden, "weight": weight, "labels": labels, "bias": bias}
    for name, value in args.items():
        if value is None and name != "bias":
            raise TypeError(f"{fn}: `{name}` is required, got None")
    use_torch = any(_is_torch(v) for v in args.values())
    if use_torch:
        import torch

        dev = next(v for v in args.values() if _is_torch(v)).device
        conv = {}
        for name, value in args.items():
            if value is None or _is_torch(value):
                conv[name] = value
            elif isinstance(value, np.ndarray) or not hasattr(value, "__array_namespace__"):
                conv[name] = torch.as_tensor(np.asarray(value), device=dev)
            else:
                raise TypeError(
                    f"{fn}: `{name}` is a {_describe(value)} while another argument is a "
                    "torch.Tensor; pass arrays of one library"
                )
            if conv[name] is not None and conv[name].device != dev:
                raise ValueError(f"{fn}: `{name}` is on {conv[name].device}, the others on {dev}")
    else:
        conv = {}
        for name, value in args.items():
            if value is None:
                conv[name] = None
                continue
            if hasattr(value, "__array_namespace__") and not isinstance(value, np.ndarray):
                raise TypeError(
                    f"{fn}: supports NumPy arrays and torch tensors, `{name}` is a "
                    f"{_describe(value)}"
                )
            try:
                conv[name] = np.asarray(value)
            except (TypeError, ValueError) as err:
                raise TypeError(f"{fn}: `{name}` must be an array, got {_describe(value)}") from err
    hidden, weight, labels, bias = conv["hidden"], conv["weight"], conv["labels"], conv["bias"]

    hname = _dtype_name(hidden.dtype)
    if hname not in _FLOATS:
        raise TypeError(
            f"{fn}: `hidden` must be float16, bfloat16, float32 or float64, got {hname}"
        )
    for name, value in (("weight", weight), ("bias", bias)):
        if value is not None and _dtype_name(value.dtype) != hname:
            raise TypeError(
                f"{fn}: `{name}` must have `hidden`'s dtype {hname}, got {_dtype_name(value.dtype)}"
            )
    lname = _dtype_name(labels.dtype)
    integer = (
        labels.dtype.kind in "iu" if isinstance(labels, np.ndarray) else
        not (labels.dtype.is_floating_point or labels.dtype.is_complex or lname == "bool")
    )  # fmt: skip
    if not integer:
        raise TypeError(f"{fn}: `labels` must be integer class indices, got dtype {lname}")
    if hidden.ndim < 1:
        raise ValueError(f"{fn}: `hidden` must have shape (..., H), got a 0-d array")
    if weight.ndim != 2:
        raise ValueError(f"{fn}: `weight` must have shape (V, H), got {tuple(weight.shape)}")
    if weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{fn}: `weight` must have shape (V, {hidden.shape[-1]}) for `hidden` of shape "
            f"{tuple(hidden.shape)}, got {tuple(weight.shape)}"
        )
    if weight.shape[0] < 1:
        raise ValueError(
            f"{fn}: `weight` must have at least one class (row), got shape {tuple(weight.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(
            f"{fn}: `bias` must have shape ({weight.shape[0]},), got {tuple(bias.shape)}"
        )
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"{fn}: `labels` must have shape {tuple(hidden.shape[:-1])} (`hidden`'s without H), "
            f"got {tuple(labels.shape)}"
        )
    flat = labels.reshape(-1)
    bad = (flat != ignore_index) & ((flat < 0) | (flat >= weight.shape[0]))
    if bool(bad.any()):
        first = int(flat[bad][0])
        raise ValueError(
            f"{fn}: `labels` must be in [0, {weight.shape[0]}) or "
            f"ignore_index={int(ignore_index)}, got {first}"
        )
    return hidden, weight, labels, bias, use_torch


# --------------------------------------------------------------------------------------------
# Public functions


def linear_cross_entropy(
    hidden: Array,
    weight: Array,
    labels: Array,
    *,
    bias: Array | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
) -> Array:
    r"""Softmax cross-entropy of ``hidden @ weight.T + bias`` without the N x V logits.

    For each row :math:`i` with logits :math:`x_i = W h_i + b` (V classes) and label :math:`y_i`,

    .. math::

        \ell_i = (1 - \varepsilon)\,(\mathrm{lse}(x_i) - x_{i y_i})
                 + \varepsilon\,(\mathrm{lse}(x_i) - \tfrac1V \textstyle\sum_j x_{ij})
                 + z\,\mathrm{lse}(x_i)^2

    (PyTorch's label smoothing with :math:`\varepsilon / V` on every class, computed without a
    one-hot matrix; the z-loss of PaLM and Liger-Kernel). Rows whose label is ``ignore_index``
    contribute nothing and get zero gradient. The logits are formed ``chunk_size`` rows at a time
    (by default as many as fit in 64 MiB) and never all at once; forward and backward together
    cost the three matmuls of the materialised computation. The loss is formed as
    ``log1p(T) + (m - x_y)`` with ``m`` the row's maximum and ``T`` the sum of the other
    ``exp(x_j - m)``, accumulated in float64 (NumPy), so small losses keep their digits.

    Parameters
    ----------
    hidden : array, shape (..., H)
        Inputs of the output layer; float16, bfloat16, float32 or float64. NumPy array or
        torch tensor (then differentiable: autograd gives gradients to ``hidden``, ``weight``
        and ``bias``).
    weight : array, shape (V, H)
        The output layer's weight (``torch.nn.Linear(H, V).weight``), ``hidden``'s dtype.
    labels : integer array, shape ``hidden.shape[:-1]``
        Class indices in ``[0, V)``, or ``ignore_index``.
    bias : array, shape (V,), optional
    ignore_index : int
        Rows with this label are not counted.
    label_smoothing : float in [0, 1]
    z_loss : float >= 0
        Coefficient of ``logsumexp(x_i) ** 2``.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the number of counted rows and is 0 (not NaN) when there is none;
        "none" returns the loss per row, shape ``hidden.shape[:-1]``, 0 on ignored rows.
    chunk_size : int, optional
        Rows of logits formed at once; None picks ``64 MiB / (V * itemsize)``.

    Returns
    -------
    array
        The loss, in ``hidden``'s dtype and library.

    See Also
    --------
    linear_cross_entropy_value_and_grad : the loss and its gradients in one pass (NumPy).

    Notes
    -----
    On PyTorch, ``reduction="mean"`` or ``"sum"`` computes the gradients in the forward pass
    when one of the tensors requires grad and keeps only them (N x H + V x H + V); backward
    scales them by the upstream gradient (a second backward through a retained graph recomputes
    them). ``reduction="none"`` recomputes the chunks in backward (one more matmul). Higher-order
    and forward-mode derivatives (``create_graph``, ``torch.func``) are not available.

    Examples
    --------
    >>> import numpy as np, logitloss
    >>> rng = np.random.default_rng(0)
    >>> hidden = rng.standard_normal((6, 4)).astype(np.float32)
    >>> weight = rng.standard_normal((10, 4)).astype(np.float32)
    >>> labels = np.array([1, 2, -100, 9, 0, 3])
    >>> loss = logitloss.linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    >>> logits = (hidden @ weight.T).astype(np.float64)             # what is never formed
    >>> lse = np.log(np.exp(logits).sum(1))
    >>> rows = np.array([0, 1, 3, 4, 5])                               # the counted rows
    >>> naive = np.mean(lse[rows] - logits[rows, labels[rows]])
    >>> bool(abs(loss - naive) < 1e-6 * naive), loss.dtype
    (True, dtype('float32'))
    """
    h, w, y, b, use_torch = validate(
        hidden, weight, labels, bias, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction,
        chunk_size=chunk_size,
    )  # fmt: skip
    opts = (int(ignore_index), float(label_smoothing), float(z_loss), reduction, chunk_size)
    if use_torch:
        from .._autodiff import torch_linear

        return torch_linear.linear_cross_entropy(h, w, y, b, opts)
    loss, *_ = _numpy_call(h, w, y, b, opts, grads=(False, False, False))
    return loss


def linear_cross_entropy_value_and_grad(
    hidden: Array,
    weight: Array,
    labels: Array,
    *,
    bias: Array | None = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    reduction: str = "mean",
    chunk_size: int | None = None,
    upstream: Array | float | None = None,
) -> tuple[Array, tuple[Array, Array, Array | None]]:
    """:func:`linear_cross_entropy` and its gradients, in one chunked pass.

    Returns ``(loss, (d_hidden, d_weight, d_bias))``: the gradients of ``sum(upstream * loss)``
    with respect to ``hidden``, ``weight`` and ``bias`` (None without a bias), in the inputs'
    dtype and shapes. ``upstream`` is a scalar for "mean"/"sum" and an array of the loss's shape
    for "none"; None means 1. For NumPy training loops (a torch tensor gets torch tensors back,
    computed the same way, outside autograd). Three matmuls in all: the same work as the
    materialised forward and backward, with one chunk of logits in memory.

    Examples
    --------
    >>> import numpy as np, logitloss
    >>> hidden = np.array([[1.0, 0.0], [0.0, 2.0]])
    >>> weight = np.array([[1.0, 1.0], [0.0, -1.0], [2.0, 0.0]])
    >>> loss, (dh, dw, db) = logitloss.linear_cross_entropy_value_and_grad(
    ...     hidden, weight, np.array([2, 0]), reduction="sum")
    >>> p = np.exp(hidden @ weight.T); p /= p.sum(1, keepdims=True)  # softmax of the logits
    >>> g = p - np.eye(3)[[2, 0]]                                     # d loss / d logits
    >>> bool(np.allclose(dh, g @ weight) and np.allclose(dw, g.T @ hidden)), db is None
    (True, True)
    """
    h, w, y, b, use_torch = validate(
        hidden, weight, labels, bias, ignore_index=ignore_index,
        label_smoothing=label_smoothing, z_loss=z_loss, reduction=reduction,
        chunk_size=chunk_size,
    )  # fmt: skip
    fn = "linear_cross_entropy_value_and_grad"
    opts = (int(ignore_index), float(label_smoothing), float(z_loss), reduction, chunk_size)
    if use_torch:
        from .._autodiff import torch_linear

        up = _upstream(fn, upstream, y.shape, reduction, to=lambda a: _torch_as(a, h))
        return torch_linear.value_and_grad(h, w, y, b, opts, up)
    up = _upstream(fn, upstream, y.shape, reduction, to=np.asarray)
    loss, dh, dw, db = _numpy_call(h, w, y, b, opts, grads=(True, True, True), upstream=up)
    return loss, (dh, dw, db)


def _torch_as(a: Any, like: Array) -> Array:
    import torch

    return torch.as_tensor(a, device=like.device)


def _upstream(
    fn: str, upstream: Any, shape: tuple[int, ...], reduction: str, to: Callable[[Any], Array]
) -> Array | float | None:
    if upstream is None:
        return None
    if reduction != "none":
        try:
            return float(upstream)
        except (TypeError, ValueError):
            raise ValueError(
                f"{fn}: `upstream` must be a scalar for reduction={reduction!r}, got "
                f"{_describe(upstream)}"
            ) from None
    up = to(upstream)
    if tuple(up.shape) != tuple(shape):
        raise ValueError(
            f"{fn}: `upstream` must have the loss's shape {tuple(shape)}, got {tuple(up.shape)}"
        )
    return up


def _numpy_call(
    h: np.ndarray,
    w: np.ndarray,
    y: np.ndarray,
    b: np.ndarray | None,
    opts: tuple,
    *,
    grads: tuple[bool, bool, bool],
    upstream: Any = None,
) -> tuple[Any, ...]:
    ignore_index, eps, z, reduction, chunk_size = opts
    dtype = h.dtype
    shape = y.shape
    # NumPy has no half-precision BLAS: float16 (and bfloat16) go through float32 copies.
    if dtype.itemsize < 4:
        h, w = h.astype(np.float32), w.astype(np.float32)
        b = None if b is None else b.astype(np.float32)
    h2 = h.reshape(-1, h.shape[-1])
    y1 = y.reshape(-1).astype(np.intp)
    if upstream is not None and reduction == "none":
        upstream = np.asarray(upstream, np.float64).reshape(-1)
    loss, dh, dw, db = _chunked(
        h2, w, b, y1, ignore_index=ignore_index, label_smoothing=eps, z_loss=z,
        reduction=reduction, chunk_size=chunk_size, ops=_NumpyOps, upstream=upstream, grads=grads,
    )  # fmt: skip
    count = int(np.count_nonzero(y1 != ignore_index))
    out = np.asarray(reduce_loss(loss, count, reduction), dtype=dtype)
    out = out.reshape(shape) if reduction == "none" else out[()]
    if dh is not None:
        dh = dh.reshape(h.shape).astype(dtype, copy=False)
    if dw is not None:
        dw = dw.astype(dtype, copy=False)
    if db is not None:
        db = db.astype(dtype, copy=False)
    return out, dh, dw, db
