"""Keras ``model.fit``: a training epoch with ``logitloss.keras``'s losses against Keras' own, on
each Keras backend (TensorFlow, JAX, PyTorch; one subprocess each, as the backend is fixed when
Keras is imported).

    .venv/bin/python benchmarks/bench_keras.py [--repeats 3] [--csv PATH]

The model is a small classifier (64 features -> 256 -> classes), batch 256, 8192 samples; its
loss is the sparse categorical cross-entropy (1000 classes) and the binary cross-entropy (16
outputs), from logits. Each epoch is timed after a warm-up epoch (compilation); the best of
``--repeats``. Writes a long-format CSV with a commented header (CPU, vector width, threads,
versions, date) and prints the ratios.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "bench_keras.csv"
BACKENDS = ("tensorflow", "jax", "torch")

# Run in a subprocess with KERAS_BACKEND set: prints one JSON object of seconds per epoch.
_CHILD = r"""
import json, sys, time
import numpy as np
import keras
import logitloss.keras as lk

repeats = int(sys.argv[1])
rng = np.random.default_rng(0)
features = rng.standard_normal((8192, 64)).astype("float32")
cases = {
    "sparse 1000 classes": (
        rng.integers(0, 1000, 8192), 1000,
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        lk.SparseCategoricalCrossentropy(from_logits=True),
    ),
    "binary 16 outputs": (
        rng.integers(0, 2, (8192, 16)).astype("float32"), 16,
        keras.losses.BinaryCrossentropy(from_logits=True),
        lk.BinaryCrossentropy(from_logits=True),
    ),
}
result = {"keras": keras.__version__, "backend": keras.backend.backend()}
for case, (labels, outputs, theirs, ours) in cases.items():
    for name, loss in (("keras", theirs), ("logitloss", ours)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256, activation="relu"),
                                  keras.layers.Dense(outputs)])
        model.compile(optimizer="sgd", loss=loss)
        model.fit(features, labels, batch_size=256, epochs=1, verbose=0)  # compiles
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            model.fit(features, labels, batch_size=256, epochs=1, verbose=0)
            best = min(best, time.perf_counter() - start)
        result[f"{case}|{name}"] = best
print(json.dumps(result))
"""


def run(backend: str, repeats: int) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", _CHILD, str(repeats)], env=env,
                          capture_output=True, text=True, check=False)  # fmt: skip
    if done.returncode:
        raise SystemExit(f"{backend}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--csv", type=Path, default=OUT)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from logitloss._tools.bench import threads, timing

    lines = []
    keras_version = "?"
    for backend in BACKENDS:
        found = run(backend, args.repeats)
        keras_version = found.pop("keras")
        found.pop("backend")
        cases = sorted({key.split("|")[0] for key in found})
        for case in cases:
            theirs, ours = found[f"{case}|keras"], found[f"{case}|logitloss"]
            lines.append(f"{backend},{case},{theirs:.4f},{ours:.4f},{ours / theirs:.2f}")
            print(f"{backend:10s} {case:20s} keras {theirs * 1e3:7.1f} ms  "
                  f"logitloss {ours * 1e3:7.1f} ms  {ours / theirs:5.2f}x")  # fmt: skip
    date = datetime.date.today().isoformat()
    header = (
        f"# cpu: {timing.cpu_name()}; simd: {timing.simd()}; threads: {threads.available()}; "
        f"keras {keras_version}; date: {date}\n"
        "# model.fit, one epoch of 8192 samples, batch 256, 64 -> 256 -> outputs; best of "
        f"{args.repeats} after a warm-up epoch\n"
        "backend,case,keras_seconds,logitloss_seconds,ratio\n"
    )
    args.csv.write_text(header + "\n".join(lines) + "\n")
    print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
