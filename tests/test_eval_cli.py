# ruff: noqa: E501 (argument lists read better one call a line)
"""``logitloss eval``: summaries against independent oracles (scipy.special), every input format,
chunked streaming, atomic output, and a one-line error with exit status 1 (data) or 2 (usage)
for each kind of bad input, in-process and as a subprocess."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from logitloss.cli import main

special = pytest.importorskip("scipy.special")

RNG = np.random.default_rng(5)
X = RNG.standard_normal((500, 4)) * 3
Z = RNG.uniform(0, 1, (500, 4))
P = RNG.dirichlet(np.ones(4), size=500)
K = RNG.integers(0, 4, size=500)


def oracle(kind: str, q: np.ndarray | float = 1.0) -> np.ndarray:
    """The per-element or per-row loss from scipy.special (float64, no cancellation here)."""
    if kind in ("sigmoid", "weighted"):
        return -(q * Z * special.log_expit(X) + (1 - Z) * special.log_expit(-X))
    lse = special.logsumexp(X, axis=1)
    if kind == "softmax":
        return (P * (lse[:, None] - X)).sum(axis=1)
    return lse - X[np.arange(len(X)), K]


def run_json(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["eval", *args, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "z.npy", Z)
    np.save(tmp_path / "p.npy", P)
    np.savez(tmp_path / "d.npz", logits=X, classes=K)
    header = "a,b,c,d,ya,yb,yc,yd,k"
    rows = np.column_stack([X, Z, K])
    np.savetxt(tmp_path / "t.csv", rows, delimiter=",", header=header, comments="", fmt="%.17g")
    return tmp_path


def check_summary(summary: dict, expected: np.ndarray) -> None:
    assert summary["count"] == expected.size
    assert summary["sum"] == pytest.approx(math.fsum(expected.ravel()), rel=1e-13)
    assert summary["mean"] == pytest.approx(expected.mean(), rel=1e-13)
    assert summary["min"] == pytest.approx(expected.min(), rel=1e-13)
    assert summary["max"] == pytest.approx(expected.max(), rel=1e-13)


@pytest.mark.parametrize("chunk_rows", ["7", "500"])
def test_each_loss_against_scipy(files: Path, capsys, chunk_rows: str) -> None:
    x, z, p = (str(files / f) for f in ("x.npy", "z.npy", "p.npy"))
    chunk = ["--chunk-rows", chunk_rows]
    check_summary(
        run_json(capsys, "sigmoid", "--logits", x, "--labels", z, *chunk), oracle("sigmoid")
    )
    q = np.array([0.5, 1.0, 2.0, 4.0])
    summary = run_json(
        capsys, "weighted", "--logits", x, "--labels", z, "--pos-weight", "0.5,1,2,4", *chunk
    )
    check_summary(summary, oracle("weighted", q))
    for i, stats in enumerate(summary["per_class"]):
        check_summary(stats, oracle("weighted", q)[:, i])
    check_summary(
        run_json(capsys, "softmax", "--logits", x, "--labels", p, *chunk), oracle("softmax")
    )
    npz = str(files / "d.npz")
    summary = run_json(
        capsys, "sparse", "--logits", f"{npz}:logits", "--labels", f"{npz}:classes", *chunk
    )
    check_summary(summary, oracle("sparse"))


def test_csv_columns_and_outputs(files: Path, capsys) -> None:
    csv = files / "t.csv"
    summary = run_json(capsys, "sparse", "--logits", f"{csv}:a,b,c,d", "--labels", f"{csv}:k")
    check_summary(summary, oracle("sparse"))
    for suffix in (".npy", ".csv"):
        out = files / f"losses{suffix}"
        args = ["eval", "sigmoid", "--logits", f"{csv}:a,b,c,d", "--labels", f"{csv}:ya,yb,yc,yd"]
        assert main([*args, "--out", str(out), "--quiet", "--chunk-rows", "64"]) == 0
        if suffix == ".npy":
            written = np.load(out)
        else:
            written = np.loadtxt(out, delimiter=",", skiprows=1)
        np.testing.assert_allclose(written, oracle("sigmoid"), rtol=1e-13)
    capsys.readouterr()


def test_parquet_round_trip(files: Path, capsys) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    table = pa.table({"a": X[:, 0], "b": X[:, 1], "ya": Z[:, 0], "yb": Z[:, 1]})
    pq.write_table(table, files / "t.parquet")
    path = files / "t.parquet"
    out = files / "o.parquet"
    args = ["eval", "sigmoid", "--logits", f"{path}:a,b", "--labels", f"{path}:ya,yb"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    table = pq.read_table(out)
    written = np.column_stack([table.column(n).to_numpy() for n in ("loss_0", "loss_1")])
    np.testing.assert_allclose(written, oracle("sigmoid")[:, :2], rtol=1e-13)
    capsys.readouterr()


def bad(files: Path) -> list:
    x, z = str(files / "x.npy"), str(files / "z.npy")
    nan_z = Z.copy()
    nan_z[321, 2] = np.nan
    np.save(files / "nan.npy", nan_z)
    np.save(files / "big.npy", Z * 2)
    np.save(files / "short.npy", Z[:-1])
    np.save(files / "frac.npy", K + 0.5)
    np.save(files / "k9.npy", np.where(K == 0, 9, K))
    (files / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    return [
        (["sigmoid", "--logits", str(files / "missing.npy"), "--labels", z], "missing.npy: no such file"),
        (["sigmoid", "--logits", str(files / "corrupt.npy"), "--labels", z], "corrupt.npy: cannot read it"),
        (["sigmoid", "--logits", x, "--labels", str(files / "short.npy")], "row counts differ"),
        (["sigmoid", "--logits", f"{files / 't.csv'}:nope", "--labels", z], "t.csv: no column 'nope'"),
        (["sigmoid", "--logits", x, "--labels", str(files / "nan.npy")], "nan.npy: NaN label in row 321: nan"),
        (["sigmoid", "--logits", x, "--labels", str(files / "big.npy")], "big.npy: label outside [0, 1]"),
        (["sparse", "--logits", x, "--labels", str(files / "frac.npy")], "frac.npy: non-integer class label in row 0"),
        (["sparse", "--logits", x, "--labels", str(files / "k9.npy")], "k9.npy: class label outside [0, 4)"),
        (["weighted", "--logits", x, "--labels", z, "--pos-weight", "1,2"], "--pos-weight: 2 values for 4 classes"),
        (["weighted", "--logits", x, "--labels", z], "give --pos-weight"),
        (["sigmoid", "--logits", f"{files / 'd.npz'}:zz", "--labels", z], "d.npz: no member 'zz'"),
        (["sigmoid", "--logits", x, "--labels", z, "--out", str(files / "o.txt")], "o.txt: unknown output type"),
    ]  # fmt: skip


def test_bad_input_is_one_line_and_exit_1(files: Path, capsys) -> None:
    for args, message in bad(files):
        assert main(["eval", *args, "--quiet"]) == 1, args
        err = capsys.readouterr().err
        assert err.startswith("logitloss: error: ") and message in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ["sigmoid", "--labels", "z.npy"],
        ["nope", "--logits", "x.npy", "--labels", "z.npy"],
        ["sigmoid", "--logits", "x.npy", "--labels", "z.npy", "--chunk-rows", "0"],
        ["weighted", "--logits", "x.npy", "--labels", "z.npy", "--pos-weight", "a,b"],
    ],
)
def test_usage_errors_exit_2(args: list, capsys) -> None:
    assert main(["eval", *args]) == 2
    assert "usage:" in capsys.readouterr().err


def test_failed_run_leaves_no_output(files: Path, capsys) -> None:
    """A bad label in a late chunk stops the run after earlier chunks were written: no file."""
    nan_z = Z.copy()
    nan_z[450, 0] = np.nan
    np.save(files / "late.npy", nan_z)
    for suffix in (".npy", ".csv"):
        out = files / f"out{suffix}"
        args = [
            "eval",
            "sigmoid",
            "--logits",
            str(files / "x.npy"),
            "--labels",
            str(files / "late.npy"),
        ]
        assert main([*args, "--out", str(out), "--chunk-rows", "100", "--quiet"]) == 1  # fmt: skip
        assert not out.exists()
        assert not [p for p in files.iterdir() if p.name.startswith(f".out{suffix}")]
    capsys.readouterr()


def test_subprocess(files: Path) -> None:
    cmd = [sys.executable, "-m", "logitloss", "eval", "softmax", "--logits", str(files / "x.npy"),
           "--labels", str(files / "p.npy"), "--json"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no progress bar when stderr is not a terminal
    check_summary(json.loads(done.stdout), oracle("softmax"))
    cmd[-4] = str(files / "missing.npy")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "missing.npy: no such file" in done.stderr
