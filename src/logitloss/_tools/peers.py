"""The other ways to compute the losses, which the tools compare logitloss with.

- the **textbook** definitions, written plainly (``logitloss demo``, ``stability``: "naive");
- **TensorFlow's formulas**, as ``tf.nn`` writes them (``nn_impl.py``): ``max(x, 0) - x z +
  log(1 + exp(-|x|))``, the weighted ``(1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))`` with
  ``l = 1 + (q - 1) z``, and ``logsumexp(x) - x_j`` with ``logsumexp = m + log sum exp(x - m)``,
  in any array namespace ``xp`` (NumPy, ``jax.numpy``);
- the **NumPy-stable** loss and gradient a user would write (``logitloss bench``'s
  ``numpy-stable``): TensorFlow's formula with its derivative, or the max-shifted log-softmax;
- the functions of **TensorFlow**, **PyTorch** and **optax** (``bench``, the accuracy report).

Each is found by the registry's loss (``logitloss._api.registry``) through :data:`PEERS`, one
entry per loss name; a loss without an entry, or without one of its fields, has no such peer:
:func:`peers_of` gives empty fields and the library calls raise :class:`Unsupported`.

Formulas take ``(labels, logits, pos_weight)`` in TensorFlow's order (``pos_weight`` ``None``
for the losses without one) and reduce over the last axis for the losses with a class axis,
whose labels they take dense (one-hot for class indices); the libraries are imported on use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._api.registry import Loss

Formula = Callable[..., Any]


class Unsupported(Exception):
    """The library has no such loss (the message says why: optax has no ``pos_weight``)."""


# --- The textbook definitions ------------------------------------------------------------------


def textbook_logistic(z: Any, x: Any, q: Any = None, *, xp: Any = np) -> Any:
    """``-q z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x))``, ``sigmoid(x) = 1 / (1 + e^-x)``
    (``q = None``: 1)."""
    q = 1 if q is None else q
    s = 1 / (1 + xp.exp(-x))
    return -q * z * xp.log(s) - (1 - z) * xp.log(1 - s)


def textbook_softmax(z: Any, x: Any, q: Any = None, *, xp: Any = np) -> Any:
    """``-sum z log(softmax(x))`` with ``softmax(x) = exp(x) / sum(exp(x))``."""
    e = xp.exp(x)
    return -xp.sum(z * xp.log(e / xp.sum(e, axis=-1, keepdims=True)), axis=-1)


# --- TensorFlow's formulas ---------------------------------------------------------------------


def tf_logistic(z: Any, x: Any, q: Any = None, *, xp: Any = np, e: Any = None) -> Any:
    """TensorFlow's sigmoid (``q = None``) or weighted cross-entropy (``log1p``, as its code);
    ``e``, if given, is ``exp(-|x|)`` already computed."""
    e = xp.exp(-xp.abs(x)) if e is None else e
    if q is None:
        return xp.maximum(x, 0) - x * z + xp.log1p(e)
    log_weight = 1 + (q - 1) * z
    return (1 - z) * x + log_weight * (xp.log1p(e) + xp.maximum(-x, 0))


def tf_softmax(z: Any, x: Any, q: Any = None, *, xp: Any = np) -> Any:
    """``sum z (logsumexp(x) - x)`` with ``logsumexp(x) = m + log(sum(exp(x - m)))``,
    ``m = max(x)``."""
    m = xp.max(x, axis=-1, keepdims=True)
    lse = m + xp.log(xp.sum(xp.exp(x - m), axis=-1, keepdims=True))
    return xp.sum(z * (lse - x), axis=-1)


# --- NumPy-stable loss and gradient ------------------------------------------------------------


def stable_logistic(z: Any, x: Any, q: Any = None, *, grad: bool = False) -> Any:
    """TensorFlow's formula in NumPy; with ``grad``, also ``sigmoid(x) - z`` (weighted: ``(1 -
    z) sigmoid(x) - q z (1 - sigmoid(x))``) from the same ``exp(-|x|)``."""
    e = np.exp(-np.abs(x))
    value = tf_logistic(z, x, q, e=e)
    if not grad:
        return value
    s = np.where(x >= 0, 1, e) / (1 + e)
    return value, (s - z if q is None else (1 - z) * s - q * z * (1 - s))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def stable_softmax(z: Any, x: Any, q: Any = None, *, grad: bool = False) -> Any:
    """``-sum z log_softmax(x)`` (max-shifted); with ``grad``, ``softmax(x) sum(z) - z``."""
    log_p = _log_softmax(x)
    value = -(z * log_p).sum(axis=-1)
    if not grad:
        return value
    return value, np.exp(log_p) * z.sum(axis=-1, keepdims=True) - z


def stable_sparse_softmax(labels: Any, x: Any, q: Any = None, *, grad: bool = False) -> Any:
    """``-log_softmax(x)[label]`` of rows ``x`` (2-d) and class indices; with ``grad``,
    ``softmax(x) - onehot(label)``."""
    log_p = _log_softmax(x)
    rows = np.arange(x.shape[0])
    value = -log_p[rows, labels]
    if not grad:
        return value
    p = np.exp(log_p)
    p[rows, labels] -= 1
    return value, p


# --- One entry per loss ------------------------------------------------------------------------


@dataclass(frozen=True)
class Peers:
    """What a loss is compared with; ``None``: no such peer.

    ``textbook``, ``tensorflow_formula``: formulas (module docstring); ``numpy_stable``: a
    formula with a ``grad`` switch (NumPy only); ``tensorflow``, ``torch``, ``optax``: the
    function's name in ``tf.nn``, ``torch.nn.functional`` and ``optax``; ``missing``: why a
    library has none, by library (default: it has no such loss).
    """

    textbook: Formula | None = None
    tensorflow_formula: Formula | None = None
    numpy_stable: Formula | None = None
    tensorflow: str | None = None
    torch: str | None = None
    optax: str | None = None
    missing: dict[str, str] = field(default_factory=dict)


PEERS: dict[str, Peers] = {
    "sigmoid": Peers(
        textbook_logistic,
        tf_logistic,
        stable_logistic,
        tensorflow="sigmoid_cross_entropy_with_logits",
        torch="binary_cross_entropy_with_logits",
        optax="sigmoid_binary_cross_entropy",
    ),
    "weighted": Peers(
        textbook_logistic,
        tf_logistic,
        stable_logistic,
        tensorflow="weighted_cross_entropy_with_logits",
        torch="binary_cross_entropy_with_logits",
        missing={"optax": "no pos_weight"},
    ),
    "softmax": Peers(
        textbook_softmax,
        tf_softmax,
        stable_softmax,
        tensorflow="softmax_cross_entropy_with_logits",
        torch="cross_entropy",
        optax="softmax_cross_entropy",
    ),
    "sparse": Peers(
        textbook_softmax,
        tf_softmax,
        stable_sparse_softmax,
        tensorflow="sparse_softmax_cross_entropy_with_logits",
        torch="cross_entropy",
        optax="softmax_cross_entropy_with_integer_labels",
    ),
}


def peers_of(loss: Loss) -> Peers:
    """The peers of ``loss`` (none for a loss :data:`PEERS` does not list)."""
    return PEERS.get(loss.name, Peers())


def has(loss: Loss, library: str) -> bool:
    """Whether ``library`` (``"tensorflow"``, ``"torch"``, ``"optax"``) has ``loss``."""
    return getattr(peers_of(loss), library) is not None


def _name(loss: Loss, library: str) -> str:
    peer = peers_of(loss)
    name = getattr(peer, library)
    if name is None:
        raise Unsupported(peer.missing.get(library, f"no {loss.title} loss"))
    return name


def tensorflow(loss: Loss, labels: Any, logits: Any, pos_weight: Any = None) -> Any:
    """``tf.nn``'s loss of TensorFlow tensors (``pos_weight`` where the loss has one)."""
    import tensorflow as tf

    function = getattr(tf.nn, _name(loss, "tensorflow"))
    if loss.pos_weight:
        return function(labels=labels, logits=logits, pos_weight=pos_weight)
    return function(labels=labels, logits=logits)


def torch(loss: Loss, labels: Any, logits: Any, pos_weight: Any = None) -> Any:
    """``torch.nn.functional``'s unreduced loss of tensors (``pos_weight`` where it has one)."""
    import torch.nn.functional as F

    function = getattr(F, _name(loss, "torch"))
    if loss.pos_weight:
        return function(logits, labels, reduction="none", pos_weight=pos_weight)
    return function(logits, labels, reduction="none")


def optax(loss: Loss, labels: Any, logits: Any) -> Any:
    """optax's loss of JAX arrays (optax has no ``pos_weight``)."""
    import optax

    return getattr(optax, _name(loss, "optax"))(logits, labels)
