"""A family's loss and gradients without autodiff: by its kernels where they apply
(``_core.route``), else by the reference. The autodiff adapters (``_autodiff``) compute their
forward and backward passes here, and ``_api.dispatch`` every call that needs no adapter.

A kernel applies to NumPy arrays and PyTorch CPU tensors of at least ``route.KERNEL_MIN``
elements, with numba installed; for a gradient, or a value whose caller differentiates it
itself, also only where no torch autodiff must see through the computation (a kernel would cut
the graph: ``create_graph=True`` differentiates the reference).
"""

from __future__ import annotations

from typing import Any

import array_api_compat
import numpy as np

from .._core import arrays, route
from .._core.arrays import Array
from . import reference
from .family import Family, Operands, Options
from .logistic.formula import LOGISTIC


def differentiated(x: Array, others: Operands) -> bool:
    """Whether torch will differentiate through a computation on ``x`` and ``others``
    (validated, same-library arrays): torch tensors of which one :func:`needs_derivative`."""
    return array_api_compat.is_torch_array(x) and needs_derivative(x, *others)


def needs_derivative(*tensors: Array | None) -> bool:
    """Whether autograd will differentiate through these tensors: reverse mode (grad mode on
    and ``requires_grad`` set) or forward mode (a dual tensor of ``torch.autograd.forward_ad``
    or ``torch.func.jacfwd``, which grad mode does not switch off)."""
    import torch  # already imported: its tensors are here
    from torch.autograd import forward_ad

    present = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in present):
        return True
    return any(forward_ad.unpack_dual(t).tangent is not None for t in present)


def by_kernel(x: Array, others: Operands) -> bool:
    """Whether a kernel computes a call on ``x`` and ``others``: one applies, and no autodiff
    must see through it."""
    return route.applies(x) and not differentiated(x, others)


def kernel(
    family: Family,
    entry: str,
    x: Array,
    operands: Operands,
    options: Options,
    **named: Array,
) -> Any:
    """The family's kernel entry point ``entry`` on NumPy views of ``x``, ``operands`` and the
    ``named`` arrays (``upstream``, ``out``), with ``options``; results come back in ``x``'s
    library (a tuple stays a tuple)."""
    views = {name: route.to_numpy(a) for name, a in named.items()}
    args = map(route.to_numpy, (x, *operands))
    result = family.kernel(entry)(*args, **options, **views)
    if isinstance(result, tuple):
        return tuple(route.like(r, x) for r in result)
    return route.like(result, x)


def value(family: Family, x: Array, operands: Operands, options: Options, *, xp: Any) -> Array:
    """The loss: a kernel where one applies, else the reference."""
    if route.applies(x):
        return kernel(family, "loss", x, operands, options)
    return reference.value(family, x, operands, options, xp=xp)


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
    """``reference.grad``, by a kernel where one applies (the logits' gradient)."""
    if wrt == "logits" and by_kernel(x, (*operands, upstream)):
        return kernel(family, "grad_logits", x, operands, options, upstream=upstream)
    return reference.grad(family, x, operands, options, upstream, wrt=wrt, xp=xp)


def wide_by_kernel(family: Family, x: Array, operands: Operands, options: Options) -> Any:
    """The loss in float64, unrounded (for reductions), by the kernel into a float64 output,
    so that the logits are never copied to float64; None where no kernel may compute it (none
    applies, a derivative is to follow, or an elementwise family, whose kernels write the
    logits' dtype only)."""
    axis = family.axis(options)
    if axis is None or not by_kernel(x, operands):
        return None
    axis %= x.ndim
    out = np.empty(tuple(n for i, n in enumerate(x.shape) if i != axis), np.float64)
    return kernel(family, "loss", x, operands, options, out=out)


def logistic_sum(
    x: Array, z: Array, q: Array | None, weight: Array | None, smoothing: float
) -> tuple[float, float] | None:
    """``(sum of weight * loss, sum of weight)`` in float64 by the reduced kernel, which never
    writes the per-element loss (labels smoothed toward 1/2 by ``smoothing``; ``weight`` None
    counts each element once); None where it does not apply: not a kernel call, a derivative
    to follow, or float64 logits (the reference's pairwise float64 sum keeps those closer)."""
    if arrays.dtype_name(x.dtype) == "float64" or not by_kernel(x, (z, q, weight)):
        return None
    x, z, q, weight = map(route.to_numpy, (x, z, q, weight))
    return LOGISTIC.kernel("loss_sum")(x, z, q, weight, smoothing)
