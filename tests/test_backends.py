"""Every public loss on every installed array library: the same kind of array out, same dtype,
same shape, and values within the promised ULP bound of the exact (mpmath) value."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import Backend, np_dtype

import logitloss
from logitloss._tools import oracle

LOGITS = [0.0, -0.0, 1e-10, -1e-10, 0.2, -0.3, 1.5, -2.0, 8.0, -12.0, 24.0, -20.0, 40.0, -60.0]
LABELS = [0.0, 1.0, 0.5, 0.25, 1e-3, 0.999, 0.7]


def bound(backend: Backend, dtype: str) -> float:
    """The promised bound; without float64 (JAX's default mode) float32 is computed in float32."""
    if dtype == "float64":
        return 4.0
    return 1.0 if backend.has_float64 else 4.0


def grid(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    dt = np_dtype(dtype)
    x = np.array([v for v in LOGITS for _ in LABELS], dtype=dt).reshape(len(LOGITS), len(LABELS))
    z = np.array([w for _ in LOGITS for w in LABELS], dtype=dt).reshape(x.shape)
    return x, z


def max_ulp(computed: np.ndarray, exact: list, dtype: str) -> float:
    values = np.asarray(computed, dtype=np.float64).ravel()
    return max(oracle.ulp_error(float(c), e, dtype) for c, e in zip(values, exact, strict=True))


def check_result(backend: Backend, out, shape: tuple, dtype: str) -> np.ndarray:
    assert backend.is_native(out), type(out)
    result = backend.to_numpy(out)
    assert result.shape == shape
    assert result.dtype == np_dtype(dtype)
    return result


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("pos_weight", [None, 2.5])
def test_sigmoid_and_weighted(backend: Backend, dtype: str, pos_weight: float | None) -> None:
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {dtype}")
    x, z = grid(dtype)
    if pos_weight is None:
        out = logitloss.sigmoid_cross_entropy_with_logits(backend.asarray(z), backend.asarray(x))
        q = 1.0
    else:
        out = logitloss.weighted_cross_entropy_with_logits(
            backend.asarray(z), backend.asarray(x), pos_weight
        )
        q = float(np.array(pos_weight, dtype=np_dtype(dtype)))
    result = check_result(backend, out, x.shape, dtype)
    exact = [
        oracle.logistic(float(a), float(b), q)
        for a, b in zip(x.astype(float).ravel(), z.astype(float).ravel(), strict=True)
    ]
    assert max_ulp(result, exact, dtype) <= bound(backend, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_weighted_per_class_pos_weight(backend: Backend, dtype: str) -> None:
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {dtype}")
    x, z = grid(dtype)
    q = np.linspace(0.0, 4.0, x.shape[1]).astype(np_dtype(dtype))
    out = logitloss.weighted_cross_entropy_with_logits(
        backend.asarray(z), backend.asarray(x), backend.asarray(q)
    )
    result = check_result(backend, out, x.shape, dtype)
    qs = np.broadcast_to(q, x.shape).astype(float).ravel()
    exact = [
        oracle.logistic(float(a), float(b), float(c))
        for a, b, c in zip(x.astype(float).ravel(), z.astype(float).ravel(), qs, strict=True)
    ]
    assert max_ulp(result, exact, dtype) <= bound(backend, dtype)


def softmax_rows(dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dt = np_dtype(dtype)
    logits = np.array(
        [
            [20.0, 0.0, -1.0, 3.0],
            [0.2, 0.8, 0.1, 0.1],
            [-5.0, -5.0, -5.0, -5.0],
            [1e-3, -2e-3, 0.0, 4.0],
            [-30.0, 12.0, 11.5, -8.0],
            [0.0, -60.0, 60.0, 1.0],
        ],
        dtype=dt,
    )
    soft = np.array(
        [
            [1.0, 0.0, 0.0, 0.0],
            [0.1, 0.6, 0.2, 0.1],
            [0.25, 0.25, 0.25, 0.25],
            [0.0, 0.0, 0.0, 1.0],
            [0.5, 0.0, 0.5, 0.0],
            [0.0, 0.3, 0.7, 0.0],
        ],
        dtype=dt,
    )
    sparse = np.array([0, 1, 3, 3, 2, 1])
    return logits, soft, sparse


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax(backend: Backend, dtype: str, axis: int) -> None:
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {dtype}")
    logits, soft, _ = softmax_rows(dtype)
    if axis == 0:
        logits, soft = logits.T.copy(), soft.T.copy()
    out = logitloss.softmax_cross_entropy_with_logits(
        backend.asarray(soft), backend.asarray(logits), axis=axis
    )
    result = check_result(backend, out, (6,), dtype)
    rows_x = np.moveaxis(logits.astype(float), axis, -1)
    rows_z = np.moveaxis(soft.astype(float), axis, -1)
    exact = [oracle.softmax(list(a), list(b)) for a, b in zip(rows_x, rows_z, strict=True)]
    assert max_ulp(result, exact, dtype) <= bound(backend, dtype)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_sparse_softmax(backend: Backend, dtype: str) -> None:
    if dtype not in backend.dtypes:
        pytest.skip(f"{backend.name} has no {dtype}")
    logits, _, labels = softmax_rows(dtype)
    out = logitloss.sparse_softmax_cross_entropy_with_logits(
        backend.asarray(labels), backend.asarray(logits)
    )
    result = check_result(backend, out, (6,), dtype)
    exact = [
        oracle.sparse_softmax(list(a), int(k))
        for a, k in zip(logits.astype(float), labels, strict=True)
    ]
    assert max_ulp(result, exact, dtype) <= bound(backend, dtype)


def test_softmax_labels_broadcast(backend: Backend) -> None:
    logits, soft, _ = softmax_rows("float32")
    out = logitloss.softmax_cross_entropy_with_logits(
        backend.asarray(soft[1]), backend.asarray(logits)
    )
    result = check_result(backend, out, (6,), "float32")
    exact = [oracle.softmax(list(a), list(soft[1].astype(float))) for a in logits.astype(float)]
    assert max_ulp(result, exact, "float32") <= bound(backend, "float32")


def test_higher_rank_and_middle_axis(backend: Backend) -> None:
    rng = np.random.default_rng(1)
    logits = (rng.standard_normal((2, 5, 3)) * 4).astype(np.float32)
    labels = rng.dirichlet(np.ones(5), size=(2, 3)).transpose(0, 2, 1).astype(np.float32)
    out = logitloss.softmax_cross_entropy_with_logits(
        backend.asarray(labels), backend.asarray(logits), axis=1
    )
    result = check_result(backend, out, (2, 3), "float32")
    exact = [
        oracle.softmax(list(logits[i, :, k].astype(float)), list(labels[i, :, k].astype(float)))
        for i in range(2)
        for k in range(3)
    ]
    assert max_ulp(result, exact, "float32") <= bound(backend, "float32")


@pytest.mark.parametrize(
    "call",
    [
        lambda b, x: logitloss.sigmoid_cross_entropy_with_logits(b.asarray(x), b.asarray(x)),
        lambda b, x: logitloss.weighted_cross_entropy_with_logits(b.asarray(x), b.asarray(x), 3.0),
        lambda b, x: logitloss.softmax_cross_entropy_with_logits(b.asarray(x), b.asarray(x)),
        lambda b, x: logitloss.sparse_softmax_cross_entropy_with_logits(
            b.asarray(np.zeros(x.shape[:-1], dtype=np.int64)), b.asarray(x)
        ),
    ],
    ids=["sigmoid", "weighted", "softmax", "sparse"],
)
def test_empty_batch(backend: Backend, call) -> None:
    if backend.name == "dask":
        pytest.skip("dask.from_array needs a non-empty chunk shape")
    x = np.zeros((0, 3), dtype=np.float32)
    result = backend.to_numpy(call(backend, x))
    assert result.size == 0
    assert result.dtype == np.float32


def test_inputs_never_modified(backend: Backend) -> None:
    logits, soft, labels = softmax_rows("float32")
    logits[0, 1] = -np.inf
    copies = [a.copy() for a in (logits, soft, labels)]
    arrays = [backend.asarray(a) for a in (logits, soft, labels)]
    logitloss.sigmoid_cross_entropy_with_logits(arrays[1], arrays[0])
    logitloss.weighted_cross_entropy_with_logits(arrays[1], arrays[0], 2.0)
    logitloss.softmax_cross_entropy_with_logits(arrays[1], arrays[0])
    logitloss.sparse_softmax_cross_entropy_with_logits(arrays[2], arrays[0])
    for array, original in zip(arrays, copies, strict=True):
        np.testing.assert_array_equal(backend.to_numpy(array), original)


def test_dask_stays_lazy_with_split_class_axis() -> None:
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(2)
    logits = rng.standard_normal((8, 10)) * 10
    labels = rng.dirichlet(np.ones(10), size=8)
    classes = rng.integers(0, 10, size=8)
    lx = da.from_array(logits, chunks=(3, 4))  # the class axis is split over 3 chunks
    out = logitloss.softmax_cross_entropy_with_logits(da.from_array(labels, chunks=(3, 4)), lx)
    sparse = logitloss.sparse_softmax_cross_entropy_with_logits(
        da.from_array(classes, chunks=3), lx
    )
    assert isinstance(out, da.Array) and isinstance(sparse, da.Array)
    assert out.chunks == ((3, 3, 2),)
    expected = [
        float(oracle.softmax(list(r), list(z))) for r, z in zip(logits, labels, strict=True)
    ]
    np.testing.assert_allclose(out.compute(), expected, rtol=4e-16)
    expected = [
        float(oracle.sparse_softmax(list(r), int(k))) for r, k in zip(logits, classes, strict=True)
    ]
    np.testing.assert_allclose(sparse.compute(), expected, rtol=4e-16)


def test_dask_out_of_range_sparse_label_is_nan() -> None:
    da = pytest.importorskip("dask.array")
    logits = da.from_array(np.zeros((3, 4)), chunks=2)
    labels = da.from_array(np.array([0, 4, -1]), chunks=2)
    out = logitloss.sparse_softmax_cross_entropy_with_logits(labels, logits).compute()
    assert out[0] == pytest.approx(math.log(4), rel=1e-15)
    assert np.isnan(out[1:]).all()
