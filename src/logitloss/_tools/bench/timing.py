"""Timing on a shared machine: interleaved rounds, medians, rounds disturbed by other processes
measured again, and the environment the numbers were taken in."""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from . import threads

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
ROUNDS = {"quiet": 0, "discarded": 0}


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


def time_case(impls: dict[str, Callable[[], object]], repeats: int) -> tuple[dict, bool]:
    """Seconds per call of each implementation, and whether the machine was quiet.

    Interleaved: every round calls each implementation once, in a rotating order; rounds
    disturbed by other processes (:class:`Quiet`) are run again, up to 2x ``repeats`` rounds
    (then the disturbed ones count too, and the result says the machine was not quiet).
    """
    for f in impls.values():  # warm-up: compilation, first touch of caches and thread pools
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
        ROUNDS["quiet" if q.ok else "discarded"] += 1
        if len(quiet[names[0]]) >= repeats:
            return quiet, True
    return (quiet, True) if len(quiet[names[0]]) >= 3 else (every, False)


def environment() -> dict[str, str]:
    """Machine, versions and date, for the CSV header."""
    env = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpu": cpu_name(),
        "simd": simd(),
        "cores": str(os.cpu_count()),
        "threads": str(threads.in_use()),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    from ... import __version__

    env["logitloss"] = __version__
    for name in ("numba", "torch", "jax", "tensorflow"):
        module = sys.modules.get(name)
        if module is not None:
            env[name] = module.__version__
    parallel = sys.modules.get("numba.np.ufunc.parallel")
    if parallel is not None:
        import numba

        env["numba_threads"] = str(numba.config.NUMBA_NUM_THREADS)
        # Only a parallel kernel starts the threads (small calls run on the caller's thread).
        started = parallel._is_initialized
        env["numba_threading_layer"] = numba.threading_layer() if started else "not started"
    env["quiet_rounds"] = str(ROUNDS["quiet"])
    env["rounds_discarded_for_other_processes"] = str(ROUNDS["discarded"])
    return env


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def simd() -> str:
    """The widest vector extension the CPU reports: ``AVX-512``, ``AVX2``, ``NEON`` (ARM's
    ``asimd``), else the machine's architecture."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    for flag, name in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("asimd", "NEON")):
        if flag in flags:
            return name
    return platform.machine()
