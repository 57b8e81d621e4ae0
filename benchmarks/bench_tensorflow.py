"""TensorFlow: ``tf.function(jit_compile=True)`` forward + backward of the reduced (mean) loss,
logitloss against ``tf.nn``, on 4096 x 4096 float32 logits.

Two logitloss modes: the default float64 internals (each loss within 1 ULP) and
``logitloss.float32_internals()`` (the same formulas in float32). Writes a long-format CSV with a
commented header (CPU model, AVX2 / AVX-512, threads, versions, date) and prints the ratios.

    .venv/bin/python benchmarks/bench_tensorflow.py [--size 4096] [--repeats 5]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import os
import platform
import subprocess
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

import logitloss

OUT = Path(__file__).parent / "results" / "bench_tensorflow.csv"


def _cpu() -> tuple[str, str]:
    """The CPU model and its widest x86 vector extension, from ``lscpu``."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown", "unknown"
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("Model name")), "unknown")  # fmt: skip
    simd = "AVX-512" if "avx512f" in text else "AVX2" if "avx2" in text else "none"
    return model, simd


def _step(loss_fn, x: tf.Tensor, target: tf.Tensor):
    """A jit-compiled forward + backward: the mean loss and its gradient w.r.t. the logits."""

    @tf.function(jit_compile=True)
    def step(x, target):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_mean(loss_fn(target, x))
        return loss, tape.gradient(loss, x)

    return step


def _time(step, x, target, repeats: int) -> float:
    """The best of ``repeats`` timed calls, in seconds, after a compiling call."""
    for out in step(x, target):
        out.numpy()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        loss, grad = step(x, target)
        loss.numpy(), grad.numpy()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    n = args.size
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(scale=4.0, size=(n, n)).astype(np.float32))
    probs = tf.constant(rng.uniform(size=(n, n)).astype(np.float32))
    soft = tf.nn.softmax(probs * 3.0)
    losses = {
        "sigmoid_cross_entropy_with_logits": (
            tf.nn.sigmoid_cross_entropy_with_logits, logitloss.sigmoid_cross_entropy_with_logits,
            probs),
        "softmax_cross_entropy_with_logits": (
            tf.nn.softmax_cross_entropy_with_logits, logitloss.softmax_cross_entropy_with_logits,
            soft),
    }  # fmt: skip
    rows = []
    for name, (theirs, ours, target) in losses.items():
        base = _time(_step(theirs, x, target), x, target, args.repeats)
        rows.append((name, "tf.nn", base, 1.0))
        exact = _time(_step(ours, x, target), x, target, args.repeats)
        rows.append((name, "logitloss float64 internals", exact, exact / base))
        with logitloss.float32_internals():  # traced inside the block: float32 internals
            fast_step = _step(ours, x, target)
            fast = _time(fast_step, x, target, args.repeats)
        rows.append((name, "logitloss float32_internals", fast, fast / base))
    model, simd = _cpu()
    header = [
        f"# cpu: {model}; simd: {simd}; threads: {os.cpu_count()}; "
        f"tensorflow {tf.__version__}; logitloss {logitloss.__version__}; "
        f"numpy {np.__version__}; python {platform.python_version()}",
        f"# date: {datetime.date.today().isoformat()}; shape: {n} x {n} float32; "
        f"tf.function(jit_compile=True) forward + backward of the mean loss; "
        f"best of {args.repeats}",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as fh:
        fh.write("\n".join(header) + "\n")
        writer = csv.writer(fh)
        writer.writerow(["loss", "implementation", "seconds", "ratio_to_tf_nn"])
        for name, impl, seconds, ratio in rows:
            writer.writerow([name, impl, f"{seconds:.4f}", f"{ratio:.2f}"])
    print("\n".join(header))
    for name, impl, seconds, ratio in rows:
        print(f"{name:36s} {impl:30s} {seconds * 1e3:9.1f} ms  {ratio:5.2f}x")


if __name__ == "__main__":
    main()
