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

from . import _arrays, _dispatch, _formulas, _kernel_path, _reference

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
    parts = [grad() * _arrays.widen(_xp, x, t)[1] for grad, t in terms if t is not None]
    total = sum(parts[1:], parts[0]) if parts else torch.zeros_like(x)
    return reduce(total).to(x.dtype)


class _Logistic(torch.autograd.Function):
    """Sigmoid (``q is None``) or weighted cross-entropy, elementwise."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, z: Tensor, q: Tensor | None) -> Tensor:
        return _dispatch.logistic_value(x, z, q, xp=_xp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)
        ctx.reference = _kernel_path.forced_reference()

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        x, z, q = ctx.saved_tensors
        wrts = ("logits", "labels", "pos_weight")
        with _kernel_path.same_path(ctx.reference):
            return tuple(
                _dispatch.logistic_grad(x, z, q, upstream, wrt=wrt, xp=_xp) if needed else None
                for wrt, needed in zip(wrts, ctx.needs_input_grad, strict=True)
            )

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dz: Tensor | None, dq: Tensor | None) -> Tensor:
        x, z, q = ctx.saved_tensors
        wx, wz, wq = _arrays.widen(_xp, x, z, q)
        # d/dq is elementwise: dq broadcasts against it (q may be per class or a scalar).
        terms = [
            (lambda: _formulas.logistic_grad_logits(wx, wz, wq, xp=_xp), dx),
            (lambda: _formulas.logistic_grad_labels(wx, wz, wq, xp=_xp), dz),
            (lambda: _formulas.logistic_grad_pos_weight(wx, wz, xp=_xp), dq),
        ]
        return _tangent(x, terms, lambda t: t)


class _Softmax(torch.autograd.Function):
    """Softmax cross-entropy with soft labels along ``axis``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, z: Tensor, axis: int) -> Tensor:
        return _reference.softmax(x, z, axis=axis, xp=_xp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        x, z, axis = inputs
        ctx.axis = axis
        ctx.save_for_backward(x, z)
        ctx.save_for_forward(x, z)

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, ...]:
        x, z = ctx.saved_tensors
        need_x, need_z, _ = ctx.needs_input_grad
        grads = (
            _reference.softmax_grad(x, z, upstream, axis=ctx.axis, wrt=wrt, xp=_xp)
            if needed
            else None
            for wrt, needed in (("logits", need_x), ("labels", need_z))
        )
        return (*grads, None)

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, dz: Tensor | None, _: None) -> Tensor:
        x, z = ctx.saved_tensors
        wx, wz = _arrays.widen(_xp, x, z)
        terms = [
            (lambda: _formulas.softmax_grad_logits(wx, wz, axis=ctx.axis, xp=_xp), dx),
            (lambda: _formulas.softmax_grad_labels(wx, wz, axis=ctx.axis, xp=_xp), dz),
        ]
        return _tangent(x, terms, lambda t: torch.sum(t, dim=ctx.axis))


class _SparseSoftmax(torch.autograd.Function):
    """Softmax cross-entropy against integer labels over the last axis."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, labels: Tensor) -> Tensor:
        return _reference.sparse_softmax(x, labels, xp=_xp)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def backward(ctx: Any, upstream: Tensor) -> tuple[Tensor | None, None]:
        x, labels = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None
        return _reference.sparse_softmax_grad(x, labels, upstream, xp=_xp), None

    @staticmethod
    def jvp(ctx: Any, dx: Tensor | None, _: None) -> Tensor:
        x, labels = ctx.saved_tensors
        (wx,) = _arrays.widen(_xp, x)
        terms = [(lambda: _formulas.sparse_softmax_grad_logits(wx, labels, xp=_xp), dx)]
        return _tangent(x, terms, lambda t: torch.sum(t, dim=-1))


def logistic(x: Tensor, z: Tensor, q: Tensor | None) -> Tensor:
    """The sigmoid or weighted loss, differentiable in ``x``, ``z`` and ``q``."""
    return _Logistic.apply(x, z, q)


def softmax(x: Tensor, z: Tensor, *, axis: int) -> Tensor:
    """The softmax loss along ``axis``, differentiable in ``x`` and ``z``."""
    return _Softmax.apply(x, z, axis)


def sparse_softmax(x: Tensor, labels: Tensor) -> Tensor:
    """The sparse softmax loss, differentiable in ``x``."""
    return _SparseSoftmax.apply(x, labels)
