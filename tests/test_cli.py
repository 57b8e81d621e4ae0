"""The ``logitloss`` command line and its ``demo``.

The demo's tables are parsed back from the printed text: every logitloss value printed must be
within 1 ULP (float32) of the exact loss, computed here with mpmath from this file's own copy of
the inputs, and the seed documents' printed TensorFlow outputs must appear verbatim.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys

import numpy as np
import pytest

import logitloss
from logitloss import cli
from logitloss._tools import demo, oracle

needs_mpmath = pytest.mark.skipif(not demo.exact_available(), reason="needs mpmath")

F32 = np.float32

# The seed documents' printed TensorFlow outputs (001: sigmoid prob4, softmax prob2; 000: weighted).
SEED_SIGMOID = ["0.7981388", "0.59813893", "0.55435514", "0.85435534", "0.74439663"]
SEED_SOFTMAX = ["0.43748799", "0.51301527", "0.69314718"]
SEED_WEIGHTED = [
    ["1.04947078", "0.89594436", "0.92146152"],
    ["0.70252579", "1.00673866", "1.08856964"],
    ["1.07195592", "1.18525708", "1.04106498"],
]
SEED_WEIGHTED_TARGETS = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]]

SIGMOID_P = [[0, 0, 0, 1, 0], [1, 0, 0, 0, 0]]
SIGMOID_X = [[0.2, 0.2, 0.2, 0.2, 0.2], [0.3, 0.3, 0.2, 0.1, 0.1]]
SOFTMAX_P = [[0, 1], [1, 0], [1, 0]]
SOFTMAX_X = [[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]]
MAX32 = float(np.finfo(F32).max)


def f32(value: float) -> float:
    """``value`` rounded to float32, as a Python float."""
    return float(F32(value))


def sigmoid_exact(x: float, z: float, q: float = 1.0) -> object:
    return oracle.logistic(f32(x), f32(z), q)


def softmax_exact(xs: list[float], zs: list[float]) -> object:
    return oracle.softmax([f32(v) for v in xs], [f32(v) for v in zs])


# Part 2 of the demo, in order: the exact loss of each row.
FAILURE_EXACT = [
    lambda: sigmoid_exact(24.0, 1 - 2.0**-23),
    lambda: sigmoid_exact(math.inf, 1.0),
    lambda: sigmoid_exact(-20.0, 0.0, 2.0),
    lambda: sigmoid_exact(-MAX32, 0.5, 2.0),
    lambda: softmax_exact([20.0, 0.0], [1.0, 0.0]),
    lambda: softmax_exact([math.inf, 0.0], [1.0, 0.0]),
]


def run_demo(capsys: pytest.CaptureFixture[str]) -> str:
    assert cli.main(["demo"]) == 0
    return capsys.readouterr().out


def parse_tables(text: str) -> list[list[dict[str, str]]]:
    """Each table of the demo (indented, columns two spaces apart) as a list of rows by column."""
    tables: list[list[dict[str, str]]] = []
    header: list[str] | None = None
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if header is None and "logitloss" in cells and line.startswith("    "):
            header = cells
            tables.append([])
        elif header is not None and line.strip():
            assert len(cells) == len(header), line
            tables[-1].append(dict(zip(header, cells, strict=True)))
        else:
            header = None
    return tables


def value_of(cell: str) -> float:
    """The float32 value in a cell such as ``'2.8610607e-06 (0.032)'``."""
    return float(F32(cell.split()[0]))


def ulps(cell: str, exact: object) -> float:
    return oracle.ulp_error(value_of(cell), exact, "float32")


def test_demo_prints_the_seed_outputs_and_ours(capsys: pytest.CaptureFixture[str]) -> None:
    out = run_demo(capsys)
    for printed in [*SEED_SIGMOID, *SEED_SOFTMAX, *(v for row in SEED_WEIGHTED for v in row)]:
        assert printed in out
    ours_sigmoid = logitloss.sigmoid_cross_entropy_with_logits(
        np.array(SIGMOID_P, F32), np.array(SIGMOID_X, F32)
    )
    ours_softmax = logitloss.softmax_cross_entropy_with_logits(
        np.array(SOFTMAX_P, F32), np.array(SOFTMAX_X, F32)
    )
    for value in [*ours_sigmoid.ravel(), *ours_softmax, *ours_sigmoid.sum(axis=1)]:
        assert str(value) in out
    assert "targets=" in out and "np.random.rand" in out


def test_demo_says_where_the_numbers_come_from_in_a_users_terms(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The project's internal names for its source documents ("seed 001") mean nothing to a
    user: the demo names a Q&A and a tutorial, and TensorFlow's printed output."""
    out = run_demo(capsys)
    assert "seed" not in out.lower()
    assert "Q&A" in out and "tutorial" in out and "TensorFlow printed" in out


@needs_mpmath
def test_demo_seed_tables_within_one_ulp(capsys: pytest.CaptureFixture[str]) -> None:
    sigmoid, row_sums, softmax, _, _ = parse_tables(run_demo(capsys))
    for k, row in enumerate(sigmoid):
        i, j = divmod(k, 5)
        assert row["element"] == f"[{i},{j}]"
        assert ulps(row["logitloss"], sigmoid_exact(SIGMOID_X[i][j], SIGMOID_P[i][j])) <= 1
    for i, row in enumerate(row_sums):
        exact = sum(sigmoid_exact(x, z) for x, z in zip(SIGMOID_X[i], SIGMOID_P[i], strict=True))
        assert ulps(row["logitloss"], exact) <= 1
    for i, row in enumerate(softmax):
        assert row["TensorFlow printed"] == SEED_SOFTMAX[i]
        assert ulps(row["logitloss"], softmax_exact(SOFTMAX_X[i], SOFTMAX_P[i])) <= 1
    assert len(sigmoid) == 10 and len(row_sums) == 2 and len(softmax) == 3


@needs_mpmath
def test_demo_reproduces_the_weighted_seed_from_recovered_logits(
    capsys: pytest.CaptureFixture[str],
) -> None:
    weighted = parse_tables(run_demo(capsys))[3]
    assert len(weighted) == 9
    for k, row in enumerate(weighted):
        i, j = divmod(k, 3)
        x = value_of(row["x (recovered)"])
        assert 0 <= x < 1
        printed = F32(SEED_WEIGHTED[i][j])
        assert row["TensorFlow printed"] == SEED_WEIGHTED[i][j]
        # logitloss at the recovered logit gives back TensorFlow's printed value...
        assert abs(value_of(row["logitloss"]) - float(printed)) <= float(np.spacing(printed))
        assert float(row["diff ulp"]) <= 1
        # ...and is within 1 ULP of the exact loss there.
        exact = sigmoid_exact(x, SEED_WEIGHTED_TARGETS[i][j], 2.0)
        assert ulps(row["logitloss"], exact) <= 1


@needs_mpmath
def test_demo_failure_table(capsys: pytest.CaptureFixture[str]) -> None:
    failures = parse_tables(run_demo(capsys))[4]
    assert [row["loss"] for row in failures] == ["sigmoid"] * 2 + ["weighted"] * 2 + ["softmax"] * 2
    for row, exact in zip(failures, FAILURE_EXACT, strict=True):
        assert ulps(row["logitloss"], exact()) <= 1, row
        # The naive and TensorFlow formulas are far off (or NaN / inf) on every row.
        assert ulps(row["naive"], exact()) > 1e6, row
        assert ulps(row["TF formula"], exact()) > 1e6, row


def test_demo_without_mpmath(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(demo, "exact_available", lambda: False)
    out = run_demo(capsys)
    assert "install mpmath" in out
    assert "0.43748799" in out and "0.43748796" in out
    assert "ours ulp" not in out and "(0.32)" not in out


def test_help_lists_every_command_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in cli.COMMANDS:
        assert command.name in out
        assert command.example in out.split("examples:")[1]
    assert cli.main(["demo", "--help"]) == 0


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == f"logitloss {logitloss.__version__}\n"


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["demo", "--no-such-option"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "usage: logitloss" in err and "Traceback" not in err


def test_expected_errors_exit_1_without_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(out: object) -> None:
        raise cli.CommandError("something expected went wrong")

    monkeypatch.setattr(demo, "run_demo", fail)
    assert cli.main(["demo"]) == 1
    assert capsys.readouterr().err == "logitloss: error: something expected went wrong\n"


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "logitloss", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_python_m_logitloss_demo() -> None:
    result = run_module("demo")
    assert result.returncode == 0, result.stderr
    assert "0.43748799" in result.stdout and "2.0611537e-09" in result.stdout
    assert result.stderr == ""


def test_python_m_logitloss_version_and_errors() -> None:
    result = run_module("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"logitloss {logitloss.__version__}"
    unknown = run_module("frobnicate")
    assert unknown.returncode == 2
    assert "invalid choice" in unknown.stderr and "Traceback" not in unknown.stderr


def test_import_logitloss_loads_neither_the_cli_nor_mpmath() -> None:
    code = (
        "import sys, logitloss; "
        "loaded = {'logitloss.cli', 'logitloss._tools.demo', 'mpmath'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
