"""The benchmark's workloads and, for each, the implementations timed side by side.

A workload is one loss on one shape and dtype, in one direction: ``loss`` (the unreduced loss)
or ``loss+grad`` (the loss and its gradient with respect to the logits: ``.backward()`` for
PyTorch tensors, ``value_and_grad`` for JAX, ``GradientTape`` for TensorFlow, the ``*_grad``
function for NumPy). Each gets:

- ``limit``: the memory limit for its traffic, measured in the same run: ``np.add(logits,
  labels)`` for the elementwise losses (two reads, one write, the output allocated the same way:
  ``_core.buffers``), a row sum over the same bytes for the softmax losses;
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

from ..._api import registry
from ..._api.registry import INDICES, Loss
from ..._core import buffers
from .. import peers
from . import threads

Impl = Callable[[], object]
PER_CLASS = "-per-class"  # the workload of a loss with pos_weight given one per class
#: loss+grad's goal: at most this multiple of the loss alone.
GRAD_GOAL = 1.5
#: The fastest peer's goal: at least this many times slower than logitloss.
PEER_GOAL = 2.0


def variants(loss: Loss) -> tuple[str, ...]:
    """The workloads' names for ``loss``: its name, and ``<name>-per-class`` for pos_weight."""
    return (loss.name, loss.name + PER_CLASS) if loss.pos_weight else (loss.name,)


LOSSES = tuple(name for loss in registry.LOSSES for name in variants(loss))


@dataclass(frozen=True)
class Workload:
    loss: str  # a name of LOSSES
    shape: tuple[int, int]
    dtype: str
    direction: str  # "loss" or "loss+grad"

    @property
    def name(self) -> str:
        rows, cols = self.shape
        return f"{self.loss} {rows}x{cols} {self.dtype} {self.direction}"

    @property
    def goal(self) -> float:
        """The goal for logitloss: for a loss, a multiple of the memory limit (1.5x elementwise,
        2x for a loss over a class axis, whose limit is a row sum); for loss+grad, a multiple
        of the loss alone (:data:`GRAD_GOAL`)."""
        if self.direction != "loss":
            return GRAD_GOAL
        return 2.0 if self.spec.class_axis else 1.5

    @property
    def spec(self) -> Loss:
        """The registry's loss."""
        return registry.get(self.loss.removesuffix(PER_CLASS))

    @property
    def per_class(self) -> bool:
        """Whether pos_weight is one per class (else one scalar)."""
        return self.loss.endswith(PER_CLASS)


def shapes(loss: Loss) -> tuple[tuple[int, int], ...]:
    """The issue's shapes: 4096 x 4096 logits for an elementwise loss; rows of 1024 and of
    32768 classes for a loss with a class axis, the wide rows only for class indices."""
    if not loss.class_axis:
        return ((4096, 4096),)
    if loss.labels == INDICES:
        return ((2048, 32768),)
    return ((8192, 1024), (2048, 32768))


def workloads(scale: float = 1.0) -> list[Workload]:
    """The issue's workloads; ``scale`` < 1 shrinks the rows (for a quick run)."""
    found = []
    for dtype in ("float32", "float64"):
        for direction in ("loss", "loss+grad"):
            for loss in registry.LOSSES:
                for name in variants(loss):
                    for rows, cols in shapes(loss):
                        shape = (max(64, int(rows * scale)), cols)
                        found.append(Workload(name, shape, dtype, direction))
    return found


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


@dataclass
class Data:
    x: np.ndarray
    z: np.ndarray  # labels: probabilities, or integer classes
    q: Any  # pos_weight: None, a float, or a per-class array


def make_data(w: Workload, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    rows, cols = w.shape
    loss = w.spec
    x = (rng.standard_normal(w.shape) * 4).astype(w.dtype)
    if loss.labels == INDICES:
        z = rng.integers(0, cols, rows)
    else:
        z = rng.random(w.shape).astype(w.dtype)
        if loss.class_axis:
            z /= z.sum(axis=1, keepdims=True)
    q = None
    if loss.pos_weight:
        q = np.linspace(0.5, 4, cols).astype(w.dtype) if w.per_class else 3.0
    return Data(x, z, q)


# --- logitloss and the baselines ---------------------------------------------------------------


def limit(w: Workload, d: Data) -> Impl:
    """The memory limit: the same bytes read and written by the cheapest NumPy operation, its
    output allocated as logitloss allocates its own (``_core.buffers``: reused memory from
    32 MiB up, where a fresh array's page faults would cost more than the pass)."""
    x, z = d.x, d.z
    if w.spec.labels == INDICES:
        return lambda: x.sum(axis=-1)
    if w.spec.class_axis:
        return lambda: (x.sum(axis=-1), z.sum(axis=-1))
    return lambda: np.add(x, z, out=buffers.empty(x.shape, x.dtype))


def logitloss_numpy(w: Workload, d: Data) -> Impl:
    loss, x, z, q = w.spec, d.x, d.z, d.q
    if w.direction == "loss":
        return lambda: loss.value(z, x, q)
    return lambda: (loss.value(z, x, q), loss.grad(z, x, q))


def numpy_stable(w: Workload, d: Data) -> Impl | None:
    stable = peers.peers_of(w.spec).numpy_stable
    if stable is None:
        return None
    x, z, q, grad = d.x, d.z, d.q, w.direction != "loss"
    return lambda: stable(z, x, q, grad=grad)


def logitloss_torch(w: Workload, d: Data) -> Impl | None:
    torch = _optional("torch")
    if torch is None:
        return None
    tx = torch.from_numpy(d.x).requires_grad_(True)
    tz = torch.from_numpy(d.z)
    tq = None if d.q is None else torch.as_tensor(d.q, dtype=tx.dtype)
    loss = w.spec

    def run() -> None:
        tx.grad = None
        loss.value(tz, tx, tq).sum().backward()

    return run


# --- peers -------------------------------------------------------------------------------------


def peer_torch(w: Workload, d: Data) -> Impl | None:
    torch = _optional("torch")
    if torch is None or not peers.has(w.spec, "torch"):
        return None
    tx = torch.from_numpy(d.x).requires_grad_(w.direction != "loss")
    tz = torch.from_numpy(d.z)
    pos_weight = None if d.q is None else torch.as_tensor(d.q, dtype=tx.dtype)

    def value() -> Any:
        return peers.torch(w.spec, tz, tx, pos_weight)

    if w.direction == "loss":
        return value

    def run() -> None:
        tx.grad = None
        value().sum().backward()

    return run


def peer_jax(w: Workload, d: Data) -> Impl | None:
    """optax's loss under ``jax.jit``; for a loss optax lacks (pos_weight), TensorFlow's
    formula in ``jax.numpy``."""
    jax = _optional("jax")
    optax = _optional("optax")
    loss = w.spec
    formula = peers.peers_of(loss).tensorflow_formula
    if jax is None or optax is None or not (peers.has(loss, "optax") or formula):
        return None
    jax.config.update("jax_enable_x64", True)  # float64 workloads; this process only
    import jax.numpy as jnp

    x, z = jnp.asarray(d.x), jnp.asarray(d.z)
    q = None if d.q is None else jnp.asarray(d.q, dtype=x.dtype)

    def value(x: Any) -> Any:
        if peers.has(loss, "optax"):
            return peers.optax(loss, z, x)
        return formula(z, x, q, xp=jnp)

    if w.direction == "loss":
        f = jax.jit(value)
    else:
        f = jax.jit(jax.value_and_grad(lambda x: value(x).sum()))
    return lambda: jax.block_until_ready(f(x))


def peer_tensorflow(w: Workload, d: Data) -> Impl | None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    tf = _optional("tensorflow")
    if tf is None or not peers.has(w.spec, "tensorflow"):
        return None
    threads.configure_tensorflow(tf, threads.in_use())
    x, z = tf.constant(d.x), tf.constant(d.z)
    q = None if d.q is None else tf.constant(d.q, dtype=x.dtype)

    def value(x: Any) -> Any:
        return peers.tensorflow(w.spec, z, x, q)

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
        "limit": limit(w, d),
        "logitloss": logitloss_numpy(w, d),
        "logitloss-torch": logitloss_torch(w, d) if w.direction == "loss+grad" else None,
        "numpy-stable": numpy_stable(w, d),
    }
    if peers:
        impls.update(torch=peer_torch(w, d), jax=peer_jax(w, d), tensorflow=peer_tensorflow(w, d))
    return {name: f for name, f in impls.items() if f is not None}
