"""benchmarks/compile_times.py: a pytest run with the plugin writes one row per numba
compilation, with its depth and the test that caused it."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("numba")

ROOT = Path(__file__).resolve().parents[1]

SAMPLE = """
import numba

@numba.njit
def inner(a):
    return a + 1

@numba.njit
def outer(a):
    return inner(a) * 2

def test_compiles():
    assert outer(1.5) == 5.0
    assert outer(2.5) == 7.0  # the same types: no second compilation
"""


def test_rows_for_each_compilation(tmp_path: Path) -> None:
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    out = tmp_path / "times.csv"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "benchmarks"), COMPILE_TIMES_CSV=str(out))
    command = [sys.executable, "-m", "pytest", "-q", "-p", "compile_times",
               "-p", "no:cacheprovider", "--rootdir", str(tmp_path), "-c", os.devnull,
               str(tmp_path / "test_sample.py")]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 numba compilations" in done.stdout
    rows = list(csv.DictReader(out.open()))
    by_function = {row["function"].rsplit(".", 1)[-1]: row for row in rows}
    assert sorted(by_function) == ["inner", "outer"]
    assert by_function["outer"]["depth"] == "0" and by_function["inner"]["depth"] == "1"
    assert all(row["test"].endswith("test_sample.py::test_compiles") for row in rows)
    assert float(by_function["outer"]["seconds"]) >= float(by_function["inner"]["seconds"]) > 0
    assert "float64" in by_function["inner"]["args"]
