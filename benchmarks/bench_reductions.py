"""The reduced training losses ("mean"): logitloss's one-pass reductions against the
materialised path (the unreduced loss, then its mean) and the peers, in one process.

- ``binary_cross_entropy_with_logits`` 4096 x 4096 (with a per-class ``pos_weight``): the sum
  kernel, which never writes the per-element loss;
- ``cross_entropy`` with class indices (and class weights) 2048 x 32768: the sparse kernel
  writes only the per-row loss, in float64, from the logits in their own dtype.

``limit`` is reading the inputs once (``x.sum()`` and ``z.sum()``; ``x.sum(axis=-1)``).

    python benchmarks/bench_reductions.py [--repeats 7] [--dtype float32]

Writes ``benchmarks/results/bench_reductions.csv`` (machine, versions and date in ``#`` lines).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import logitloss
from logitloss._tools.bench import report, timing

RESULTS = Path(__file__).parent / "results"


def _optional(name: str) -> Any:
    try:
        return __import__(name)
    except ImportError:
        return None


def binary(dtype: str) -> tuple[str, dict[str, Callable[[], object]]]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((4096, 4096)) * 4).astype(dtype)
    z = rng.random(x.shape).astype(dtype)
    q = np.linspace(0.5, 4, x.shape[1]).astype(dtype)
    impls: dict[str, Callable[[], object]] = {
        "limit": lambda: (x.sum(), z.sum()),
        "logitloss": lambda: logitloss.binary_cross_entropy_with_logits(x, z, pos_weight=q),
        "logitloss-materialised": lambda: np.mean(
            logitloss.binary_cross_entropy_with_logits(x, z, pos_weight=q, reduction="none"),
            dtype=np.float64,
        ),
    }
    torch = _optional("torch")
    if torch is not None:
        import torch.nn.functional as F

        tx, tz, tq = torch.from_numpy(x), torch.from_numpy(z), torch.from_numpy(q)
        impls["torch"] = lambda: F.binary_cross_entropy_with_logits(tx, tz, pos_weight=tq)
        impls["logitloss-torch"] = lambda: logitloss.binary_cross_entropy_with_logits(
            tx, tz, pos_weight=tq
        )
    return f"binary_cross_entropy_with_logits 4096x4096 {dtype} mean", impls


def indices(dtype: str) -> tuple[str, dict[str, Callable[[], object]]]:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((2048, 32768)) * 4).astype(dtype)
    labels = rng.integers(0, x.shape[1], x.shape[0])
    w = np.linspace(0.5, 2, x.shape[1]).astype(dtype)
    impls: dict[str, Callable[[], object]] = {
        "limit": lambda: x.sum(axis=-1),
        "logitloss": lambda: logitloss.cross_entropy(x, labels, weight=w),
        "logitloss-materialised": lambda: (
            np.sum(
                w[labels] * logitloss.sparse_softmax_cross_entropy_with_logits(labels, x),
                dtype=np.float64,
            )
            / np.sum(w[labels], dtype=np.float64)
        ),
    }
    torch = _optional("torch")
    if torch is not None:
        import torch.nn.functional as F

        tx, tl, tw = torch.from_numpy(x), torch.from_numpy(labels), torch.from_numpy(w)
        impls["torch"] = lambda: F.cross_entropy(tx, tl, weight=tw)
        impls["logitloss-torch"] = lambda: logitloss.cross_entropy(tx, tl, weight=tw)
    return f"cross_entropy 2048x32768 {dtype} indices mean", impls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dtype", action="append", choices=["float32", "float64"])
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_reductions.csv")
    args = parser.parse_args(argv)
    rows = []
    for dtype in args.dtype or ["float32", "float64"]:
        for make in (binary, indices):
            name, impls = make(dtype)
            samples, quiet = timing.time_case(impls, args.repeats)
            seconds = {impl: statistics.median(s) for impl, s in samples.items()}
            limit = seconds["limit"]
            for impl, s in seconds.items():
                ratio = f"{s / limit:.3f}"
                rows.append({"workload": name, "impl": impl, "seconds": f"{s:.6g}",
                             "ratio_to_limit": ratio, "quiet_machine": quiet})  # fmt: skip
                print(f"{name:52s} {impl:24s} {s * 1e3:9.2f} ms  {s / limit:6.2f}x limit")
    env = timing.environment()
    fields = ("workload", "impl", "seconds", "ratio_to_limit", "quiet_machine")
    text = "".join(f"# {k}: {v}\n" for k, v in env.items()) + ",".join(fields) + "\n"
    text += "".join(",".join(str(r[f]) for f in fields) + "\n" for r in rows)
    report.write_atomically(args.out, lambda f: f.write(text.encode()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
