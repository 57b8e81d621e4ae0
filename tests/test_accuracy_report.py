"""The accuracy report (``benchmarks/accuracy.py``): logitloss meets its promised bounds on the
report's whole grid, the report's metrics see errors, and it shows the known failures of
TensorFlow, PyTorch and optax where they are installed."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

pytest.importorskip("mpmath")
pytest.importorskip("ml_dtypes")


def _load() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"
    spec = importlib.util.spec_from_file_location("logitloss_accuracy_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


accuracy = _load()
Key = tuple[str, str, str]


@pytest.fixture(scope="module")
def report() -> dict[Key, dict[str, Any]]:
    """The quick report, by (function, dtype, library)."""
    rows = accuracy.measure(quick=True)
    return {(r["function"], r["dtype"], r["library"]): r for r in rows}


@pytest.fixture(scope="module")
def grad_report() -> dict[Key, dict[str, Any]]:
    """The quick gradient report, by (function, dtype, library)."""
    rows = accuracy.measure_gradients(quick=True)
    return {(r["function"], r["dtype"], r["library"]): r for r in rows}


OURS = ["logitloss", "logitloss-kernels"]  # the array-API path and the fast kernels


@pytest.mark.parametrize("library", OURS)
@pytest.mark.parametrize("dtype", accuracy.DTYPES)
@pytest.mark.parametrize("function", accuracy.FUNCTIONS)
def test_logitloss_meets_its_bounds(
    report: dict[Key, dict[str, Any]], function: str, dtype: str, library: str
) -> None:
    row = report[function, dtype, library]
    assert row["status"] == "ok", row["status"]
    assert row["points"] > 1000
    assert row["limit_points"] > 10
    if dtype == "float64":
        assert row["max_ulp_normal"] <= 4.0, row["worst_input"]
    else:
        assert row["max_ulp_all"] <= 1.0, row["worst_input"]
    assert row["nan_or_inf_where_finite"] == 0, row["failure_example"]
    assert row["wrong_limits"] == 0, row["failure_example"]


def _grad_bound_cases() -> list[Any]:
    cases = []
    for function in accuracy.FUNCTIONS:
        for dtype in accuracy.DTYPES:
            cases.append(pytest.param(function, dtype))
    return cases


@pytest.mark.parametrize("library", OURS)
@pytest.mark.parametrize(("function", "dtype"), _grad_bound_cases())
def test_logitloss_gradients_meet_their_bounds(
    grad_report: dict[Key, dict[str, Any]], function: str, dtype: str, library: str
) -> None:
    """1 ULP of the result (subnormal results included) for the narrow dtypes, 8 scale-ULP for
    float64 (normal scales), no NaN, every limit."""
    row = grad_report[function, dtype, library]
    assert row["status"] == "ok", row["status"]
    assert row["points"] > 1000
    assert row["limit_points"] > 10
    assert row["nan_or_inf_where_finite"] == 0, row["failure_example"]
    assert row["wrong_limits"] == 0, row["failure_example"]
    if dtype == "float64":
        assert row["max_scale_ulp_normal"] <= 8.0, row["worst_scale_input"]
    else:
        assert row["max_scale_ulp_all"] <= 1.0, row["worst_scale_input"]
        assert row["max_ulp_all"] <= 1.0, row["worst_input"]


def test_metrics_see_errors() -> None:
    """A result 2 ULP off, a NaN where the loss is finite and a wrong limit are all counted."""
    x = [24.0, -20.0, 3.0, math.inf, math.inf]
    z = [1 - 2.0**-23, 0.0, 0.5, 1.0, 0.5]
    cases = accuracy.point_cases(accuracy.SIGMOID, "float32", x, z)
    right = accuracy.run_logitloss(cases.function, "float32", cases.groups[0])
    assert accuracy.score(cases, right)["max_ulp_normal"] <= 0.5
    wrong = right.astype(np.float32)
    wrong[0] = np.nextafter(np.nextafter(wrong[0], np.float32(1)), np.float32(1))
    wrong[2] = np.nan
    wrong[3] = np.nan
    metrics = accuracy.score(cases, wrong.astype(np.float64))
    assert metrics["max_ulp_normal"] >= 1.5
    assert metrics["worst_input"].startswith("x=24, z=0.9999999 -> ")
    assert metrics["nan_or_inf_where_finite"] == 1
    assert metrics["wrong_limits"] == 1
    assert metrics["limit_points"] == 2
    assert metrics["failure_example"].startswith("x=3, z=0.5 -> nan")


def test_gradient_metrics_see_errors() -> None:
    """ULP and scale-ULP of a gradient near its zero, a NaN where it is finite, and a wrong
    limit are all counted; the softmax points are one per class."""
    x = [1e-10, 0.0, 3.0, math.inf]
    z = [0.5, 0.5, 0.5, 1.0]
    gc = accuracy.grad_point_cases(accuracy.SIGMOID, "float32", x, z)
    right = accuracy.run_logitloss_grad(gc.function, "float32", gc.cases.groups[0])
    metrics = accuracy.grad_score(gc, right)
    assert metrics["max_ulp_all"] <= 0.5 and metrics["max_scale_ulp_all"] <= 0.5
    wrong = right.copy()
    wrong[0] = 0.0  # what every framework gives: 2^24 ULP of 2.5e-11, ~1e-3 scale-ULP
    wrong[2] = math.nan
    wrong[3] = math.nan
    metrics = accuracy.grad_score(gc, wrong)
    assert metrics["max_ulp_normal"] > 1e7
    assert 1e-4 < metrics["max_scale_ulp_normal"] < 1e-2
    assert metrics["worst_input"].startswith("x=1e-10, z=0.5 -> 0 (exact 2.50000003e-11)")
    assert metrics["nan_or_inf_where_finite"] == 1
    assert metrics["wrong_limits"] == 1
    assert metrics["failure_example"].startswith("x=3, z=0.5 -> nan")
    # An error too large for a float (float64, exact 0, computed 0.5) is counted, not a NaN.
    gc = accuracy.grad_point_cases(accuracy.WEIGHTED, "float64", [0.0], [0.5], [1.0])
    metrics = accuracy.grad_score(gc, np.array([0.5]))
    assert metrics["max_ulp_normal"] == sys.float_info.max
    assert metrics["max_scale_ulp_normal"] == 2.0**53  # 0.5 in ULPs of the scale 0.25
    assert metrics["nan_or_inf_where_finite"] == 0
    rows = accuracy.grad_point_cases(accuracy.SOFTMAX, "float32", [[20.0, 0.0]], [[1.0, 0.0]])
    assert rows.describe(1) == "x=[20, 0], z=[1, 0], d/dx_1"
    assert len(rows.exact) == 2 and float(rows.scale[0]) == pytest.approx(1.0)


MODULES = {"tensorflow": "tensorflow", "torch": "torch", "optax": "optax"}
# The known failures, one point each: (function, dtype, x, z, q, libraries).
KNOWN_PEER_FAILURES = [
    (accuracy.SIGMOID, "float32", [24.0], [1 - 2.0**-23], None, ["tensorflow"]),
    (accuracy.WEIGHTED, "float32", [-20.0], [0.0], [2.0], ["tensorflow", "torch"]),
    (accuracy.SOFTMAX, "float32", [20.0, 0.0], [[1.0, 0.0]], None, list(MODULES)),
]


@pytest.mark.parametrize(
    ("function", "dtype", "x", "z", "q", "library"),
    [(*case[:5], lib) for case in KNOWN_PEER_FAILURES for lib in case[5]],
)
def test_known_peer_failures_are_seen(
    function: str, dtype: str, x: list, z: list, q: list | None, library: str
) -> None:
    """The peer is far off on its known bad input; logitloss is right on it."""
    pytest.importorskip(MODULES[library])
    cases = accuracy.point_cases(function, dtype, x, z, q)
    peer = accuracy.evaluate(cases, library)
    assert peer["status"] == "ok", peer["status"]
    assert peer["max_ulp_normal"] > 1e6
    if function == accuracy.SIGMOID:
        assert peer["max_ulp_normal"] == pytest.approx(4.2e6, rel=0.05)
    ours = accuracy.evaluate(cases, "logitloss")
    assert ours["max_ulp_normal"] <= 0.5


@pytest.mark.parametrize("library", ["tensorflow", "torch", "optax"])
def test_nan_at_infinite_logit_is_a_wrong_limit(library: str) -> None:
    pytest.importorskip(MODULES[library])
    cases = accuracy.point_cases(accuracy.SIGMOID, "float32", [math.inf], [1.0])
    assert accuracy.evaluate(cases, library)["wrong_limits"] == 1
    assert accuracy.evaluate(cases, "logitloss")["wrong_limits"] == 0


def test_report_rows_show_peer_failures(report: dict[Key, dict[str, Any]]) -> None:
    """The grid reaches the known failures: the report's own rows show them."""
    checks: list[tuple[Key, str]] = [
        ((accuracy.SIGMOID, "float32", "tensorflow"), "ulp"),
        ((accuracy.WEIGHTED, "float32", "tensorflow"), "ulp"),
        ((accuracy.WEIGHTED, "float32", "torch"), "ulp"),
        ((accuracy.SOFTMAX, "float32", "tensorflow"), "ulp"),
        ((accuracy.SOFTMAX, "float32", "torch"), "ulp"),
        ((accuracy.SOFTMAX, "float32", "optax"), "ulp"),
        ((accuracy.SIGMOID, "float32", "tensorflow"), "limits"),
        ((accuracy.SIGMOID, "float32", "torch"), "limits"),
        ((accuracy.SIGMOID, "float32", "optax"), "limits"),
    ]
    seen = 0
    for key, what in checks:
        row = report[key]
        if row["status"] == "not installed":
            continue
        seen += 1
        assert row["status"] == "ok", (key, row["status"])
        if what == "ulp":
            assert row["max_ulp_normal"] > 1e6, key
        else:
            assert row["wrong_limits"] > 0, key
    if not seen:
        pytest.skip("no peer installed")
    assert report[accuracy.WEIGHTED, "float32", "optax"]["status"] in ("n/a: no pos_weight",
                                                                      "not installed")  # fmt: skip


def test_written_report(
    report: dict[Key, dict[str, Any]], grad_report: dict[Key, dict[str, Any]], tmp_path: Path
) -> None:
    rows, grad_rows = list(report.values()), list(grad_report.values())
    info = accuracy.environment()
    accuracy.write_csv(tmp_path / "accuracy.csv", rows + grad_rows, info)
    spots = accuracy.spot_checks(libraries=["logitloss"])
    grad_spots = accuracy.grad_spot_checks(libraries=["logitloss"])
    accuracy.write_markdown(tmp_path / "accuracy.md", rows, spots, info, grad_rows, grad_spots)
    lines = (tmp_path / "accuracy.csv").read_text().splitlines()
    assert any(line.startswith("# mpmath: ") for line in lines)
    table = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    per_quantity = len(accuracy.FUNCTIONS) * len(accuracy.DTYPES) * len(accuracy.LIBRARIES)
    assert len(table) == 2 * per_quantity
    assert [r["quantity"] for r in table] == ["loss"] * per_quantity + [
        "grad_logits"
    ] * per_quantity
    assert {"max_ulp_normal", "nan_or_inf_where_finite", "wrong_limits", "points"} <= set(table[0])
    ours = [r for r in table if r["quantity"] == "grad_logits" and r["library"] == "logitloss"]
    assert all(r["max_scale_ulp_normal"] != "" for r in ours)
    text = (tmp_path / "accuracy.md").read_text()
    header = "| function | dtype | points | logitloss | logitloss (fast kernels) | TensorFlow |"
    assert header in text
    main_table = text.split("## Known")[0]
    assert main_table.count("\n| sigmoid_cross_entropy_with_logits |") == len(accuracy.DTYPES)
    gradients = text.split("## Gradients w.r.t. logits")[1].split("### Known")[0]
    assert gradients.count("\n| sigmoid_cross_entropy_with_logits |") == len(accuracy.DTYPES)
    assert "| sigmoid_cross_entropy_with_logits | float32 | " in gradients
    assert "| `x=1e-10, z=0.5` | 2.50000003e-11 | 2.5e-11 (0.00 ULP) |" in text


def test_spot_checks() -> None:
    """logitloss is right on every spot check; each installed peer fails at least one."""
    spots = accuracy.spot_checks()
    assert len(spots) == len(accuracy.SPOT_CHECKS) * len(accuracy.LIBRARIES)
    for r in spots:
        if r["library"] == "logitloss":
            assert r["status"] == "ok" and r["ulp"] <= 0.5, r
    for library in ("tensorflow", "torch", "optax"):
        mine = [r for r in spots if r["library"] == library and r["status"] == "ok"]
        if mine:
            assert sum(r["ulp"] > 1e6 for r in mine) >= 2, library


def test_report_rows_show_peer_gradient_failures(grad_report: dict[Key, dict[str, Any]]) -> None:
    """The gradient grid reaches the peers' known failures: ``sigma(x) - z`` rounded to 0 at
    x = 1e-10, z = 0.5 (all), TF's weighted gradient at x = 0, PyTorch's weighted gradient,
    NaN for a softmax row with an infinite logit (all)."""
    seen = 0
    for library in ("tensorflow", "torch", "optax"):
        sigmoid = grad_report[accuracy.SIGMOID, "float32", library]
        if sigmoid["status"] == "not installed":
            continue
        seen += 1
        assert sigmoid["max_ulp_normal"] > 1e6, library
        assert grad_report[accuracy.SOFTMAX, "float32", library]["wrong_limits"] > 0, library
        weighted = grad_report[accuracy.WEIGHTED, "float32", library]
        if library == "optax":
            assert weighted["status"] == "n/a: no pos_weight"
        else:
            assert weighted["max_ulp_normal"] > 1e6, library
    if not seen:
        pytest.skip("no peer installed")


def test_gradient_spot_checks() -> None:
    """logitloss is within 1 ULP on every gradient spot check; each installed peer fails at
    least two (TF: 1.0 for 0.5 at x = 0; PyTorch: a positive gradient for a negative one)."""
    spots = accuracy.grad_spot_checks()
    assert len(spots) == len(accuracy.GRAD_SPOT_CHECKS) * len(accuracy.LIBRARIES)
    for r in spots:
        if r["library"] == "logitloss":
            assert r["status"] == "ok" and r["ulp"] <= 0.5 and not r["wrong_sign"], r
    by_input = {(r["library"], r["input"]): r for r in spots}
    tf = by_input.get(("tensorflow", "x=0, z=0, q=3"))
    if tf is not None and tf["status"] == "ok":
        assert tf["result"] == "1" and tf["exact"] == "0.5"
    torch = by_input.get(("torch", "x=80, z=1, q=0.001"))
    if torch is not None and torch["status"] == "ok":
        assert torch["wrong_sign"]
    for library in ("tensorflow", "torch", "optax"):
        mine = [r for r in spots if r["library"] == library and r["status"] == "ok"]
        if mine:
            assert sum(r["ulp"] > 1e6 or r["wrong_sign"] for r in mine) >= 2, library
