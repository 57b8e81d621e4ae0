"""The logistic losses (sigmoid, weighted with a scalar and a per-class ``pos_weight``), loss
and loss+gradient, float32 and float64, 4096 x 4096: logitloss against the memory limit and
the peers, in one process (the workloads and timing are ``logitloss._tools.bench``'s).

    python benchmarks/bench_logistic.py [--repeats 7] [--quick] [--no-peers]

Writes ``benchmarks/results/bench_logistic.csv`` beside this script.
"""

import sys
from pathlib import Path

from logitloss._tools.bench import main

RESULTS = Path(__file__).parent / "results"

if __name__ == "__main__":
    losses = ["--loss", "sigmoid", "--loss", "weighted", "--loss", "weighted-per-class"]
    sys.exit(main([*losses, "--csv", str(RESULTS / "bench_logistic.csv"), *sys.argv[1:]]))
