"""The training-step benchmark (``benchmarks/bench_training_step.py``): what it writes, that each
pair it times computes the same loss and gradient, and its table and README block."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import logitloss

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "bench_training_step.py"


def _load() -> Any:
    spec = importlib.util.spec_from_file_location("bench_training_step", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _load()


def _check_pairs(rows: list[dict[str, Any]]) -> None:
    """Each case has the peer and logitloss, finite losses, and the same loss and gradient
    within the dtype's rounding (after the documented rescaling of the weighted binary mean)."""
    by_case: dict[tuple, dict[str, dict[str, Any]]] = {}
    for row in rows:
        key = tuple(str(row[k]) for k in ("backend", "loss", "options", "dtype", "x64", "rows",
                                          "cols"))  # fmt: skip
        by_case.setdefault(key, {})[row["impl"]] = row
    for key, impls in by_case.items():
        assert set(impls) == {bench.PEER[key[0]], "logitloss"}, key
        ours = impls["logitloss"]
        for row in impls.values():
            assert math.isfinite(float(row["loss_value"])), key
            assert float(row["seconds"]) > 0, key
        tolerance = bench.TOLERANCE[key[3]]
        assert float(ours["loss_diff"]) <= tolerance, (key, ours["loss_diff"])
        assert float(ours["grad_diff"]) <= tolerance, (key, ours["grad_diff"])
        peer = impls[bench.PEER[key[0]]]
        ratio = float(ours["seconds"]) / float(peer["seconds"])
        assert float(ours["ratio"]) == pytest.approx(ratio, rel=1e-3)


def test_quick_run_writes_the_csv_and_the_pairs_agree(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    path = tmp_path / "step.csv"
    # 900 s: in a fresh clone the run compiles every kernel it takes (a cold numba cache).
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "32x2", "--repeats", "2", "--only", "torch",
         "--only", "numpy", "--csv", str(path)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    env, rows = bench.read_csv(path)
    assert {"date", "cpu", "simd", "cores", "torch_threads", "numba_threads", "command"} <= set(env)
    assert env["simd"] in ("AVX-512", "AVX2") or env["simd"] == bench.timing.simd()
    assert list(rows[0]) == list(bench.FIELDS)
    # 2 losses x 2 option sets x 2 dtypes on torch, x 2 impls; NumPy: 2 x 2 x 2
    assert len(rows) == 16 + 8
    _check_pairs(rows)
    assert "| torch | CrossEntropyLoss | defaults | float32 | 32 x 2 | torch.nn |" in done.stdout


@pytest.mark.parametrize("x64", [False, True])
def test_jax_pairs_agree(x64: bool) -> None:
    """In this process, under ``jax.enable_x64`` (the script runs one subprocess per setting)."""
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    rows: list[dict[str, Any]] = []
    with jax.enable_x64(x64):
        for case in bench.cases("jax", [(16, 5)], "on" if x64 else "off"):
            rows += bench.run_case(case, repeats=1)
    assert len(rows) == 8
    _check_pairs(rows)


@pytest.mark.parametrize("options", ["defaults", "options"])
def test_the_plain_numpy_step_is_right(options: str) -> None:
    """The NumPy peer against logitloss's loss and torch's autograd gradient: a fair peer."""
    torch = pytest.importorskip("torch")
    opts = options == "options"
    d = bench.make_data("cross_entropy", options, 40, 7, seed=3)
    kw = {"weight": d.weight, "ignore_index": -100, "label_smoothing": 0.1} if opts else {}
    loss, grad = bench.numpy_cross_entropy(d.x, d.y, **kw)
    assert float(loss) == pytest.approx(float(logitloss.cross_entropy(d.x, d.y, **kw)), rel=1e-6)
    x = torch.from_numpy(d.x).double().requires_grad_(True)
    tkw = dict(kw, weight=torch.from_numpy(d.weight).double()) if opts else {}
    torch.nn.functional.cross_entropy(x, torch.from_numpy(d.y), **tkw).backward()
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-5, atol=1e-7)

    d = bench.make_data("bce", options, 40, 7, seed=3)
    kw = {"pos_weight": d.pos_weight, "weight": d.weight, "label_smoothing": 0.1} if opts else {}
    loss, grad = bench.numpy_bce(d.x, d.y, **kw)
    expected = logitloss.binary_cross_entropy_with_logits(d.x, d.y, **kw)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)
    x = torch.from_numpy(d.x).double().requires_grad_(True)
    z = torch.from_numpy(d.y).double()
    if opts:  # torch: smoothed by hand, weighted mean over N C, rescaled to sum(w)
        z = z * 0.9 + 0.05
        w, q = torch.from_numpy(d.weight).double(), torch.from_numpy(d.pos_weight).double()
        out = torch.nn.functional.binary_cross_entropy_with_logits(x, z, w, pos_weight=q)
        (out * d.y.size / w.sum()).backward()
    else:
        torch.nn.functional.binary_cross_entropy_with_logits(x, z).backward()
    np.testing.assert_allclose(grad, x.grad.numpy(), rtol=1e-5, atol=1e-7)


def _rows(cases: list[tuple], quiet: bool = True) -> list[dict[str, Any]]:
    rows = []
    for backend, peer_s, ours_s in cases:
        for impl, s in ((bench.PEER[backend], peer_s), ("logitloss", ours_s)):
            rows.append({
                "backend": backend, "loss": "cross_entropy", "options": "defaults",
                "dtype": "float32", "x64": "off" if backend == "jax" else "", "rows": 64,
                "cols": 10, "impl": impl, "seconds": s, "ratio": s / peer_s, "loss_value": 1.0,
                "loss_diff": 0, "grad_diff": 0, "quiet_machine": quiet,
            })  # fmt: skip
    return rows


ENV = {"cpu": "Some CPU", "simd": "AVX2", "cores": "2", "torch_threads": "2",
       "numba_threads": "2", "date": "2026-12-05T00:00:00+00:00", "torch": "2.13"}  # fmt: skip


def test_markdown_marks_the_losing_rows() -> None:
    table = bench.markdown(_rows([("torch", 1e-3, 2e-3), ("jax", 2e-3, 1e-3)]), ENV)
    assert table.startswith(
        "Some CPU (AVX2), 2 cores, torch threads 2, numba threads 2; 2026-12-05"
    )
    assert "logitloss slower in 1 of 2 cases" in table
    lines = table.splitlines()
    assert (
        "| torch | CrossEntropyLoss | defaults | float32 | 64 x 10 | torch.nn | 1.00 | 2.00 "
        "| **2.00x slower** |"
    ) in lines
    assert (
        "| jax | cross_entropy | defaults | float32, x64 off | 64 x 10 | optax | 2.00 | 1.00 "
        "| 0.50x |"
    ) in lines
    busy = bench.markdown(_rows([("torch", 1e-3, 2e-3)], quiet=False), ENV)
    assert "**2.00x slower** (busy machine) |" in busy


def test_readme_block_is_added_then_replaced(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\n## Speed\n\nfast.\n\n## Accuracy\n\nexact.\n")
    bench.rewrite_readme(readme, "| old |\n", ENV)
    text = readme.read_text()
    assert text.index("## Speed") < text.index(bench.TITLE) < text.index("| old |")
    assert text.index("| old |") < text.index(bench.END) < text.index("## Accuracy")
    bench.rewrite_readme(readme, "| new |\n", ENV)
    text = readme.read_text()
    assert "| old |" not in text and text.count(bench.BEGIN) == 1 and "| new |" in text
    assert text.endswith("## Accuracy\n\nexact.\n")


def test_the_readme_shows_the_committed_csv() -> None:
    """The README's table is the one generated from the committed CSV (rerun the script with
    ``--readme``, or ``--from-csv ... --readme``, after changing either)."""
    env, rows = bench.read_csv(bench.CSV_PATH)
    text = (ROOT / "README.md").read_text()
    block = text.split(bench.BEGIN, 1)[1].split(bench.END, 1)[0]
    assert bench.markdown(rows, env) in block
