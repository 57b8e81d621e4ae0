"""How many cores a benchmark run uses: every library in the process held to the same count.

A run with one thread answers "how fast on one core" (a container, a notebook on a small VM); a
run with all cores the usual question. Each library sizes its thread pool its own way, and most
fix it when the pool starts, so the count is applied before any of them runs a parallel
operation: the process's CPU affinity (which bounds every pool, XLA's and TensorFlow's
included, and which logitloss's kernels read), the OpenMP and numba thread counts (environment
variables read when those libraries start), PyTorch's intra-op threads, and TensorFlow's two
pools when TensorFlow is imported later (:func:`configure_tensorflow`).
"""

from __future__ import annotations

import os
import sys
from typing import Any


def available() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def limit(count: int) -> int:
    """Hold this process to ``count`` cores (at most the available ones); the count applied.

    Best before any library has started its threads: a pool already started keeps its size,
    but the affinity still keeps it on ``count`` cores.
    """
    count = max(1, min(count, available()))
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))[:count]
        os.sched_setaffinity(0, cores)
    for name in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(count)
    numba = sys.modules.get("numba")
    if numba is not None and count <= numba.config.NUMBA_NUM_THREADS:
        numba.set_num_threads(count)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(count)
    return count


def configure_tensorflow(tf: Any, count: int) -> None:
    """TensorFlow's intra- and inter-op pools to ``count`` threads, if it has not started them
    yet (it refuses afterwards; the affinity still applies)."""
    threading = tf.config.threading
    try:
        threading.set_intra_op_parallelism_threads(count)
        threading.set_inter_op_parallelism_threads(count)
    except RuntimeError:
        pass


def in_use() -> int:
    """The thread count the kernels use in this process (the affinity, capped by numba's
    configured count when numba is loaded)."""
    count = available()
    numba = sys.modules.get("numba")
    if numba is not None:
        count = min(count, numba.config.NUMBA_NUM_THREADS)
    return count
