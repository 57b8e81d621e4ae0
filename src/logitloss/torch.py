"""Drop-in ``torch.nn`` loss modules on logitloss's exact losses.

``BCEWithLogitsLoss`` and ``CrossEntropyLoss`` take ``torch.nn``'s constructor arguments in
``torch.nn``'s order, keep ``weight`` and ``pos_weight`` as buffers (they follow ``.to()``,
``.cuda()`` and the ``state_dict``, as in torch), and accept the same inputs (classes on
dimension 1 for ``CrossEntropyLoss``), so that a training loop changes one import::

    from logitloss.torch import CrossEntropyLoss   # was: from torch.nn import CrossEntropyLoss

The differences are logitloss's documented improvements: exact values and gradients, the true
limits at infinite logits, 0 rather than NaN for a batch with nothing counted, and "mean" as the
weighted mean for probability targets with class weights (torch divides by the batch size
there) and for ``BCEWithLogitsLoss`` with ``weight`` (torch divides by the number of elements).
The deprecated ``size_average`` and ``reduce`` arguments are refused.

This module imports torch; ``import logitloss`` does not import it.
"""

from __future__ import annotations

from typing import Any

import torch

from ._api.training import binary_cross_entropy_with_logits, cross_entropy
from ._autodiff import torch_training
from ._core import options

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss"]


def _refuse_legacy(cls: str, size_average: Any, reduce: Any) -> None:
    for name, value in (("size_average", size_average), ("reduce", reduce)):
        if value is not None:
            raise ValueError(
                f"{cls}: `{name}` (deprecated in torch) is not supported, "
                f"got {value!r}; use `reduction` ({options.REDUCTION_CHOICES})"
            )


def _plain_step(reduction: str, x: Any, *others: Any) -> bool:
    """Whether a module's call is a plain training step, which goes straight to the fused path
    (``_autodiff.torch_training``) with a few cheap checks: reduced, eager (not compiled, not
    under autocast, no forward-mode tangent), CPU tensors of one floating dtype (and
    the labels), logits that need a gradient and weights that do not. Anything else takes the
    module's full path, with its validation and messages (shapes are checked by the caller)."""
    return (
        reduction != "none"
        and type(x) is torch.Tensor
        and x.requires_grad
        and x.is_cpu
        and x.dtype in _STEP_DTYPES
        and torch.is_grad_enabled()
        and _plain_operands(others, x.dtype)
        and torch_training.eager_kernels_take(x)
    )


def _plain_operands(operands: tuple, dtype: torch.dtype) -> bool:
    """Labels, weights (None or): CPU tensors of the logits' dtype (or int64 labels), no
    gradient."""
    for t in operands:
        if t is not None and not (
            type(t) in _TENSORS
            and t.is_cpu
            and not t.requires_grad
            and (t.dtype == dtype or t.dtype == torch.int64)
        ):
            return False
    return True


_STEP_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_TENSORS = (torch.Tensor, torch.nn.Parameter)


class BCEWithLogitsLoss(torch.nn.Module):
    r"""``torch.nn.BCEWithLogitsLoss`` on :func:`logitloss.binary_cross_entropy_with_logits`.

    Parameters
    ----------
    weight : Tensor, optional
        A weight per element, broadcast to the input (a buffer).
    size_average, reduce : None
        torch's deprecated arguments; anything but None is a ValueError.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" with ``weight`` is the weighted mean ``sum(w l) / sum(w)`` (torch: ``/ N``).
    pos_weight : Tensor, optional
        The weight of positive examples, broadcast to the input (a buffer).
    label_smoothing : float, default 0.0
        Keyword only, an addition to torch's arguments: labels move toward 0.5 (Keras).

    Examples
    --------
    >>> import torch
    >>> from logitloss.torch import BCEWithLogitsLoss
    >>> loss_fn = BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 1.0]))
    >>> logits = torch.tensor([[1.5, -0.5], [40.0, 3.0]], requires_grad=True)
    >>> target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    >>> loss = loss_fn(logits, target)
    >>> loss
    tensor(0.2314, grad_fn=<_ReducedBackward>)
    >>> torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0, 1.0]))(logits, target)
    tensor(0.2314, grad_fn=<BinaryCrossEntropyWithLogitsBackward0>)
    >>> loss.backward()
    >>> logits.grad
    tensor([[-9.1213e-02,  9.4385e-02],
            [-2.1242e-18, -1.1856e-02]])
    """

    weight: torch.Tensor | None
    pos_weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: Any = None,
        reduce: Any = None,
        reduction: str = "mean",
        pos_weight: torch.Tensor | None = None,
        *,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        name = "logitloss.torch.BCEWithLogitsLoss"
        _refuse_legacy(name, size_average, reduce)
        # Checked now, as torch does, rather than at the first batch.
        self.reduction = options.reduction(name, reduction)
        self.label_smoothing = options.real(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # Buffers are read through nn.Module.__getattr__ (a microsecond each): once.
        weight, pos_weight = self.weight, self.pos_weight
        if _plain_step(self.reduction, input, target, weight, pos_weight) and (
            target.shape == input.shape
            and target.dtype == input.dtype
            and (weight is None or weight.shape in (input.shape, input.shape[-1:]))
            and (pos_weight is None or pos_weight.shape in (input.shape, input.shape[-1:]))
        ):
            options = {"smoothing": self.label_smoothing, "reduction": self.reduction}
            operands = (target, pos_weight, weight)
            return torch_training.reduced(
                "binary_cross_entropy", input, operands, options, self._full
            )
        return self._full(input, target)

    def _full(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return binary_cross_entropy_with_logits(
            input,
            target,
            pos_weight=self.pos_weight,
            weight=self.weight,
            label_smoothing=self.label_smoothing,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class CrossEntropyLoss(torch.nn.Module):
    r"""``torch.nn.CrossEntropyLoss`` on :func:`logitloss.cross_entropy`.

    Input ``(C,)``, ``(N, C)`` or ``(N, C, d1, ...)``: classes on dimension 1 (0 for an
    unbatched input), as in torch. Targets are class indices (integer) or probabilities
    (floating, the input's shape).

    Parameters
    ----------
    weight : Tensor, optional
        Class weights, shape ``(C,)`` (a buffer).
    size_average, reduce : None
        torch's deprecated arguments; anything but None is a ValueError.
    ignore_index : int, default -100
        An index target left out of the loss and the mean.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is the weighted mean over counted rows: torch's for index targets; for
        probability targets with ``weight`` logitloss divides by ``sum_i sum_c w_c z_ic``
        (torch: by N). Nothing counted gives 0 (torch: NaN).
    label_smoothing : float, default 0.0
        torch's convention, ``(1 - eps) z + eps / C``.
    z_loss : float, default 0.0
        Keyword only, an addition to torch's arguments: ``z_loss * logsumexp(x)^2`` per row.

    Examples
    --------
    >>> import torch
    >>> from logitloss.torch import CrossEntropyLoss
    >>> loss_fn = CrossEntropyLoss(label_smoothing=0.1)
    >>> logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]], requires_grad=True)
    >>> loss = loss_fn(logits, torch.tensor([0, 2]))
    >>> loss
    tensor(0.3455, grad_fn=<_ReducedBackward>)
    >>> torch.nn.CrossEntropyLoss(label_smoothing=0.1)(logits, torch.tensor([0, 2]))
    tensor(0.3455, grad_fn=<AddBackward0>)
    >>> loss.backward()
    """

    weight: torch.Tensor | None

    def __init__(
        self,
        weight: torch.Tensor | None = None,
        size_average: Any = None,
        ignore_index: int = -100,
        reduce: Any = None,
        reduction: str = "mean",
        label_smoothing: float = 0.0,
        *,
        z_loss: float = 0.0,
    ) -> None:
        super().__init__()
        name = "logitloss.torch.CrossEntropyLoss"
        _refuse_legacy(name, size_average, reduce)
        self.ignore_index = options.integer(name, "ignore_index", ignore_index)
        self.reduction = options.reduction(name, reduction)
        self.label_smoothing = options.real(
            name, "label_smoothing", label_smoothing, low=0.0, high=1.0
        )
        self.z_loss = options.real(name, "z_loss", z_loss, low=0.0)
        self.register_buffer("weight", weight)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weight = self.weight  # a buffer: read through nn.Module.__getattr__, once
        if (
            _plain_step(self.reduction, input, target, weight)
            and input.ndim == 2
            and target.ndim == 1
            and target.dtype == torch.int64
            and target.shape[0] == input.shape[0]
            and input.shape[1] > 0
            and (weight is None or weight.shape == input.shape[1:])
        ):
            options = {"axis": 1, "ignore_index": self.ignore_index,
                       "smoothing": self.label_smoothing, "z_scale": self.z_loss,
                       "reduction": self.reduction}  # fmt: skip
            operands = (target, None, weight, None)
            return torch_training.reduced("cross_entropy", input, operands, options, self._full)
        return self._full(input, target)

    def _full(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(
            input,
            target,
            axis=1 if input.ndim >= 2 else 0,
            weight=self.weight,
            ignore_index=self.ignore_index,
            label_smoothing=self.label_smoothing,
            z_loss=self.z_loss,
            reduction=self.reduction,
        )

    def extra_repr(self) -> str:
        return (
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, "
            f"label_smoothing={self.label_smoothing}, z_loss={self.z_loss}"
        )
