# ruff: noqa: E501 (argument lists read better one call a line)
"""``logitloss eval --engine dask`` on a real LocalCluster: the same numbers as the local engine
for every loss and input format (.npy stacks, Parquet datasets, Zarr), the bad-input list, and a
dataset several times a worker's memory limit evaluated with the workers' memory bounded.

One cluster serves the module (started once: about 2 s). Worker *processes* (processes=True):
the memory limit is per process and enforced by the nanny, which is what the bounded-memory test
must show; threads would share the test process's memory, so a limit would mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from logitloss import _dask_engine
from logitloss.cli import main

distributed = pytest.importorskip("distributed")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
zarr = pytest.importorskip("zarr")
special = pytest.importorskip("scipy.special")

WORKER_MEMORY = 320 * 2**20

RNG = np.random.default_rng(11)
X = (RNG.standard_normal((900, 3)) * 4).astype(np.float32)
Z = RNG.uniform(0, 1, (900, 3)).astype(np.float32)
P = RNG.dirichlet(np.ones(3), size=900).astype(np.float32)
K = RNG.integers(0, 3, size=900)


@pytest.fixture(scope="module")
def cluster():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            memory_limit=WORKER_MEMORY,
            dashboard_address=None,
            silence_logs=50,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield cluster, client


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """The same arrays as single files, .npy stacks (uneven parts), Parquet datasets and Zarr."""
    root = tmp_path_factory.mktemp("dask")
    cuts = [0, 250, 251, 600, 900]
    for name, array in {"x": X, "z": Z, "p": P, "k": K}.items():
        np.save(root / f"{name}.npy", array)
        (root / f"{name}_stack").mkdir()
        for i in range(len(cuts) - 1):
            np.save(root / f"{name}_stack" / f"part{i}.npy", array[cuts[i] : cuts[i + 1]])
    (root / "table").mkdir()
    for i in range(len(cuts) - 1):
        rows = slice(cuts[i], cuts[i + 1])
        columns = {f"x{j}": X[rows, j] for j in range(3)} | {f"z{j}": Z[rows, j] for j in range(3)}
        pq.write_table(
            pa.table({**columns, "k": K[rows]}),
            root / "table" / f"part{i}.parquet",
            row_group_size=128,
        )
    group = zarr.open_group(root / "preds.zarr", mode="w")
    group.create_array("logits", data=X, chunks=(128, 3))
    group.create_array("labels", data=Z, chunks=(200, 3))
    return root


def run(capsys, *args: str) -> dict:
    assert main(["eval", *args, "--json", "--quiet"]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def oracle_sigmoid() -> np.ndarray:
    x, z = X.astype(np.float64), Z.astype(np.float64)
    return -(z * special.log_expit(x) + (1 - z) * special.log_expit(-x))


def test_same_numbers_as_local_engine(cluster, data: Path, capsys) -> None:
    """Every loss and format: the dask summary equals the local one exactly (exact sums), with
    different chunkings on the two sides, and is right against scipy."""
    _, client = cluster
    dask = ["--engine", "dask", "--scheduler", client.scheduler.address]
    table = data / "table"
    cases = [
        ("sigmoid", data / "x.npy", data / "z.npy", data / "x_stack", data / "z_stack", []),
        (
            "weighted",
            data / "x.npy",
            data / "z.npy",
            f"{table}:x0,x1,x2",
            f"{table}:z0,z1,z2",
            ["--pos-weight", "0.5,2,3"],
        ),
        ("softmax", data / "x.npy", data / "p.npy", data / "x_stack", data / "p_stack", []),
        ("sparse", data / "x.npy", data / "k.npy", f"{table}:x0,x1,x2", f"{table}:k", []),
        (
            "sigmoid",
            data / "x.npy",
            data / "z.npy",
            f"{data / 'preds.zarr'}:logits",
            f"{data / 'preds.zarr'}:labels",
            [],
        ),
    ]
    for kind, x, z, dx, dz, extra in cases:
        local = run(
            capsys, kind, "--logits", str(x), "--labels", str(z), "--chunk-rows", "500", *extra
        )
        remote = run(
            capsys,
            kind,
            "--logits",
            str(dx),
            "--labels",
            str(dz),
            "--chunk-rows",
            "77",
            *dask,
            *extra,
        )
        assert remote == local, kind
    expected = oracle_sigmoid()
    assert local["sum"] == pytest.approx(float(np.sum(expected)), rel=1e-6)  # float32 losses
    assert local["max"] == pytest.approx(expected.max(), rel=1e-6)


def test_out_matches_local(cluster, data: Path, capsys) -> None:
    _, client = cluster
    for suffix in (".npy", ".parquet"):
        local_out, dask_out = data / f"l{suffix}", data / f"d{suffix}"
        args = [
            "eval",
            "sigmoid",
            "--logits",
            str(data / "x_stack"),
            "--labels",
            str(data / "z_stack"),
            "--quiet",
        ]
        assert main([*args, "--out", str(local_out)]) == 0
        assert (
            main(
                [
                    *args,
                    "--out",
                    str(dask_out),
                    "--scheduler",
                    client.scheduler.address,
                    "--chunk-rows",
                    "64",
                ]
            )
            == 0
        )
        if suffix == ".npy":
            a, b = np.load(local_out), np.load(dask_out)
        else:
            a, b = (
                np.column_stack([c.to_numpy() for c in pq.read_table(p).columns])
                for p in (local_out, dask_out)
            )
        np.testing.assert_array_equal(a, b)  # rows in order although blocks finish in any order
        np.testing.assert_allclose(a, oracle_sigmoid(), rtol=1e-6)
    capsys.readouterr()


def test_bad_input_on_dask(cluster, data: Path, capsys) -> None:
    """The bad-input list through the Dask engine: one line naming the file, exit 1, no output."""
    _, client = cluster
    bad = data / "bad"
    bad.mkdir(exist_ok=True)
    for name, array in {"nan": np.where(np.arange(900)[:, None] == 700, np.nan, Z), "big": Z * 2,
                        "frac": K + 0.5, "k9": np.where(K == 0, 9, K), "short": Z[:-1]}.items():  # fmt: skip
        (bad / name).mkdir(exist_ok=True)
        np.save(bad / name / "a.npy", array[:450])
        np.save(bad / name / "b.npy", array[450:])
    (bad / "corrupt").mkdir(exist_ok=True)
    np.save(bad / "corrupt" / "a.npy", Z[:450])
    (bad / "corrupt" / "b.npy").write_bytes(b"\x93NUMPY garbage")
    xs = str(data / "x_stack")
    cases = [
        (["sigmoid", "--logits", str(data / "missing"), "--labels", xs], "missing: no such file"),
        (["sigmoid", "--logits", xs, "--labels", str(bad / "corrupt")], "b.npy: cannot read it"),
        (["sigmoid", "--logits", xs, "--labels", str(bad / "short")], "row counts differ"),
        (["sigmoid", "--logits", f"{data / 'table'}:x0,nope", "--labels", xs], "no column 'nope'"),
        (["sigmoid", "--logits", xs, "--labels", str(bad / "nan")], "nan: NaN label in row 700"),
        (["sigmoid", "--logits", xs, "--labels", str(bad / "big")], "big: label outside [0, 1]"),
        (
            ["sparse", "--logits", xs, "--labels", str(bad / "frac")],
            "frac: non-integer class label",
        ),
        (["sparse", "--logits", xs, "--labels", str(bad / "k9")], "k9: class label outside [0, 3)"),
        (
            ["weighted", "--logits", xs, "--labels", str(data / "z_stack"), "--pos-weight", "1,2"],
            "--pos-weight: 2 values for 3 classes",
        ),
        (
            ["sigmoid", "--logits", f"{data / 'preds.zarr'}:nope", "--labels", xs],
            "preds.zarr: no array 'nope'",
        ),
    ]
    for args, message in cases:
        out = data / "never.npy"
        code = main(
            [
                "eval",
                *args,
                "--quiet",
                "--scheduler",
                client.scheduler.address,
                "--chunk-rows",
                "100",
                "--out",
                str(out),
            ]
        )
        err = capsys.readouterr().err
        assert code == 1, (args, err)
        assert err.startswith("logitloss: error: ") and message in err, (args, err)
        assert err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists() and not list(data.glob(".never.npy*"))
    assert (
        main(
            [
                "eval",
                "sigmoid",
                "--logits",
                xs,
                "--labels",
                xs,
                "--engine",
                "local",
                "--scheduler",
                "x:1",
            ]
        )
        == 1
    )
    assert main(["eval", "sigmoid", "--logits", xs, "--labels", xs, "--engine", "spark"]) == 2
    assert main(["eval", "sigmoid", "--logits", xs, "--labels", xs, "--worker-memory", "lots"]) == 2
    capsys.readouterr()


def test_dataset_larger_than_worker_memory(cluster, tmp_path: Path, capsys) -> None:
    """About 3x a worker's 320 MiB limit of .npy stacks (sigmoid, float32, 4 classes): the
    workers' sampled peak resident memory stays under the nanny's terminate threshold (95% of
    the limit), no worker restarts, and the result equals the local engine's. (Measured: peaks
    of 0.8-0.85 of the limit for 256 and 320 MiB limits, whatever the dataset's size.)"""
    _, client = cluster
    rows_per_file, files, classes = 2_000_000, 16, 4  # 16 x 32 MB logits + 16 x 32 MB labels
    rng = np.random.default_rng(3)
    for name in ("x", "z"):
        (tmp_path / name).mkdir()
    for i in range(files):
        np.save(
            tmp_path / "x" / f"{i:02}.npy",
            rng.standard_normal((rows_per_file, classes), dtype=np.float32) * 5,
        )
        np.save(
            tmp_path / "z" / f"{i:02}.npy", rng.random((rows_per_file, classes), dtype=np.float32)
        )
    size = sum(p.stat().st_size for p in tmp_path.rglob("*.npy"))
    assert size > 3 * WORKER_MEMORY
    args = ["sigmoid", "--logits", str(tmp_path / "x"), "--labels", str(tmp_path / "z")]
    with _dask_engine.watch_memory(client) as memory:
        remote = run(capsys, *args, "--scheduler", client.scheduler.address)
    assert len(memory) == 2
    for worker in memory.values():
        assert not worker["restarted"] and worker["status"] == "Status.running", worker
        assert worker["peak"] < 0.95 * worker["limit"], (
            worker["peak"] / 2**20,
            worker["limit"] / 2**20,
        )
    assert remote["count"] == rows_per_file * files * classes
    # The local engine streams the same stacks (64 MiB chunks) to the same numbers.
    assert run(capsys, *args) == remote
    peaks = [round(w["peak"] / 2**20) for w in memory.values()]
    sys.stderr.write(f"dataset {size / 2**20:.0f} MiB, worker peaks {peaks} MiB\n")


def test_subprocess_starts_its_own_cluster(data: Path) -> None:
    cmd = [sys.executable, "-m", "logitloss", "eval", "softmax", "--logits", str(data / "x_stack"),
           "--labels", str(data / "p_stack"), "--engine", "dask", "--worker-memory", "300MB", "--json"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "dask: 2 workers, peak memory" in done.stderr and "0 restarted" in done.stderr
    local = subprocess.run([*cmd[:-5], "--json"], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout) == json.loads(local.stdout)
    cmd[6] = str(data / "missing")
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().endswith("missing: no such file")
