"""PyTorch for ``linear_cross_entropy``: the backend adaptor and the ``torch.autograd.Function``.

Imported only when torch tensors reach ``linear_cross_entropy``. The chunked algorithm is
:func:`.._losses.linear_ce.chunked.chunked`, shared with NumPy; this module supplies the torch
spellings of its big operations (:class:`TorchOps`) and the autograd plumbing:

- ``reduction="mean"``/``"sum"`` with a tensor that requires grad: the forward runs the fused
  pass (loss and gradients, three matmuls) and saves only the gradients (N x H, V x H, V);
  backward multiplies them by the upstream scalar, in place (Liger-Kernel's design), and lets
  go of them. A second backward through a retained graph recomputes them from the inputs.
- ``reduction="none"``: the upstream gradient is a vector known only in backward, so the forward
  saves the inputs and backward reruns the chunked pass with it (cut cross-entropy's design:
  four matmuls in all, no N x V tensor either way).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from .._losses.linear_ce.chunked import Options, Result, chunked, reduced

Tensor = torch.Tensor
_HALF = (torch.float16, torch.bfloat16)


class TorchOps:
    """torch: ``out=`` matmuls, ``addmm_`` for ``d_weight``, half precision in float32."""

    float64 = torch.float64
    # torch's float64-accumulating sum of a float32 row is 5x its float32 sum on the CPU (44 vs
    # 8 ms per 256 x 32768 chunk, 15% of the chunk's matmul); its float32 sum is a cascade sum
    # (error ~ log2(V) eps), which the tests hold to the same bounds.
    row_sum_dtype = None  # the chunk's own dtype: float32 for float32 and half, float64 for float64

    @staticmethod
    def work_dtype(dtype: torch.dtype) -> torch.dtype:
        return torch.float32 if dtype in _HALF else dtype

    @staticmethod
    def logits(hc: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor) -> Tensor:
        if out.dtype != weight.dtype:  # half precision: matmul in it, softmax in float32
            return out.copy_(torch.nn.functional.linear(hc, weight, bias))
        if bias is None:
            return torch.matmul(hc, weight.T, out=out)
        return torch.addmm(bias, hc, weight.T, out=out)

    @staticmethod
    def exp_(x: Tensor) -> None:
        x.exp_()

    @staticmethod
    def grad_hidden(g: Tensor, weight: Tensor, out: Tensor) -> None:
        torch.matmul(g.to(weight.dtype), weight, out=out)

    @staticmethod
    def accumulate_weight(d_weight: Tensor, g: Tensor, hc: Tensor, scratch: list) -> None:
        d_weight.addmm_(g.T, hc.to(d_weight.dtype))  # BLAS beta = 1: no V x H temporary


def _run(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    options: Options,
    grads: tuple[bool, bool, bool],
    upstream: Any = None,
) -> Result:
    return chunked(
        hidden, weight, bias, labels, options, ops=TorchOps, upstream=upstream, grads=grads
    )


class _LinearCrossEntropy(torch.autograd.Function):
    """Inputs (N, H), (V, H), (V,) or None, (N,) int64; output the reduced loss or (N,)."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        labels: Tensor,
        options: Options,
    ) -> Tensor:
        need = tuple(ctx.needs_input_grad[:3])
        ctx.options = options
        ctx.precomputed = None
        # The inputs are saved in both modes: references to tensors that exist anyway, and what
        # a second backward through a retained graph recomputes from.
        ctx.save_for_backward(hidden, weight, bias, labels)
        if any(need) and options.reduction != "none":
            result = _run(hidden, weight, bias, labels, options, need)
            # An attribute, so the first backward can let go.
            ctx.precomputed = [result.d_hidden, result.d_weight, result.d_bias]
        else:
            result = _run(hidden, weight, bias, labels, options, (False, False, False))
        return reduced(result, options.reduction, hidden.dtype, labels.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        hidden, weight, bias, labels = ctx.saved_tensors
        need = tuple(ctx.needs_input_grad[:3])
        if ctx.options.reduction == "none":
            result = _run(hidden, weight, bias, labels, ctx.options, need, grad.double())
            return result.d_hidden, result.d_weight, result.d_bias, None, None
        if ctx.precomputed is not None:
            grads, ctx.precomputed = ctx.precomputed, None
            if bool(grad == 1):  # the usual loss.backward(): hand the gradients over, no copy
                return (*grads, None, None)
            # Ours alone (the reference was just dropped): scaled in place, no second V x H.
            return (*(None if t is None else t.mul_(grad.to(t.dtype)) for t in grads), None, None)
        # Backward again through a retained graph: the same pass and the same scaling again.
        result = _run(hidden, weight, bias, labels, ctx.options, need)
        grads = [result.d_hidden, result.d_weight, result.d_bias]
        if bool(grad == 1):
            return (*grads, None, None)
        return (*(None if t is None else t.mul_(grad.to(t.dtype)) for t in grads), None, None)


def _flat(hidden: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    return hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1).long()


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None, options: Options
) -> Tensor:
    """The validated call: autograd's Function when a tensor requires grad, else a plain pass."""
    h2, y1 = _flat(hidden, labels)
    tensors = [t for t in (hidden, weight, bias) if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        loss = _LinearCrossEntropy.apply(h2, weight, bias, y1, options)
    else:
        with torch.no_grad():
            result = _run(h2, weight, bias, y1, options, (False, False, False))
            loss = reduced(result, options.reduction, hidden.dtype, y1.shape)
    return loss.reshape(labels.shape) if options.reduction == "none" else loss


def value_and_grad(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    bias: Tensor | None,
    options: Options,
    upstream: Any,
) -> tuple[Tensor, tuple[Tensor, Tensor, Tensor | None]]:
    """Loss and gradients as tensors, outside autograd (the NumPy function's torch twin)."""
    h2, y1 = _flat(hidden, labels)
    if upstream is not None and options.reduction == "none":
        upstream = upstream.reshape(-1).to(torch.float64)
    with torch.no_grad():
        result = _run(
            h2.detach(), weight.detach(), None if bias is None else bias.detach(), y1, options,
            (True, True, bias is not None), upstream,
        )  # fmt: skip
        loss = reduced(result, options.reduction, hidden.dtype, labels.shape)
    return loss, (result.d_hidden.reshape(hidden.shape), result.d_weight, result.d_bias)
