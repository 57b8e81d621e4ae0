"""PyTorch autograd for the training losses' fused path (``_losses.training``): the forward is
one kernel pass that gives the reduced loss and the logits' gradient already divided by the
mean's denominator; the backward only scales that gradient by its upstream (``loss.backward()``
on the loss itself: not even that, the buffer becomes ``x.grad``).

Eagerly this is a ``torch.autograd.Function`` (the cheapest dispatch: a few microseconds).
Under ``torch.compile`` the same computation is the custom operator ``logitloss::reduced_loss``
(``torch.library``), with a fake implementation for tracing and an autograd formula, so that
Dynamo records one opaque node instead of breaking the graph at the kernels.

Under ``create_graph=True`` (a Hessian-vector product, say) the backward differentiates the
reference path instead, the same loss recomputed by array-API operations torch records. This
module imports torch; ``_api.training`` imports it only when torch tensors arrive.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from array_api_compat import torch as _xp
from torch.autograd import forward_ad

from .._core import reductions, route
from .._losses import training as fused

Tensor = torch.Tensor


def autocast_input(x: Tensor) -> Tensor:
    """``x`` as float32 where ``torch.autocast`` is on for its device and ``x`` is narrower:
    torch's own losses run in float32 there and return float32 (its autocast lists them)."""
    if x.dtype in (torch.float16, torch.bfloat16) and torch.is_autocast_enabled(x.device.type):
        return x.float()
    return x


class _Call(NamedTuple):
    """What a fused call computes besides the logits: one Python object, so that the autograd
    node has two inputs (each input costs the step microseconds)."""

    loss: str
    operands: tuple
    options: dict
    recompute: Callable[[Tensor], Tensor]


class _Reduced(torch.autograd.Function):
    """``apply(x, call)``: the fused reduced loss ``call.loss`` of the logits ``x``;
    ``call.recompute(x)`` is the same loss on the reference path (for ``create_graph``)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, call: _Call) -> Tensor:
        result = fused.reduced(call.loss, x, call.operands, call.options)
        ctx.grad = result.grad
        # x itself rather than save_for_backward (a few microseconds a step): only the
        # create_graph branch reads it, after checking it was not modified in place.
        ctx.x, ctx.version, ctx.recompute = x, x._version, call.recompute
        return _scalar(result.value, x.dtype)

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, None]:
        grad, ctx.grad = ctx.grad, None
        if torch.is_grad_enabled() or grad is None:
            # create_graph=True, or a second backward (retain_graph) after the buffer was handed
            # over: the reference path's gradient, which autograd can differentiate again.
            x = ctx.x
            if x._version != ctx.version:
                raise RuntimeError(
                    "logitloss: the logits of a loss were modified in place after the loss was "
                    "computed; its gradient can no longer be formed"
                )
            with torch.enable_grad(), route.reference_path():
                value = ctx.recompute(x)
            (grad,) = torch.autograd.grad(value, x, upstream, create_graph=torch.is_grad_enabled())
            return grad, None
        return _scaled(grad, upstream), None


def _scalar(value: float, dtype: torch.dtype) -> Tensor:
    """``reductions.scalar`` for a CPU tensor in microseconds fewer: ``torch.full`` rounds the
    float once, but refuses a value beyond the dtype's range, which ``torch.tensor`` rounds
    to inf."""
    if abs(value) < _FINITE_MAX[dtype]:
        return torch.full((), value, dtype=dtype)
    return torch.tensor(value, dtype=dtype)


_FINITE_MAX = {
    t: torch.finfo(t).max for t in (torch.float16, torch.bfloat16, torch.float32, torch.float64)
}


def _scaled(grad: Tensor, upstream: Tensor) -> Tensor:
    """``grad * upstream`` in place (the buffer is this backward's alone), nothing at all for an
    upstream of 1 (``loss.backward()``)."""
    if upstream.numel() == 1 and upstream.item() == 1:
        return grad
    return grad.mul_(upstream.to(grad.dtype))


def compiling() -> bool:
    """Whether Dynamo is tracing the caller (``torch.compile``)."""
    return torch.compiler.is_compiling()


# Read once: Dynamo traces module constants, not importlib's lookups.
_KERNELS_INSTALLED = importlib.util.find_spec("numba") is not None
_BFLOAT16_VIEWS = importlib.util.find_spec("ml_dtypes") is not None


def compiled_kernels_take(x: Tensor) -> bool:
    """``route.kernels_take`` as Dynamo can trace it: a strided CPU tensor, numba installed."""
    if x.dtype == torch.bfloat16 and not _BFLOAT16_VIEWS:
        return False
    return _KERNELS_INSTALLED and x.device.type == "cpu" and x.layout == torch.strided


def eager_kernels_take(x: Tensor) -> bool:
    """For a plain CPU tensor whose other checks the caller made: eager (not compiled, not
    under autocast, no forward-mode level entered) and the kernels available
    (``route.kernels_take``)."""
    return (
        not compiling()
        and forward_ad._current_level < 0
        and not torch.is_autocast_enabled("cpu")
        and route.kernels_take(x)
    )


def fusable(x: Tensor, operands: tuple) -> bool:
    """Whether the fused autograd path takes this call: the logits need a reverse-mode gradient
    and nothing else does (no operand needs one, no forward-mode tangent anywhere)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return False
    tensors = [t for t in operands if isinstance(t, Tensor)]
    if any(t.requires_grad for t in tensors):
        return False
    if forward_ad._current_level < 0:  # no dual level entered: no tangent anywhere (cheap)
        return True
    return all(forward_ad.unpack_dual(t).tangent is None for t in (x, *tensors))


def reduced(
    loss: str,
    x: Tensor,
    operands: tuple,
    options: dict[str, Any],
    recompute: Callable[[Tensor], Tensor],
) -> Tensor:
    """The reduced training loss ``loss`` of CPU logits ``x`` that need a gradient (and no
    operand that does), by the fused kernels, differentiable in ``x``."""
    if compiling():
        return _reduced_op(loss, x, operands, options)
    return _Reduced.apply(x, _Call(loss, operands, options, recompute))


# --- torch.compile: the same computation as a custom operator ---------------------------------
#
# An operator's schema takes tensors and plain values only: the operands travel as a list of
# optional tensors, the options as their values, in a fixed order per loss.

_OPTION_NAMES = {
    "cross_entropy": ("axis", "ignore_index", "smoothing", "z_scale", "reduction"),
    "binary_cross_entropy": ("smoothing", "reduction"),
}


@torch.library.custom_op("logitloss::reduced_loss", mutates_args=())
def _reduced_loss(
    loss: str,
    x: Tensor,
    operands: list[Tensor | None],
    axis: int,
    ignore_index: int,
    smoothing: float,
    z_scale: float,
    reduction: str,
) -> tuple[Tensor, Tensor]:
    given = {"axis": axis, "ignore_index": ignore_index, "smoothing": smoothing,
             "z_scale": z_scale, "reduction": reduction}  # fmt: skip
    options = {name: given[name] for name in _OPTION_NAMES[loss]}
    result = fused.reduced(loss, x, tuple(operands), options)
    grad = result.grad if result.grad.is_contiguous() else result.grad.contiguous()
    return reductions.scalar(result.value, like=x, xp=_xp), grad


@_reduced_loss.register_fake
def _(loss: str, x: Tensor, operands: list, *options: Any) -> tuple[Tensor, Tensor]:
    return x.new_empty(()), torch.empty_like(x, memory_format=torch.contiguous_format)


def _setup_context(ctx: Any, inputs: tuple, output: tuple) -> None:
    ctx.save_for_backward(output[1])


def _backward(ctx: Any, upstream: Tensor, _grad_upstream: Tensor) -> tuple[Any, ...]:
    (grad,) = ctx.saved_tensors
    return None, grad * upstream, None, None, None, None, None, None


_reduced_loss.register_autograd(_backward, setup_context=_setup_context)


def _reduced_op(loss: str, x: Tensor, operands: tuple, options: dict[str, Any]) -> Tensor:
    full = {"axis": -1, "ignore_index": -100, "smoothing": 0.0, "z_scale": 0.0} | options
    value, _ = _reduced_loss(
        loss, x, list(operands), full["axis"], full["ignore_index"], float(full["smoothing"]),
        float(full["z_scale"]), full["reduction"],
    )  # fmt: skip
    return value
