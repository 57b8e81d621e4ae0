"""The command line's inputs and outputs, as a user calls it (issue 10): logits without ``:KEY``
in the labels' own file, column patterns, ``--axis`` on N-D logits against the library's own
functions, the output files' permissions, and optional packages checked before any work."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import logitloss
from logitloss import cli
from logitloss._core import route
from logitloss._tools import files

RNG = np.random.default_rng(10)
N, C, K = 40, 3, 5
X3 = RNG.standard_normal((N, C, K)) * 3  # classes on axis 1
P3 = np.moveaxis(RNG.dirichlet(np.ones(C), size=(N, K)), -1, 1)  # softmax labels, same shape
K3 = RNG.integers(0, C, size=(N, K))  # sparse labels: the logits' shape without axis 1
X2 = RNG.standard_normal((N, C)) * 3
LABEL = RNG.integers(0, C, size=N)


def run_eval(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    """``logitloss eval ... --json --quiet``: the summary, after checking the exit status."""
    status = cli.main(["eval", *args, "--json", "--quiet"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    return json.loads(captured.out)


def refused(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """The one-line error of a refused command (exit status 1, no traceback)."""
    assert cli.main(argv) == 1, argv
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("logitloss: error: ") and captured.err.count("\n") == 1
    return captured.err


def check_against(summary: dict, expected: np.ndarray) -> None:
    """The summary of ``eval`` is that of the library's losses ``expected``."""
    assert summary["count"] == expected.size
    assert summary["sum"] == pytest.approx(float(np.sum(expected)), rel=1e-13)
    assert summary["min"] == pytest.approx(float(expected.min()), rel=1e-13)
    assert summary["max"] == pytest.approx(float(expected.max()), rel=1e-13)


def write_table(path: Path, columns: dict[str, np.ndarray]) -> None:
    """``columns`` as a CSV file (header, then rows) or a Parquet file, by ``path``'s suffix."""
    if path.suffix == ".parquet":
        pa = pytest.importorskip("pyarrow")
        pq = pytest.importorskip("pyarrow.parquet")
        pq.write_table(pa.table(columns), path)
        return
    values = np.column_stack(list(columns.values()))
    formats = ["%d" if np.issubdtype(v.dtype, np.integer) else "%.17g" for v in columns.values()]
    np.savetxt(path, values, delimiter=",", header=",".join(columns), comments="", fmt=formats)


# --- 1. Logits without :KEY in the labels' file; column patterns ----------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_logits_without_key_in_the_labels_file_are_the_other_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    """``--logits preds.csv --labels preds.csv:label`` took the label column as a fourth class
    (a wrong mean, exit status 0): the logits are the columns that are not the labels'."""
    path = tmp_path / f"preds{suffix}"
    write_table(path, {"a": X2[:, 0], "label": LABEL, "b": X2[:, 1], "c": X2[:, 2]})
    summary = run_eval(capsys, "sparse", "--logits", str(path), "--labels", f"{path}:label")
    check_against(summary, logitloss.sparse_softmax_cross_entropy_with_logits(LABEL, X2))


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_a_column_pattern_takes_the_matching_columns_in_file_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], suffix: str
) -> None:
    path = tmp_path / f"preds{suffix}"
    columns = {"logit_2": X2[:, 2], "id": np.arange(N), "logit_0": X2[:, 0], "label": LABEL}
    write_table(path, {**columns, "logit_1": X2[:, 1], "weight": np.ones(N)})
    summary = run_eval(capsys, "sparse", "--logits", f"{path}:logit_*", "--labels", f"{path}:label")
    in_file_order = X2[:, [2, 0, 1]]
    check_against(summary, logitloss.sparse_softmax_cross_entropy_with_logits(LABEL, in_file_order))
    # A pattern mixed with names; an exact name is not taken for a pattern.
    summary = run_eval(
        capsys, "sparse", "--logits", f"{path}:logit_[02],logit_1", "--labels", f"{path}:label"
    )
    check_against(summary, logitloss.sparse_softmax_cross_entropy_with_logits(LABEL, in_file_order))


def test_a_pattern_that_matches_nothing_lists_the_columns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "preds.csv"
    write_table(path, {"a": X2[:, 0], "b": X2[:, 1], "label": LABEL})
    err = refused(
        capsys, ["eval", "sparse", "--logits", f"{path}:logit_*", "--labels", f"{path}:label"]
    )
    assert "no column matches 'logit_*' (columns: a, b, label)" in err


@pytest.mark.parametrize(
    ("columns", "logits", "labels", "message"),
    [
        # Neither names its columns: both would be every column.
        ({"a": X2[:, 0], "b": X2[:, 1], "label": LABEL}, "", "",
         "--logits and --labels without :KEY would take every column"),
        # The labels name none: they would take the logits' columns too.
        ({"a": X2[:, 0], "b": X2[:, 1], "label": LABEL}, ":a,b", "",
         "--labels without :KEY would take every column"),
        # Nothing is left for the logits.
        ({"label": LABEL}, "", ":label", "no column left besides the labels'"),
        # A column of whole numbers (an id) beside the logits cannot be told from them.
        ({"id": np.arange(N), "a": X2[:, 0], "b": X2[:, 1], "label": LABEL}, "", ":label",
         "cannot tell the logits from 'id' (whole numbers only)"),
    ],
)  # fmt: skip
def test_ambiguous_columns_are_refused_with_the_columns_and_the_syntax(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    columns: dict[str, np.ndarray],
    logits: str,
    labels: str,
    message: str,
) -> None:
    path = tmp_path / "preds.csv"
    write_table(path, columns)
    argv = ["eval", "sparse", "--logits", f"{path}{logits}", "--labels", f"{path}{labels}"]
    err = refused(capsys, argv)
    assert message in err, err
    assert f"(columns: {', '.join(columns)})" in err and "e.g. --logits" in err, err


def test_a_parquet_column_that_is_not_floating_point_is_not_taken_for_logits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "preds.parquet"
    write_table(path, {"row": np.arange(N), "a": X2[:, 0], "b": X2[:, 1], "label": LABEL})
    err = refused(capsys, ["eval", "sparse", "--logits", str(path), "--labels", f"{path}:label"])
    assert "cannot tell the logits from 'row' (int64)" in err
    assert "(columns: row, a, b, label)" in err and f"--logits {path}:a,b" in err


def test_npz_logits_without_key_are_the_member_that_is_not_the_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "preds.npz"
    np.savez(path, logits=X2, classes=LABEL)
    summary = run_eval(capsys, "sparse", "--logits", str(path), "--labels", f"{path}:classes")
    check_against(summary, logitloss.sparse_softmax_cross_entropy_with_logits(LABEL, X2))
    np.savez(path, logits=X2, classes=LABEL, other=X2)
    err = refused(capsys, ["eval", "sparse", "--logits", str(path), "--labels", f"{path}:classes"])
    assert "['logits', 'other']" in err and f"--logits {path}:KEY" in err


# --- 2. --axis on N-D logits, against the library's own axis= -----------------------------------


@pytest.fixture
def arrays(tmp_path: Path) -> Path:
    """The N-D arrays as .npy files (read lazily, row by row) and in an .npz (in memory)."""
    for name, array in {"x3": X3, "p3": P3, "k3": K3}.items():
        np.save(tmp_path / f"{name}.npy", array)
    np.savez(tmp_path / "d.npz", x3=X3, p3=P3, k3=K3)
    return tmp_path


def specs(root: Path, form: str, *names: str) -> list[str]:
    if form == "npy":
        return [str(root / f"{name}.npy") for name in names]
    return [f"{root / 'd.npz'}:{name}" for name in names]


@pytest.mark.parametrize("form", ["npy", "npz"])
@pytest.mark.parametrize("axis", ["1", "-2"])
def test_softmax_axis_is_the_librarys(
    arrays: Path, capsys: pytest.CaptureFixture[str], form: str, axis: str
) -> None:
    logits, labels = specs(arrays, form, "x3", "p3")
    with route.kernel_path():  # eval's one path, for blocks of any size
        expected = logitloss.softmax_cross_entropy_with_logits(P3, X3, axis=1)
    out = arrays / "losses.npy"
    args = ["softmax", "--logits", logits, "--labels", labels, "--axis", axis]
    summary = run_eval(capsys, *args, "--out", str(out), "--chunk-rows", "7")
    check_against(summary, expected)
    np.testing.assert_array_equal(np.load(out), expected)  # shape (N, K), values too


@pytest.mark.parametrize("form", ["npy", "npz"])
@pytest.mark.parametrize("axis", ["1", "-2"])
def test_sparse_axis_is_the_librarys_on_moved_logits(
    arrays: Path, capsys: pytest.CaptureFixture[str], form: str, axis: str
) -> None:
    """``--axis`` was ignored by sparse: labels of shape (N, K) were refused for (N, C, K)."""
    logits, labels = specs(arrays, form, "x3", "k3")
    with route.kernel_path():  # eval's one path, for blocks of any size
        expected = logitloss.sparse_softmax_cross_entropy_with_logits(K3, np.moveaxis(X3, 1, -1))
    out = arrays / "losses.npy"
    args = ["sparse", "--logits", logits, "--labels", labels, "--axis", axis]
    summary = run_eval(capsys, *args, "--out", str(out), "--chunk-rows", "7")
    check_against(summary, expected)
    np.testing.assert_array_equal(np.load(out), expected)


def test_axis_last_is_the_default(arrays: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logits, labels = specs(arrays, "npy", "x3", "p3")
    given = run_eval(capsys, "softmax", "--logits", logits, "--labels", labels, "--axis", "2")
    default = run_eval(capsys, "softmax", "--logits", logits, "--labels", labels)
    check_against(given, logitloss.softmax_cross_entropy_with_logits(P3, X3, axis=-1))
    assert given == default


@pytest.mark.parametrize(
    ("loss", "labels", "axis", "message"),
    [
        ("sparse", "k3", "0", "--axis 0: axis 0 of "),
        ("softmax", "p3", "-3", "--axis -3: axis 0 of "),
        ("sparse", "k3", "3", "--axis 3: "),
        ("softmax", "p3", "-4", "--axis -4: "),
        ("sigmoid", "p3", "1", "--axis 1: only softmax and sparse have a class axis"),
        ("softmax", "k3", "1", "k3.npy: shape (40, 5) differs from logits (40, 3, 5)"),
        ("sparse", "p3", "1", "need one class index per row, shape (40, 5); got (40, 3, 5)"),
    ],
)
def test_a_bad_axis_is_refused_in_one_line(
    arrays: Path,
    capsys: pytest.CaptureFixture[str],
    loss: str,
    labels: str,
    axis: str,
    message: str,
) -> None:
    logits, labels = specs(arrays, "npy", "x3", labels)
    argv = ["eval", loss, "--logits", logits, "--labels", labels, "--axis", axis, "--quiet"]
    err = refused(capsys, argv)
    assert message in err, err
    if message.endswith(": "):  # out of range: the shape is given
        assert "has 3 axes (shape (40, 3, 5))" in err


def test_axis_on_the_dask_engine(arrays: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The moved view of a lazy .npy travels to the workers and reads its own rows there."""
    pytest.importorskip("distributed")
    logits, labels = specs(arrays, "npy", "x3", "k3")
    with route.kernel_path():  # eval's one path, for blocks of any size
        expected = logitloss.sparse_softmax_cross_entropy_with_logits(K3, np.moveaxis(X3, 1, -1))
    out = arrays / "losses.npy"
    args = ["sparse", "--logits", logits, "--labels", labels, "--axis", "1", "--out", str(out)]
    summary = run_eval(capsys, *args, "--engine", "dask", "--workers", "1", "--chunk-rows", "9")
    check_against(summary, expected)
    np.testing.assert_array_equal(np.load(out), expected)


# --- 3. Output files get the mode open(path, "w") would give -----------------------------------


@pytest.fixture(params=[0o022, 0o077])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
@pytest.mark.parametrize("suffix", [".npy", ".csv", ".parquet"])
def test_eval_out_has_the_mode_of_a_plain_open(
    arrays: Path, capsys: pytest.CaptureFixture[str], umask: int, suffix: str
) -> None:
    """Every output was 0600 (mkstemp's mode, kept through the rename) whatever the umask."""
    if suffix == ".parquet":
        pytest.importorskip("pyarrow")
    plain = arrays / "plain.txt"
    with open(plain, "w"):
        pass
    out = arrays / f"losses{suffix}"
    logits, labels = specs(arrays, "npy", "x3", "p3")
    run_eval(capsys, "softmax", "--logits", logits, "--labels", labels, "--out", str(out))
    assert mode(out) == mode(plain) == 0o666 & ~umask
    # Over an existing file, open() keeps that file's mode: so does --out.
    out.chmod(0o640)
    run_eval(capsys, "softmax", "--logits", logits, "--labels", labels, "--out", str(out))
    assert mode(out) == 0o640


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_stability_plot_and_bench_files_have_the_mode_of_a_plain_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], umask: int
) -> None:
    """``stability --plot`` as a user runs it; ``bench``'s writer (the same atomic helper) is
    called directly, a bench run taking a minute."""
    pytest.importorskip("mpmath")
    pytest.importorskip("matplotlib")
    from logitloss._tools.bench import report

    png = tmp_path / "s.png"
    assert cli.main(["stability", "--dtype", "float16", "--plot", str(png)]) == 0
    capsys.readouterr()
    assert mode(png) == 0o666 & ~umask
    table = tmp_path / "bench.csv"
    report.write_atomically(table, lambda handle: handle.write(b"a,b\n"))
    assert mode(table) == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.csv", "s.png"]


# --- 4. Optional packages are checked before any work ----------------------------------------


def block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make ``import module`` fail, as when the package is not installed."""
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)


def check_missing(err: str, package: str, extra: str) -> None:
    assert f"needs {package}, which cannot be imported" in err, err
    assert f"pip install 'logitloss[{extra}]'" in err, err


def test_stability_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """It computed the sweep, then died with a ModuleNotFoundError traceback."""
    block(monkeypatch, "matplotlib")
    png = tmp_path / "s.png"
    err = refused(capsys, ["stability", "--plot", str(png)])
    check_missing(err, "matplotlib", "cli")
    assert "--plot needs matplotlib" in err
    assert list(tmp_path.iterdir()) == []


def test_stability_plot_without_matplotlib_as_a_subprocess(tmp_path: Path) -> None:
    """The same, the way a user meets it: one line on stderr, no traceback, nothing written."""
    code = (
        "import sys; sys.modules['matplotlib'] = None; "
        "from logitloss.cli import main; raise SystemExit(main(sys.argv[1:]))"
    )
    png = tmp_path / "s.png"
    done = subprocess.run(
        [sys.executable, "-c", code, "stability", "--plot", str(png)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    check_missing(done.stderr, "matplotlib", "cli")
    assert list(tmp_path.iterdir()) == []


def test_bench_plot_without_matplotlib(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before the timing, not after minutes of it."""
    block(monkeypatch, "matplotlib")
    csv, png = tmp_path / "b.csv", tmp_path / "b.png"
    err = refused(capsys, ["bench", "--quick", "--csv", str(csv), "--plot", str(png)])
    check_missing(err, "matplotlib", "cli")
    assert list(tmp_path.iterdir()) == []


def test_parquet_without_pyarrow(
    arrays: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parquet inputs, and a Parquet --out (written only after the whole evaluation)."""
    block(monkeypatch, "pyarrow", "pyarrow.parquet")
    (arrays / "t.parquet").write_bytes(b"PAR1")
    logits, labels = specs(arrays, "npy", "x3", "p3")
    out = arrays / "losses.parquet"
    argv = ["eval", "softmax", "--logits", logits, "--labels", labels, "--out", str(out)]
    err = refused(capsys, argv)
    check_missing(err, "pyarrow", "cli")
    assert f"--out {out} needs pyarrow" in err
    assert not out.exists() and not list(arrays.glob(".losses*"))
    parquet = str(arrays / "t.parquet")
    err = refused(capsys, ["eval", "sparse", "--logits", f"{parquet}:a", "--labels", labels])
    check_missing(err, "pyarrow", "cli")
    assert f"--logits {parquet} needs pyarrow" in err


def test_dask_engine_and_zarr_without_their_packages(
    arrays: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    logits, labels = specs(arrays, "npy", "x3", "p3")
    block(monkeypatch, "distributed", "zarr")
    err = refused(capsys, ["eval", "softmax", "--logits", logits, "--labels", labels,
                           "--engine", "dask"])  # fmt: skip
    check_missing(err, "distributed", "dask")
    assert "--engine dask needs distributed" in err
    store = arrays / "preds.zarr"
    store.mkdir()
    err = refused(capsys, ["eval", "softmax", "--logits", str(store), "--labels", labels])
    check_missing(err, "zarr", "dask")
    assert f"--logits {store} needs zarr" in err


def test_require_names_the_package_and_its_extra() -> None:
    """The extra named for each package is one of pyproject.toml's that installs it."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).parents[1] / "pyproject.toml"
    extras = tomllib.loads(pyproject.read_text())["project"]["optional-dependencies"]
    assert set(files.EXTRAS) == {"matplotlib", "pyarrow", "zarr", "distributed"}
    for package, extra in files.EXTRAS.items():
        assert any(spec.startswith(package) for spec in extras[extra]), (package, extra)
    files.require("numpy", "this test")  # importable: no error
    with pytest.raises(files.DataError, match=r"pip install no_such_package_xyz$"):
        files.require("no_such_package_xyz", "this test")
