"""Startup: ``import logitloss`` and the first calls in a fresh process, with a warm kernel cache.

Each round starts a new Python process that imports logitloss, then calls the sigmoid and the
softmax loss on 1000 x 100 float32 arrays (100 000 elements: the kernels take them, so the first
call imports numba and loads the compiled kernels from the on-disk cache). The breakdown rows
time what that first call pays for, each in its own fresh process: importing numba, and
numba's first use of its compiler (which imports numba's NumPy support, and through it SciPy's
BLAS bindings when SciPy is installed).

    python benchmarks/bench_startup.py [--rounds 9] [--csv benchmarks/results/startup.csv]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from logitloss._tools.bench import timing

FIRST_CALLS = """
import time
t0 = time.perf_counter()
import numpy as np
import logitloss
t1 = time.perf_counter()
x = np.random.default_rng(0).standard_normal((1000, 100)).astype(np.float32)
z = np.full_like(x, 0.01)
t2 = time.perf_counter()
logitloss.sigmoid_cross_entropy_with_logits(z, x)
t3 = time.perf_counter()
logitloss.softmax_cross_entropy_with_logits(z, x)
t4 = time.perf_counter()
import json
print(json.dumps({"import": t1 - t0, "first sigmoid": t3 - t2, "first softmax": t4 - t3,
       "import + both calls": (t1 - t0) + (t4 - t2)}))
"""

BREAKDOWN = """
import time
import numpy as np
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
numba.njit(lambda a: a + 1)(1.0)  # numba's first compile: its registries, NumPy support
t2 = time.perf_counter()
import json, sys
print(json.dumps({"import numba": t1 - t0, "numba's first compile": t2 - t1,
                  "scipy imported by numba": float("scipy.linalg" in sys.modules)}))
"""


# Run first, as if SciPy were not installed: what numba's check for SciPy's BLAS (on its first
# compile) costs.
NO_SCIPY = "import sys; sys.modules['scipy'] = None\n"


def _rounds(code: str, rounds: int, suffix: str = "") -> dict[str, float]:
    samples: dict[str, list[float]] = {}
    for _ in range(rounds):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(out.stderr)
        for key, value in json.loads(out.stdout).items():
            samples.setdefault(key + suffix, []).append(value)
    return {key: statistics.median(values) for key, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--csv", type=Path, default=Path("benchmarks/results/startup.csv"))
    args = parser.parse_args()
    _rounds(FIRST_CALLS, 1)  # fills the kernel cache if it is cold
    results = {
        **_rounds(FIRST_CALLS, args.rounds),
        **_rounds(BREAKDOWN, args.rounds),
        **_rounds(NO_SCIPY + FIRST_CALLS, args.rounds, " (no SciPy)"),
        **_rounds(NO_SCIPY + BREAKDOWN, args.rounds, " (no SciPy)"),
    }
    import numba
    import numpy

    env = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": timing.cpu_name(),
        "simd": timing.simd(),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "numba": numba.__version__,
        "rounds": args.rounds,
    }
    print(json.dumps({**env, **{k: round(v, 4) for k, v in results.items()}}, indent=1))
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with args.csv.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["measure", "seconds", *env])
        for key, value in results.items():
            writer.writerow([key, f"{value:.4f}", *env.values()])


if __name__ == "__main__":
    main()
