"""The single place that decides how a validated call is computed, for any loss family
(``_losses.family``, one instance beside each family's formula).

- PyTorch tensors of which one needs a derivative (``compute.needs_derivative``: reverse
  mode, or forward mode, which grad mode does not switch off): a ``torch.autograd.Function``
  whose backward and jvp are the exact gradients (``_autodiff.torch_rules``). Other tensors
  are computed without autodiff and come back without a ``grad_fn``.
- JAX arrays, tracers included: a ``jax.custom_jvp`` function whose JVP rule is the exact
  gradient (``_autodiff.jax_rules``). Always, since whether JAX will differentiate is not known
  when the function is called (``jax.grad`` traces it like any other call).
- TensorFlow tensors, eager and symbolic (``tf.function``, XLA): a ``tf.custom_gradient``
  function whose gradient is the exact one (``_autodiff.tf_rules``). Always, like JAX: a
  ``GradientTape`` may be watching, which the call cannot see.
- Everything else: ``_losses.compute``, the fused kernels (``_kernels``) for NumPy arrays and
  PyTorch CPU tensors of at least ``route.KERNEL_MIN`` elements with numba installed, else the
  array-API reference (``_losses.reference``), and always the reference inside
  ``reference_path()``. The torch adapter computes its forward and backward there too.

Gradients as functions (:func:`grad`) need no adapter: ``compute.grad`` keeps off the kernels
where torch differentiates the gradient itself (``create_graph=True``).

The torch, JAX and TensorFlow modules are imported only when their arrays arrive: ``import
logitloss`` imports none of them, and their arrays are recognised without importing them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .._core import arrays
from .._core.arrays import Array
from .._losses import compute
from .._losses.family import Family, Operands, Options
from .._losses.logistic.formula import LOGISTIC
from .._losses.softmax.formula import SOFTMAX, SPARSE_SOFTMAX


def _autodiff(x: Array, operands: Operands) -> ModuleType | None:
    """The autodiff adapter for these (validated, same-library) arrays, or None."""
    if isinstance(x, np.ndarray):  # the commonest case, without array-api-compat's checks
        return None
    if array_api_compat.is_jax_array(x):
        from .._autodiff import jax_rules

        return jax_rules
    if arrays.is_tf_tensor(x):
        from .._autodiff import tf_rules

        return tf_rules
    if array_api_compat.is_torch_array(x) and compute.needs_derivative(x, *operands):
        from .._autodiff import torch_rules

        return torch_rules
    return None


def loss(family: Family, x: Array, operands: Operands, options: Options, *, xp: Any) -> Array:
    """The family's loss of ``x`` and ``operands`` (in ``family.operands``' order, ``None``
    for an absent one) with these options, through the autodiff adapter that their library
    needs, else without autodiff (``compute.value``)."""
    adapter = _autodiff(x, operands)
    if adapter is not None:
        return adapter.loss(family, x, operands, options)
    return compute.value(family, x, operands, options, xp=xp)


def grad(
    family: Family,
    x: Array,
    operands: Operands,
    options: Options,
    upstream: Array,
    *,
    wrt: str,
    xp: Any,
) -> Array:
    """The gradient of ``sum(upstream * loss)`` with respect to ``wrt``, as a function: no
    adapter (``compute.grad``), on the logits' device for TensorFlow tensors."""
    if arrays.is_tf_tensor(x):
        from .._autodiff import tf_rules

        with tf_rules.on_device_of(x):
            return compute.grad(family, x, operands, options, upstream, wrt=wrt, xp=xp)
    return compute.grad(family, x, operands, options, upstream, wrt=wrt, xp=xp)


def wide(family: Family, x: Array, operands: Operands, options: Options, *, xp: Any) -> Array:
    """:func:`loss` in the compute dtype, unrounded (for reductions): by the kernel into a
    float64 output where one applies, so the logits are never copied to float64; else the
    widened inputs through :func:`loss` (autodiff included)."""
    result = compute.wide_by_kernel(family, x, operands, options)
    if result is not None:
        return result
    wx, *wide_operands = family.widen(xp, x, operands)
    return loss(family, wx, tuple(wide_operands), options, xp=xp)


logistic_sum = compute.logistic_sum


# Each loss by name, for the callers that spell it out (training losses, focal loss).


def logistic(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    return loss(LOGISTIC, x, (z, q), {}, xp=xp)


def softmax(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    return loss(SOFTMAX, x, (z,), {"axis": axis}, xp=xp)


def softmax_wide(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    return wide(SOFTMAX, x, (z,), {"axis": axis}, xp=xp)


def sparse_softmax(x: Array, labels: Array, *, xp: Any) -> Array:
    return loss(SPARSE_SOFTMAX, x, (labels,), {}, xp=xp)


def sparse_softmax_wide(x: Array, labels: Array, *, xp: Any) -> Array:
    return wide(SPARSE_SOFTMAX, x, (labels,), {}, xp=xp)
