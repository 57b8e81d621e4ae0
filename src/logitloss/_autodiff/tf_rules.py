"""TensorFlow autodiff with the exact gradients instead of the forward formula's derivative.

Each call of a family's loss (``_losses.family``) on TensorFlow tensors is a
``tf.custom_gradient`` function of the logits and the operands present: its forward is the
family's loss and its gradient function returns, for each input its gradient table holds, the
gradient of ``sum(upstream * loss)`` from ``_losses.compute.grad`` (the reference on the
``_core.tf_namespace`` layer: never the kernels), in the compute dtype and rounded once, summed
back to a broadcast operand's shape (a per-class ``pos_weight``, labels shared along the class
axis). Integer labels and absent operands get no gradient.

The gradient function is made of TF operations on the saved inputs and the upstream gradient,
so a ``GradientTape`` around the first differentiates it again (Hessians: nested tapes,
``tf.test.compute_gradient`` of a gradient), as the torch adapter's ``create_graph`` path.
Eagerly, in ``tf.function``, under XLA (``jit_compile=True``), in a ``tf.distribute`` replica
context and in a SavedModel (custom gradients are saved with the function) alike.

Eager calls run on the logits' device (``tf.device``), so a CPU tensor stays on the CPU when a
GPU is the default. This module imports TensorFlow; ``_api.dispatch`` imports it only when
TensorFlow tensors arrive.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import tensorflow as tf

from .._core import tf_namespace as _xp
from .._losses import compute
from .._losses.family import Family, Operands, Options

Tensor = Any


@contextlib.contextmanager
def on_device_of(x: Tensor) -> Iterator[None]:
    """Eagerly, the operations of the block on ``x``'s device; in a graph, TF's placement."""
    device = getattr(x, "device", "")
    if tf.executing_eagerly() and device:
        with tf.device(device):
            yield
    else:
        yield


def _gradients(
    family: Family, options: Options, x: Tensor, operands: Operands, upstream: Tensor
) -> list[Tensor | None]:
    """The gradient for the logits and each present operand, in that order (None for an input
    the gradient table does not hold: integer labels)."""
    grads = []
    for wrt, value in zip(("logits", *family.operands), (x, *operands), strict=True):
        if value is None:
            continue
        if wrt not in family.grads:
            grads.append(None)
            continue
        grads.append(compute.grad(family, x, operands, options, upstream, wrt=wrt, xp=_xp))
    return grads


def _stretched(family: Family, x: Tensor, operands: Operands) -> Operands:
    """Inside ``tf.function`` with dimensions of the logits unknown (None): the broadcast
    operands of a class-axis family (labels shared by the rows) broadcast to the logits' dynamic
    shape, by TF (whose gradient sums back to their shape), since the formulas' static
    ``broadcast_to(z, x.shape)`` cannot know the size of an unknown dimension."""
    shape = tuple(x.shape)
    if family.class_axis is None or None not in shape:
        return operands
    out = []
    for name, a in zip(family.operands, operands, strict=True):
        if a is not None and name in family.broadcast and tuple(a.shape) != shape:
            a = tf.broadcast_to(a, tf.shape(x))
        out.append(a)
    return tuple(out)


def loss(family: Family, x: Tensor, operands: Operands, options: Options) -> Tensor:
    """The family's loss, with exact TF gradients in the logits and every operand its table
    holds."""
    operands = _stretched(family, x, operands)
    present = tuple(i for i, a in enumerate(operands) if a is not None)

    def fill(given: tuple) -> Operands:
        """The operands in the family's order, None where absent."""
        full: list[Tensor | None] = [None] * len(operands)
        for i, a in zip(present, given, strict=True):
            full[i] = a
        return tuple(full)

    @tf.custom_gradient
    def exact(x: Tensor, *given: Tensor) -> tuple[Tensor, Any]:
        ops = fill(given)
        value = compute.value(family, x, ops, options, xp=_xp)

        def grad(upstream: Tensor) -> list[Tensor | None]:
            return _gradients(family, options, x, ops, upstream)

        return value, grad

    with on_device_of(x):
        return exact(x, *(operands[i] for i in present))
