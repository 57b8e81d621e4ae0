"""The benchmark harness: what it writes, and that its ratios and goal marks are right."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from logitloss import cli
from logitloss._tools.bench import report, workloads


def _read_csv(path: Path) -> tuple[dict[str, str], list[dict[str, str]]]:
    lines = path.read_text().splitlines()
    env = dict(line[2:].split(": ", 1) for line in lines if line.startswith("# "))
    return env, list(csv.DictReader(line for line in lines if not line.startswith("#")))


def test_a_quick_run_writes_csv_markdown_and_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = {name: tmp_path / f"bench.{name}" for name in ("csv", "md", "png")}
    code = cli.main(
        ["bench", "--quick", "--no-peers", "--repeats", "2", "--loss", "sigmoid",
         "--dtype", "float32", "--csv", str(paths["csv"]), "--markdown", str(paths["md"]),
         "--plot", str(paths["png"])]
    )  # fmt: skip
    assert code == 0
    env, rows = _read_csv(paths["csv"])
    assert {"date", "cpu", "cores", "numpy", "logitloss"} <= set(env)
    assert float(env["import_seconds"]) > 0
    impls = {(r["direction"], r["impl"]) for r in rows}
    assert {("loss", "limit"), ("loss", "logitloss"), ("loss+grad", "logitloss-torch")} <= impls
    for row in rows:  # the ratio is the row's time over its workload's limit
        limit = next(r for r in rows if r["workload"] == row["workload"] and r["impl"] == "limit")
        ratio = float(row["seconds"]) / float(limit["seconds"])
        assert float(row["ratio_to_limit"]) == pytest.approx(ratio, rel=2e-3)
    assert "| sigmoid 256x4096 float32 loss |" in paths["md"].read_text()
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".bench*"))  # no temporary left behind


def test_a_missing_output_directory_fails_before_timing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    missing = tmp_path / "nowhere" / "bench.csv"
    assert cli.main(["bench", "--no-peers", "--csv", str(missing)]) == 1
    err = capsys.readouterr().err
    assert "nowhere" in err and "no such directory" in err and "Traceback" not in err


def test_markdown_marks_missed_goals() -> None:
    w = workloads.Workload("sigmoid", (4, 4), "float32", "loss")
    fast = {"limit": 1.0, "logitloss": 1.2, "torch": 6.0, "jax": 4.0}
    slow = {"limit": 1.0, "logitloss": 2.0, "torch": 5.0}
    rows = report.rows_for(w, fast, True)
    line = report.markdown(rows, {w.name: 1.5}).splitlines()[2]
    assert line == "| sigmoid 4x4 float32 loss | 1.20x | 1.5x | 5.0x | 3.3x | - | 3.3x |"
    rows = report.rows_for(w, slow, False)
    line = report.markdown(rows, {w.name: 1.5}).splitlines()[2]
    assert (
        line
        == "| sigmoid 4x4 float32 loss | 2.00x (missed) | 1.5x | 2.5x | - | - | 2.5x (missed) |"
    )


def test_workloads_are_the_issues() -> None:
    names = {w.name for w in workloads.workloads()}
    assert "sigmoid 4096x4096 float32 loss" in names
    assert "softmax 2048x32768 float64 loss+grad" in names
    assert "sparse 2048x32768 float32 loss" in names
    assert len(names) == 24
