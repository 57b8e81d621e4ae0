"""Time and peak memory of ``linear_cross_entropy`` against the materialised N x V logits.

One training step of a language-model head: the loss of ``hidden @ weight.T`` (integer labels,
``reduction="mean"``, float32) and its gradients with respect to ``hidden`` and ``weight``.
Implementations:

- ``numpy-materialised``: ``x = hidden @ weight.T``; stable log-softmax; ``G = softmax - onehot``;
  ``d_hidden = G @ weight``, ``d_weight = G.T @ hidden`` (the N x V logits, and G, in memory);
- ``logitloss-numpy``: ``logitloss.linear_cross_entropy_value_and_grad`` (chunked, fused);
- ``torch-materialised``: ``F.cross_entropy(hidden @ weight.T, labels)`` and ``.backward()``;
- ``logitloss-torch``: ``logitloss.linear_cross_entropy`` on tensors, ``.backward()``;
- ``torch-linear-ce-chunked``: ``torch.nn.functional.linear_cross_entropy`` with
  ``options=LinearCrossEntropyOptions()`` (PyTorch's own opt-in chunking), when torch has it.

Each (size, implementation) runs in a fresh subprocess: inputs are made (float32, seeded), a
small problem warms the libraries up, the peak resident set so far (``ru_maxrss``) is read, the
step runs ``1 + repeats`` times (the first is a warm-up at full size; gradients are dropped between
runs), and the reported peak extra memory is ``ru_maxrss`` after minus before: what the step
needs beyond its inputs (gradients included). Time is the median of the repeats.

On the small size the gradients are also compared with a float64 materialised computation
(``max |g - g64| / max |g64|`` over ``d_hidden`` and ``d_weight``), to show the chunked float32
results are as close as the materialised float32 ones.

Writes ``benchmarks/results/bench_linear_cross_entropy.csv`` (long format, ``#`` header lines
with machine, versions, date, the load average and a ``quiet_machine`` flag) and prints a table.

    python benchmarks/bench_linear_cross_entropy.py [--repeats 3,1] [--sizes 2048x256x32000,...]
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SIZES = ("2048x256x32000", "8192x1024x32768")  # N x H x V: the prototype, its goal
IMPLS = (
    "numpy-materialised",
    "logitloss-numpy",
    "torch-materialised",
    "logitloss-torch",
    "torch-linear-ce-chunked",
)
ROOT = Path(__file__).resolve().parent


def _inputs(n: int, h: int, v: int, seed: int = 0) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, h), dtype=np.float32)
    # A trained-head scale: logits of standard deviation ~2, so the softmax is not uniform.
    weight = rng.standard_normal((v, h), dtype=np.float32)
    weight *= np.float32(2.0 / np.sqrt(h))
    labels = rng.integers(0, v, n)
    labels[::17] = -100  # some ignored rows, as padding
    return hidden, weight, labels


def numpy_materialised(hidden: np.ndarray, weight: np.ndarray, labels: np.ndarray) -> tuple:
    x = hidden @ weight.T
    counted = labels != -100
    y = np.where(counted, labels, 0)
    rows = np.arange(len(labels))
    m = x.max(1, keepdims=True)
    x -= m
    shifted_y = x[rows, y]
    np.exp(x, out=x)
    s = x.sum(1, keepdims=True)
    loss = float(np.sum((np.log(s[:, 0]) - shifted_y) * counted) / counted.sum())
    x /= s  # softmax
    x[rows, y] -= 1
    x *= (counted / counted.sum()).astype(x.dtype)[:, None]
    return loss, x @ weight, x.T @ hidden


def _step(name: str, hidden: np.ndarray, weight: np.ndarray, labels: np.ndarray) -> Any:
    """A callable running one forward + backward, returning (d_hidden, d_weight) as NumPy."""
    if name == "numpy-materialised":
        return lambda: numpy_materialised(hidden, weight, labels)[1:]
    if name == "logitloss-numpy":
        import logitloss

        def run() -> tuple:
            _, (dh, dw, _) = logitloss.linear_cross_entropy_value_and_grad(hidden, weight, labels)
            return dh, dw

        return run
    import torch
    import torch.nn.functional as F

    th0, tw0, ty = torch.from_numpy(hidden), torch.from_numpy(weight), torch.from_numpy(labels)

    def torch_run(loss_fn: Any) -> Any:
        def run() -> tuple:
            th = th0.detach().requires_grad_(True)
            tw = tw0.detach().requires_grad_(True)
            loss_fn(th, tw).backward()
            return th.grad.numpy(), tw.grad.numpy()

        return run

    if name == "torch-materialised":
        return torch_run(lambda th, tw: F.cross_entropy(th @ tw.T, ty))
    if name == "logitloss-torch":
        import logitloss

        return torch_run(lambda th, tw: logitloss.linear_cross_entropy(th, tw, ty))
    if name == "torch-linear-ce-chunked":
        if not hasattr(F, "linear_cross_entropy"):
            return None
        opts = torch.nn.LinearCrossEntropyOptions()
        return torch_run(lambda th, tw: F.linear_cross_entropy(th, tw, ty, options=opts))
    raise ValueError(name)


def _oracle64(hidden: np.ndarray, weight: np.ndarray, labels: np.ndarray) -> tuple:
    """d_hidden, d_weight of the mean loss, materialised in float64 (scipy's logsumexp)."""
    from scipy.special import logsumexp

    h64, w64 = hidden.astype(np.float64), weight.astype(np.float64)
    x = h64 @ w64.T
    counted = labels != -100
    g = np.exp(x - logsumexp(x, axis=1, keepdims=True))
    g[np.arange(len(labels)), np.where(counted, labels, 0)] -= 1
    g *= (counted / counted.sum())[:, None]
    return g @ w64, g.T @ h64


def child(name: str, size: str, repeats: int, accuracy: bool) -> dict:
    n, h, v = (int(s) for s in size.split("x"))
    hidden, weight, labels = _inputs(n, h, v)
    warm = _step(name, *_inputs(64, 16, 128, seed=1))
    if warm is None:
        return {"skipped": True}
    warm()
    step = _step(name, hidden, weight, labels)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(1 + repeats):
        t0 = time.perf_counter()
        grads = step()
        times.append(time.perf_counter() - t0)
        if len(times) <= repeats:
            del grads
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    out = {"seconds": statistics.median(times[1:]), "first_seconds": times[0],
           "peak_extra_mib": peak / 1024}  # fmt: skip
    if accuracy:
        exact = _oracle64(hidden, weight, labels)
        out["grad_rel_error"] = max(
            float(np.max(np.abs(g - e)) / np.max(np.abs(e)))
            for g, e in zip(grads, exact, strict=True)
        )
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "scipy", "logitloss"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = "absent"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", default="3,1", help="timed runs per size (comma list, last one repeats)"
    )
    parser.add_argument("--sizes", default=",".join(SIZES))
    parser.add_argument("--impls", default=",".join(IMPLS))
    parser.add_argument("--out", type=Path, default=ROOT / "results")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        name, size, accuracy = args.child
        print(json.dumps(child(name, size, int(args.repeats), accuracy == "1")))
        return 0

    load_before = os.getloadavg()
    start = datetime.datetime.now(datetime.timezone.utc)
    sizes = args.sizes.split(",")
    counts = [int(r) for r in args.repeats.split(",")]
    counts += counts[-1:] * len(sizes)
    rows = []
    for size, repeats in zip(sizes, counts[: len(sizes)], strict=True):
        accuracy = size == min(sizes, key=lambda s: np.prod([int(p) for p in s.split("x")]))
        for name in args.impls.split(","):
            cmd = [sys.executable, __file__, "--repeats", str(repeats),
                   "--child", name, size, "1" if accuracy else "0"]  # fmt: skip
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                print(res.stderr, file=sys.stderr)
                continue
            result = json.loads(res.stdout.strip().splitlines()[-1])
            if result.get("skipped"):
                continue
            rows.append({"size": size, "impl": name, **result})
            print(size, name, json.dumps(result), flush=True)
    load_after = os.getloadavg()
    cores = os.cpu_count() or 1
    # Quiet: no other work on the machine (load average well under one core) before and after.
    quiet = max(load_before[0], load_after[0]) < 0.5

    baseline = {
        (r["size"], lib): r for r in rows
        for lib in ("numpy", "torch") if r["impl"] == f"{lib}-materialised"
    }  # fmt: skip
    for r in rows:
        base = baseline.get((r["size"], "numpy" if "numpy" in r["impl"] else "torch"))
        if base:
            r["time_ratio"] = r["seconds"] / base["seconds"]
            r["memory_ratio"] = r["peak_extra_mib"] / base["peak_extra_mib"]

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_linear_cross_entropy.csv"
    fields = ["size", "impl", "seconds", "first_seconds", "peak_extra_mib", "time_ratio",
              "memory_ratio", "grad_rel_error"]  # fmt: skip
    with path.open("w", newline="") as f:
        f.write(f"# date: {start.isoformat(timespec='seconds')}\n")
        f.write(f"# machine: {platform.machine()} {platform.processor() or ''}".rstrip() + "\n")
        f.write(f"# cores: {cores}\n")
        for mod, ver in _versions().items():
            f.write(f"# {mod}: {ver}\n")
        f.write(f"# torch_threads: {_torch_threads()}\n")
        f.write(f"# repeats per size: {args.repeats} (median), after one full-size warm-up run\n")
        f.write(f"# loadavg_before: {load_before[0]:.2f} loadavg_after: {load_after[0]:.2f}\n")
        f.write(f"# quiet_machine: {quiet}\n")
        command = " ".join(argv if argv is not None else sys.argv[1:])
        f.write(f"# command: python benchmarks/{Path(__file__).name} {command}\n")
        writer = csv.DictWriter(f, fields, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()})
    print(f"wrote {path} (quiet_machine={quiet}, load {load_before[0]:.2f} -> {load_after[0]:.2f})")
    return 0


def _torch_threads() -> str:
    try:
        import torch
    except ImportError:
        return "absent"
    return str(torch.get_num_threads())


if __name__ == "__main__":
    sys.exit(main())
