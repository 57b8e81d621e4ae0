"""The softmax kernels (``logitloss._kernels``: soft and integer labels, loss and fused
loss+gradient) against the memory limit and the peers, in one process.

    python benchmarks/bench_softmax.py [--repeats 5] [--quick] [--no-peers] [--dtype float32]

Workloads (the issue's): soft labels 8192 x 1024 and 2048 x 32768, integer labels 2048 x 32768,
float32 and float64, ``loss`` and ``loss+grad``. Implementations, timed interleaved (every round
calls each once, in a rotating order; medians; rounds during which other processes used more
than a tenth of a core are measured again, see ``logitloss._tools.bench.timing``):

- ``limit``: a row sum over the same bytes, measured in the same run (``x.sum(axis=1)`` and
  ``z.sum(axis=1)`` for soft labels, ``x.sum(axis=1)`` for integer labels);
- ``logitloss-kernel``: the kernels called directly (``softmax_loss``,
  ``softmax_loss_and_grad``, ``sparse_*``), NumPy arrays in and out;
- ``torch``: ``F.cross_entropy`` with probability / integer targets (``.backward()`` for
  loss+grad); ``jax``: ``jax.jit`` of optax's ``softmax_cross_entropy`` /
  ``..._with_integer_labels`` (``value_and_grad``); ``tensorflow``: ``tf.function(jit_compile=
  True)`` of ``tf.nn.softmax_cross_entropy_with_logits`` / sparse (``GradientTape``).

Writes ``benchmarks/results/bench_softmax.csv`` (long format; machine, versions, date and
whether each workload was measured on a quiet machine).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Any

from logitloss._tools.bench import report, timing, workloads

RESULTS = Path(__file__).parent / "results"


def kernel_impl(w: workloads.Workload, d: workloads.Data) -> Any:
    from logitloss._losses.softmax import kernel as softmax_kernels

    x, z = d.x, d.z
    if w.loss == "sparse":
        if w.direction == "loss":
            return lambda: softmax_kernels.sparse_softmax_loss(x, z)
        return lambda: softmax_kernels.sparse_softmax_loss_and_grad(x, z)
    if w.direction == "loss":
        return lambda: softmax_kernels.softmax_loss(x, z)
    return lambda: softmax_kernels.softmax_loss_and_grad(x, z)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="1/16 of the rows")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--dtype", action="append", choices=["float32", "float64"])
    parser.add_argument("--direction", action="append", choices=["loss", "loss+grad"])
    parser.add_argument("--csv", type=Path, default=RESULTS / "bench_softmax.csv")
    args = parser.parse_args(argv)
    chosen = [
        w
        for w in workloads.workloads(1 / 16 if args.quick else 1.0)
        if w.loss in ("softmax", "sparse")
        and (not args.dtype or w.dtype in args.dtype)
        and (not args.direction or w.direction in args.direction)
    ]
    rows: list[dict[str, Any]] = []
    all_quiet = True
    for w in chosen:
        data = workloads.make_data(w)
        impls: dict[str, Any] = {
            "limit": workloads.limit(w, data),
            "logitloss-kernel": kernel_impl(w, data),
        }
        if not args.no_peers:
            for name, make in (
                ("torch", workloads.peer_torch),
                ("jax", workloads.peer_jax),
                ("tensorflow", workloads.peer_tensorflow),
            ):
                impl = make(w, data)
                if impl is not None:
                    impls[name] = impl
        samples, quiet = timing.time_case(impls, args.repeats)
        all_quiet &= quiet
        seconds = {name: statistics.median(s) for name, s in samples.items()}
        for row in report.rows_for(w, seconds, quiet):
            row["impl"] = "logitloss" if row["impl"] == "logitloss-kernel" else row["impl"]
            rows.append(row)
        ours = seconds["logitloss-kernel"]
        peers = "".join(f"  {p} {seconds[p] / ours:5.2f}x" for p in report.PEERS if p in seconds)
        print(
            f"{w.name:40s} {ours * 1e3:8.2f} ms = {ours / seconds['limit']:5.2f}x limit "
            f"(goal {w.goal}x){peers}  quiet={quiet}",
            flush=True,
        )
        del data, impls
    env = timing.environment()
    env["quiet_machine"] = str(all_quiet)
    env["command"] = "python benchmarks/bench_softmax.py " + " ".join(argv or sys.argv[1:])
    text = report.csv_text(rows, env)
    report.write_atomically(args.csv, lambda f: f.write(text.encode()))
    print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
