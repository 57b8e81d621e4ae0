"""The training step: a reduced loss and its gradient, once per step, logitloss against the
framework's own loss on the same inputs, in one process, interleaved.

    python benchmarks/bench_training_step.py [--quick] [--sizes 512x10,4096x1000]
        [--repeats N] [--only torch|jax|numpy] [--readme]

Pairs (each timed as one forward + backward, the gradient with respect to the logits):

- torch: ``logitloss.torch.CrossEntropyLoss`` against ``torch.nn.CrossEntropyLoss`` (integer
  targets, classes on dim 1) and ``logitloss.torch.BCEWithLogitsLoss`` against
  ``torch.nn.BCEWithLogitsLoss``, float32 and bfloat16 leaf logits; a step is
  ``x.grad = None; loss_fn(x, y).backward()``.
- jax: ``jax.jit(jax.value_and_grad(loss))`` of ``logitloss.cross_entropy`` against optax's
  ``softmax_cross_entropy_with_integer_labels(...).mean()``, and of
  ``logitloss.binary_cross_entropy_with_logits`` against
  ``optax.sigmoid_binary_cross_entropy(...).mean()``; float32 inputs, x64 off and on (one
  subprocess per setting: ``jax_enable_x64`` is set before any array is made). Labels and
  weights are arguments of the jitted function, not constants folded into it.
- numpy: ``logitloss.cross_entropy_value_and_grad(logits, labels, **options)`` (and
  ``binary_cross_entropy_with_logits_value_and_grad``) against the plain NumPy implementation
  below (log-softmax after subtracting the row maximum, gradient ``softmax - onehot`` over N;
  the sigmoid analogue).

Options: ``defaults``, and ``options``: for cross-entropy ``label_smoothing=0.1``, about 10 % of
the targets ``ignore_index=-100``, a random positive class weight (C,); for the binary loss a
per-class ``pos_weight`` (C,), a per-element ``weight`` (N, C) and ``label_smoothing=0.1``
(toward 0.5). How each peer gets the same options (the same loss by definition, except where
noted):

- torch.nn's BCE has no label smoothing: its targets are smoothed by hand,
  ``z * (1 - eps) + eps / 2``, once, outside the timed step (the favourable reading for torch).
  With ``weight`` torch's mean divides by the number of elements, logitloss's by the weights'
  sum: the check multiplies torch's loss and gradient by ``N C / sum(w)``.
- optax has no class weights, ``ignore_index`` or ``pos_weight``. Cross-entropy options: the
  targets ``optax.smooth_labels(one_hot(y), 0.1) * w`` (PyTorch's smoothed, weighted loss,
  ``sum_c w_c z'_c (-log p_c)``) through ``optax.softmax_cross_entropy`` with the ignored rows
  masked by ``where=``, the sum divided by ``sum(w[y])`` over the kept rows (PyTorch's and
  logitloss's weighted mean). Binary options: ``optax.sigmoid_binary_cross_entropy`` on the
  smoothed targets plus ``(pos_weight - 1) z' softplus(-x)``, times ``weight``, ``.mean()``
  (rescaled for the check as torch's).
- The NumPy implementation uses logitloss's definitions (the weighted means above).

Before timing, each pair is called once at the same inputs and the losses and gradients
compared (columns ``loss_diff`` and ``grad_diff``: relative difference of the loss, and the
largest gradient difference over the largest gradient): a benchmark that compared different
computations would be wrong, so a difference beyond float32 rounding (bfloat16's for bfloat16)
fails the run. Timing is ``logitloss._tools.bench.timing``'s: every round calls both once, in a
rotating order, medians, rounds disturbed by other processes measured again; repeats shrink
with the size (``--repeats`` sets them all).

Writes ``benchmarks/results/bench_training_step.csv`` (long format, one row per implementation
and case; the machine, CPU, SIMD width, thread counts, versions and date in its header) and,
with ``--readme``, the table in README.md between the ``training-step`` markers.
"""

from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from logitloss._tools.bench import report, timing

ROOT = Path(__file__).resolve().parents[1]
CSV_PATH = ROOT / "benchmarks" / "results" / "bench_training_step.csv"
README = ROOT / "README.md"
BEGIN, END = "<!-- training-step:begin -->", "<!-- training-step:end -->"
TITLE = "### The training step"

SIZES = ((32, 2), (64, 10), (512, 10), (256, 1000), (4096, 1000), (1024, 32000), (8192, 32768))
QUICK_SIZES = ((32, 2), (64, 10), (512, 10), (256, 1000))
BACKENDS = ("torch", "jax", "numpy")
LOSSES = ("cross_entropy", "bce")
OPTIONS = ("defaults", "options")
EPS = 0.1  # label smoothing of the "options" set
IGNORE = -100
PEER = {"torch": "torch.nn", "jax": "optax", "numpy": "numpy"}
TOLERANCE = {"float32": 2e-5, "bfloat16": 2e-2}  # loss_diff and grad_diff allowed per dtype
FIELDS = ("backend", "loss", "options", "dtype", "x64", "rows", "cols", "impl", "seconds",
          "ratio", "loss_value", "loss_diff", "grad_diff", "quiet_machine")  # fmt: skip


@dataclass(frozen=True)
class Case:
    backend: str  # torch, jax, numpy
    loss: str  # cross_entropy, bce
    options: str  # defaults, options
    dtype: str  # float32, bfloat16 (torch only)
    x64: str  # "on" / "off" for jax, "" otherwise
    rows: int
    cols: int

    @property
    def name(self) -> str:
        x64 = f" x64 {self.x64}" if self.x64 else ""
        size = f"{self.rows}x{self.cols}"
        return f"{self.backend} {self.loss} {self.options} {self.dtype}{x64} {size}"


def repeats_for(rows: int, cols: int) -> int:
    """Timed rounds by size: many for the sub-millisecond calls, one at 8192 x 32768 (1 GiB of
    float32 logits, seconds per step)."""
    n = rows * cols
    return 41 if n <= 100_000 else 15 if n <= 1_000_000 else 7 if n <= 10_000_000 else (
        3 if n <= 100_000_000 else 1)  # fmt: skip


# --- the inputs -------------------------------------------------------------------------------


@dataclass
class Data:
    x: np.ndarray  # float32 logits (N, C)
    y: np.ndarray  # int64 class indices (N,) or float32 0/1 targets (N, C)
    weight: np.ndarray | None  # class weight (C,) or element weight (N, C)
    pos_weight: np.ndarray | None  # (C,), bce only


def make_data(loss: str, options: str, rows: int, cols: int, seed: int = 0) -> Data:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, cols), dtype=np.float32) * 2).astype(np.float32)
    weight = pos_weight = None
    if loss == "cross_entropy":
        y = rng.integers(0, cols, rows)
        if options == "options":
            y[rng.random(rows) < 0.1] = IGNORE
            y[0] = 0  # never a batch with nothing counted
            weight = rng.uniform(0.5, 2.0, cols).astype(np.float32)
    else:
        y = (rng.random((rows, cols), dtype=np.float32) < 0.3).astype(np.float32)
        if options == "options":
            pos_weight = rng.uniform(0.5, 4.0, cols).astype(np.float32)
            weight = rng.uniform(0.5, 2.0, (rows, cols)).astype(np.float32)
    return Data(x, y, weight, pos_weight)


def peer_scale(case: Case, d: Data) -> float:
    """The factor that turns the peer's loss (and gradient) into logitloss's definition: torch's
    and optax's ``.mean()`` of a weighted binary loss divides by the number of elements,
    logitloss by the weights' sum. 1 everywhere else."""
    if case.loss == "bce" and case.options == "options" and case.backend != "numpy":
        return d.y.size / float(np.sum(d.weight, dtype=np.float64))
    return 1.0


# --- the implementations: a step (timed) and a check (loss, gradient as float32) --------------


@dataclass
class Impl:
    step: Callable[[], object]
    check: Callable[[], tuple[float, np.ndarray]]


def torch_pair(case: Case, d: Data) -> dict[str, Impl]:
    import torch

    import logitloss.torch as lt

    dtype = getattr(torch, case.dtype)
    x = torch.from_numpy(d.x).to(dtype).requires_grad_(True)

    def tensor(a: np.ndarray | None) -> Any:
        return None if a is None else torch.from_numpy(a).to(dtype)

    if case.loss == "cross_entropy":
        y = torch.from_numpy(d.y)
        kw: dict[str, Any] = {}
        if case.options == "options":
            kw = {"weight": tensor(d.weight), "ignore_index": IGNORE, "label_smoothing": EPS}
        fns = {"torch.nn": (torch.nn.CrossEntropyLoss(**kw), y),
               "logitloss": (lt.CrossEntropyLoss(**kw), y)}  # fmt: skip
    else:
        z = tensor(d.y)
        if case.options == "options":
            smoothed = torch.from_numpy(d.y * (1 - EPS) + EPS / 2).to(dtype)  # by hand, once
            peer = torch.nn.BCEWithLogitsLoss(weight=tensor(d.weight),
                                              pos_weight=tensor(d.pos_weight))  # fmt: skip
            ours = lt.BCEWithLogitsLoss(weight=tensor(d.weight), pos_weight=tensor(d.pos_weight),
                                        label_smoothing=EPS)  # fmt: skip
            fns = {"torch.nn": (peer, smoothed), "logitloss": (ours, z)}
        else:
            fns = {"torch.nn": (torch.nn.BCEWithLogitsLoss(), z),
                   "logitloss": (lt.BCEWithLogitsLoss(), z)}  # fmt: skip

    def make(fn: Any, target: Any) -> Impl:
        def step() -> Any:
            x.grad = None
            out = fn(x, target)
            out.backward()
            return out

        def check() -> tuple[float, np.ndarray]:
            out = step()
            return float(out.detach().double()), x.grad.float().numpy()

        return Impl(step, check)

    return {name: make(fn, target) for name, (fn, target) in fns.items()}


def jax_pair(case: Case, d: Data) -> dict[str, Impl]:
    import jax
    import jax.numpy as jnp
    import optax

    import logitloss

    x = jnp.asarray(d.x)
    opts = case.options == "options"
    if case.loss == "cross_entropy":
        cols = case.cols
        y = jnp.asarray(d.y.astype(np.int32))
        w = jnp.asarray(d.weight) if opts else None

        def peer(x: Any, y: Any, w: Any) -> Any:
            if not opts:
                return optax.softmax_cross_entropy_with_integer_labels(x, y).mean()
            keep = y != IGNORE
            safe = jnp.where(keep, y, 0)
            targets = optax.smooth_labels(jax.nn.one_hot(safe, cols, dtype=x.dtype), EPS) * w
            per_row = optax.softmax_cross_entropy(x, targets, where=keep[:, None])
            return per_row.sum() / jnp.sum(w[safe], where=keep)

        def ours(x: Any, y: Any, w: Any) -> Any:
            if not opts:
                return logitloss.cross_entropy(x, y)
            return logitloss.cross_entropy(x, y, weight=w, ignore_index=IGNORE,
                                           label_smoothing=EPS)  # fmt: skip

        args = (y, w)
    else:
        z = jnp.asarray(d.y)
        w = jnp.asarray(d.weight) if opts else None
        q = jnp.asarray(d.pos_weight) if opts else None

        def peer(x: Any, z: Any, w: Any, q: Any) -> Any:
            if not opts:
                return optax.sigmoid_binary_cross_entropy(x, z).mean()
            zs = z * (1 - EPS) + EPS / 2
            per = optax.sigmoid_binary_cross_entropy(x, zs) + (q - 1) * zs * jax.nn.softplus(-x)
            return (w * per).mean()

        def ours(x: Any, z: Any, w: Any, q: Any) -> Any:
            if not opts:
                return logitloss.binary_cross_entropy_with_logits(x, z)
            return logitloss.binary_cross_entropy_with_logits(x, z, pos_weight=q, weight=w,
                                                              label_smoothing=EPS)  # fmt: skip

        args = (z, w, q)

    def make(loss: Callable[..., Any]) -> Impl:
        fn = jax.jit(jax.value_and_grad(loss))  # argnums=0: the logits

        def step() -> Any:
            return jax.block_until_ready(fn(x, *args))

        def check() -> tuple[float, np.ndarray]:
            value, grad = step()
            return float(value), np.array(grad, dtype=np.float32)  # a writable copy

        return Impl(step, check)

    return {"optax": make(peer), "logitloss": make(ours)}


def numpy_cross_entropy(x: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None,
                        ignore_index: int = IGNORE,
                        label_smoothing: float = 0.0) -> tuple[Any, np.ndarray]:  # fmt: skip
    """The plain NumPy training step: the mean cross-entropy and its gradient."""
    n, c = x.shape
    shifted = x - x.max(axis=1, keepdims=True)
    e = np.exp(shifted)
    s = e.sum(axis=1, keepdims=True)
    logp = shifted - np.log(s)
    p = e / s
    rows = np.arange(n)
    if weight is None and not label_smoothing and not np.any(y == ignore_index):
        loss = -logp[rows, y].mean()
        p[rows, y] -= 1
        p /= n
        return loss, p
    keep = y != ignore_index
    safe = np.where(keep, y, 0)
    w = np.ones(c, x.dtype) if weight is None else weight
    wy = w[safe] * keep
    denominator = wy.sum()
    eps = label_smoothing
    targets = (eps / c) * w * keep[:, None].astype(x.dtype)  # weighted, smoothed, masked
    targets[rows, safe] += (1 - eps) * wy
    loss = -(targets * logp).sum() / denominator
    grad = (p * targets.sum(axis=1, keepdims=True) - targets) / denominator
    return loss, grad


def numpy_bce(x: np.ndarray, z: np.ndarray, pos_weight: np.ndarray | None = None,
              weight: np.ndarray | None = None,
              label_smoothing: float = 0.0) -> tuple[Any, np.ndarray]:  # fmt: skip
    """The plain NumPy step of the binary loss: the (weighted) mean and its gradient."""
    if label_smoothing:
        z = z * (1 - label_smoothing) + label_smoothing / 2
    neg = np.logaddexp(0, -x)  # -log sigmoid(x)
    sigmoid = np.exp(-neg)
    q = 1 if pos_weight is None else pos_weight
    per = q * z * neg + (1 - z) * (x + neg)
    grad = (1 - z) * sigmoid - q * z * (1 - sigmoid)
    if weight is None:
        return per.mean(), grad / x.size
    denominator = weight.sum()
    return (weight * per).sum() / denominator, weight * grad / denominator


def numpy_pair(case: Case, d: Data) -> dict[str, Impl]:
    import logitloss

    opts = case.options == "options"
    if case.loss == "cross_entropy":
        kw = {"weight": d.weight, "ignore_index": IGNORE, "label_smoothing": EPS} if opts else {}
        peer, ours = numpy_cross_entropy, logitloss.cross_entropy_value_and_grad
    else:
        kw = {"pos_weight": d.pos_weight, "weight": d.weight, "label_smoothing": EPS}
        kw = kw if opts else {}
        peer, ours = numpy_bce, logitloss.binary_cross_entropy_with_logits_value_and_grad

    def make(fn: Callable[..., Any]) -> Impl:
        def step() -> Any:
            return fn(d.x, d.y, **kw)

        def check() -> tuple[float, np.ndarray]:
            value, grad = step()
            return float(value), np.array(grad, dtype=np.float32)  # a writable copy

        return Impl(step, check)

    return {"numpy": make(peer), "logitloss": make(ours)}


PAIRS = {"torch": torch_pair, "jax": jax_pair, "numpy": numpy_pair}


# --- running ----------------------------------------------------------------------------------


def cases(backend: str, sizes: list[tuple[int, int]], x64: str = "") -> list[Case]:
    dtypes = ("float32", "bfloat16") if backend == "torch" else ("float32",)
    return [
        Case(backend, loss, options, dtype, x64, rows, cols)
        for rows, cols in sizes
        for loss in LOSSES
        for options in OPTIONS
        for dtype in dtypes
    ]


def run_case(case: Case, repeats: int | None) -> list[dict[str, Any]]:
    """Check the pair agrees, time it; the CSV rows."""
    d = make_data(case.loss, case.options, case.rows, case.cols)
    pair = PAIRS[case.backend](case, d)
    peer = PEER[case.backend]
    scale = peer_scale(case, d)
    checked = {name: impl.check() for name, impl in pair.items()}
    peer_loss, peer_grad = checked[peer][0] * scale, checked[peer][1]
    our_loss, our_grad = checked["logitloss"]
    loss_diff = abs(our_loss - peer_loss) / max(abs(peer_loss), 1e-30)
    if scale != 1.0:
        peer_grad *= np.float32(scale)
    our_grad -= peer_grad  # in place: at 8192 x 32768 each gradient is 1 GiB
    grad_diff = float(np.max(np.abs(our_grad)) / max(float(np.max(np.abs(peer_grad))), 1e-30))
    del checked, peer_grad, our_grad
    samples, quiet = timing.time_case({name: impl.step for name, impl in pair.items()},
                                      repeats or repeats_for(case.rows, case.cols))  # fmt: skip
    seconds = {name: statistics.median(s) for name, s in samples.items()}
    rows = []
    for name, s in seconds.items():
        ours = name == "logitloss"
        rows.append({
            "backend": case.backend, "loss": case.loss, "options": case.options,
            "dtype": case.dtype, "x64": case.x64, "rows": case.rows, "cols": case.cols,
            "impl": name, "seconds": f"{s:.6g}", "ratio": f"{s / seconds[peer]:.4g}",
            "loss_value": repr(our_loss if ours else peer_loss / scale),
            "loss_diff": f"{loss_diff:.3g}" if ours else "",
            "grad_diff": f"{grad_diff:.3g}" if ours else "",
            "quiet_machine": quiet,
        })  # fmt: skip
    del pair, d
    gc.collect()
    return rows


def run_cases(chosen: list[Case], repeats: int | None) -> tuple[list[dict[str, Any]], list[str]]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    for case in chosen:
        found = run_case(case, repeats)
        rows += found
        ours = next(r for r in found if r["impl"] == "logitloss")
        peer = next(r for r in found if r["impl"] != "logitloss")
        ratio = float(ours["ratio"])
        print(
            f"{case.name:48s} {peer['impl']} {float(peer['seconds']) * 1e3:9.3f} ms  logitloss "
            f"{float(ours['seconds']) * 1e3:9.3f} ms  {ratio:6.2f}x{' slower' if ratio > 1 else ''}"
            f"  (loss diff {ours['loss_diff']}, grad diff {ours['grad_diff']}"
            f"{', machine busy' if not ours['quiet_machine'] else ''})",
            flush=True,
        )
    return rows, notes


def jax_child(x64: str, sizes: list[tuple[int, int]], repeats: int | None, out: Path) -> int:
    """The JAX cases with x64 on or off, in this process (set before any array is made)."""
    import jax

    jax.config.update("jax_enable_x64", x64 == "on")
    import optax

    rows, notes = run_cases(cases("jax", sizes, x64), repeats)
    env = {"jax": jax.__version__, "optax": optax.__version__,
           f"rounds_jax_x64_{x64}": f"{timing.ROUNDS['quiet']} quiet, "
           f"{timing.ROUNDS['discarded']} discarded"}  # fmt: skip
    out.write_text(json.dumps({"rows": rows, "notes": notes, "env": env}))
    return 0


def run_jax(sizes: list[tuple[int, int]], repeats: int | None) -> tuple[list, list, dict]:
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    env: dict[str, str] = {}
    for x64 in ("off", "on"):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "rows.json"
            command = [sys.executable, __file__, "--jax-child", x64, "--json", str(out),
                       "--sizes", ",".join(f"{r}x{c}" for r, c in sizes)]  # fmt: skip
            if repeats:
                command += ["--repeats", str(repeats)]
            done = subprocess.run(command, check=False)
            if done.returncode:
                raise SystemExit(f"JAX cases with x64 {x64} failed ({done.returncode})")
            found = json.loads(out.read_text())
        rows += found["rows"]
        notes += found["notes"]
        env.update(found["env"])
    return rows, notes, env


def environment() -> dict[str, str]:
    threads: dict[str, str] = {}
    try:
        import torch

        threads["torch_threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    try:
        import numba

        # first: it starts numba's threading layer, which timing.environment() reads and which
        # no call has started if every kernel call ran single-threaded
        threads["numba_threads"] = str(numba.get_num_threads())
    except ImportError:
        pass
    env = timing.environment()
    env["simd"] = timing.simd()
    env.update(threads)
    return env


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        rows, cols = item.lower().split("x")
        sizes.append((int(rows), int(cols)))
    return sizes


# --- the table --------------------------------------------------------------------------------


def read_csv(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    lines = path.read_text().splitlines()
    env = dict(line[2:].split(": ", 1) for line in lines if line.startswith("# "))
    return env, list(csv.DictReader(line for line in lines if not line.startswith("#")))


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.0f}" if ms >= 100 else f"{ms:.1f}" if ms >= 10 else (
        f"{ms:.2f}" if ms >= 1 else f"{ms:.3f}")  # fmt: skip


LOSS_NAMES = {
    ("torch", "cross_entropy"): "CrossEntropyLoss",
    ("torch", "bce"): "BCEWithLogitsLoss",
    ("jax", "cross_entropy"): "cross_entropy",
    ("jax", "bce"): "binary_cross_entropy_with_logits",
    ("numpy", "cross_entropy"): "cross_entropy",
    ("numpy", "bce"): "binary_cross_entropy_with_logits",
}


def markdown(rows: list[dict[str, Any]], env: dict[str, str]) -> str:
    """One line per case: the peer's time, logitloss's, and their ratio (logitloss / peer, above
    1 = logitloss slower, in bold); the machine in the header line."""
    cases_: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in rows:
        key = tuple(str(row[k]) for k in ("backend", "loss", "options", "dtype", "x64", "rows",
                                          "cols"))  # fmt: skip
        cases_.setdefault(key, {})[row["impl"]] = row
    versions = ", ".join(f"{name} {env[key]}" for name, key in (
        ("PyTorch", "torch"), ("JAX", "jax"), ("optax", "optax"), ("NumPy", "numpy"),
        ("numba", "numba"), ("logitloss", "logitloss")) if key in env)  # fmt: skip
    lines = [
        f"{env.get('cpu', '?')} ({env.get('simd', '?')}), {env.get('cores', '?')} cores, "
        f"torch threads {env.get('torch_threads', '?')}, numba threads "
        f"{env.get('numba_threads', '?')}; {env.get('date', '?')[:10]}; {versions}"
        + (f"; {env['label']}." if env.get("label") else "."),
        "",
        "| backend | loss | options | dtype | N x C | peer | peer ms | logitloss ms "
        "| logitloss / peer |",
        "|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    slower = 0
    for (backend, loss, options, dtype, x64, n, c), impls in cases_.items():
        ours = impls["logitloss"]
        peer_name, peer = next((k, v) for k, v in impls.items() if k != "logitloss")
        ratio = float(ours["seconds"]) / float(peer["seconds"])
        cell = f"{ratio:.2f}x"
        if ratio > 1:
            slower += 1
            cell = f"**{cell} slower**"
        if str(ours["quiet_machine"]) != "True":
            cell += " (busy machine)"
        kind = f"{dtype}, x64 {x64}" if x64 else dtype
        name = LOSS_NAMES.get((backend, loss), loss)
        lines.append(
            f"| {backend} | {name} | {options} | {kind} | {n} x {c} | {peer_name} "
            f"| {_ms(float(peer['seconds']))} | {_ms(float(ours['seconds']))} | {cell} |"
        )
    lines.insert(1, f"\nlogitloss slower in {slower} of {len(cases_)} cases (bold).")
    if env.get("complete") == "False":
        lines.append("\nA partial run: the backends after the last one shown were not measured.")
    for note in (v for k, v in sorted(env.items()) if k.startswith("note")):
        lines.append(f"\n{note}")
    return "\n".join(lines) + "\n"


METHOD = """\
Forward and backward of a reduced loss, once per training step, as a training loop calls it
(`python benchmarks/bench_training_step.py --readme`, about {minutes} minutes; results in
`benchmarks/results/bench_training_step.csv`). torch: `x.grad = None; loss_fn(x, y).backward()`
with `logitloss.torch`'s modules against `torch.nn`'s, on leaf logits (float32, bfloat16);
JAX: `jax.jit(jax.value_and_grad(loss))` against optax's loss (float32 inputs, x64 off and on,
one process each); NumPy: `logitloss.cross_entropy_value_and_grad` (and the binary loss's)
against a plain NumPy step. "options" are
`label_smoothing=0.1`, 10 % `ignore_index` and class weights for cross-entropy, and per-class
`pos_weight`, per-element `weight` and `label_smoothing=0.1` for the binary loss (torch.nn's
targets smoothed by hand outside the step; optax's options composed from `smooth_labels`,
`where=` and a weighted sum: see the script's docstring for each mapping). Both sides get the
same inputs and are checked to give the same loss and gradient before they are timed (the
weighted binary mean rescaled: torch and `.mean()` divide by N C, logitloss by the weights'
sum). Interleaved in one process, medians of up to 41 rounds (1 round at 8192 x 32768), rounds
disturbed by other processes measured again; this shared 2-core machine's timings vary by tens
of percent between runs."""


def readme_block(table: str, env: dict[str, str]) -> str:
    minutes = env.get("runtime_minutes", "?")
    return f"{BEGIN}\n{METHOD.format(minutes=minutes)}\n\n{table}{END}"


def rewrite_readme(path: Path, table: str, env: dict[str, str]) -> None:
    """Replace the block between the markers; without them, add the subsection at the end of
    "## Speed"."""
    text = path.read_text()
    block = readme_block(table, env)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1]
    else:
        start = text.index("\n## Speed\n")
        following = text.find("\n## ", start + 1)
        following = len(text) if following < 0 else following
        text = text[:following].rstrip("\n") + f"\n\n{TITLE}\n\n{block}\n" + text[following:]
    path.write_text(text)


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sizes up to 256 x 1000 (a check in about a minute)")  # fmt: skip
    parser.add_argument("--sizes", type=parse_sizes, help="N x C list, e.g. 32x2,512x10")
    parser.add_argument("--repeats", type=int, help="rounds for every size (default: by size)")
    parser.add_argument("--only", action="append", choices=BACKENDS, help="repeatable")
    parser.add_argument("--csv", type=Path, default=CSV_PATH)
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    parser.add_argument("--readme", nargs="?", const=README, type=Path,
                        help="rewrite the README's training-step table")  # fmt: skip
    parser.add_argument("--from-csv", type=Path,
                        help="no timing: the table (and --readme) from this CSV")  # fmt: skip
    parser.add_argument("--label", help="a note for the CSV header and the table (the commit)")
    parser.add_argument("--jax-child", choices=["off", "on"], help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sizes = args.sizes or list(QUICK_SIZES if args.quick else SIZES)
    if args.jax_child:
        return jax_child(args.jax_child, sizes, args.repeats, args.json)
    if args.from_csv:
        env, rows = read_csv(args.from_csv)
    else:
        rows, env = measure(args, sizes, argv)
    table = markdown(rows, env)
    print(table)
    if args.markdown:
        report.write_atomically(args.markdown, lambda f: f.write(table.encode()))
    if args.readme:
        rewrite_readme(args.readme, table, env)
        print(f"rewrote {args.readme}")
    disagree = [r for r in rows if r["loss_diff"] and (
        float(r["loss_diff"]) > TOLERANCE[r["dtype"]]
        or float(r["grad_diff"]) > TOLERANCE[r["dtype"]])]  # fmt: skip
    for r in disagree:
        print(f"DIFFERENT RESULTS: {r}", file=sys.stderr)
    return 1 if disagree else 0


def measure(args: argparse.Namespace, sizes: list[tuple[int, int]],
            argv: list[str] | None) -> tuple[list[dict[str, Any]], dict[str, str]]:  # fmt: skip
    """Time the chosen backends; the CSV is written after each (``# complete: False`` until the
    last: a run stopped at the large sizes keeps what it measured)."""
    start = time.perf_counter()
    backends = args.only or list(BACKENDS)
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    jax_env: dict[str, str] = {}
    env: dict[str, str] = {}
    for i, backend in enumerate(backends):
        if backend == "jax":
            found, more, jax_env = run_jax(sizes, args.repeats)
        else:
            found, more = run_cases(cases(backend, sizes), args.repeats)
        rows += found
        notes += more
        env = environment()
        env.update(jax_env)
        for j, note in enumerate(notes):
            env[f"note{j}"] = note
        if args.label:
            env["label"] = args.label
        env["runtime_minutes"] = f"{(time.perf_counter() - start) / 60:.0f}"
        env["complete"] = str(i == len(backends) - 1)
        env["command"] = "python benchmarks/bench_training_step.py " + " ".join(
            sys.argv[1:] if argv is None else argv)  # fmt: skip
        text = report.csv_text_for(rows, env, FIELDS)
        os.makedirs(args.csv.parent, exist_ok=True)
        report.write_atomically(args.csv, lambda f, text=text: f.write(text.encode()))
        print(f"wrote {args.csv} ({backend} done)", flush=True)
    return rows, env


if __name__ == "__main__":
    sys.exit(main())
