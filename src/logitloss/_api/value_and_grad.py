"""The training losses with their logits' gradient, for training loops without autodiff (NumPy).

``cross_entropy_value_and_grad`` and ``binary_cross_entropy_with_logits_value_and_grad`` take
the loss's arguments and return ``(loss, d loss / d logits)``: on NumPy arrays one pass of the
fused kernels (``_losses.training``, numba), the same pass the PyTorch modules' forward makes.
PyTorch and JAX arrays get their own autodiff's result (``torch.autograd.grad``,
``jax.value_and_grad``), which is the same exact gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import array_api_compat

from .._core.arrays import Array
from . import training


def cross_entropy_value_and_grad(
    logits: Any,
    labels: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    where: Any = None,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    """:func:`cross_entropy` ("mean" or "sum") and its gradient with respect to ``logits``.

    Same arguments and value as :func:`cross_entropy`; the gradient has the logits' shape and
    dtype. On NumPy arrays both come from one kernel pass over the logits (numba required: the
    ``fast`` extra).

    Examples
    --------
    >>> import numpy as np, logitloss
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    >>> loss, grad = logitloss.cross_entropy_value_and_grad(logits, np.array([0, 2]))
    >>> p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    >>> bool(np.isclose(loss, logitloss.cross_entropy(logits, np.array([0, 2]))))
    True
    >>> bool(np.allclose(grad, (p - np.eye(3)[[0, 2]]) / 2))
    True
    """
    options = {"axis": axis, "weight": weight, "ignore_index": ignore_index,
               "label_smoothing": label_smoothing, "z_loss": z_loss, "where": where,
               "reduction": reduction}  # fmt: skip
    return _value_and_grad(
        "cross_entropy_value_and_grad", training.cross_entropy, logits, labels, options
    )


def binary_cross_entropy_with_logits_value_and_grad(
    logits: Any,
    labels: Any,
    *,
    pos_weight: Any = None,
    weight: Any = None,
    label_smoothing: float = 0.0,
    where: Any = None,
    reduction: str = "mean",
) -> tuple[Array, Array]:
    """:func:`binary_cross_entropy_with_logits` ("mean" or "sum") and its gradient with respect
    to ``logits``, as :func:`cross_entropy_value_and_grad`.

    Examples
    --------
    >>> import numpy as np, logitloss
    >>> logits = np.array([[2.0, -1.0], [0.5, 30.0]])
    >>> labels = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> loss, grad = logitloss.binary_cross_entropy_with_logits_value_and_grad(logits, labels)
    >>> bool(np.allclose(grad, (1 / (1 + np.exp(-logits)) - labels) / 4))
    True
    """
    options = {"pos_weight": pos_weight, "weight": weight, "label_smoothing": label_smoothing,
               "where": where, "reduction": reduction}  # fmt: skip
    return _value_and_grad(
        "binary_cross_entropy_with_logits_value_and_grad",
        training.binary_cross_entropy_with_logits, logits, labels, options,
    )  # fmt: skip


def _value_and_grad(
    fn: str, loss: Callable[..., Array], logits: Any, labels: Any, options: dict[str, Any]
) -> tuple[Array, Array]:
    if options["reduction"] == "none":
        raise ValueError(
            f"{fn}: the gradient of a reduced loss only: reduction 'mean' or 'sum', got 'none'"
        )
    if array_api_compat.is_jax_array(logits):
        import jax

        return jax.value_and_grad(lambda v: loss(v, labels, **options))(logits)
    if array_api_compat.is_torch_array(logits):
        import torch

        x = logits.detach().requires_grad_()
        with torch.enable_grad():
            value = loss(x, labels, **options)
        (grad,) = torch.autograd.grad(value, x)
        return value.detach(), grad
    gradient: list[Array] = []
    token = training.GRADIENT.set(gradient)
    try:
        value = loss(logits, labels, **options)
    finally:
        training.GRADIENT.reset(token)
    if not gradient:
        raise RuntimeError(
            f"{fn}: the fused kernels do not apply here (NumPy arrays need numba, the `fast` "
            "extra; not inside reference_path()); use PyTorch or JAX arrays for autodiff"
        )
    return value, gradient[0]
