"""``logitloss eval`` gives the same numbers to the last bit for any ``--chunk-rows`` and either
engine, and the kernels give the same bits whatever the number of numba threads.

Each case evaluates ONE file (1700 rows of 40 classes: 68 000 logits, above both the kernels'
threshold, 16 384 elements, and the parallel kernels', 65 536) through the command line
(``main(argv)``), with chunkings that put blocks on every path there is: one block of the whole
file (the parallel kernels), 1500 rows (serial kernels), 300 rows (12 000 logits: below the
kernels' threshold, where a call outside ``eval`` takes the reference path), 7 and 1 rows, and
the Dask engine's blocks (its workers run the kernels single-threaded). Summaries are compared
with ``==``, per-row losses (``--out``) bit for bit. Before ``eval`` took one path for every
block, blocks under the threshold took the reference path, 1 ULP away from the kernels on about
1 % of the losses, and the sums moved with the chunking.

The thread test runs the public losses in one subprocess per ``NUMBA_NUM_THREADS`` (1: the
serial kernels; 2: the parallel ones, threads sharing tiles or rows) and compares the bits. It
checks determinism only, not accuracy (``test_kernels*.py`` do that), so it holds whatever the
kernels compute.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from logitloss._core import route
from logitloss._tools.eval import dask_engine, evaluate
from logitloss.cli import main

ROWS, CLASSES = 1700, 40
CHUNKS = (None, 1500, 300, 7, 1)  # None: the default (one block here)
OUT_CHUNKS = CHUNKS[:-1]  # 1-row blocks for the summaries only (the slowest: 1700 blocks)
KINDS = ("sigmoid", "weighted", "softmax", "sparse")
DTYPES = ("float32", "float64")
POS_WEIGHT = ",".join(str(0.25 + i / 8) for i in range(CLASSES))


def _arrays(kind: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(KINDS.index(kind) * 10 + DTYPES.index(dtype))
    x = (rng.standard_normal((ROWS, CLASSES)) * 6).astype(dtype)
    x[5, :3] = [40.0, -40.0, 0.0]  # saturated and zero logits: the formulas' other branches
    if kind == "sparse":
        return x, rng.integers(0, CLASSES, ROWS)
    if kind == "softmax":
        return x, rng.dirichlet(np.full(CLASSES, 0.3), ROWS).astype(dtype)
    return x, rng.random((ROWS, CLASSES)).astype(dtype)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("determinism")
    out = {}
    for kind in KINDS:
        for dtype in DTYPES:
            x, z = _arrays(kind, dtype)
            paths = root / f"{kind}_{dtype}_x.npy", root / f"{kind}_{dtype}_z.npy"
            np.save(paths[0], x)
            np.save(paths[1], z)
            out[kind, dtype] = paths
    return out


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    """The LocalCluster ``eval --engine dask`` starts (2 one-thread processes, kernels serial)."""
    pytest.importorskip("distributed")
    with dask_engine.connect(None, workers=2, worker_memory=2**30) as client:
        yield client.scheduler.address


def _eval(capsys: pytest.CaptureFixture, kind: str, paths: tuple[Path, Path], *extra: str) -> dict:
    args = ["eval", kind, "--logits", str(paths[0]), "--labels", str(paths[1]), "--json"]
    if kind == "weighted":
        args += ["--pos-weight", POS_WEIGHT]
    assert main([*args, "--quiet", *extra]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def _chunking(chunk: int | None) -> list[str]:
    return [] if chunk is None else ["--chunk-rows", str(chunk)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_every_chunking_and_engine_give_the_same_summary(
    files: dict, scheduler: str, capsys: pytest.CaptureFixture, kind: str, dtype: str
) -> None:
    """count, sum, mean, min, max (and per class for sigmoid and weighted): ``==``."""
    paths = files[kind, dtype]
    local = [_eval(capsys, kind, paths, *_chunking(chunk)) for chunk in CHUNKS]
    dask = [
        _eval(capsys, kind, paths, "--scheduler", scheduler, *_chunking(chunk))
        for chunk in (None, 77)
    ]
    reference = local[0]
    assert reference["count"] == ROWS * (CLASSES if kind in ("sigmoid", "weighted") else 1)
    for chunk, summary in zip(CHUNKS[1:], local[1:], strict=True):
        assert summary == reference, f"--chunk-rows {chunk}"
    for chunk, summary in zip((None, 77), dask, strict=True):
        assert summary == reference, f"--engine dask --chunk-rows {chunk}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_per_row_losses_are_bit_identical_across_chunkings(
    files: dict, tmp_path: Path, capsys: pytest.CaptureFixture, kind: str, dtype: str
) -> None:
    """``--out``: every row's loss has the same bits whatever block it was computed in."""
    paths = files[kind, dtype]
    outputs = []
    for i, chunk in enumerate(OUT_CHUNKS):
        out = tmp_path / f"{i}.npy"
        _eval(capsys, kind, paths, "--out", str(out), *_chunking(chunk))
        outputs.append(np.load(out))
    first = outputs[0]
    assert first.dtype == np.dtype(dtype) and len(first) == ROWS
    for chunk, losses in zip(OUT_CHUNKS[1:], outputs[1:], strict=True):
        assert losses.tobytes() == first.tobytes(), f"--chunk-rows {chunk}"


def test_one_path_for_every_block_size() -> None:
    """Inside ``kernel_path`` NumPy arrays of every size go to the kernels (with numba installed;
    without it everything takes the reference path, also one path); ``reference_path``
    still wins, and outside both the threshold holds. ``evaluate_block`` uses it: a block of a
    few rows gives the rows' losses of a large block (the comparison fails on the reference
    path, 1 ULP away on some of these rows)."""
    small = np.zeros(8, np.float32)
    assert not route.applies(small)
    with route.kernel_path():
        assert route.applies(small) == route._numba_installed()  # else: reference
        with route.reference_path():
            assert not route.applies(small)
    assert not route.applies(small)
    x, z = _arrays("sigmoid", "float32")
    job = evaluate.plan("sigmoid", x, z)
    whole, _ = evaluate.evaluate_block(job, x, z, 0)
    pieces = [
        evaluate.evaluate_block(job, x[i : i + 3], z[i : i + 3], i)[0] for i in range(0, 300, 3)
    ]
    assert np.concatenate(pieces).tobytes() == whole[:300].tobytes()


# --- The kernels' bits do not depend on the number of threads -------------------------------------

_THREADS_SCRIPT = """
import sys
import numpy as np
import numba
import logitloss
from logitloss._losses.logistic import kernel as logistic_kernels

assert numba.config.NUMBA_NUM_THREADS == int(sys.argv[2])
rng = np.random.default_rng(7)
results = {}
for dtype in ("float32", "float64"):
    x = (rng.standard_normal((3000, 1000)) * 4).astype(dtype)
    p = rng.dirichlet(np.ones(1000), 3000).astype(dtype)
    k = rng.integers(0, 1000, 3000)
    z = rng.random(x.shape).astype(dtype)
    # Rows wider than a tile (16384): split across tiles by the parallel kernels, not the serial.
    wide = (rng.standard_normal((3, 100_000)) * 4).astype(dtype)
    wz = rng.random(wide.shape).astype(dtype)
    flat, fz = wide.ravel(), wz.ravel()
    results[f"softmax {dtype}"] = logitloss.softmax_cross_entropy_with_logits(p, x)
    results[f"sparse {dtype}"] = logitloss.sparse_softmax_cross_entropy_with_logits(k, x)
    results[f"sigmoid {dtype}"] = logitloss.sigmoid_cross_entropy_with_logits(z, x)
    results[f"sigmoid 1-d {dtype}"] = logitloss.sigmoid_cross_entropy_with_logits(fz, flat)
    for name, (a, b) in {"": (x, z), " wide": (wide, wz), " 1-d": (flat, fz)}.items():
        results[f"bce mean{name} {dtype}"] = logitloss.binary_cross_entropy_with_logits(
            a, b, reduction="mean"
        )
        # The float64 sums behind the mean, before its rounding hides a difference.
        results[f"bce sums{name} {dtype}"] = np.asarray(logistic_kernels.logistic_loss_sum(a, b))
    results[f"cross_entropy {dtype}"] = logitloss.cross_entropy(x, k)
    results[f"cross_entropy soft {dtype}"] = logitloss.cross_entropy(x, p)
np.savez(sys.argv[1], **{name: np.asarray(v) for name, v in results.items()})
"""


def test_kernels_bit_identical_for_one_and_two_threads(tmp_path: Path) -> None:
    pytest.importorskip("numba")
    results = {}
    for threads in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(threads)}
        out = tmp_path / f"threads{threads}.npz"
        done = subprocess.run(
            [sys.executable, "-c", _THREADS_SCRIPT, str(out), str(threads)],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        with np.load(out) as loaded:
            results[threads] = {name: loaded[name] for name in loaded.files}
    assert results[1].keys() == results[2].keys() and len(results[1]) == 24
    for name, one in results[1].items():
        two = results[2][name]
        assert one.dtype == two.dtype and one.shape == two.shape, name
        assert one.tobytes() == two.tobytes(), name
