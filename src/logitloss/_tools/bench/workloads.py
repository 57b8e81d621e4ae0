"""The benchmark's workloads and, for each, the implementations timed side by side.

A workload is one loss on one shape and dtype, in one direction: ``loss`` (the unreduced loss)
or ``loss+grad`` (the loss and its gradient with respect to the logits: ``.backward()`` for
PyTorch tensors, ``value_and_grad`` for JAX, ``GradientTape`` for TensorFlow, the ``*_grad``
function for NumPy). Each gets:

- ``limit``: the memory limit for its traffic, measured in the same run: ``np.add(logits,
  labels)`` for the elementwise losses (two reads, one write, the output allocated the same way),
  a row sum over the same bytes for the softmax losses;
- ``logitloss`` (NumPy arrays) and ``logitloss-torch`` (CPU tensors, ``loss+grad`` only);
- ``numpy-stable``: the textbook stable formula in NumPy (TensorFlow's, or max-shifted softmax);
- the peers, where installed: ``torch`` (``torch.nn.functional``), ``jax`` (``jax.jit`` of
  optax's loss), ``tensorflow`` (``tf.function(jit_compile=True)`` of ``tf.nn``).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import logitloss

Impl = Callable[[], object]
LOSSES = ("sigmoid", "weighted", "weighted-per-class", "softmax", "sparse")


@dataclass(frozen=True)
class Workload:
    loss: str
    shape: tuple[int, int]
    dtype: str
    direction: str  # "loss" or "loss+grad"

    @property
    def name(self) -> str:
        rows, cols = self.shape
        return f"{self.loss} {rows}x{cols} {self.dtype} {self.direction}"

    @property
    def goal(self) -> float:
        """The issue's goal for logitloss, as a multiple of the memory limit."""
        return 1.5 if self.direction == "loss" else 2.0


def workloads(scale: float = 1.0) -> list[Workload]:
    """The issue's workloads; ``scale`` < 1 shrinks the rows (for a quick run)."""

    def rows(n: int) -> int:
        return max(64, int(n * scale))

    found = []
    for dtype in ("float32", "float64"):
        for direction in ("loss", "loss+grad"):
            for loss in ("sigmoid", "weighted", "weighted-per-class"):
                found.append(Workload(loss, (rows(4096), 4096), dtype, direction))
            found.append(Workload("softmax", (rows(8192), 1024), dtype, direction))
            found.append(Workload("softmax", (rows(2048), 32768), dtype, direction))
            found.append(Workload("sparse", (rows(2048), 32768), dtype, direction))
    return found


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@dataclass
class Data:
    x: np.ndarray
    z: np.ndarray  # labels: probabilities, or integer classes for "sparse"
    q: Any  # pos_weight: None, a float, or a per-class array


def make_data(w: Workload, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    rows, cols = w.shape
    x = (rng.standard_normal(w.shape) * 4).astype(w.dtype)
    if w.loss == "sparse":
        z = rng.integers(0, cols, rows)
    elif w.loss == "softmax":
        z = rng.random(w.shape).astype(w.dtype)
        z /= z.sum(axis=1, keepdims=True)
    else:
        z = rng.random(w.shape).astype(w.dtype)
    q = {"weighted": 3.0, "weighted-per-class": np.linspace(0.5, 4, cols).astype(w.dtype)}
    return Data(x, z, q.get(w.loss))


# --- logitloss and the baselines ---------------------------------------------------------------


def _loss_fn(loss: str) -> Callable[..., Any]:
    if loss == "sigmoid":
        return logitloss.sigmoid_cross_entropy_with_logits
    if loss.startswith("weighted"):
        return logitloss.weighted_cross_entropy_with_logits
    if loss == "softmax":
        return logitloss.softmax_cross_entropy_with_logits
    return logitloss.sparse_softmax_cross_entropy_with_logits


def _grad_fn(loss: str) -> Callable[..., Any]:
    return {
        "sigmoid": logitloss.sigmoid_cross_entropy_with_logits_grad,
        "weighted": logitloss.weighted_cross_entropy_with_logits_grad,
        "weighted-per-class": logitloss.weighted_cross_entropy_with_logits_grad,
        "softmax": logitloss.softmax_cross_entropy_with_logits_grad,
        "sparse": logitloss.sparse_softmax_cross_entropy_with_logits_grad,
    }[loss]


def _args(w: Workload, x: Any, z: Any, q: Any) -> tuple:
    return (z, x) if q is None else (z, x, q)


def _limit(w: Workload, d: Data) -> Impl:
    x, z = d.x, d.z
    if w.loss == "sparse":
        return lambda: x.sum(axis=-1)
    if w.loss == "softmax":
        return lambda: (x.sum(axis=-1), z.sum(axis=-1))
    return lambda: np.add(x, z)


def _logitloss_numpy(w: Workload, d: Data) -> Impl:
    loss, grad = _loss_fn(w.loss), _grad_fn(w.loss)
    args = _args(w, d.x, d.z, d.q)
    if w.direction == "loss":
        return lambda: loss(*args)
    return lambda: (loss(*args), grad(*args))


def _numpy_stable(w: Workload, d: Data) -> Impl:
    x, z, q = d.x, d.z, d.q

    def logistic() -> Any:
        e = np.exp(-np.abs(x))
        if q is None:
            value = np.maximum(x, 0) - x * z + np.log1p(e)
        else:
            value = (1 - z) * x + (1 + (q - 1) * z) * (np.log1p(e) + np.maximum(-x, 0))
        if w.direction == "loss":
            return value
        s = np.where(x >= 0, 1, e) / (1 + e)
        return value, (s - z if q is None else (1 - z) * s - q * z * (1 - s))

    def softmax() -> Any:
        shifted = x - x.max(axis=-1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        if w.loss == "sparse":
            rows = np.arange(x.shape[0])
            value = -log_p[rows, z]
        else:
            value = -(z * log_p).sum(axis=-1)
        if w.direction == "loss":
            return value
        p = np.exp(log_p)
        if w.loss == "sparse":
            p[rows, z] -= 1
            return value, p
        return value, p * z.sum(axis=-1, keepdims=True) - z

    return softmax if w.loss in ("softmax", "sparse") else logistic


def _logitloss_torch(w: Workload, d: Data) -> Impl | None:
    torch = _optional("torch")
    if torch is None:
        return None
    tx = torch.from_numpy(d.x).requires_grad_(True)
    tz = torch.from_numpy(d.z)
    tq = None if d.q is None else torch.as_tensor(d.q, dtype=tx.dtype)
    loss = _loss_fn(w.loss)

    def run() -> None:
        tx.grad = None
        loss(*_args(w, tx, tz, tq)).sum().backward()

    return run


# --- peers -------------------------------------------------------------------------------------


def _torch(w: Workload, d: Data) -> Impl | None:
    torch = _optional("torch")
    if torch is None:
        return None
    import torch.nn.functional as F

    tx = torch.from_numpy(d.x).requires_grad_(w.direction != "loss")
    tz = torch.from_numpy(d.z)
    pos_weight = None if d.q is None else torch.as_tensor(d.q, dtype=tx.dtype)

    def value() -> Any:
        if w.loss in ("softmax", "sparse"):
            return F.cross_entropy(tx, tz, reduction="none")
        return F.binary_cross_entropy_with_logits(tx, tz, pos_weight=pos_weight, reduction="none")

    if w.direction == "loss":
        return value

    def run() -> None:
        tx.grad = None
        value().sum().backward()

    return run


def _jax(w: Workload, d: Data) -> Impl | None:
    jax = _optional("jax")
    optax = _optional("optax")
    if jax is None or optax is None:
        return None
    jax.config.update("jax_enable_x64", True)  # float64 workloads; this process only
    import jax.numpy as jnp

    x, z = jnp.asarray(d.x), jnp.asarray(d.z)
    q = None if d.q is None else jnp.asarray(d.q, dtype=x.dtype)

    def value(x: Any) -> Any:
        if w.loss == "softmax":
            return optax.softmax_cross_entropy(x, z)
        if w.loss == "sparse":
            return optax.softmax_cross_entropy_with_integer_labels(x, z)
        if q is None:
            return optax.sigmoid_binary_cross_entropy(x, z)
        # optax has no pos_weight: TensorFlow's formula
        log_weight = 1 + (q - 1) * z
        return (1 - z) * x + log_weight * (jnp.log1p(jnp.exp(-jnp.abs(x))) + jnp.maximum(-x, 0))

    if w.direction == "loss":
        f = jax.jit(value)
    else:
        f = jax.jit(jax.value_and_grad(lambda x: value(x).sum()))
    return lambda: jax.block_until_ready(f(x))


def _tensorflow(w: Workload, d: Data) -> Impl | None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = _optional("tensorflow")
    if tf is None:
        return None
    x, z = tf.constant(d.x), tf.constant(d.z)
    q = None if d.q is None else tf.constant(d.q, dtype=x.dtype)

    def value(x: Any) -> Any:
        if w.loss == "softmax":
            return tf.nn.softmax_cross_entropy_with_logits(labels=z, logits=x)
        if w.loss == "sparse":
            return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=z, logits=x)
        if q is None:
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=z, logits=x)
        return tf.nn.weighted_cross_entropy_with_logits(labels=z, logits=x, pos_weight=q)

    @tf.function(jit_compile=True)
    def loss_only(x: Any) -> Any:
        return value(x)

    @tf.function(jit_compile=True)
    def loss_and_grad(x: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(value(x))
        return total, tape.gradient(total, x)

    f = loss_only if w.direction == "loss" else loss_and_grad
    return lambda: [t.numpy() for t in tf.nest.flatten(f(x))]


def implementations(w: Workload, d: Data, peers: bool = True) -> dict[str, Impl]:
    """Every implementation of ``w`` that is installed, the limit first."""
    impls: dict[str, Impl | None] = {
        "limit": _limit(w, d),
        "logitloss": _logitloss_numpy(w, d),
        "logitloss-torch": _logitloss_torch(w, d) if w.direction == "loss+grad" else None,
        "numpy-stable": _numpy_stable(w, d),
    }
    if peers:
        impls.update(torch=_torch(w, d), jax=_jax(w, d), tensorflow=_tensorflow(w, d))
    return {name: f for name, f in impls.items() if f is not None}
