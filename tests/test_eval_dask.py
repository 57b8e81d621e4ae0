# ruff: noqa: E501 (argument lists read better one call a line)
"""``logitloss eval --engine dask`` on a real LocalCluster: the same numbers as the local engine
for every loss and input format (.npy stacks, Parquet datasets, Zarr), the bad-input list, and a
dataset several times a worker's memory limit evaluated with the workers' memory bounded.

One cluster serves the module (started once: about 2 s): the ``LocalCluster`` that ``eval --engine
dask`` starts itself (``dask_engine.connect``), with 320 MiB workers. Worker *processes*: the
memory limit is per process and enforced by the nanny, which is what the bounded-memory test must
show; threads would share the test process's memory, so a limit would mean nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from logitloss._tools import files
from logitloss._tools.eval import dask_engine
from logitloss.cli import main

distributed = pytest.importorskip("distributed")
pq = pytest.importorskip("pyarrow.parquet")
pa = pytest.importorskip("pyarrow")
zarr = pytest.importorskip("zarr")
special = pytest.importorskip("scipy.special")

WORKER_MEMORY = 320 * 2**20
# Dask pauses a worker (runs no more tasks) above this fraction of its limit.
PAUSE = pytest.importorskip("dask.config").get("distributed.worker.memory.pause")

RNG = np.random.default_rng(11)
X = (RNG.standard_normal((900, 3)) * 4).astype(np.float32)
Z = RNG.uniform(0, 1, (900, 3)).astype(np.float32)
P = RNG.dirichlet(np.ones(3), size=900).astype(np.float32)
K = RNG.integers(0, 3, size=900)


@pytest.fixture(scope="module")
def cluster():
    with dask_engine.connect(None, workers=2, worker_memory=WORKER_MEMORY) as client:
        yield client.cluster, client


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


def _stacks(root: Path) -> dict[int, tuple[Path, Path]]:
    """Logits and labels 3x a worker's limit (16 files of each, 2M rows of 4 float32 classes),
    and 6x: each file named twice, by hard links (no more writing)."""
    rows_per_file, files, classes = 2_000_000, 16, 4
    rng = np.random.default_rng(3)
    stacks = {3: (root / "x3", root / "z3"), 6: (root / "x6", root / "z6")}
    for directory in (*stacks[3], *stacks[6]):
        directory.mkdir()
    for i in range(files):
        x = rng.standard_normal((rows_per_file, classes), dtype=np.float32) * 5
        z = rng.random((rows_per_file, classes), dtype=np.float32)
        for array, three, six in ((x, stacks[3][0], stacks[6][0]), (z, stacks[3][1], stacks[6][1])):
            np.save(three / f"{i:02}.npy", array)
            for copy in "ab":
                try:
                    os.link(three / f"{i:02}.npy", six / f"{copy}{i:02}.npy")
                except OSError:  # a file system without hard links
                    (six / f"{copy}{i:02}.npy").symlink_to(three / f"{i:02}.npy")
    return stacks


def test_worker_memory_does_not_grow_with_the_data(tmp_path: Path, capsys) -> None:
    """Datasets of 3x and 6x a worker's 320 MiB limit (.npy stacks, sigmoid, float32, 4
    classes): each worker's peak resident memory (sampled every 5 ms) is the same for both,
    within 16 MiB (nothing accumulates with the data), and below the line at which Dask pauses
    a worker (80 % of the limit), so no worker pauses or restarts; the 6x summary is exactly
    twice the 3x one (the same files twice; sums are exact).

    Its own cluster, as ``eval --engine dask`` starts it: the module's workers have imported
    pyarrow and zarr for the other tests (40 MiB), and what a worker holds before its first
    block is not the engine's doing. (Nor may a function of this module run on the workers:
    they would import the module, and pyarrow, zarr and scipy with it.) A warm-up run on one file first: both workers then hold
    the kernels, and the two measured runs see the same steady state. (Measured: about 195 MiB
    after the warm-up, of which about 180 MiB are numba and its kernels, and peaks of 210-217
    MiB in both runs; 250-275 MiB, paused, before the workers ran the kernels single-threaded
    and loaded them from numba's cache instead of compiling them.)"""
    began = time.perf_counter()
    stacks = _stacks(tmp_path)
    seconds = {0: time.perf_counter() - began}
    sizes = {k: sum(p.stat().st_size for p in (*x.iterdir(), *z.iterdir())) for k, (x, z) in stacks.items()}  # fmt: skip
    assert sizes[3] > 3 * WORKER_MEMORY and sizes[6] == 2 * sizes[3]

    with dask_engine.connect(None, workers=2, worker_memory=WORKER_MEMORY) as client:

        def sigmoid(x: Path, z: Path) -> dict:
            return run(capsys, "sigmoid", "--logits", str(x), "--labels", str(z), "--scheduler", client.scheduler.address)  # fmt: skip

        sigmoid(stacks[3][0] / "00.npy", stacks[3][1] / "00.npy")  # the warm-up
        with dask_engine.watch_memory(client) as resident:  # their memory now
            pass
        summaries, peaks = {}, {}
        for factor, (x, z) in stacks.items():
            began = time.perf_counter()
            with dask_engine.watch_memory(client) as memory:
                summaries[factor] = sigmoid(x, z)
            assert len(memory) == 2
            for address, worker in memory.items():
                assert not worker["restarted"] and worker["status"] == "Status.running", worker
                assert worker["limit"] == WORKER_MEMORY
                peaks.setdefault(address, {})[factor] = worker["peak"]
            seconds[factor] = time.perf_counter() - began
    sys.stderr.write(
        f"datasets {sizes[3] / 2**20:.0f} and {sizes[6] / 2**20:.0f} MiB; per worker (MiB): "
        + ", ".join(
            f"{resident[a]['peak'] / 2**20:.0f} after the warm-up, peaks {p[3] / 2**20:.0f} and "
            f"{p[6] / 2**20:.0f}"
            for a, p in peaks.items()
        )
        + f"; pause line {PAUSE * WORKER_MEMORY / 2**20:.0f}; seconds: writing {seconds[0]:.1f}, "
        f"3x {seconds[3]:.1f}, 6x {seconds[6]:.1f}\n"
    )
    for peak in peaks.values():
        assert max(peak.values()) < PAUSE * WORKER_MEMORY, peak
        assert abs(peak[6] - peak[3]) <= 16 * 2**20, peak
    three, six = summaries[3], summaries[6]
    assert three["count"] == 16 * 2_000_000 * 4 and six["count"] == 2 * three["count"]
    assert six["sum"] == 2 * three["sum"] and six["mean"] == three["mean"]
    assert (six["min"], six["max"]) == (three["min"], three["max"])
    for a, b in zip(three["per_class"], six["per_class"], strict=True):
        assert b["sum"] == 2 * a["sum"] and b["mean"] == a["mean"]


def test_finished_blocks_leave_the_workers(cluster, data: Path) -> None:
    """A block's result (with ``--out``, its losses) is released as soon as the client has it,
    not kept on its worker until the run ends: once the last block has arrived, no result is
    left on the workers (within seconds: releasing is asynchronous)."""
    _, client = cluster
    logits, labels = files.load(str(data / "x_stack")), files.load(str(data / "z_stack"))

    def held() -> int:
        return sum(len(keys) for keys in client.has_what().values())

    left = []

    def progress(done: int, rows: int) -> None:
        if done == rows:
            deadline = time.monotonic() + 10
            while held() and time.monotonic() < deadline:
                time.sleep(0.01)
            left.append(held())

    parts: list[tuple[int, np.ndarray]] = []
    dask_engine.evaluate_dask(
        client,
        "sigmoid",
        logits,
        labels,
        chunk_rows=32,
        sink=lambda start, loss: parts.append((start, loss)),
        progress=progress,
    )
    assert left == [0]
    assert len(parts) == 29  # 900 rows in blocks of 32
    losses = np.concatenate([loss for _, loss in sorted(parts, key=lambda part: part[0])])
    np.testing.assert_allclose(losses, oracle_sigmoid(), rtol=1e-6)


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
