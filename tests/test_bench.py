"""The benchmark harness: what it writes, and that its ratios and goal marks are right."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from logitloss import cli
from logitloss._tools.bench import report, timing, workloads


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
    slow = {"limit": 1.0, "logitloss": 2.0, "torch": 3.0}
    rows = report.rows_for(w, fast, True)
    line = report.markdown(rows, {w.name: 1.5}).splitlines()[2]
    assert line == "| sigmoid 4x4 float32 loss | 1.20x | 1.5x | - | 5.0x | 3.3x | - | 3.3x |"
    rows = report.rows_for(w, slow, False)
    line = report.markdown(rows, {w.name: 1.5}).splitlines()[2]
    assert line == (
        "| sigmoid 4x4 float32 loss | 2.00x (missed) | 1.5x | - | 1.5x | - | - | 1.5x (missed) |"
    )


def test_markdown_holds_loss_and_grad_to_the_loss_alone() -> None:
    loss = workloads.Workload("softmax", (4, 4), "float32", "loss")
    both = workloads.Workload("softmax", (4, 4), "float32", "loss+grad")
    assert (loss.goal, both.goal) == (2.0, workloads.GRAD_GOAL)
    for grad_seconds, cell in ((2.9, "1.45x"), (3.1, "1.55x (missed)")):
        rows = report.rows_for(loss, {"limit": 1.0, "logitloss": 2.0}, True)
        rows += report.rows_for(
            both, {"limit": 1.0, "logitloss": 4.0, "logitloss-torch": grad_seconds}, True
        )
        lines = report.markdown(rows, {loss.name: loss.goal, both.name: both.goal}).splitlines()
        assert lines[2].startswith("| softmax 4x4 float32 loss | 2.00x | 2.0x | - |")
        assert lines[3].startswith(
            f"| softmax 4x4 float32 loss+grad (torch .backward) | {grad_seconds:.2f}x "
            f"| 1.5x the loss | {cell} |"
        )


def test_one_thread_run_records_the_machine(tmp_path: Path) -> None:
    """``--threads 1`` holds the process (a fresh one: pools start once) to one core, and the
    CSV says so, with the CPU's vector width."""
    out = tmp_path / "bench.csv"
    code = (
        "import sys, os; from logitloss import cli; "
        "status = cli.main(['bench', '--quick', '--no-peers', '--repeats', '1', '--loss', "
        f"'sigmoid', '--dtype', 'float32', '--direction', 'loss', '--threads', '1', "
        f"'--csv', {str(out)!r}]); "
        "print(len(os.sched_getaffinity(0))); sys.exit(status)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "1"
    env, _ = _read_csv(out)
    assert env["threads"] == "1"
    assert env["simd"] == timing.simd()


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_must_be_positive(value: str, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["bench", "--no-peers", "--threads", value]) == 2
    err = capsys.readouterr().err
    assert "--threads" in err and repr(value) in err


def test_workloads_are_the_issues() -> None:
    names = {w.name for w in workloads.workloads()}
    assert "sigmoid 4096x4096 float32 loss" in names
    assert "softmax 2048x32768 float64 loss+grad" in names
    assert "sparse 2048x32768 float32 loss" in names
    assert len(names) == 24


def _bench_readme() -> Any:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_readme.py"
    spec = importlib.util.spec_from_file_location("bench_readme", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_tables_one_per_vector_width_cpu_and_thread_count(tmp_path: Path) -> None:
    script = _bench_readme()
    name = script.result_name
    assert name("AVX-512", "Intel(R) Xeon(R) Processor", 1) == "bench-avx-512-intel-xeon-1-thread"
    assert name("AVX2", "AMD Ryzen 7 5800X 8-Core Processor", 8) == "bench-avx2-amd-ryzen-8-threads"
    assert name("NEON", "", 4) == "bench-neon-cpu-4-threads"
    runs = [("AVX2", 2, "Some AMD"), ("AVX-512", 2, "Some Xeon"), ("AVX-512", 1, "Some Xeon"),
            ("AVX-512", 2, "AMD EPYC")]  # fmt: skip
    for simd, threads, cpu in runs:
        header = f"<!-- cpu: {cpu} -->\n<!-- simd: {simd} -->\n<!-- threads: {threads} -->\n"
        table = f"| workload |\n|---|\n| {simd} on {cpu} {threads} |\n"
        (tmp_path / f"{name(simd, cpu, threads)}.md").write_text(header + table)
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nbefore\n{script.BEGIN}\nold table\n{script.END}\nafter\n")
    script.rewrite(readme, tmp_path)
    text = readme.read_text()
    assert text.startswith("# Title\n\nbefore\n") and text.endswith(f"{script.END}\nafter\n")
    assert "old table" not in text
    headings = [line for line in text.splitlines() if line.startswith("#### ")]
    assert [h.split(",")[0] + h.split(":")[1].split(",")[0] for h in headings] == [
        "#### AVX-512 AMD EPYC", "#### AVX-512 Some Xeon", "#### AVX-512 Some Xeon",
        "#### AVX2 Some AMD",
    ]  # fmt: skip
    assert "1 thread" in headings[1] and "2 threads" in headings[2]
    for simd, threads, cpu in runs:
        assert f"| {simd} on {cpu} {threads} |" in text
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no <!-- bench:begin -->"):
        script.rewrite(readme, tmp_path)
