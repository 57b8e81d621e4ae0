"""The public losses as data: one :class:`Loss` per ``tf.nn`` loss, read by the tools.

The command line and the tools built on the library (``logitloss eval``, ``stability``,
``bench``, the demo and the accuracy report) iterate :data:`LOSSES` and ask each entry what they
would otherwise switch on by name: its functions, its kind of labels, whether it takes
``pos_weight``, whether it reduces over a class axis and whether that axis is an argument. A new
loss is one more entry here; the tools' per-loss knowledge of other libraries (TensorFlow's
formulas, PyTorch's and optax's functions: ``_tools/peers.py``) and the exact mpmath values
(``_tools/oracle.py``) are looked up by its :attr:`Loss.name`, and a loss they lack is shown
without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import gradients, tf_nn

# The kinds of labels (Loss.labels).
PROBABILITIES = "probabilities"  # floats, one per logit (a distribution over a class axis)
INDICES = "indices"  # one integer class per row of logits, classes on the last axis


@dataclass(frozen=True)
class Loss:
    """One public loss, as the tools see it.

    Attributes
    ----------
    name : str
        The tools' and the command line's name (``logitloss eval sparse``).
    title : str
        The loss in words, for titles (``"sparse softmax"``).
    function, gradient : callable
        The public loss (``tf.nn`` name and arguments) and its ``*_grad`` function.
    labels : str
        :data:`PROBABILITIES` (floating-point labels shaped like the logits) or :data:`INDICES`
        (integer classes, the logits' shape without its last axis).
    pos_weight : bool
        Whether the functions take ``pos_weight`` (third positional argument).
    class_axis : bool
        Whether the loss reduces over a class axis (one loss per row), or is elementwise (one
        loss per logit: per class, multi-label).
    axis_argument : bool
        Whether the functions take ``axis=`` (the class axis); the others with a class axis
        have their classes on the last axis.
    """

    name: str
    title: str
    function: Callable[..., Any]
    gradient: Callable[..., Any]
    labels: str
    pos_weight: bool = False
    class_axis: bool = False
    axis_argument: bool = False

    def value(self, labels: Any, logits: Any, pos_weight: Any = None, axis: int = -1) -> Any:
        """The loss: ``function`` called with the arguments it takes (``pos_weight`` where it
        has one, ``axis`` where it is an argument; otherwise they are not passed)."""
        return self.function(*self.arguments(labels, logits, pos_weight), **self.options(axis))

    def grad(self, labels: Any, logits: Any, pos_weight: Any = None, axis: int = -1) -> Any:
        """The gradient with respect to the logits: ``gradient``, called as :meth:`value`
        calls ``function``."""
        return self.gradient(*self.arguments(labels, logits, pos_weight), **self.options(axis))

    def arguments(self, labels: Any, logits: Any, pos_weight: Any = None) -> tuple[Any, ...]:
        """The positional arguments of both functions, in TensorFlow's order."""
        return (labels, logits, pos_weight) if self.pos_weight else (labels, logits)

    def options(self, axis: int = -1) -> dict[str, Any]:
        """The keyword arguments of both functions: ``axis`` where they take it."""
        return {"axis": axis} if self.axis_argument else {}


LOSSES: tuple[Loss, ...] = (
    Loss(
        name="sigmoid",
        title="sigmoid",
        function=tf_nn.sigmoid_cross_entropy_with_logits,
        gradient=gradients.sigmoid_cross_entropy_with_logits_grad,
        labels=PROBABILITIES,
    ),
    Loss(
        name="weighted",
        title="weighted",
        function=tf_nn.weighted_cross_entropy_with_logits,
        gradient=gradients.weighted_cross_entropy_with_logits_grad,
        labels=PROBABILITIES,
        pos_weight=True,
    ),
    Loss(
        name="softmax",
        title="softmax",
        function=tf_nn.softmax_cross_entropy_with_logits,
        gradient=gradients.softmax_cross_entropy_with_logits_grad,
        labels=PROBABILITIES,
        class_axis=True,
        axis_argument=True,
    ),
    Loss(
        name="sparse",
        title="sparse softmax",
        function=tf_nn.sparse_softmax_cross_entropy_with_logits,
        gradient=gradients.sparse_softmax_cross_entropy_with_logits_grad,
        labels=INDICES,
        class_axis=True,
    ),
)

NAMES: tuple[str, ...] = tuple(loss.name for loss in LOSSES)


def get(name: str) -> Loss:
    """The loss called ``name`` (:attr:`Loss.name`, or its function's ``tf.nn`` name)."""
    for loss in LOSSES:
        if name in (loss.name, loss.function.__name__):
            return loss
    raise ValueError(f"no loss {name!r}; the losses are {', '.join(NAMES)}")
