"""Accuracy of logitloss next to TensorFlow, PyTorch and optax, against exact (mpmath) values.

For each loss of the registry (``logitloss._api.registry``, by ``tf.nn`` name) and each dtype
(float16, bfloat16, float32, float64), every library computes the same inputs in that dtype, and
each result is compared with the exact loss of those inputs (``logitloss._tools.oracle``, 50
digits) in ULPs of the dtype:

* a deterministic grid over the whole range of the dtype: logits 0, -0, the smallest subnormal,
  the smallest normal, 1e-10, moderate values, the thresholds where ``exp`` underflows or
  overflows (17, 24, 40, 88, 100, 700, 745, ... where representable), the largest finite value,
  ``+-inf`` and NaN; labels 0, 1, 0.5, tiny ones (eps, smallest normal, smallest subnormal),
  ones near 1 (``1 - eps/2``, ``1 - eps``); ``pos_weight`` 0, 1e-3, 0.5, 1, 2, 30, 1e4;
  softmax rows of 2 to 6 classes built from the same logits (``[20, 0]``, ties, huge spreads,
  infinite logits) with one-hot and soft labels, and the same rows with class indices;
* a seeded random sample: log-uniform logit magnitudes, labels uniform, near 0 and near 1, and
  random softmax rows.

Per (function, dtype, library) the report gives the largest ULP error over points whose exact
value is finite and in the normal range (or zero), the same including subnormal results, the
number of NaN/inf results where the exact value is finite (inputs all finite), the number of
wrong limits among points with a non-finite input (``+-inf`` logits: a result that is not the
exact 0, +inf or finite limit; NaN in must give NaN out), and the number of points. A library
without the function or dtype is ``n/a``.

Run it with ``make accuracy`` (``python benchmarks/accuracy.py``); ``--quick`` takes a smaller
random sample, ``--out DIR`` picks the output folder (default ``benchmarks/results``), which
receives ``accuracy.csv`` and ``accuracy.md``. The table is also printed.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from logitloss._api import registry
from logitloss._api.registry import INDICES, Loss
from logitloss._core import route
from logitloss._tools import oracle, peers

FUNCTIONS = tuple(loss.function.__name__ for loss in registry.LOSSES)
# The losses of the spot checks, by tf.nn name.
SIGMOID = registry.get("sigmoid").function.__name__
WEIGHTED = registry.get("weighted").function.__name__
SOFTMAX = registry.get("softmax").function.__name__
DTYPES = ("float16", "bfloat16", "float32", "float64")
LIBRARIES = ("logitloss", "logitloss-kernels", "tensorflow", "torch", "optax")
TITLES = {
    "logitloss": "logitloss",
    "logitloss-kernels": "logitloss (fast kernels)",
    "tensorflow": "TensorFlow",
    "torch": "PyTorch",
    "optax": "optax",
}
# logitloss's promise: 1 ULP for the narrow dtypes (subnormal results too), 4 ULP for float64.
BOUNDS = {"float16": 1.0, "bfloat16": 1.0, "float32": 1.0, "float64": 4.0}

SEED = 20240611
POS_WEIGHTS = (0.0, 1e-3, 0.5, 1.0, 2.0, 30.0, 1e4)
MAGNITUDES = (
    1e-10, 1e-5, 1e-3, 0.1, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 10.0, 11.0, 12.0, 15.0, 17.0, 18.0,
    20.0, 24.0, 30.0, 36.0, 40.0, 50.0, 88.0, 89.0, 100.0, 104.0, 700.0, 709.0, 710.0, 745.0,
    746.0, 1000.0, 1e4, 1e10, 1e30, 1e100,
)  # fmt: skip


# --------------------------------------------------------------------------- inputs


def np_dtype(dtype: str) -> Any:
    """The NumPy dtype for a dtype name (bfloat16 from ``ml_dtypes``)."""
    if dtype == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(dtype)


def finfo(dtype: str) -> Any:
    """``finfo`` of a dtype name, bfloat16 included."""
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(dtype)


def cast(values: Iterable[float] | np.ndarray, dtype: str) -> np.ndarray:
    """Round float64 values to ``dtype`` and back: float64 arrays holding the dtype's values."""
    with np.errstate(all="ignore"):
        return np.asarray(values, dtype=np.float64).astype(np_dtype(dtype)).astype(np.float64)


def unique(values: Iterable[float]) -> list[float]:
    """Distinct values in order; -0.0 is distinct from 0.0, all NaNs are one."""
    seen: dict[str, float] = {}
    for v in values:
        seen.setdefault(float(v).hex(), float(v))
    return list(seen.values())


def logit_grid(dtype: str) -> list[float]:
    """Deterministic logits spanning the dtype, both signs, with +-inf and NaN."""
    fi = finfo(dtype)
    big, tiny, sub, eps = (float(fi.max), float(fi.tiny), float(fi.smallest_subnormal),
                           float(fi.eps))  # fmt: skip
    # Where exp overflows, where exp(-x) becomes subnormal / underflows, where it drops below eps.
    thresholds = [math.log(big), -math.log(tiny), -math.log(sub), -math.log(eps)]
    thresholds += [t + d for t in thresholds for d in (-0.5, 0.5)]
    magnitudes = [sub, tiny, *MAGNITUDES, *thresholds, big / 2, big]
    finite = [m for m in cast([m for m in magnitudes if m <= big], dtype) if m != 0]
    return unique([0.0, -0.0, *finite, *(-m for m in finite), math.inf, -math.inf, math.nan])


def label_grid(dtype: str) -> list[float]:
    """Deterministic labels in [0, 1]: 0, 1, 0.5, tiny ones, ones just below 1."""
    fi = finfo(dtype)
    eps = float(fi.eps)
    small = [eps, float(fi.tiny), float(fi.smallest_subnormal), 1e-3]
    return unique(cast([0.0, 1.0, 0.5, 0.25, 0.9, 0.999, *small, 1 - eps / 2, 1 - eps], dtype))


def random_logits(rng: np.random.Generator, dtype: str, n: int) -> np.ndarray:
    """Log-uniform magnitudes with random signs: half over the whole range, half in [1e-3, 1e3]."""
    fi = finfo(dtype)
    wide = 10.0 ** rng.uniform(math.log10(float(fi.tiny)), math.log10(float(fi.max)), n - n // 2)
    near = 10.0 ** rng.uniform(-3.0, min(3.0, math.log10(float(fi.max))), n // 2)
    signs = rng.choice([-1.0, 1.0], n)
    return cast(signs * np.minimum(np.concatenate([wide, near]), float(fi.max)), dtype)


def random_labels(rng: np.random.Generator, dtype: str, n: int) -> np.ndarray:
    """Labels in [0, 1]: a third uniform, a third log-uniform near 0, a third near 1."""
    fi = finfo(dtype)
    lo = math.log10(float(fi.smallest_subnormal))
    k = n // 3
    parts = [
        rng.uniform(0.0, 1.0, n - 2 * k),
        10.0 ** rng.uniform(lo, 0.0, k),
        1.0 - 10.0 ** rng.uniform(math.log10(float(fi.eps)) - 0.3, 0.0, k),
    ]
    return cast(np.clip(np.concatenate(parts), 0.0, 1.0), dtype)


def soft_labels(n: int, dtype: str, rng: np.random.Generator) -> list[tuple[float, ...]]:
    """Label rows for ``n`` classes: one-hot on each class, uniform, near one-hot, random."""
    eps = float(finfo(dtype).eps)
    rows = [tuple(1.0 if k == j else 0.0 for k in range(n)) for j in range(n)]
    rows.append(tuple([1.0 / n] * n))
    rows.append((1.0 - eps, *([eps / (n - 1)] * (n - 1))))
    rows.append(tuple(rng.dirichlet([0.5] * n)))
    return [tuple(cast(r, dtype)) for r in rows]


def row_grid(dtype: str) -> list[tuple[float, ...]]:
    """Deterministic softmax rows of 2..6 classes from the logit grid, plus special rows."""
    big = float(finfo(dtype).max)
    rows: list[tuple[float, ...]] = []
    for v in logit_grid(dtype):
        rows += [(v, 0.0), (v, v), (v, -v), (0.0, v, 1.0), (v, v, 0.0, -v),
                 (v, 20.0, -20.0, 1.0, 0.0, v / 2)]  # fmt: skip
    inf, nan = math.inf, math.nan
    rows += [
        (20.0, 0.0), (0.0, 20.0), (1.0, 1.0, 1.0, 1.0, 1.0, 1.0), (big, -big), (big, big, big),
        (big, big), (-big, -big, -big), (inf, 0.0, 1.0), (inf, inf), (-inf, -inf), (-inf, 0.0),
        (inf, -inf, 3.0), (-inf, -inf, 5.0), (nan, 0.0), (0.0, 1.0, nan),
        (88.0, 0.0, -88.0, 100.0, -100.0), (700.0, -700.0, 0.0), (17.0, 0.0, -17.0, 24.0, -24.0),
        (10.0, 9.0, 8.0, 7.0, 6.0, 5.0), (1e4, 1e4, -1e4),
    ]  # fmt: skip
    out = []
    for r in rows:
        if all(math.isnan(v) or abs(v) <= big or math.isinf(v) for v in r):
            out.append(tuple(cast(r, dtype)))
    return out


def random_rows(rng: np.random.Generator, dtype: str, n: int) -> list[tuple[float, ...]]:
    """Random rows of 2..6 classes: Gaussian logits at log-uniform scales, some grid values."""
    grid = logit_grid(dtype)
    top = min(3.0, math.log10(float(finfo(dtype).max)) - 1)
    rows = []
    for _ in range(n):
        k = int(rng.integers(2, 7))
        values = rng.standard_normal(k) * 10.0 ** rng.uniform(-3.0, top)
        if rng.random() < 0.15:
            values[int(rng.integers(k))] = grid[int(rng.integers(len(grid)))]
        rows.append(tuple(cast(values, dtype)))
    return rows


# --------------------------------------------------------------------------- cases


@dataclass
class Group:
    """Inputs of one shape: elementwise ``(N,)`` arrays, or ``(N, classes)`` rows."""

    x: np.ndarray
    z: np.ndarray  # float labels, or int64 class indices for the sparse loss
    q: np.ndarray | None = None


@dataclass
class Cases:
    """All inputs of one function and dtype, with their exact losses."""

    function: str
    dtype: str
    groups: list[Group]
    exact: list[Any] = field(default_factory=list)
    limit: list[bool] = field(default_factory=list)

    def point(self, index: int) -> tuple[Group, int]:
        """The group and position of the ``index``-th point."""
        for g in self.groups:
            if index < len(g.x):
                return g, index
            index -= len(g.x)
        raise IndexError(index)

    def describe(self, index: int) -> str:
        """The inputs of one point, in the dtype's shortest notation."""
        g, i = self.point(index)
        f = formatter(self.dtype)
        if g.x.ndim == 1:
            text = f"x={f(g.x[i])}, z={f(g.z[i])}"
            return text if g.q is None else f"{text}, q={f(g.q[i])}"
        xs = ", ".join(f(v) for v in g.x[i])
        if g.z.ndim == 1:
            return f"x=[{xs}], label={int(g.z[i])}"
        return f"x=[{xs}], z=[{', '.join(f(v) for v in g.z[i])}]"


def formatter(dtype: str) -> Callable[[float], str]:
    """Shortest text of a value of ``dtype`` (``24``, ``0.99999994``, ``-inf``)."""
    kind = np_dtype(dtype).type

    def fmt(v: float) -> str:
        text = str(kind(v))
        return text[:-2] if text.endswith(".0") else text

    return fmt


def elementwise_cases(function: str, dtype: str, n_random: int, seed: int) -> Cases:
    """Inputs of an elementwise loss (sigmoid, weighted): the grid (logits x labels [x
    pos_weights]) and a sample."""
    loss = registry.get(function)
    rng = np.random.default_rng([seed, DTYPES.index(dtype), FUNCTIONS.index(function)])
    xs, zs = logit_grid(dtype), label_grid(dtype)
    weights = list(cast(POS_WEIGHTS, dtype)) if loss.pos_weight else [None]
    grid = [(x, z, q) for x in xs for z in zs for q in weights]
    x = np.array([p[0] for p in grid] + list(random_logits(rng, dtype, n_random)))
    z = np.array([p[1] for p in grid] + list(random_labels(rng, dtype, n_random)))
    q = None
    if loss.pos_weight:
        sample = 10.0 ** rng.uniform(-3.0, 4.0, n_random)
        sample[rng.random(n_random) < 0.05] = 0.0
        q = np.array([p[2] for p in grid] + list(cast(sample, dtype)))
    return Cases(function, dtype, [Group(x, z, q)])


def row_cases(function: str, dtype: str, n_random: int, seed: int) -> Cases:
    """Inputs of a loss with a class axis, soft labels (softmax) or class indices (sparse),
    grouped by number of classes."""
    indices = registry.get(function).labels == INDICES
    rng = np.random.default_rng([seed, DTYPES.index(dtype), FUNCTIONS.index(function)])
    rows = row_grid(dtype)
    n_grid = len(rows)
    rows += random_rows(rng, dtype, n_random)
    points: dict[int, tuple[list[tuple[float, ...]], list[Any]]] = {}
    for k, row in enumerate(rows):
        n = len(row)
        if indices:
            labels: list[Any] = list(range(n)) if k < n_grid else [int(rng.integers(n))]
        elif k < n_grid:
            labels = soft_labels(n, dtype, rng)
        else:
            one_hot = rng.random() < 0.5
            z = np.eye(n)[rng.integers(n)] if one_hot else rng.dirichlet([0.5] * n)
            labels = [tuple(cast(z, dtype))]
        xs, zs = points.setdefault(n, ([], []))
        xs += [row] * len(labels)
        zs += labels
    label_type = np.int64 if indices else np.float64
    groups = [
        Group(np.array(xs, dtype=np.float64), np.array(zs, dtype=label_type))
        for _, (xs, zs) in sorted(points.items())
    ]
    return Cases(function, dtype, groups)


def points(cases: Cases) -> Iterable[tuple[oracle.Exact, tuple, bool]]:
    """Each point of ``cases``: its exact formula and arguments (``oracle.point``), and whether
    an input is infinite or NaN (the exact value is a limit)."""
    loss = registry.get(cases.function)
    for g in cases.groups:
        for i in range(len(g.x)):
            formula, arguments = oracle.point(loss, g.x[i], g.z[i], None if g.q is None else g.q[i])
            flat = [v for a in arguments for v in (a if isinstance(a, tuple) else (a,))]
            yield formula, arguments, not all(math.isfinite(v) for v in flat)


def exact_values(cases: Cases, cache: dict[tuple, Any]) -> Cases:
    """Fill ``cases.exact`` and ``cases.limit``, reusing exact values already computed;
    ``cases``."""
    for formula, arguments, limit in points(cases):
        key = (formula.name, *arguments)
        if key not in cache:
            cache[key] = formula.value(*arguments)
        cases.exact.append(cache[key])
        cases.limit.append(limit)
    return cases


# --------------------------------------------------------------------------- libraries


def _inputs(loss: Loss, dtype: str, g: Group) -> tuple[np.ndarray, np.ndarray, Any]:
    """Labels, logits and pos_weight of ``g`` as NumPy arrays of ``dtype`` (class indices as
    they are)."""
    dt = np_dtype(dtype)
    labels = g.z if loss.labels == INDICES else g.z.astype(dt)
    q = g.q.astype(dt) if loss.pos_weight and g.q is not None else None
    return labels, g.x.astype(dt), q


def run_logitloss(function: str, dtype: str, g: Group) -> np.ndarray:
    """logitloss on NumPy arrays of ``dtype``."""
    loss = registry.get(function)
    out = loss.value(*_inputs(loss, dtype, g))
    if out.dtype != np_dtype(dtype):
        raise TypeError(f"logitloss returned {out.dtype} for {dtype}")
    return np.asarray(out).astype(np.float64)


def run_logitloss_grad(function: str, dtype: str, g: Group) -> np.ndarray:
    """logitloss's ``_grad`` functions (w.r.t. the logits) on NumPy arrays of ``dtype``."""
    loss = registry.get(function)
    out = loss.grad(*_inputs(loss, dtype, g))
    if out.dtype != np_dtype(dtype):
        raise TypeError(f"logitloss returned {out.dtype} for {dtype}")
    return np.asarray(out).astype(np.float64)


def run_logitloss_kernels(function: str, dtype: str, g: Group) -> np.ndarray:
    """logitloss's fused CPU kernels (``_kernels``, which NumPy arrays of 16k elements or more
    and CPU tensors take) on the same arrays: the public functions inside
    ``route.kernel_path``, which sends NumPy arrays of every size to them."""
    with route.kernel_path():
        return run_logitloss(function, dtype, g)


def run_logitloss_kernels_grad(function: str, dtype: str, g: Group) -> np.ndarray:
    """The kernels' gradient w.r.t. the logits."""
    with route.kernel_path():
        return run_logitloss_grad(function, dtype, g)


def _tf_loss(function: str, g: Group, x: Any) -> Any:
    """The ``tf.nn`` loss of ``g``'s labels (and pos_weight) at the logits tensor ``x``."""
    import tensorflow as tf

    loss = registry.get(function)
    labels = tf.constant(g.z, dtype=tf.int64 if loss.labels == INDICES else x.dtype)
    q = tf.constant(g.q, dtype=x.dtype) if loss.pos_weight else None
    return peers.tensorflow(loss, labels, x, q)


def run_tensorflow(function: str, dtype: str, g: Group) -> np.ndarray:
    """``tf.nn`` on ``tf.constant`` tensors of ``dtype``."""
    import tensorflow as tf

    dt = getattr(tf, dtype)
    out = _tf_loss(function, g, tf.constant(g.x, dtype=dt))
    if out.dtype != dt:
        raise TypeError(f"TensorFlow returned {out.dtype} for {dtype}")
    return tf.cast(out, tf.float64).numpy()


def run_tensorflow_grad(function: str, dtype: str, g: Group) -> np.ndarray:
    """The gradient of the sum of the ``tf.nn`` losses, by ``tf.GradientTape``."""
    import tensorflow as tf

    dt = getattr(tf, dtype)
    x = tf.constant(g.x, dtype=dt)
    with tf.GradientTape() as tape:
        tape.watch(x)
        total = tf.reduce_sum(_tf_loss(function, g, x))
    out = tape.gradient(total, x)
    if out.dtype != dt:
        raise TypeError(f"TensorFlow returned {out.dtype} for {dtype}")
    return tf.cast(out, tf.float64).numpy()


def _torch_loss(function: str, g: Group, x: Any) -> Any:
    """``torch.nn.functional``'s loss of ``g``'s labels (and pos_weight) at the tensor ``x``."""
    import torch

    loss = registry.get(function)
    z = torch.tensor(g.z, dtype=torch.int64 if loss.labels == INDICES else x.dtype)
    pos_weight = None if g.q is None else torch.tensor(g.q, dtype=x.dtype)
    return peers.torch(loss, z, x, pos_weight)


def run_torch(function: str, dtype: str, g: Group) -> np.ndarray:
    """``torch.nn.functional`` on CPU tensors of ``dtype``."""
    import torch

    dt = getattr(torch, dtype)
    out = _torch_loss(function, g, torch.tensor(g.x, dtype=dt))
    if out.dtype != dt:
        raise TypeError(f"PyTorch returned {out.dtype} for {dtype}")
    return out.detach().to(torch.float64).numpy()


def run_torch_grad(function: str, dtype: str, g: Group) -> np.ndarray:
    """The gradient of the sum of the PyTorch losses, by autograd."""
    import torch

    dt = getattr(torch, dtype)
    x = torch.tensor(g.x, dtype=dt, requires_grad=True)
    _torch_loss(function, g, x).sum().backward()
    out = x.grad
    if out is None or out.dtype != dt:
        raise TypeError(f"PyTorch returned no {dtype} gradient")
    return out.to(torch.float64).numpy()


def _optax_loss(function: str, g: Group, x: Any) -> Any:
    """optax's loss of ``g``'s labels at the JAX array ``x`` (64-bit mode on;
    ``peers.Unsupported`` where optax has no such loss)."""
    import jax.numpy as jnp

    loss = registry.get(function)
    z = jnp.asarray(g.z, dtype=jnp.int64 if loss.labels == INDICES else x.dtype)
    return peers.optax(loss, z, x)


def run_optax(function: str, dtype: str, g: Group) -> np.ndarray:
    """optax on JAX arrays of ``dtype`` (64-bit mode on)."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        dt = getattr(jnp, dtype)
        out = _optax_loss(function, g, jnp.asarray(g.x, dtype=dt))
        if out.dtype != dt:
            raise TypeError(f"optax returned {out.dtype} for {dtype}")
        return np.asarray(out).astype(np.float64)


def run_optax_grad(function: str, dtype: str, g: Group) -> np.ndarray:
    """The gradient of the sum of the optax losses, by ``jax.jit(jax.grad(...))`` (64-bit mode
    on; compiled, as in training, and one compilation per shape instead of one per operation)."""
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        dt = getattr(jnp, dtype)
        x = jnp.asarray(g.x, dtype=dt)
        out = jax.jit(jax.grad(lambda v: jnp.sum(_optax_loss(function, g, v))))(x)
        if out.dtype != dt:
            raise TypeError(f"optax returned {out.dtype} for {dtype}")
        return np.asarray(out).astype(np.float64)


Runner = Callable[[str, str, Group], np.ndarray]
RUNNERS: dict[str, tuple[str, Runner]] = {
    "logitloss": ("logitloss", run_logitloss),
    "logitloss-kernels": ("numba", run_logitloss_kernels),
    "tensorflow": ("tensorflow", run_tensorflow),
    "torch": ("torch", run_torch),
    "optax": ("optax", run_optax),
}
GRAD_RUNNERS: dict[str, tuple[str, Runner]] = {
    "logitloss": ("logitloss", run_logitloss_grad),
    "logitloss-kernels": ("numba", run_logitloss_kernels_grad),
    "tensorflow": ("tensorflow", run_tensorflow_grad),
    "torch": ("torch", run_torch_grad),
    "optax": ("optax", run_optax_grad),
}


def installed(module: str) -> bool:
    """Whether ``module`` imports."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------- metrics


def score(cases: Cases, computed: np.ndarray) -> dict[str, Any]:
    """The metrics of one library's results on ``cases`` (same order as ``cases.exact``)."""
    _, emin = oracle.FORMATS[cases.dtype]
    rounds_to_inf = oracle.rounds_to_infinity(cases.dtype)
    normal = 2.0**emin
    max_normal = max_all = 0.0
    worst_normal = -1
    nan_or_inf = wrong_limits = 0
    failure = ""
    for i, (c, e) in enumerate(zip(computed.tolist(), cases.exact, strict=True)):
        finite_exact = bool(e == e) and abs(e) != math.inf
        if finite_exact and (math.isfinite(c) or (abs(e) >= rounds_to_inf and c == math.inf)):
            u = 0.0 if math.isinf(c) else oracle.ulp_error(c, e, cases.dtype)
            max_all = max(max_all, u)
            if (e == 0 or abs(e) >= normal) and u > max_normal:
                max_normal, worst_normal = u, i
            continue
        # NaN where the exact value is finite, inf where it rounds to a finite value, or (inputs
        # with inf or NaN logits) a result other than the exact limit: NaN, +inf or finite.
        if not finite_exact and oracle.ulp_error(c, e, cases.dtype) == 0:
            continue
        if cases.limit[i]:
            wrong_limits += 1
        else:
            nan_or_inf += 1
        if not failure:
            failure = _example(cases, i, c)
    return {
        "max_ulp_normal": max_normal,
        "max_ulp_all": max_all,
        "nan_or_inf_where_finite": nan_or_inf,
        "wrong_limits": wrong_limits,
        "points": len(cases.exact),
        "limit_points": sum(cases.limit),
        "worst_input": _example(cases, worst_normal, computed[worst_normal])
        if worst_normal >= 0
        else "",
        "failure_example": failure,
    }


def _example(cases: Cases, index: int, computed: float) -> str:
    """``inputs -> result (exact value)``, to the precision of the dtype."""
    digits = {"float16": 5, "bfloat16": 4, "float32": 9, "float64": 17}[cases.dtype]
    exact = _fmt_exact(cases.exact[index], digits)
    return f"{cases.describe(index)} -> {formatter(cases.dtype)(computed)} (exact {exact})"


def _fmt_exact(value: Any, digits: int) -> str:
    """An mpmath value to ``digits`` digits; ``10^(-2.944e38)`` far outside every format."""
    import mpmath

    if mpmath.isfinite(value) and value != 0 and abs(mpmath.log10(abs(value))) > 1000:
        return f"10^({mpmath.nstr(mpmath.log10(abs(value)), 4)})"
    return str(mpmath.nstr(value, digits))


def compute(
    cases: Cases, library: str, runners: dict[str, tuple[str, Runner]] = RUNNERS
) -> np.ndarray | str:
    """One library's results on every point of ``cases`` (float64, each group raveled), or why
    there are none; ``runners`` picks losses (``RUNNERS``) or gradients (``GRAD_RUNNERS``)."""
    module, runner = runners[library]
    if not installed(module):
        return "not installed"
    try:
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = [np.ravel(runner(cases.function, cases.dtype, g)) for g in cases.groups]
    except peers.Unsupported as exc:
        return f"n/a: {exc}"
    except Exception as exc:  # a dtype or function the library does not support
        return f"n/a: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}"
    return np.concatenate(parts).astype(np.float64)


def evaluate(cases: Cases, library: str) -> dict[str, Any]:
    """One library on ``cases``: metrics, or the reason it could not run."""
    row: dict[str, Any] = {
        "quantity": "loss",
        "function": cases.function,
        "dtype": cases.dtype,
        "library": library,
    }
    computed = compute(cases, library)
    if isinstance(computed, str):
        return {**row, "status": computed}
    return {**row, "status": "ok", **score(cases, computed)}


def measure(
    quick: bool,
    *,
    functions: Sequence[str] = FUNCTIONS,
    dtypes: Sequence[str] = DTYPES,
    libraries: Sequence[str] = LIBRARIES,
    seed: int = SEED,
) -> list[dict[str, Any]]:
    """Every (function, dtype, library) row of the report; ``quick`` samples fewer points."""
    sizes = (200, 40) if quick else (20000, 2000)
    return _report_rows(sizes, functions, dtypes, libraries, seed, exact_values, evaluate)


def _report_rows(
    sizes: tuple[int, int],
    functions: Sequence[str],
    dtypes: Sequence[str],
    libraries: Sequence[str],
    seed: int,
    prepare: Callable[[Cases, dict[tuple, Any]], Any],
    evaluate_one: Callable[[Any, str], dict[str, Any]],
) -> list[dict[str, Any]]:
    """One row per (function, dtype, library): the cases of each function and dtype (``sizes``:
    random elementwise points and rows), ``prepare``d with the exact values (one cache for
    all), then ``evaluate_one`` per library."""
    n_elementwise, n_rows = sizes
    cache: dict[tuple, Any] = {}
    rows = []
    for function in functions:
        for dtype in dtypes:
            if registry.get(function).class_axis:
                cases = row_cases(function, dtype, n_rows, seed)
            else:
                cases = elementwise_cases(function, dtype, n_elementwise, seed)
            prepared = prepare(cases, cache)
            rows += [evaluate_one(prepared, library) for library in libraries]
    return rows


def _point_group(
    function: str, x: Sequence[Any], z: Sequence[Any], q: Sequence[float] | None, dtype: str | None
) -> Group:
    """A group of a few given points (rows of logits for a loss with a class axis), rounded to
    ``dtype`` where given (class indices as they are)."""
    loss = registry.get(function)

    def values(v: Any) -> np.ndarray:
        return np.asarray(v, dtype=np.float64) if dtype is None else cast(v, dtype)

    return Group(
        values(np.array(x, dtype=np.float64, ndmin=2 if loss.class_axis else 1)),
        np.array(z, dtype=np.int64) if loss.labels == INDICES else values(z),
        None if q is None else values(q),
    )


def point_cases(
    function: str, dtype: str, x: Sequence[Any], z: Sequence[Any], q: Sequence[float] | None = None
) -> Cases:
    """Cases of a few given points (rows of logits for the softmax losses), with exact values."""
    return exact_values(Cases(function, dtype, [_point_group(function, x, z, q, None)]), {})


# The failures of the peers the report should make visible, one input each, in float32.
SPOT_CHECKS: tuple[tuple[str, list[Any], list[Any], list[float] | None], ...] = (
    (SIGMOID, [24.0], [1 - 2.0**-23], None),
    (WEIGHTED, [-20.0], [0.0], [2.0]),
    (SOFTMAX, [[20.0, 0.0]], [[1.0, 0.0]], None),
    (SIGMOID, [math.inf], [1.0], None),
    (SOFTMAX, [[math.inf, 0.0]], [[1.0, 0.0]], None),
)


def spot_checks(libraries: Sequence[str] = LIBRARIES) -> list[dict[str, Any]]:
    """Each library on each of ``SPOT_CHECKS`` (float32): result, exact value, ULP error."""
    out = []
    for function, x, z, q in SPOT_CHECKS:
        cases = point_cases(function, "float32", x, z, q)
        for library in libraries:
            row: dict[str, Any] = {
                "function": function,
                "input": cases.describe(0),
                "exact": _fmt_exact(cases.exact[0], 9),
                "library": library,
                "limit": cases.limit[0],
            }
            computed = compute(cases, library)
            if isinstance(computed, str):
                out.append({**row, "status": computed})
                continue
            c = float(computed[0])
            ulp = oracle.ulp_error(c, cases.exact[0], "float32")
            out.append({**row, "status": "ok", "result": formatter("float32")(c), "ulp": ulp})
    return out


# --------------------------------------------------------------------------- gradients
#
# The gradient w.r.t. the logits of the sum of the losses, one point per logit (each class of
# each softmax row), against ``oracle.logistic_grad`` / ``oracle.softmax_grad``. Besides the
# error in ULPs of the result, each point has the error in "scale-ULP": ULPs of the larger of
# the two terms that cancel (``(1 - z) sigma(x)`` and ``q z sigma(-x)``; ``softmax_j sum(z)``
# and ``z_j``), the error every formula makes near the gradient's zero.

# logitloss's promise for the logits' gradient: 1 ULP of the result for the narrow dtypes,
# 8 scale-ULP for float64 (for scales in the normal range).
GRAD_BOUNDS = {"float16": 1.0, "bfloat16": 1.0, "float32": 1.0, "float64": 8.0}


@dataclass
class GradCases:
    """All logits of one function and dtype as gradient points, with exact values and scales."""

    cases: Cases
    exact: list[Any] = field(default_factory=list)
    scale: list[Any] = field(default_factory=list)
    limit: list[bool] = field(default_factory=list)
    where: list[tuple[int, int | None]] = field(default_factory=list)  # (row, class)

    @property
    def function(self) -> str:
        return self.cases.function

    @property
    def dtype(self) -> str:
        return self.cases.dtype

    def describe(self, index: int) -> str:
        """The inputs of one point, with the class of a softmax row (``d/dx_1``)."""
        row, j = self.where[index]
        text = self.cases.describe(row)
        return text if j is None else f"{text}, d/dx_{j}"


def grad_cases(cases: Cases, cache: dict[tuple, Any]) -> GradCases:
    """The gradient points of ``cases`` with their exact values and scales (cached by input)."""
    gc = GradCases(cases)
    class_axis = registry.get(cases.function).class_axis
    for row, (formula, arguments, limit) in enumerate(points(cases)):
        key = (formula.name, *arguments)
        if key not in cache:
            cache[key] = (formula.grad(*arguments), formula.grad_scale(*arguments))
        exact, scale = cache[key]
        classes: list[int | None] = list(range(len(exact))) if class_axis else [None]
        for j, e, s in zip(classes, exact, scale, strict=True):
            gc.exact.append(e)
            gc.scale.append(s)
            gc.limit.append(limit)
            gc.where.append((row, j))
    return gc


def grad_score(gc: GradCases, computed: np.ndarray) -> dict[str, Any]:
    """The metrics of one library's gradients on ``gc``: ULP and scale-ULP maxima (normal
    range, and all points), NaN/inf where the gradient is finite, wrong limits. The worst
    inputs: of the ULP error over all points (the narrow dtypes' bound includes subnormal
    results) and of the scale-ULP error over normal scales (float64's bound)."""
    dtype = gc.dtype
    normal = 2.0 ** oracle.FORMATS[dtype][1]
    ulp_normal = ulp_all = scale_normal = scale_all = 0.0
    worst_ulp = worst_scale = -1
    nan_or_inf = wrong_limits = 0
    failure = ""
    for i, (c, e, s) in enumerate(zip(computed.tolist(), gc.exact, gc.scale, strict=True)):
        finite_exact = bool(e == e) and abs(e) != math.inf
        u = oracle.ulp_error(c, e, dtype)
        if finite_exact and (math.isfinite(c) or u == 0):  # inf only where exact rounds to it
            # An error beyond the float range (0.5 for an exact 0 is 2^1073 float64 subnormal
            # ULPs) is a huge error, not a NaN: counted as the largest float.
            u = min(u, sys.float_info.max)
            su = min(oracle.scale_ulp_error(c, e, s, dtype), sys.float_info.max)
            if u > ulp_all:
                ulp_all, worst_ulp = u, i
            scale_all = max(scale_all, su)
            if (e == 0 or abs(e) >= normal) and u > ulp_normal:
                ulp_normal = u
            if (s == 0 or abs(s) >= normal) and su > scale_normal:
                scale_normal, worst_scale = su, i
            continue
        if not finite_exact and u == 0:
            continue
        if gc.limit[i]:
            wrong_limits += 1
        else:
            nan_or_inf += 1
        if not failure:
            failure = _grad_example(gc, i, c)
    return {
        "max_ulp_normal": ulp_normal,
        "max_ulp_all": ulp_all,
        "max_scale_ulp_normal": scale_normal,
        "max_scale_ulp_all": scale_all,
        "nan_or_inf_where_finite": nan_or_inf,
        "wrong_limits": wrong_limits,
        "points": len(gc.exact),
        "limit_points": sum(gc.limit),
        "worst_input": _grad_example(gc, worst_ulp, computed[worst_ulp]) if worst_ulp >= 0 else "",
        "worst_scale_input": _grad_example(gc, worst_scale, computed[worst_scale])
        if worst_scale >= 0
        else "",
        "failure_example": failure,
    }


def _grad_example(gc: GradCases, index: int, computed: float) -> str:
    """``inputs -> gradient (exact value)``, to the precision of the dtype."""
    digits = {"float16": 5, "bfloat16": 4, "float32": 9, "float64": 17}[gc.dtype]
    exact = _fmt_exact(gc.exact[index], digits)
    return f"{gc.describe(index)} -> {formatter(gc.dtype)(computed)} (exact {exact})"


def grad_evaluate(gc: GradCases, library: str) -> dict[str, Any]:
    """One library's gradients on ``gc``: metrics, or the reason it could not run."""
    row: dict[str, Any] = {
        "quantity": "grad_logits",
        "function": gc.function,
        "dtype": gc.dtype,
        "library": library,
    }
    computed = compute(gc.cases, library, GRAD_RUNNERS)
    if isinstance(computed, str):
        return {**row, "status": computed}
    return {**row, "status": "ok", **grad_score(gc, computed)}


def measure_gradients(
    quick: bool,
    *,
    functions: Sequence[str] = FUNCTIONS,
    dtypes: Sequence[str] = DTYPES,
    libraries: Sequence[str] = LIBRARIES,
    seed: int = SEED,
) -> list[dict[str, Any]]:
    """Every (function, dtype, library) row of the gradient report: the whole grid and a
    smaller random sample than the losses' (5,000 elementwise points, 1,000 softmax rows)."""
    sizes = (200, 40) if quick else (5000, 1000)
    return _report_rows(sizes, functions, dtypes, libraries, seed, grad_cases, grad_evaluate)


def grad_point_cases(
    function: str, dtype: str, x: Sequence[Any], z: Sequence[Any], q: Sequence[float] | None = None
) -> GradCases:
    """Gradient points of a few given inputs (rows of logits for the softmax losses), rounded
    to ``dtype`` first (``q = 1e-3`` is the float32 nearest 1e-3 for every library and the
    oracle alike)."""
    return grad_cases(Cases(function, dtype, [_point_group(function, x, z, q, dtype)]), {})


# The peers' gradient failures, one input each in float32, and the entry shown (a class of a
# softmax row): every framework rounds sigma(x) - z to 0 at x = 1e-10, z = 0.5; TF's weighted
# loss differentiates |x| and relu at 0 to 0 (1.0 for z = 0, exact 0.5); PyTorch's l sigma(x) -
# q z has the wrong sign at x = 80, z = 1, q = 1e-3; a confident softmax rounds to 0; an
# infinite logit gives NaN.
GRAD_SPOT_CHECKS: tuple[tuple[str, list[Any], list[Any], list[float] | None, int], ...] = (
    (SIGMOID, [1e-10], [0.5], None, 0),
    (WEIGHTED, [0.0], [0.0], [3.0], 0),
    (WEIGHTED, [80.0], [1.0], [1e-3], 0),
    (SOFTMAX, [[20.0, 0.0]], [[1.0, 0.0]], None, 0),
    (SOFTMAX, [[math.inf, 0.0]], [[1.0, 0.0]], None, 1),
)


def grad_spot_checks(libraries: Sequence[str] = LIBRARIES) -> list[dict[str, Any]]:
    """Each library's gradient on each of ``GRAD_SPOT_CHECKS`` (float32)."""
    out = []
    for function, x, z, q, index in GRAD_SPOT_CHECKS:
        gc = grad_point_cases(function, "float32", x, z, q)
        exact = gc.exact[index]
        for library in libraries:
            row: dict[str, Any] = {
                "function": function,
                "input": gc.describe(index),
                "exact": _fmt_exact(exact, 9),
                "library": library,
                "limit": gc.limit[index],
            }
            computed = compute(gc.cases, library, GRAD_RUNNERS)
            if isinstance(computed, str):
                out.append({**row, "status": computed})
                continue
            c = float(computed[index])
            ulp = oracle.ulp_error(c, exact, "float32")
            wrong_sign = bool(c * exact < 0)
            result = formatter("float32")(c)
            out.append(
                {**row, "status": "ok", "result": result, "ulp": ulp, "wrong_sign": wrong_sign}
            )
    return out


# --------------------------------------------------------------------------- report


def environment() -> dict[str, str]:
    """Date, machine and versions of the libraries compared."""
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores",
        "python": platform.python_version(),
    }
    for module in ("numpy", "logitloss", "torch", "tensorflow", "jax", "optax", "mpmath"):
        try:
            info[module] = str(importlib.import_module(module).__version__)
        except ImportError:
            info[module] = "not installed"
    return info


def fmt_ulp(value: float) -> str:
    """``0.50``, ``12``, ``4.2e6``."""
    if math.isinf(value):
        return "inf"
    if value < 10:
        return f"{value:.2f}"
    if value < 1000:
        return f"{value:.0f}"
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def cell(row: dict[str, Any]) -> str:
    """One library's result in a table cell: ``4.2e6 · 3 NaN/inf · 2 limits``."""
    if row["status"] != "ok":
        return "not installed" if row["status"] == "not installed" else "n/a"
    text = fmt_ulp(row["max_ulp_normal"])
    if fmt_ulp(row["max_ulp_all"]) != text:
        text += f" (subn. {fmt_ulp(row['max_ulp_all'])})"
    if row["nan_or_inf_where_finite"]:
        text += f" · {row['nan_or_inf_where_finite']} NaN/inf"
    if row["wrong_limits"]:
        text += f" · {row['wrong_limits']} limits"
    return text


def _by_key(rows: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, dict[str, Any]]]:
    table: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in rows:
        table.setdefault((r["function"], r["dtype"]), {})[r["library"]] = r
    return table


def markdown_table(
    rows: list[dict[str, Any]], cell_text: Callable[[dict[str, Any]], str] | None = None
) -> str:
    """One line per function x dtype, one column per library; ``cell_text`` formats a result
    (default: the loss cell)."""
    cell_text = cell_text or cell
    libraries = [lib for lib in LIBRARIES if any(r["library"] == lib for r in rows)]
    lines = [
        "| function | dtype | points | " + " | ".join(TITLES[lib] for lib in libraries) + " |",
        "|---|---|---:|" + "---|" * len(libraries),
    ]
    for (function, dtype), by_lib in _by_key(rows).items():
        points = next((r["points"] for r in by_lib.values() if "points" in r), "")
        cells = [cell_text(by_lib[lib]) if lib in by_lib else "" for lib in libraries]
        lines.append(f"| {function} | {dtype} | {points} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def worst_table(rows: list[dict[str, Any]]) -> str:
    """The worst input of every result beyond logitloss's bound, and the first NaN or limit."""
    lines = ["| function | dtype | library | max ULP | worst input | first NaN/limit failure |",
             "|---|---|---|---:|---|---|"]  # fmt: skip
    for r in rows:
        if r["status"] != "ok":
            continue
        beyond = r["max_ulp_normal"] > BOUNDS[r["dtype"]]
        if beyond or r["failure_example"]:
            worst = _code(r["worst_input"] if beyond else "")
            lines.append(
                f"| {r['function']} | {r['dtype']} | {TITLES[r['library']]} | "
                f"{fmt_ulp(r['max_ulp_normal'])} | {worst} | {_code(r['failure_example'])} |"
            )
    return "\n".join(lines)


def grad_headline(row: dict[str, Any]) -> float:
    """The metric logitloss's gradient bound is about: ULP of the result (subnormal results
    included) for the narrow dtypes, scale-ULP (normal range) for float64."""
    if row["dtype"] == "float64":
        return float(row["max_scale_ulp_normal"])
    return float(row["max_ulp_all"])


def grad_cell(row: dict[str, Any]) -> str:
    """A gradient row in a cell: ``ULP / scale-ULP`` (narrow dtypes) or ``scale-ULP``
    (float64), then the NaN/inf and limit counts."""
    if row["status"] != "ok":
        return "not installed" if row["status"] == "not installed" else "n/a"
    if row["dtype"] == "float64":
        text = fmt_ulp(row["max_scale_ulp_normal"])
        if fmt_ulp(row["max_scale_ulp_all"]) != text:
            text += f" (subn. {fmt_ulp(row['max_scale_ulp_all'])})"
    else:
        text = f"{fmt_ulp(row['max_ulp_all'])} / {fmt_ulp(row['max_scale_ulp_all'])}"
    if row["nan_or_inf_where_finite"]:
        text += f" · {row['nan_or_inf_where_finite']} NaN/inf"
    if row["wrong_limits"]:
        text += f" · {row['wrong_limits']} limits"
    return text


def grad_worst_table(rows: list[dict[str, Any]]) -> str:
    """The worst gradient input of every result beyond logitloss's gradient bound (by ULP for
    the narrow dtypes, by scale-ULP for float64), and the first NaN or limit failure."""
    lines = ["| function | dtype | library | max (s)ULP | worst input | first NaN/limit failure |",
             "|---|---|---|---:|---|---|"]  # fmt: skip
    for r in rows:
        if r["status"] != "ok":
            continue
        beyond = grad_headline(r) > GRAD_BOUNDS[r["dtype"]]
        if beyond or r["failure_example"]:
            worst = ""
            if beyond:
                worst = r["worst_scale_input"] if r["dtype"] == "float64" else r["worst_input"]
            lines.append(
                f"| {r['function']} | {r['dtype']} | {TITLES[r['library']]} | "
                f"{fmt_ulp(grad_headline(r))} | {_code(worst)} | {_code(r['failure_example'])} |"
            )
    return "\n".join(lines)


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def spot_table(spots: list[dict[str, Any]]) -> str:
    """One line per spot check: the exact value and each library's result with its error."""
    libraries = [lib for lib in LIBRARIES if any(r["library"] == lib for r in spots)]
    lines = [
        "| function | input (float32) | exact | " + " | ".join(TITLES[x] for x in libraries) + " |",
        "|---|---|---|" + "---|" * len(libraries),
    ]
    checks: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for r in spots:
        checks.setdefault((r["function"], r["input"]), {})[r["library"]] = r
    for (function, text), by_lib in checks.items():
        exact = next(iter(by_lib.values()))["exact"]
        cells = []
        for lib in libraries:
            r = by_lib.get(lib, {"status": ""})
            if r["status"] != "ok":
                cells.append("n/a" if r["status"].startswith("n/a") else r["status"])
            elif math.isinf(r["ulp"]):
                cells.append(f"{r['result']} (wrong{' limit' if r['limit'] else ''})")
            elif r.get("wrong_sign"):
                cells.append(f"{r['result']} (wrong sign)")
            else:
                cells.append(f"{r['result']} ({fmt_ulp(r['ulp'])} ULP)")
        lines.append(f"| {function} | `{text}` | {exact} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


COLUMNS = ("quantity", "function", "dtype", "library", "status", "max_ulp_normal",
           "max_ulp_all", "max_scale_ulp_normal", "max_scale_ulp_all", "nan_or_inf_where_finite",
           "wrong_limits", "points", "limit_points", "worst_input", "worst_scale_input",
           "failure_example")  # fmt: skip


def write_csv(path: Path, rows: list[dict[str, Any]], info: dict[str, str]) -> None:
    """Long format, one line per (quantity, function, dtype, library), metadata as ``#``
    lines; ``quantity`` is ``loss`` or ``grad_logits`` (the scale-ULP columns: gradients)."""
    with path.open("w", newline="") as f:
        for key, value in info.items():
            f.write(f"# {key}: {value}\n")
        writer = csv.DictWriter(f, fieldnames=COLUMNS, restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


GRADIENT_LEGEND = """The gradient of the sum of the losses with respect to the logits: logitloss's
`*_grad` functions, `tf.GradientTape` on `tf.nn.*`, PyTorch autograd, `jax.jit(jax.grad)` of
optax's loss, each in the dtype of the row, against the exact derivative (mpmath). One point per
logit (every class of every softmax row), on the grid above and a smaller random sample (5,000
elementwise points and 1,000 softmax rows per dtype). Cells for float16, bfloat16 and float32: `A /
B`, the largest error in ULPs of the exact gradient (subnormal results included) / in scale-ULP;
float64: the largest error in scale-ULP over points whose scale is in the normal range, `(subn. X)`
when smaller scales are worse. Scale-ULP: ULPs of the larger of the two terms that cancel, `max((1
- z) σ(x), q z σ(-x))` (sigmoid, weighted) or `max(softmax_j Σz, z_j)` (softmax, sparse); near the
gradient's zero no fixed precision bounds the ULP of the result itself. `N NaN/inf` and `N limits`
as above (exact limits at infinite logits: `1 - z` at `+inf`, `-q z` at `-inf`; one `+inf` logit in
a softmax row makes it one-hot). logitloss promises 1 ULP (float16, bfloat16, float32) and 8
scale-ULP (float64). The softmax derivative is the true one, `softmax(x) Σz - z`; TensorFlow's
kernel returns `softmax(x) - z`, which differs by `(Σz - 1) softmax(x)` where the labels (rounded
to the dtype) do not sum to exactly 1."""


def write_markdown(
    path: Path,
    rows: list[dict[str, Any]],
    spots: list[dict[str, Any]],
    info: dict[str, str],
    grad_rows: Sequence[dict[str, Any]] = (),
    grad_spots: Sequence[dict[str, Any]] = (),
) -> None:
    """The tables with a short legend and the environment; the gradient section when
    ``grad_rows`` are given."""
    meta = "\n".join(f"- {key}: {value}" for key, value in info.items())
    gradients = ""
    if grad_rows:
        gradients = f"""
## Gradients w.r.t. logits

{GRADIENT_LEGEND}

{markdown_table(list(grad_rows), grad_cell)}

### Known gradient failures, one input each

{spot_table(list(grad_spots))}

### Worst gradient inputs beyond logitloss's bound

{grad_worst_table(list(grad_rows))}
"""
    text = f"""# Accuracy against exact values (mpmath)

Largest error in ULPs of the dtype over points whose exact loss is finite and in the normal range
(or zero); `(subn. X)` when results in the subnormal range are worse. `N NaN/inf`: NaN where the
exact loss is finite, or inf where it rounds to a finite value (all inputs finite); `N limits`:
wrong results among inputs with infinite or NaN logits (exact limits 0, +inf or a finite value;
NaN for NaN). logitloss promises 1 ULP for float16, bfloat16 and float32 (subnormal results
included), 4 ULP for float64 (normal range), and every limit. Every library computes the same
inputs in the dtype of the row; `n/a`: the library has no such function or dtype. Generated by
`python benchmarks/accuracy.py` (`make accuracy`).

{markdown_table(rows)}

## Known failures, one input each

{spot_table(spots)}

## Worst inputs beyond logitloss's bound

{worst_table(rows)}
{gradients}
## Environment

{meta}
"""
    path.write_text(text)


def _enable_jax_x64() -> None:
    """64-bit JAX for the whole run, so that optax computes float64 in float64."""
    try:
        import jax
    except ImportError:
        return
    jax.config.update("jax_enable_x64", True)


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, write ``accuracy.csv`` and ``accuracy.md`` under ``--out``, print the table."""
    _enable_jax_x64()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller random sample")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    rows = measure(args.quick)
    spots = spot_checks()
    grad_rows = measure_gradients(args.quick)
    grad_spots = grad_spot_checks()
    info = environment()
    info["runtime"] = f"{time.perf_counter() - start:.0f} s" + (" (--quick)" if args.quick else "")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "accuracy.csv", rows + grad_rows, info)
    write_markdown(args.out / "accuracy.md", rows, spots, info, grad_rows, grad_spots)
    print(markdown_table(rows))
    print()
    print(spot_table(spots))
    print("\nGradients w.r.t. logits\n")
    print(markdown_table(grad_rows, grad_cell))
    print()
    print(spot_table(grad_spots))
    print(f"\n{info['runtime']}; written to {args.out}/accuracy.csv and accuracy.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
