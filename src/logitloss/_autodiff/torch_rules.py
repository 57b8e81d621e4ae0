"""PyTorch autograd with the exact gradients instead of the forward formula's derivative.

Each loss is a ``torch.autograd.Function``: the forward is the loss, the backward the gradient
of ``sum(upstream * loss)``, both from ``_dispatch`` (the fused kernels on CPU tensors, else
``_reference``), so ``x.grad`` is the exact gradient the
``*_grad`` functions return: ``2.5e-11`` at ``x = 1e-10, z = 0.5`` (PyTorch's own
``sigmoid(x) - z`` gives 0 in float32; differentiating the forward formula, even in float64,
is 8e-8 off there), and the true limits at infinite logits.

Only the inputs are saved, never an N x C intermediate. Under ``create_graph=True`` the backward
takes the reference path, torch operations on those saved inputs, which autograd records and
differentiates again: Hessians, ``gradgradcheck``. A ``jvp`` (forward mode) forms the
tangent from the same exact gradients, and the ``setup_context`` form with
``generate_vmap_rule`` lets ``torch.func`` (``grad``, ``vmap``, ``jacfwd``, ``hessian``) apply.

This module imports torch; ``_dispatch`` imports it only when torch tensors that need a gradient
arrive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from array_api_compat import torch as _xp

from .._api import dispatch
from .._core import arrays, route
from .._losses.logistic import formula as logistic_formula
from .._losses.softmax import formula as softmax_formula

Tensor = torch.Tensor


def _tangent(
    x: Tensor,
    terms: list[tuple[Callable[[], Tensor], Tensor | None]],
    reduce: Callable[[Tensor], Tensor],
) -> Tensor:
    """Forward mode: ``reduce(sum of grad() * tangent)`` over the inputs that have a tangent.

    ``grad`` (elementwise, unreduced, in the compute dtype) is evaluated only where a tangent
    arrived; the tangent is widened to the compute dtype and the sum rounded once to ``x``'s.
    """
    parts = [grad() * arrays.widen(_xp, x, t)[1] for grad, t in terms if t is not None]
    total = sum(parts[1:], parts[0]) if parts else torch.zeros_like(x)
    return reduce(total).to(x.dtype)


def _logistic_backward(
    x: Tensor, z: Tensor, q: Tensor | None, upstream: Tensor, needs: tuple[bool, ...]
) -> tuple[Tensor | None, ...]:
    wrts = ("logits", "labels", "pos_weight")
    return tuple(
        dispatch.logistic_grad(x, z, q, upstream, wrt=wrt, xp=_xp) if needed else None
        for wrt, needed in zip(wrts, needs, strict=True)
    )


def _softmax_backward(
    x: Tensor, z: Tensor, upstream: Tensor, axis: int, needs: tuple[bool, ...]
) -> tuple[Tensor | None, ...]:
    return tuple(
        dispatch.softmax_grad(x, z, upstream, axis=axis, wrt=wrt, xp=_xp) if needed else None
        for wrt, needed in zip(("logits", "labels"), needs, strict=True)
    )


def _sparse_backward(x: Tensor, labels: Tensor, upstream: Tensor, needs: tuple[bool, ...]):
    grad = dispatch.sparse_softmax_grad(x, labels, upstream, xp=_xp) if needs[0] else None
    return grad, None


class _Logistic(torch.autograd.Function):
    """Sigmoid (``q is None``) or weighted cross-entropy, elementwise."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, z: Tensor, q: Tensor | None) -> Tensor:
        return dispatch.logistic_value(x, z, q, xp=_xp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)
        ctx.reference = route.forced_reference()

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        with route.same_path(ctx.reference):
            return _logistic_backward(*ctx.saved_tensors, upstream, ctx.needs_input_grad)

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dz: Tensor | None, dq: Tensor | None) -> Tensor:
        x, z, q = ctx.saved_tensors
        wx, wz, wq = arrays.widen(_xp, x, z, q)
        # d/dq is elementwise: dq broadcasts against it (q may be per class or a scalar).
        terms = [
            (lambda: logistic_formula.logistic_grad_logits(wx, wz, wq, xp=_xp), dx),
            (lambda: logistic_formula.logistic_grad_labels(wx, wz, wq, xp=_xp), dz),
            (lambda: logistic_formula.logistic_grad_pos_weight(wx, wz, xp=_xp), dq),
        ]
        return _tangent(x, terms, lambda t: t)


class _Softmax(torch.autograd.Function):
    """Softmax cross-entropy with soft labels along ``axis``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, z: Tensor, axis: int) -> Tensor:
        return dispatch.softmax_value(x, z, axis=axis, xp=_xp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, z, axis = inputs
        ctx.axis = axis
        ctx.save_for_backward(x, z)
        ctx.save_for_forward(x, z)
        ctx.reference = route.forced_reference()

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        x, z = ctx.saved_tensors
        with route.same_path(ctx.reference):
            grads = _softmax_backward(x, z, upstream, ctx.axis, ctx.needs_input_grad[:2])
        return (*grads, None)

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dz: Tensor | None, _: None) -> Tensor:
        x, z = ctx.saved_tensors
        wx, wz = arrays.widen(_xp, x, z)
        terms = [
            (lambda: softmax_formula.softmax_grad_logits(wx, wz, axis=ctx.axis, xp=_xp), dx),
            (lambda: softmax_formula.softmax_grad_labels(wx, wz, axis=ctx.axis, xp=_xp), dz),
        ]
        return _tangent(x, terms, lambda t: torch.sum(t, dim=ctx.axis))


class _SparseSoftmax(torch.autograd.Function):
    """Softmax cross-entropy against integer labels over the last axis."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, labels: Tensor) -> Tensor:
        return dispatch.sparse_softmax_value(x, labels, xp=_xp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)
        ctx.reference = route.forced_reference()

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, None]:
        with route.same_path(ctx.reference):
            return _sparse_backward(*ctx.saved_tensors, upstream, ctx.needs_input_grad)

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, _: None) -> Tensor:
        x, labels = ctx.saved_tensors
        (wx,) = arrays.widen(_xp, x)
        terms = [(lambda: softmax_formula.sparse_softmax_grad_logits(wx, labels, xp=_xp), dx)]
        return _tangent(x, terms, lambda t: torch.sum(t, dim=-1))


class _Fused(torch.autograd.Function):
    """Any of the three losses on CPU tensors whose logits need a gradient: one kernel pass
    computes the loss and the logits' gradient per unit upstream, which the backward only
    scales (``loss.sum().backward()``: not even that). Saved: the inputs and that gradient
    (PyTorch's own cross-entropy saves an N x C tensor too). Under ``create_graph=True`` the
    backward is the differentiable reference, as for the classes above."""

    @staticmethod
    def forward(ctx: Any, kind: str, axis: int, x: Tensor, *others: Tensor | None) -> Tensor:
        options = {"axis": axis} if kind == "softmax" else {}
        loss, grad = dispatch._kernel(f"{kind}_loss_and_grad", x, *others, **options)
        ctx.kind, ctx.axis = kind, axis
        ctx.save_for_backward(x, *others)
        # Kept outside the saved tensors so that the backward can hand it over: autograd then
        # stores it as ``x.grad`` without the copy it makes of a tensor held elsewhere.
        ctx.grad = grad
        return loss

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        x, *others = ctx.saved_tensors
        needs = ctx.needs_input_grad[2:]
        # The logits' gradient from the forward's, unless autograd must differentiate it again
        # or a second backward (retain_graph) finds it handed over already: then computed anew.
        grad, ctx.grad = ctx.grad, None
        reuse = needs[0] and not torch.is_grad_enabled() and grad is not None
        needs = (needs[0] and not reuse, *needs[1:])
        if ctx.kind == "logistic":
            grads = _logistic_backward(x, *others, upstream, needs)
        elif ctx.kind == "softmax":
            grads = _softmax_backward(x, *others, upstream, ctx.axis, needs)
        else:
            grads = _sparse_backward(x, *others, upstream, needs)
        if reuse:
            axis = None if ctx.kind == "logistic" else ctx.axis
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


def logistic(x: Tensor, z: Tensor, q: Tensor | None) -> Tensor:
    """The sigmoid or weighted loss, differentiable in ``x``, ``z`` and ``q``."""
    if _fusable(x, z, q):
        return _Fused.apply("logistic", -1, x, z, q)
    return _Logistic.apply(x, z, q)


def softmax(x: Tensor, z: Tensor, *, axis: int) -> Tensor:
    """The softmax loss along ``axis``, differentiable in ``x`` and ``z``."""
    if _fusable(x, z):
        return _Fused.apply("softmax", axis, x, z)
    return _Softmax.apply(x, z, axis)


def sparse_softmax(x: Tensor, labels: Tensor) -> Tensor:
    """The sparse softmax loss, differentiable in ``x``."""
    if _fusable(x, labels):
        return _Fused.apply("sparse_softmax", -1, x, labels)
    return _SparseSoftmax.apply(x, labels)
