"""Speed of the logistic (sigmoid and weighted) cross-entropy and its logit gradient on the CPU.

4096 x 4096 logits and labels, float32 and float64; the sigmoid loss, the weighted loss with a
scalar and with a per-class ``pos_weight``; forward (the loss) and backward (the gradient with
respect to the logits, upstream = ones). Each is timed for:

- ``logitloss-kernel``: ``logitloss._kernels`` (numba), allocating its output,
  ``logitloss-kernel-out`` writing into an existing one, and ``logitloss-kernel-1thread`` on one
  thread (``numba.set_num_threads(1)``), like ``np.add``;
- ``memory-limit``: ``np.add(logits, labels)`` on the same arrays, allocating its output the
  same way (two arrays read, one written: the traffic of the kernels), and
  ``memory-limit-out``: ``np.add(logits, labels, out=buffer)``, the limit for ``out=``;
- ``numpy-naive``: ``-z log(sigmoid(x)) - (1 - z) log(1 - sigmoid(x))`` (gradient:
  ``sigmoid(x) - z``, weighted ``(1 - z) sigmoid(x) - q z sigmoid(-x)``);
- ``numpy-stable``: TensorFlow's formula ``max(x, 0) - x z + log1p(exp(-|x|))`` (weighted:
  ``(1 - z) x + (1 + (q - 1) z) (log1p(exp(-|x|)) + max(-x, 0))``); gradient from ``exp(-|x|)``;
- ``logitloss-reference``: the array-API path (``_reference``) that the kernels replace;
- ``torch``: ``F.binary_cross_entropy_with_logits(reduction="none")``, and its backward pass
  alone (``torch.autograd.grad`` on a kept graph), with as many threads as numba;
- ``jax``: ``jax.jit`` of the stable formula (optax's), and of its ``jax.grad``;
- ``tensorflow``: ``tf.function(jit_compile=True)`` of ``tf.nn.sigmoid_cross_entropy_with_logits``
  / ``weighted_cross_entropy_with_logits``, and of its gradient (``tf.GradientTape``).

Each library is optional (skipped if not installed). Implementations are interleaved (one call
of each per round) after a warm-up, and the median over the rounds is reported, with its ratio to
``memory-limit``. A last section times a small (100 000 elements, about 0.1 ms) kernel call alone
and right after a PyTorch call, which is how the threading layer was chosen (``_runtime``).

Writes ``benchmarks/results/bench_logistic.csv`` (long format: one row per case and
implementation; machine, versions and date in ``#`` comment lines) and prints the table.

    python benchmarks/bench_logistic.py [--repeats 7] [--size 4096] [--out DIR]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

Case = tuple[str, str, str]  # (dtype, weight, direction)
DTYPES = ("float32", "float64")
WEIGHTS = ("sigmoid", "scalar", "per-class")
LATENCY_SIZE = 100_000  # above the kernels' serial threshold (65 536): a parallel call
DIRECTIONS = ("loss", "grad")


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


# --- Implementations ---------------------------------------------------------------------------


def _numpy_impls(x: np.ndarray, z: np.ndarray, q: Any, direction: str) -> dict[str, Callable]:
    def naive() -> np.ndarray:
        with np.errstate(all="ignore"):  # it overflows and takes log(0): that is the point
            return _naive()

    def _naive() -> np.ndarray:
        s = 1 / (1 + np.exp(-x))
        if direction == "grad":
            if q is None:
                return s - z
            return (1 - z) * s - q * z * (1 - s)
        positive = -np.log(s) if q is None else -q * np.log(s)
        return z * positive - (1 - z) * np.log(1 - s)

    def stable() -> np.ndarray:
        e = np.exp(-np.abs(x))
        if direction == "grad":
            s = np.where(x >= 0, 1, e) / (1 + e)  # sigmoid(x) without overflow
            if q is None:
                return s - z
            return (1 - z) * s - q * z * (1 - s)
        if q is None:
            return np.maximum(x, 0) - x * z + np.log1p(e)
        weight = 1 + (q - 1) * z
        return (1 - z) * x + weight * (np.log1p(e) + np.maximum(-x, 0))

    return {"numpy-naive": naive, "numpy-stable": stable}


def _reference_impl(x: np.ndarray, z: np.ndarray, q: Any, direction: str) -> Callable:
    from logitloss import _reference

    qa = None if q is None else np.asarray(q, x.dtype)
    if direction == "loss":
        return lambda: _reference.logistic(x, z, qa, xp=np)
    ones = np.ones((), x.dtype)
    return lambda: _reference.logistic_grad(
        x, z, qa, np.broadcast_to(ones, x.shape), wrt="logits", xp=np
    )


def _torch_impl(x: np.ndarray, z: np.ndarray, q: Any, direction: str) -> Callable | None:
    torch = _optional("torch")
    if torch is None:
        return None
    import torch.nn.functional as F

    tx, tz = torch.from_numpy(x), torch.from_numpy(z)
    tq = None if q is None else torch.as_tensor(np.asarray(q, x.dtype).reshape(-1))
    if direction == "loss":
        return lambda: F.binary_cross_entropy_with_logits(tx, tz, pos_weight=tq, reduction="none")
    # The backward pass alone: the graph of one forward pass, kept, differentiated each call.
    leaf = tx.clone().requires_grad_(True)
    loss = F.binary_cross_entropy_with_logits(leaf, tz, pos_weight=tq, reduction="none")
    ones = torch.ones((), dtype=tx.dtype).expand_as(tx)
    return lambda: torch.autograd.grad(loss, leaf, grad_outputs=ones, retain_graph=True)


def _jax_impl(x: np.ndarray, z: np.ndarray, q: Any, direction: str) -> Callable | None:
    jax = _optional("jax")
    if jax is None:
        return None
    import jax.numpy as jnp

    jx, jz = jnp.asarray(x), jnp.asarray(z)
    jq = None if q is None else jnp.asarray(np.asarray(q, x.dtype))

    def loss(v: Any, w: Any) -> Any:
        # optax.sigmoid_binary_cross_entropy's stable form, weighted as TF does.
        log_p = jax.nn.log_sigmoid(v)
        log_not_p = jax.nn.log_sigmoid(-v)
        positive = -log_p if jq is None else -jq * log_p
        return w * positive - (1 - w) * log_not_p

    if direction == "loss":
        f = jax.jit(loss)
    else:
        f = jax.jit(lambda v, w: jax.grad(lambda u: loss(u, w).sum())(v))
    return lambda: f(jx, jz).block_until_ready()


def _tf_impl(x: np.ndarray, z: np.ndarray, q: Any, direction: str) -> Callable | None:
    tf = _optional("tensorflow")
    if tf is None:
        return None
    tx, tz = tf.constant(x), tf.constant(z)
    tq = None if q is None else tf.constant(np.asarray(q, x.dtype))

    def loss(v: Any, w: Any) -> Any:
        if tq is None:
            return tf.nn.sigmoid_cross_entropy_with_logits(labels=w, logits=v)
        return tf.nn.weighted_cross_entropy_with_logits(labels=w, logits=v, pos_weight=tq)

    if direction == "loss":
        f = tf.function(loss, jit_compile=True)
    else:

        def grad(v: Any, w: Any) -> Any:
            with tf.GradientTape() as tape:
                tape.watch(v)
                total = tf.reduce_sum(loss(v, w))
            return tape.gradient(total, v)

        f = tf.function(grad, jit_compile=True)
    return lambda: f(tx, tz)  # eager TF on the CPU returns once the result is computed


def implementations(x: np.ndarray, z: np.ndarray, q: Any, direction: str) -> dict[str, Callable]:
    from logitloss import _kernels

    buffer = np.empty_like(x)
    if direction == "loss":
        kernel = lambda: _kernels.logistic_loss(x, z, q)  # noqa: E731
        kernel_out = lambda: _kernels.logistic_loss(x, z, q, out=buffer)  # noqa: E731
    else:
        kernel = lambda: _kernels.logistic_grad_logits(x, z, q)  # noqa: E731
        kernel_out = lambda: _kernels.logistic_grad_logits(x, z, q, out=buffer)  # noqa: E731
    import numba

    def one_thread() -> Any:
        # The kernel on one core, like np.add: a per-core comparison that a second, busy core
        # (a shared machine) does not disturb.
        threads = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            return kernel()
        finally:
            numba.set_num_threads(threads)

    found: dict[str, Callable | None] = {
        "memory-limit": lambda: np.add(x, z),
        "memory-limit-out": lambda: np.add(x, z, out=buffer),
        "logitloss-kernel": kernel,
        "logitloss-kernel-out": kernel_out,
        "logitloss-kernel-1thread": one_thread,
        **_numpy_impls(x, z, q, direction),
        "logitloss-reference": _reference_impl(x, z, q, direction),
        "torch": _torch_impl(x, z, q, direction),
        "jax": _jax_impl(x, z, q, direction),
        "tensorflow": _tf_impl(x, z, q, direction),
    }
    return {name: f for name, f in found.items() if f is not None}


# --- Timing ------------------------------------------------------------------------------------


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_ROUNDS = {"quiet": 0, "discarded": 0}


def _cpu_seconds() -> tuple[float, float]:
    """(CPU seconds the whole machine has spent busy, CPU seconds of this process) so far."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    except (OSError, ValueError):
        return 0.0, 0.0
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    own = os.times()
    return busy / _CLOCK_TICKS, own.user + own.system


class Quiet:
    """Measures how many cores other processes used during a block (Linux; 0 elsewhere).

    On a shared machine a busy core holds back every multi-threaded implementation (a parallel
    call waits for its slowest thread) but not ``np.add``, which runs on one thread: rounds
    during which other processes used more than a tenth of a core are measured again.
    """

    def __enter__(self) -> Quiet:
        self.start = time.perf_counter()
        self.machine, self.own = _cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        machine, own = _cpu_seconds()
        wall = max(time.perf_counter() - self.start, 1e-9)
        self.foreign_cores = max((machine - self.machine) - (own - self.own), 0.0) / wall

    @property
    def ok(self) -> bool:
        return self.foreign_cores <= 0.1


def time_case(impls: dict[str, Callable], repeats: int) -> tuple[dict[str, list[float]], bool]:
    """Interleaved: every round calls each implementation once, in a rotating order; rounds
    disturbed by other processes (:class:`Quiet`) are run again, up to 2x ``repeats`` rounds
    (then the disturbed ones count too, and the CSV header says how many there were)."""
    for f in impls.values():  # warm-up: compilation, first-touch of caches and pools
        f()
        f()
    names = list(impls)
    quiet: dict[str, list[float]] = {name: [] for name in impls}
    every: dict[str, list[float]] = {name: [] for name in impls}
    for round_ in range(2 * repeats):
        shift = round_ % len(names)
        sample = {}
        with Quiet() as q:
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                impls[name]()
                sample[name] = time.perf_counter() - start
        for name, seconds in sample.items():
            every[name].append(seconds)
            if q.ok:
                quiet[name].append(seconds)
        _ROUNDS["quiet" if q.ok else "discarded"] += 1
        if len(quiet[names[0]]) >= repeats:
            return quiet, True
    return (quiet, True) if len(quiet[names[0]]) >= 3 else (every, False)


def small_call_latency(repeats: int = 201) -> dict[str, float]:
    """A 100 000-element kernel (about 0.1 ms, parallel) alone, and right after a PyTorch call."""
    from logitloss import _kernels

    rng = np.random.default_rng(1)
    x = rng.standard_normal(LATENCY_SIZE).astype(np.float32)
    z = rng.random(LATENCY_SIZE).astype(np.float32)
    out = np.empty_like(x)

    def call() -> float:
        start = time.perf_counter()
        _kernels.logistic_loss(x, z, out=out)
        return time.perf_counter() - start

    for _ in range(20):
        call()
    result = {"alone": statistics.median(call() for _ in range(repeats))}
    torch = _optional("torch")
    if torch is not None:
        t = torch.randn(2_000_000)

        def after_torch() -> float:
            (t * 2 + 1).sum()  # a parallel PyTorch op: its OpenMP threads are awake after it
            return call()

        samples = sorted(after_torch() for _ in range(repeats))
        result["after-torch"] = statistics.median(samples)
        result["after-torch-p90"] = samples[int(0.9 * len(samples))]
    return result


# --- Report ------------------------------------------------------------------------------------


def environment() -> dict[str, str]:
    import numba

    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu": _cpu_name(),
        "cores": str(os.cpu_count()),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_threads": str(numba.config.NUMBA_NUM_THREADS),
    }
    for name in ("torch", "jax", "tensorflow"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = module.__version__
    if "numba.np.ufunc.parallel" in sys.modules:
        env["numba_threading_layer"] = numba.threading_layer()
    env["quiet_rounds"] = str(_ROUNDS["quiet"])
    env["rounds_discarded_for_other_processes"] = str(_ROUNDS["discarded"])
    return env


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)

    import numba

    threads = numba.config.NUMBA_NUM_THREADS
    torch = _optional("torch")
    if torch is not None:
        torch.set_num_threads(threads)
    tf = _optional("tensorflow")
    if tf is not None:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    jax = _optional("jax")
    if jax is not None:
        jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64

    rng = np.random.default_rng(0)
    shape = (args.size, args.size)
    rows: list[dict[str, Any]] = []
    began = time.perf_counter()
    for dtype in DTYPES:
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        z = rng.random(shape).astype(dtype)
        per_class = rng.uniform(0.5, 4.0, args.size).astype(dtype)
        for weight in WEIGHTS:
            q = {"sigmoid": None, "scalar": np.asarray(2.5, dtype), "per-class": per_class}[weight]
            for direction in DIRECTIONS:
                times, quiet = time_case(implementations(x, z, q, direction), args.repeats)
                limit = statistics.median(times["memory-limit"])
                for name, samples in times.items():
                    median = statistics.median(samples)
                    rows.append(
                        {
                            "benchmark": "4096x4096" if args.size == 4096 else f"{args.size}^2",
                            "dtype": dtype,
                            "loss": "sigmoid" if weight == "sigmoid" else "weighted",
                            "pos_weight": "none" if weight == "sigmoid" else weight,
                            "direction": direction,
                            "implementation": name,
                            "median_ms": round(median * 1e3, 3),
                            "min_ms": round(min(samples) * 1e3, 3),
                            "ratio_to_memory_limit": round(median / limit, 3),
                            "repeats": len(samples),
                            "quiet_machine": quiet,
                        }
                    )
                print(f"  {dtype} {weight} {direction}: {time.perf_counter() - began:.0f} s",
                      file=sys.stderr)  # fmt: skip
    latency = small_call_latency()
    for name, seconds in latency.items():
        rows.append(
            {
                "benchmark": f"{LATENCY_SIZE}-element call",
                "dtype": "float32",
                "loss": "sigmoid",
                "pos_weight": "none",
                "direction": "loss",
                "implementation": f"logitloss-kernel ({name})",
                "median_ms": round(seconds * 1e3, 4),
                "min_ms": "",
                "ratio_to_memory_limit": "",
                "repeats": 201,
                "quiet_machine": "",
            }
        )

    env = environment()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_logistic.csv"
    with path.open("w", newline="") as handle:
        for key, value in env.items():
            handle.write(f"# {key}: {value}\n")
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print_table(rows, env, latency)
    print(f"\nwrote {path}")
    return 0


def print_table(rows: list[dict[str, Any]], env: dict[str, str], latency: dict) -> None:
    names = [
        "memory-limit",
        "logitloss-kernel",
        "memory-limit-out",
        "logitloss-kernel-out",
        "logitloss-kernel-1thread",
        "torch",
        "jax",
        "tensorflow",
        "numpy-stable",
        "numpy-naive",
        "logitloss-reference",
    ]
    present = [n for n in names if any(r["implementation"] == n for r in rows)]
    print(f"\nTime / np.add(logits, labels) time, median of interleaved runs; {env['cpu']}, "
          f"{env['numba_threads']} threads, {env['date']}")  # fmt: skip
    print("memory-limit = np.add(a, b) in ms; the rest are ratios to it\n")
    header = ["dtype", "loss", "pos_weight", "dir", *present, "best peer / kernel"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    cases: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if r["benchmark"].endswith("-element call"):
            continue
        key = (r["dtype"], r["loss"], r["pos_weight"], r["direction"])
        cases.setdefault(key, {})[r["implementation"]] = r
    for key, by_name in cases.items():
        cells = list(key)
        for n in present:
            r = by_name.get(n)
            if r is None:
                cells.append("n/a")
            elif n == "memory-limit":
                cells.append(f"{r['median_ms']:.1f} ms")
            else:
                cells.append(f"{r['ratio_to_memory_limit']:.2f}")
        peers = [by_name[n]["median_ms"] for n in ("torch", "jax", "tensorflow") if n in by_name]
        kernel = by_name["logitloss-kernel"]["median_ms"]
        cells.append(f"{min(peers) / kernel:.1f}x" if peers else "n/a")
        print("| " + " | ".join(cells) + " |")
    print(f"\n{LATENCY_SIZE}-element call (about 0.1 ms): " + ", ".join(
        f"{k} {v * 1e3:.3f} ms" for k, v in latency.items()))  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
