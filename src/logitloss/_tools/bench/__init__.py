"""``logitloss bench``: logitloss against the memory limit and against PyTorch, JAX and
TensorFlow on the same arrays, in one process (``make bench`` writes the committed results).

- ``workloads``: the issue's workloads and each implementation of them;
- ``timing``: interleaved medians, rounds disturbed by other processes measured again;
- ``report``: CSV, markdown ratio table, PNG chart.

Besides the workloads it measures ``import logitloss`` and the first call in a new process (the
kernels' compile cache warm), and a 0.1 ms kernel call alone and right after a PyTorch call (the
two libraries' thread pools must not stall each other).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import report, threads, timing, workloads


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="1/16 of the rows: a rough check in under a minute")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per workload")
    parser.add_argument("--loss", action="append", choices=workloads.LOSSES,
                        help="only these losses (repeatable)")  # fmt: skip
    parser.add_argument("--dtype", action="append", choices=["float32", "float64"])
    parser.add_argument("--direction", action="append", choices=["loss", "loss+grad"])
    parser.add_argument("--no-peers", action="store_true", help="skip PyTorch, JAX, TensorFlow")
    parser.add_argument("--threads", type=_positive,
                        help="cores for every library in the run (default: all)")  # fmt: skip
    parser.add_argument("--csv", type=Path, help="write the results (long format) here")
    parser.add_argument("--markdown", type=Path, help="write the ratio table here")
    parser.add_argument("--plot", type=Path, help="write a PNG chart here (needs matplotlib)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..files import check_output, require

    if args.threads is not None:  # before any library starts its thread pool
        threads.limit(args.threads)
    if args.plot is not None:  # before minutes of timing, not after
        require("matplotlib", "--plot")
    for path, suffix in ((args.csv, ".csv"), (args.markdown, ".md"), (args.plot, ".png")):
        if path is not None:  # before minutes of timing, not after
            check_output(path, (suffix,))
    chosen = [
        w
        for w in workloads.workloads(1 / 16 if args.quick else 1.0)
        if (not args.loss or w.loss in args.loss)
        and (not args.dtype or w.dtype in args.dtype)
        and (not args.direction or w.direction in args.direction)
    ]
    rows: list[dict[str, Any]] = []
    goals = {}
    for w in chosen:
        data = workloads.make_data(w)
        impls = workloads.implementations(w, data, peers=not args.no_peers)
        samples, quiet = timing.time_case(impls, args.repeats)
        seconds = {name: statistics.median(s) for name, s in samples.items()}
        rows += report.rows_for(w, seconds, quiet)
        goals[w.name] = w.goal
        ours = seconds.get("logitloss-torch", seconds["logitloss"])
        peers = {p: seconds[p] / ours for p in report.PEERS if p in seconds}
        print(
            f"{w.name:42s} logitloss {ours * 1e3:8.2f} ms = {ours / seconds['limit']:5.2f}x limit"
            + "".join(f"  {p} {r:5.1f}x" for p, r in peers.items()),
            flush=True,
        )
        del data, impls
    startup = startup_seconds()
    latency = small_call_latency()
    for name, value in {**startup, **latency}.items():
        print(f"{name:42s} {value * 1e3:8.3f} ms")  # seconds in the CSV header
    env = timing.environment()
    env.update({k: f"{v:.6f}" for k, v in {**startup, **latency}.items()})
    table = report.markdown(rows, goals)
    print(table)
    if args.csv:
        text = report.csv_text(rows, env)
        report.write_atomically(args.csv, lambda f: f.write(text.encode()))
    if args.markdown:
        header = "".join(f"<!-- {k}: {v} -->\n" for k, v in env.items())
        report.write_atomically(args.markdown, lambda f: f.write((header + table).encode()))
    if args.plot:
        title = (
            f"logitloss bench, {env['cpu']} ({env['simd']}), {env['threads']} of "
            f"{env['cores']} cores, {env['date'][:10]}"
        )
        report.plot(rows, args.plot, title)
    return 0


def startup_seconds() -> dict[str, float]:
    """``import logitloss`` and the first call on a 256 x 256 array (a kernel) in a new
    process, median of 3 (the compile cache is warm after this process's own calls)."""
    code = (
        "import time; t0 = time.perf_counter(); import logitloss; t1 = time.perf_counter(); "
        "import numpy as np; x = np.zeros((256, 256), np.float32); "
        "t2 = time.perf_counter(); logitloss.sigmoid_cross_entropy_with_logits(x, x); "
        "print(t1 - t0, time.perf_counter() - t2)"
    )
    runs = []
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            return {}
        runs.append([float(v) for v in out.stdout.split()])
    return {
        "import_seconds": statistics.median(r[0] for r in runs),
        "first_call_seconds": statistics.median(r[1] for r in runs),
    }


def small_call_latency(repeats: int = 201) -> dict[str, float]:
    """A 100 000-element loss (a parallel kernel call, about 0.1 ms) alone, and right after a
    parallel PyTorch operation, whose threads may still be spinning."""
    import logitloss

    rng = np.random.default_rng(1)
    x = rng.standard_normal(100_000).astype(np.float32)
    z = rng.random(100_000).astype(np.float32)

    def call() -> float:
        start = time.perf_counter()
        logitloss.sigmoid_cross_entropy_with_logits(z, x)
        return time.perf_counter() - start

    for _ in range(20):
        call()
    result = {"small_call_seconds": statistics.median(call() for _ in range(repeats))}
    try:
        import torch
    except ImportError:
        return result
    t = torch.randn(2_000_000)

    def after_torch() -> float:
        (t * 2 + 1).sum()
        return call()

    samples = sorted(after_torch() for _ in range(repeats))
    result["small_call_after_torch_seconds"] = statistics.median(samples)
    result["small_call_after_torch_p90_seconds"] = samples[int(0.9 * len(samples))]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="logitloss bench", description=__doc__)
    configure(parser)
    return run(parser.parse_args(argv))
