"""PyTorch autograd with the exact gradients instead of the forward formula's derivative.

Each loss family (``_losses.family``) is a ``torch.autograd.Function`` built from it (one per
family and options, on first use): the forward is the family's loss, the backward the gradient
of ``sum(upstream * loss)`` for each input its gradient table holds, both from
``_losses.compute`` (the fused kernels on CPU tensors, else the reference), so ``x.grad`` is
the exact gradient the ``*_grad`` functions return: ``2.5e-11`` at ``x = 1e-10, z = 0.5``
(PyTorch's own ``sigmoid(x) - z`` gives 0 in float32; differentiating the forward formula,
even in float64, is 8e-8 off there), and the true limits at infinite logits.

Only the inputs are saved, never an N x C intermediate. Under ``create_graph=True`` the backward
takes the reference path, torch operations on those saved inputs, which autograd records and
differentiates again: Hessians, ``gradgradcheck``. A ``jvp`` (forward mode) forms the
tangent from the same exact gradients, and the ``setup_context`` form with
``generate_vmap_rule`` lets ``torch.func`` (``grad``, ``vmap``, ``jacfwd``, ``hessian``) apply.

This module imports torch; ``_api.dispatch`` imports it only when torch tensors that need a
gradient arrive.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from array_api_compat import torch as _xp

from .._core import route
from .._losses import compute
from .._losses.family import Family, Operands, Options
from .tangent import tangent

Tensor = torch.Tensor


def _backward(
    family: Family,
    options: Options,
    x: Tensor,
    operands: Operands,
    upstream: Tensor,
    needs: tuple[bool, ...],
) -> tuple[Tensor | None, ...]:
    """The gradient for each input (the logits, then the operands) that ``needs`` one."""
    return tuple(
        compute.grad(family, x, operands, options, upstream, wrt=wrt, xp=_xp)
        if needed and wrt in family.grads
        else None
        for wrt, needed in zip(("logits", *family.operands), needs, strict=True)
    )


def _perturbed(tangent: Tensor | None) -> bool:
    return tangent is not None


@functools.cache
def _exact(family: Family, options: tuple[tuple[str, Any], ...]) -> type:
    """The ``torch.autograd.Function`` of this family's loss with these options,
    ``apply(x, *operands)``, named after the family (``sparse_softmax``: ``_SparseSoftmax``,
    whose graph nodes are ``_SparseSoftmaxBackward``). The family and options are closed over
    rather than passed to ``apply``, whose cost grows by microseconds with each argument."""
    keywords = dict(options)

    def forward(x: Tensor, *operands: Tensor | None) -> Tensor:
        return compute.value(family, x, operands, keywords, xp=_xp)

    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)
        ctx.reference = route.forced_reference()

    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        x, *operands = ctx.saved_tensors
        with route.same_path(ctx.reference):
            needs = ctx.needs_input_grad
            return _backward(family, keywords, x, tuple(operands), upstream, needs)

    def jvp(ctx: Any, *tangents: Tensor | None) -> Tensor:
        primals = ctx.saved_tensors
        return tangent(family, primals, tangents, keywords, xp=_xp, perturbed=_perturbed)

    methods = {"forward": forward, "setup_context": setup_context, "backward": backward, "jvp": jvp}
    namespace: dict[str, Any] = {name: staticmethod(f) for name, f in methods.items()}
    namespace["generate_vmap_rule"] = True
    namespace["__doc__"] = f"The {family.name} loss with its exact gradients."
    name = "_" + "".join(word.capitalize() for word in family.name.split("_"))
    return type(name, (torch.autograd.Function,), namespace)


class _Fused(torch.autograd.Function):
    """A family's loss on CPU tensors whose logits need a gradient,
    ``apply(family, options, x, *operands)``: one kernel pass computes the loss and the
    logits' gradient per unit upstream, which the backward only scales
    (``loss.sum().backward()``: not even that). Saved: the inputs and that gradient (PyTorch's
    own cross-entropy saves an N x C tensor too). Under ``create_graph=True`` the backward is
    the differentiable reference, as for the functions of :func:`_exact`."""

    @staticmethod
    def forward(
        ctx: Any, family: Family, options: Options, x: Tensor, *operands: Tensor | None
    ) -> Tensor:
        loss, grad = compute.kernel(family, "loss_and_grad", x, operands, options)
        ctx.family, ctx.options = family, options
        ctx.save_for_backward(x, *operands)
        # Kept outside the saved tensors so that the backward can hand it over: autograd then
        # stores it as ``x.grad`` without the copy it makes of a tensor held elsewhere.
        ctx.grad = grad
        return loss

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        x, *operands = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        # The logits' gradient from the forward's, unless autograd must differentiate it again
        # or a second backward (retain_graph) finds it handed over already: then computed anew.
        grad, ctx.grad = ctx.grad, None
        reuse = needs[0] and not torch.is_grad_enabled() and grad is not None
        needs = (needs[0] and not reuse, *needs[1:])
        grads = _backward(ctx.family, ctx.options, x, tuple(operands), upstream, needs)
        if reuse:
            axis = ctx.family.axis(ctx.options)
            grads = (_scaled(grad, upstream, axis), *grads[1:])
        return (None, None, *grads)


def _scaled(grad: Tensor, upstream: Tensor, axis: int | None) -> Tensor:
    """``grad * upstream`` (``upstream`` per row along ``axis`` for the softmax losses), in
    place: ``grad`` is the forward's, handed over to this backward alone. Nothing at all when
    ``upstream`` is a broadcast 1 (``loss.sum().backward()``)."""
    if upstream.numel() and all(stride == 0 for stride in upstream.stride()):
        if bool(upstream[(0,) * upstream.ndim] == 1):
            return grad
    if axis is not None:
        upstream = upstream.unsqueeze(axis)
    return grad.mul_(upstream)


def _fusable(x: Tensor, *others: Tensor | None) -> bool:
    """The fused kernel fits: a kernel applies, the logits need a reverse-mode gradient, and
    no input carries a forward-mode tangent (the fused function has no ``jvp``)."""
    from torch.autograd import forward_ad

    if not (x.requires_grad and torch.is_grad_enabled() and route.applies(x)):
        return False
    tensors = [t for t in (x, *others) if t is not None]
    return all(forward_ad.unpack_dual(t).tangent is None for t in tensors)


def loss(family: Family, x: Tensor, operands: Operands, options: Options) -> Tensor:
    """The family's loss, differentiable in the logits and every operand its table holds."""
    if _fusable(x, *operands):
        return _Fused.apply(family, options, x, *operands)
    return _exact(family, tuple(sorted(options.items()))).apply(x, *operands)
