"""The single place that decides how a validated call is computed.

- PyTorch tensors of which one needs a derivative: reverse mode (grad mode on and
  ``requires_grad`` set) or forward mode (a dual tensor of ``torch.autograd.forward_ad`` or
  ``torch.func.jacfwd``, which grad mode does not switch off): a ``torch.autograd.Function``
  whose backward and jvp are the exact gradients (``_torch_autograd``). Other tensors take the
  reference path and come back without a ``grad_fn``.
- JAX arrays, tracers included: ``jax.custom_jvp`` functions whose JVP rule is the exact
  gradient (``_jax_autodiff``). Always, since whether JAX will differentiate is not known when
  the function is called (``jax.grad`` traces it like any other call).
- NumPy arrays and PyTorch CPU tensors that need no derivative, of at least
  ``route.KERNEL_MIN`` elements, with numba installed: the fused kernels (``_kernels``).
  The torch ``autograd.Function`` takes them too, for its forward and its backward.
- Everything else, and every call inside ``reference_path()``: the array-API reference
  (``_reference``).

The torch and JAX modules are imported only when their arrays arrive: ``import logitloss``
imports neither library, and array-api-compat recognises their arrays without importing them.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

from .._core import arrays, route
from .._core.arrays import Array
from .._losses import reference


def _autodiff(x: Array, *others: Array | None) -> ModuleType | None:
    """The autodiff implementation for these (validated, same-library) arrays, or None."""
    if array_api_compat.is_jax_array(x):
        from .._autodiff import jax_rules

        return jax_rules
    if array_api_compat.is_torch_array(x) and _torch_needs_derivative(x, *others):
        from .._autodiff import torch_rules

        return torch_rules
    return None


def _differentiated(x: Array, *others: Array | None) -> bool:
    """Whether torch will differentiate through this computation (a kernel would cut it)."""
    return array_api_compat.is_torch_array(x) and _torch_needs_derivative(x, *others)


def _torch_needs_derivative(*tensors: Array | None) -> bool:
    """Whether autograd, backward or forward mode, will differentiate through these tensors."""
    import torch  # already imported: its tensors are here
    from torch.autograd import forward_ad

    present = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return True
    return any(forward_ad.unpack_dual(t).tangent is not None for t in present)


def _kernel(name: str, x: Array, *others: Array | None, **options: Any) -> Any:
    """Run the family's kernel entry point ``<name>(x, *others, **options)`` on NumPy views;
    results come back in ``x``'s library (a tuple stays a tuple)."""
    from .._losses.logistic import host as logistic_host
    from .._losses.softmax import host as softmax_host

    host = logistic_host if name.startswith("logistic") else softmax_host
    result = getattr(host, name)(*map(route.to_numpy, (x, *others)), **options)
    if isinstance(result, tuple):
        return tuple(route.like(r, x) for r in result)
    return route.like(result, x)


def _by_kernel(x: Array, *others: Array | None) -> bool:
    """Whether a kernel computes this value: one applies, and no autodiff must see through it."""
    return route.applies(x) and not _differentiated(x, *others)


def logistic(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    impl = _autodiff(x, z, q)
    if impl is not None:
        return impl.logistic(x, z, q)
    return logistic_value(x, z, q, xp=xp)


def logistic_value(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    """The loss without autodiff: a kernel where one applies, else the reference."""
    if route.applies(x):
        return _kernel("logistic_loss", x, z, q)
    return reference.logistic(x, z, q, xp=xp)


def logistic_grad(
    x: Array, z: Array, q: Array | None, upstream: Array, *, wrt: str, xp: Any
) -> Array:
    """``reference.logistic_grad``, by a kernel where one applies (the logits' gradient)."""
    if wrt == "logits" and _by_kernel(x, z, q, upstream):
        return _kernel("logistic_grad_logits", x, z, q, upstream)
    return reference.logistic_grad(x, z, q, upstream, wrt=wrt, xp=xp)


def logistic_sum(
    x: Array, z: Array, q: Array | None, weight: Array | None, smoothing: float
) -> tuple[float, float] | None:
    """``(sum of weight * loss, sum of weight)`` in float64 by the reduced kernel, which never
    writes the per-element loss (labels smoothed toward 1/2 by ``smoothing``; ``weight`` None
    counts each element once); None where it does not apply: not a kernel call, a derivative
    to follow, or float64 logits (the reference's pairwise float64 sum keeps those closer)."""
    if arrays.dtype_name(x.dtype) == "float64" or not _by_kernel(x, z, q, weight):
        return None
    from .._losses.logistic import host as logistic_host

    x, z, q, weight = map(route.to_numpy, (x, z, q, weight))
    return logistic_host.logistic_loss_sum(x, z, q, weight, smoothing)


def softmax(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    impl = _autodiff(x, z)
    if impl is not None:
        return impl.softmax(x, z, axis=axis)
    return softmax_value(x, z, axis=axis, xp=xp)


def softmax_value(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    if route.applies(x):
        return _kernel("softmax_loss", x, z, axis=axis)
    return reference.softmax(x, z, axis=axis, xp=xp)


def softmax_grad(x: Array, z: Array, upstream: Array, *, axis: int, wrt: str, xp: Any) -> Array:
    if wrt == "logits" and _by_kernel(x, z, upstream):
        return _kernel("softmax_grad_logits", x, z, axis=axis, upstream=upstream)
    return reference.softmax_grad(x, z, upstream, axis=axis, wrt=wrt, xp=xp)


def sparse_softmax(x: Array, labels: Array, *, xp: Any) -> Array:
    impl = _autodiff(x)
    if impl is not None:
        return impl.sparse_softmax(x, labels)
    return sparse_softmax_value(x, labels, xp=xp)


def sparse_softmax_value(x: Array, labels: Array, *, xp: Any) -> Array:
    if route.applies(x):
        return _kernel("sparse_softmax_loss", x, labels)
    return reference.sparse_softmax(x, labels, xp=xp)


def softmax_wide(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    """:func:`softmax` in the compute dtype, unrounded (for reductions): as
    :func:`sparse_softmax_wide`, for labels of the logits' shape."""
    if _by_kernel(x, z):
        axis %= x.ndim
        out = np.empty(tuple(n for i, n in enumerate(x.shape) if i != axis), np.float64)
        return _kernel("softmax_loss", x, z, axis=axis, out=out)
    wx, wz = arrays.widen(xp, x, z)
    return softmax(wx, wz, axis=axis, xp=xp)


def sparse_softmax_wide(x: Array, labels: Array, *, xp: Any) -> Array:
    """:func:`sparse_softmax` in the compute dtype, unrounded (for reductions): by the kernel
    into a float64 output where one applies, so the logits are never copied to float64; else
    the widened logits through :func:`sparse_softmax` (autodiff included)."""
    if _by_kernel(x):
        out = np.empty(tuple(x.shape[:-1]), np.float64)
        return _kernel("sparse_softmax_loss", x, labels, out=out)
    (wx,) = arrays.widen(xp, x)
    return sparse_softmax(wx, labels, xp=xp)


def sparse_softmax_grad(x: Array, labels: Array, upstream: Array, *, xp: Any) -> Array:
    if _by_kernel(x, upstream):
        return _kernel("sparse_softmax_grad_logits", x, labels, upstream=upstream)
    return reference.sparse_softmax_grad(x, labels, upstream, xp=xp)
