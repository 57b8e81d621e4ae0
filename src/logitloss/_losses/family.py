"""What the generic layers know of a loss family: its formula, its gradient table, its operands
and its kernel entry points.

The reference (``reference``), the kernel-or-reference switch (``compute``), the PyTorch and
JAX autodiff adapters (``_autodiff``) and ``_api.dispatch`` read a :class:`Family` and nothing
else of a loss: adding a loss is a family folder (formula, kernel) with one instance
beside its formula, and its public functions (with their entry in the tools' registry).

Conventions a family's functions follow:

- the generic layers pass a call's operands as a tuple and its options as a dict (not as
  ``*operands, **options``, which would cost each layer a call through a packed argument list);
- formulas, the loss and each gradient of the table, are called
  ``f(x, *operands, xp=xp, **options)`` on arrays in the compute dtype (integer operands as
  they are, ``None`` for an absent optional operand) and return unreduced, unrounded values;
  a gradient is elementwise, the shape the logits and operands broadcast to, per unit
  upstream (before the class axis is summed away);
- the kernel entry points are the kernel module's ``<name>_loss(x, *operands, **options,
  out=None)``, ``<name>_grad_logits(x, *operands, **options, upstream=None)`` and
  ``<name>_loss_and_grad(x, *operands, **options)``, looked up when called (so that they can
  be replaced in tests) and imported then (importing a kernel module imports numba).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .._core import arrays
from .._core.arrays import Array

Formula = Callable[..., Array]
#: A call's operands, the arrays after the logits in ``Family.operands``' order (None: absent).
Operands = tuple[Array | None, ...]
#: A call's options, the formulas' keywords besides ``xp`` (the softmax's ``axis``).
Options = Mapping[str, Any]


@dataclass(frozen=True, eq=False)
class Family:
    """One loss family: the loss, the table of its exact gradients and how to call its kernels.

    Hashed by identity (one instance per family), so that it can key caches (the JAX rules).
    """

    #: The prefix of the kernel module's entry points: ``"logistic"``, ``"softmax"``...
    name: str
    #: The names of the arguments after the logits, in order (``"labels"``, ``"pos_weight"``).
    operands: tuple[str, ...]
    #: The loss formula, ``loss(x, *operands, xp=xp, **options)``.
    loss: Formula
    #: The gradient table: ``"logits"`` or an operand's name -> its elementwise gradient
    #: formula, same signature as ``loss``. An input missing here is not differentiable.
    grads: Mapping[str, Formula]
    #: The absolute name of the module holding the kernel entry points.
    kernels: str
    #: Operands that are integers (class indices): never widened, never differentiated.
    integer: frozenset[str] = frozenset()
    #: Operands that may broadcast against the logits (a scalar or per-class ``pos_weight``,
    #: shared labels): their gradient is summed back to their shape.
    broadcast: frozenset[str] = frozenset()
    #: The class axis the loss sums over: None (elementwise), a fixed axis (``-1``), or the
    #: name of the option that gives it (``"axis"``).
    class_axis: int | str | None = None
    #: Where the integer operands stand in ``operands`` (derived).
    integer_positions: tuple[int, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        positions = tuple(i for i, name in enumerate(self.operands) if name in self.integer)
        object.__setattr__(self, "integer_positions", positions)

    def axis(self, options: Options) -> int | None:
        """The class axis of a call with these options (None for an elementwise loss)."""
        if isinstance(self.class_axis, str):
            return options[self.class_axis]
        return self.class_axis

    def widen(self, xp: Any, x: Array, others: Operands) -> tuple[Any, ...]:
        """``x`` and ``others`` (the operands in order, then any further float arrays such as
        an upstream gradient) in the compute dtype: one ``arrays.widen``, the integer
        operands passed through as they are."""
        if not self.integer_positions:
            return arrays.widen(xp, x, *others)
        floats = list(others)
        for i in self.integer_positions:
            floats[i] = None
        wide = list(arrays.widen(xp, x, *floats))
        for i in self.integer_positions:
            wide[i + 1] = others[i]
        return tuple(wide)

    def kernel(self, entry: str) -> Callable[..., Any]:
        """The kernel module's ``<name>_<entry>`` (``entry``: ``"loss"``, ``"grad_logits"``,
        ``"loss_and_grad"``), read now."""
        return getattr(importlib.import_module(self.kernels), f"{self.name}_{entry}")
