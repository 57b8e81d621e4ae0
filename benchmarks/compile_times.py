"""A pytest plugin that records every numba compilation a test run makes (cache misses only):
where a cold ``make test`` (a fresh clone, CI) spends its time.

    PYTHONPATH=benchmarks .venv/bin/python -m pytest -p compile_times [pytest args]

writes ``compile_times.csv`` (or ``$COMPILE_TIMES_CSV``): one row per compilation, its nesting
depth (0: called from Python; deeper: a callee compiled for it), the function, its argument
types, seconds (a callee's time is inside its caller's) and the test that triggered it. Delete
the kernels' cache first (``find src -name '*.nb[ic]' -delete``) to see a cold run.
"""

from __future__ import annotations

import csv
import os
import time
from typing import Any

from numba.core import event


class _Recorder(event.Listener):
    def __init__(self) -> None:
        self.open: list[tuple[float, str, str]] = []
        self.rows: list[tuple[int, str, str, float, str]] = []
        self.test = "<collection>"

    def on_start(self, ev: Any) -> None:
        function = getattr(ev.data["dispatcher"], "py_func", None)
        name = f"{function.__module__}.{function.__qualname__}" if function else "?"
        self.open.append((time.perf_counter(), name, str(ev.data["args"])))

    def on_end(self, ev: Any) -> None:
        start, name, args = self.open.pop()
        seconds = time.perf_counter() - start
        self.rows.append((len(self.open), name, args, seconds, self.test))


_RECORDER = _Recorder()
event.register("numba:compile", _RECORDER)


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    _RECORDER.test = nodeid


def pytest_sessionfinish(session: Any) -> None:
    path = os.environ.get("COMPILE_TIMES_CSV", "compile_times.csv")
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["depth", "function", "args", "seconds", "test"])
        writer.writerows(_RECORDER.rows)
    top = sum(row[3] for row in _RECORDER.rows if row[0] == 0)
    print(f"\n{len(_RECORDER.rows)} numba compilations, {top:.0f} s at depth 0: {path}")
