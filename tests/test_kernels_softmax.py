"""The softmax kernels (``logitloss._kernels``: soft and integer labels, loss, logit gradient,
fused loss+gradient) against mpmath and against the reference path.

On the accuracy report's row grid (``benchmarks/accuracy.py``: every logit of the dtype's range
in rows of 2 to 6 classes, ties, infinities, NaN, huge spreads, subnormals) the loss is held to
the same bounds as the reference (1 ULP narrow, 4 ULP float64) and the gradient to the gradient
tests' bounds (1 ULP narrow but at deep cancellations, 8 scale-ULP float64), with the same NaNs
and infinities as the reference. Then layouts (transposed, sliced, reversed, class axis first,
broadcast labels), empty inputs, ``out=``, errors, threads, long rows and fused == separate.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from conftest import BOUND, np_dtype

pytest.importorskip("numba")
mp = pytest.importorskip("mpmath")

from logitloss._losses import reference  # noqa: E402
from logitloss._losses.logistic import kernel as logistic_kernels  # noqa: E402
from logitloss._losses.softmax import formula as softmax_formula  # noqa: E402
from logitloss._losses.softmax import kernel as softmax_kernels  # noqa: E402
from logitloss._tools import oracle  # noqa: E402

DTYPES = ["float16", "bfloat16", "float32", "float64"]
INF, NAN = math.inf, math.nan
SCALE_BOUND = 8.0  # float64 gradients: ULPs of the larger of the two terms that cancel


def _accuracy() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "accuracy.py"
    spec = importlib.util.spec_from_file_location("logitloss_accuracy_grid", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


accuracy = _accuracy()


def floats(a: Any) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def as_array(values: Any, dtype: str) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.asarray(values, dtype=np.float64).astype(np_dtype(dtype))


@functools.cache
def grid_cases(dtype: str) -> dict[int, tuple[np.ndarray, np.ndarray, list[tuple]]]:
    """The accuracy grid's rows with its label rows, grouped by row length: ``n -> (x, z,
    [(row, labels)])``."""
    rng = np.random.default_rng(0)
    by_size: dict[int, list[tuple[tuple, tuple]]] = {}
    for row in accuracy.row_grid(dtype):
        for z in accuracy.soft_labels(len(row), dtype, rng):
            by_size.setdefault(len(row), []).append((tuple(row), tuple(z)))
    return {
        n: (as_array([r for r, _ in items], dtype), as_array([z for _, z in items], dtype), items)
        for n, items in by_size.items()
    }


@functools.cache
def exact_loss(row: tuple, z: tuple) -> Any:
    return oracle.softmax(list(row), list(z))


@functools.cache
def exact_grad(row: tuple, z: tuple) -> tuple[list, list]:
    return oracle.softmax_grad(row, z), oracle.softmax_grad_scale(row, z)


def is_normal(value: Any, dtype: str) -> bool:
    return (
        mp.isnan(value)
        or mp.isinf(value)
        or value == 0
        or abs(value) >= 2.0 ** (oracle.FORMATS[dtype][1])
    )


def deep_cancellation(exact: Any, scale: Any, dtype: str) -> bool:
    """As ``test_gradients.deep_cancellation``: below ``2^(p - 49)`` of the scale, float64
    internals cannot promise 1 ULP (the reference misses there too)."""
    if dtype not in ("bfloat16", "float32") or scale == 0 or not mp.isfinite(scale):
        return False
    return bool(abs(exact) < scale * 2.0 ** (oracle.FORMATS[dtype][0] - 49))


# --- The loss on the grid ----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_loss_grid_against_mpmath_and_reference(dtype: str) -> None:
    worst = 0.0
    for x, z, items in grid_cases(dtype).values():
        out = softmax_kernels.softmax_loss(x, z)
        assert out.dtype == x.dtype and out.shape == x.shape[:1]
        ref = reference.softmax(x, z, axis=-1, xp=np)
        np.testing.assert_array_equal(np.isnan(floats(out)), np.isnan(floats(ref)))
        np.testing.assert_array_equal(np.isinf(floats(out)), np.isinf(floats(ref)))
        for got, (row, labels) in zip(floats(out).tolist(), items, strict=True):
            exact = exact_loss(row, labels)
            error = oracle.ulp_error(got, exact, dtype)
            if dtype == "float64" and not is_normal(exact, dtype):
                assert error <= 8, (row, labels, got)  # a few smallest subnormals
                continue
            assert error <= BOUND[dtype], (row, labels, got, error)
            worst = max(worst, error)
    assert worst > 0  # the comparison can fail: it measured something


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_loss_grid_against_mpmath_and_reference(dtype: str) -> None:
    for n, (x, _, _) in grid_cases(dtype).items():
        rows = np.unique(x.view(np.uint8).reshape(len(x), -1), axis=0, return_index=True)[1]
        xs = x[np.sort(rows)]
        for label in range(n):
            labels = np.full(len(xs), label)
            out = softmax_kernels.sparse_softmax_loss(xs, labels)
            ref = reference.sparse_softmax(xs, labels, xp=np)
            np.testing.assert_array_equal(np.isnan(floats(out)), np.isnan(floats(ref)))
            for got, row in zip(floats(out).tolist(), floats(xs).tolist(), strict=True):
                exact = oracle.sparse_softmax(row, label)
                bound = BOUND[dtype] if is_normal(exact, dtype) else 8
                assert oracle.ulp_error(got, exact, dtype) <= bound, (row, label, got)


# --- The gradient on the grid ------------------------------------------------------------------


def check_grad(got: np.ndarray, row: tuple, labels: tuple, dtype: str, where: str) -> None:
    exact, scale = exact_grad(row, labels)
    for j, value in enumerate(floats(got).tolist()):
        ulp = oracle.ulp_error(value, exact[j], dtype)
        assert not math.isinf(ulp), (where, row, labels, j, value, exact[j])
        s = oracle.scale_ulp_error(value, exact[j], scale[j], dtype)
        if dtype == "float64":
            if is_normal(scale[j], dtype):
                assert s <= SCALE_BOUND, (where, row, labels, j, value, s)
        elif deep_cancellation(exact[j], scale[j], dtype):
            assert s <= 1, (where, row, labels, j, value, s)
        else:
            assert ulp <= 1, (where, row, labels, j, value, ulp)


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_grid_against_mpmath_and_reference(dtype: str) -> None:
    for x, z, items in grid_cases(dtype).values():
        grad = softmax_kernels.softmax_grad_logits(x, z)
        assert grad.dtype == x.dtype and grad.shape == x.shape
        ref = reference.softmax_grad(x, z, np.ones(len(x), x.dtype), axis=-1, wrt="logits",
                                      xp=np)  # fmt: skip
        np.testing.assert_array_equal(np.isnan(floats(grad)), np.isnan(floats(ref)))
        for g, (row, labels) in zip(grad, items, strict=True):
            check_grad(g, row, labels, dtype, "soft")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_grad_grid_against_mpmath(dtype: str) -> None:
    for n, (x, _, items) in grid_cases(dtype).items():
        rows = sorted({row: i for i, (row, _) in enumerate(items)}.values())
        xs = x[rows]
        for label in range(n):
            grad = softmax_kernels.sparse_softmax_grad_logits(xs, np.full(len(xs), label))
            one_hot = tuple(1.0 if k == label else 0.0 for k in range(n))
            for g, i in zip(grad, rows, strict=True):
                check_grad(g, items[i][0], one_hot, dtype, "sparse")


# --- Limits, NaN -------------------------------------------------------------------------------

LIMITS = [
    ([INF, 0.0, 1.0], [1.0, 0.0, 0.0], 0.0),
    ([INF, 0.0, 1.0], [0.5, 0.5, 0.0], INF),
    ([-INF, 0.0, 1.0], [0.1, 0.2, 0.7], INF),
    ([-INF, -INF, -INF], [1.0, 0.0, 0.0], NAN),
    ([INF, INF, 0.0], [1.0, 0.0, 0.0], NAN),
    ([NAN, 0.0, 1.0], [0.0, 0.0, 1.0], NAN),
    ([0.0, 1.0, 2.0], [0.0, NAN, 1.0], NAN),
    ([20.0, 0.0], [1.0, 0.0], float(mp.log1p(mp.exp(-20)))),  # not 0 (TF, PyTorch, optax)
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("logits", "labels", "limit"), LIMITS)
def test_limits(dtype: str, logits: list, labels: list, limit: float) -> None:
    x, z = as_array([logits], dtype), as_array([labels], dtype)
    got = float(floats(softmax_kernels.softmax_loss(x, z))[0])
    fused = float(floats(softmax_kernels.softmax_loss_and_grad(x, z)[0])[0])
    expected = float(floats(as_array([limit], dtype))[0])
    for value in (got, fused):
        if math.isnan(limit):
            assert math.isnan(value)
        elif math.isinf(limit) or limit == 0:
            assert value == expected
        else:
            assert oracle.ulp_error(value, mp.mpf(limit), dtype) <= 1


def test_sparse_limits_and_out_of_range_labels() -> None:
    x = np.array([[INF, 0.0, -INF]] * 3 + [[1.0, 2.0, 3.0]] * 3)
    labels = np.array([0, 1, 2, -1, 3, 1])
    loss = softmax_kernels.sparse_softmax_loss(x, labels)
    assert loss[:3].tolist() == [0.0, INF, INF]
    assert np.isnan(loss[3:5]).all() and np.isfinite(loss[5])
    ref = reference.sparse_softmax(x, labels, xp=np)
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(ref))
    grad = softmax_kernels.sparse_softmax_grad_logits(x, labels)
    assert np.isnan(grad[3:5]).all() and np.isfinite(grad[[0, 1, 2, 5]]).all()
    assert grad[0].tolist() == [0.0, 0.0, 0.0] and grad[1].tolist() == [1.0, -1.0, 0.0]
    for dtype in (np.int8, np.uint8, np.int32, np.uint64):
        np.testing.assert_array_equal(
            softmax_kernels.sparse_softmax_loss(x[3:], np.array([0, 2, 1], dtype)),
            softmax_kernels.sparse_softmax_loss(x[3:], np.array([0, 2, 1])),
        )
    huge = np.array([2**63 + 1, 1, 1], np.uint64)  # beyond int64: out of range, not wrapped
    assert np.isnan(softmax_kernels.sparse_softmax_loss(x[3:], huge)[0])


# --- Long rows (many classes): the float64 bound holds there too -------------------------------


def exact_long_loss(x: np.ndarray, z: np.ndarray) -> Any:
    """``sum z_j (logsumexp(x) - x_j)`` at 40 digits, O(n) (the oracle's O(n^2) form is too
    slow for thousands of classes; here no term is near cancellation)."""
    with mp.workdps(40):
        xs = [mp.mpf(float(v)) for v in x]
        top = max(xs)
        lse = top + mp.log(mp.fsum(mp.exp(v - top) for v in xs))
        return mp.fsum(mp.mpf(float(w)) * (lse - v) for w, v in zip(z, xs, strict=True) if w)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_long_rows_against_mpmath(dtype: str) -> None:
    rng = np.random.default_rng(3)
    n = 5000
    x = (rng.standard_normal((4, n)) * [[1], [10], [30], [0.01]]).astype(dtype)
    z = rng.random((4, n)).astype(dtype)
    z[1] = 0
    z[1, 17] = 1  # one-hot: the loss is logsumexp - x_17 alone
    loss = softmax_kernels.softmax_loss(x, z)
    fused, _ = softmax_kernels.softmax_loss_and_grad(x, z)
    sparse = softmax_kernels.sparse_softmax_loss(x, np.array([5, 17, 2, 4999]))
    for i in range(4):
        exact = exact_long_loss(x[i], z[i])
        assert oracle.ulp_error(float(loss[i]), exact, dtype) <= BOUND[dtype]
        assert oracle.ulp_error(float(fused[i]), exact, dtype) <= BOUND[dtype]
    exact = exact_long_loss(x[1], z[1])
    assert oracle.ulp_error(float(sparse[1]), exact, dtype) <= BOUND[dtype]


# --- Layouts -----------------------------------------------------------------------------------


def close(a: np.ndarray, b: np.ndarray) -> None:
    """Within the bound of each other (both are within it of the exact value)."""
    np.testing.assert_array_max_ulp(a, b, maxulp=1 if a.dtype != np.float64 else 4)


def close_grad(a: np.ndarray, b: np.ndarray) -> None:
    """Gradients: within a few float64 rounding errors of the scale (``|softmax S| + |z|``)."""
    np.testing.assert_allclose(a, b, rtol=4 * np.finfo(a.dtype).eps, atol=1e-15)


def reference_pair(x: np.ndarray, z: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    ones = np.ones(np.delete(np.array(x.shape), axis % x.ndim).tolist(), x.dtype)
    return (
        reference.softmax(x, z, axis=axis, xp=np),
        reference.softmax_grad(x, z, ones, axis=axis, wrt="logits", xp=np),
    )


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((13, 17, 9)) * 6).astype(np.float32)
    z = rng.random((13, 17, 9)).astype(np.float32)
    return x, z


def test_layouts_and_axes(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    cases = [
        (x, z, -1),
        (x, z, 0),  # the classes strided: copied
        (x, z, 1),
        (x.T, z.T, 0),  # transposed: the classes contiguous again
        (x.T, z.T, -1),
        (x[::2, 3:, ::-1], z[::2, 3:, ::-1], -1),  # reversed classes
        (x[::-1], z[::-1], -1),  # reversed rows: a negative row stride
        (x[:, ::3, 1:], z[:, ::3, 1:], -1),  # gaps between rows
        (np.asfortranarray(x[5]), z[5], 1),  # mixed layouts
        (x, np.broadcast_to(z[0, 0], x.shape), -1),  # labels broadcast: zero row strides
        (x[:, 0], z[:, 0], 0),
    ]
    for a, b, axis in cases:
        loss, grad = reference_pair(a, b, axis)
        close(softmax_kernels.softmax_loss(a, b, axis=axis), loss)
        close_grad(softmax_kernels.softmax_grad_logits(a, b, axis=axis), grad)
        fused_loss, fused_grad = softmax_kernels.softmax_loss_and_grad(a, b, axis=axis)
        close(fused_loss, loss)
        close_grad(fused_grad, grad)
    labels = np.random.default_rng(1).integers(0, 9, (13, 17))
    for a, lab in [(x[::-1], labels[::-1]), (x.transpose(1, 0, 2), labels.T), (x[:, 2:5], labels[:, 2:5])]:  # fmt: skip  # noqa: E501
        close(softmax_kernels.sparse_softmax_loss(a, lab), reference.sparse_softmax(a, lab, xp=np))
        ones = np.ones(lab.shape, a.dtype)
        close_grad(softmax_kernels.sparse_softmax_grad_logits(a, lab),
                   reference.sparse_softmax_grad(a, lab, ones, xp=np))  # fmt: skip


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float64"])
def test_other_dtypes_match_the_reference(dtype: str) -> None:
    rng = np.random.default_rng(8)
    x = as_array(rng.standard_normal((40, 33)) * 5, dtype)
    z = as_array(rng.random((40, 33)), dtype)
    labels = rng.integers(0, 33, 40)
    loss, grad = softmax_kernels.softmax_loss_and_grad(x, z)
    assert loss.dtype == x.dtype and grad.dtype == x.dtype
    ref_loss, ref_grad = reference_pair(x, z, -1)
    np.testing.assert_array_max_ulp(floats(loss), floats(ref_loss), maxulp=1e9)  # finite, same
    tolerance = float(np.finfo(np.float16).eps if dtype != "float64" else 1e-14)
    np.testing.assert_allclose(floats(loss), floats(ref_loss), rtol=tolerance)
    np.testing.assert_allclose(floats(grad), floats(ref_grad), rtol=tolerance, atol=tolerance / 64)
    sparse = softmax_kernels.sparse_softmax_loss(x, labels)
    np.testing.assert_allclose(floats(sparse), floats(reference.sparse_softmax(x, labels, xp=np)),
                               rtol=tolerance)  # fmt: skip


def test_empty_inputs() -> None:
    x = np.zeros((0, 5), np.float32)
    assert softmax_kernels.softmax_loss(x, x).shape == (0,)
    assert softmax_kernels.softmax_grad_logits(x, x).shape == (0, 5)
    assert softmax_kernels.sparse_softmax_loss(x, np.zeros(0, int)).shape == (0,)
    loss, grad = softmax_kernels.sparse_softmax_loss_and_grad(x, np.zeros(0, int))
    assert loss.shape == (0,) and grad.shape == (0, 5)
    assert softmax_kernels.softmax_loss(np.zeros((3, 0, 4)), np.zeros((3, 0, 4)), axis=2).shape == (
        3,
        0,
    )
    # Zero classes: the reference has no maximum to take (ValueError), nor do the kernels.
    empty = np.zeros((3, 0), np.float32)
    with pytest.raises(ValueError):
        reference.softmax(empty, empty, axis=-1, xp=np)
    with pytest.raises(ValueError, match=r"softmax_loss: logits have zero classes"):
        softmax_kernels.softmax_loss(empty, empty)
    with pytest.raises(ValueError, match=r"sparse_softmax_grad_logits: logits have zero classes"):
        softmax_kernels.sparse_softmax_grad_logits(empty, np.zeros(3, int))
    one = np.array([2.5], np.float32)  # one class: loss 0 for z = 1, gradient 0
    assert softmax_kernels.softmax_loss(one, np.ones(1, np.float32)).tolist() == 0.0
    assert softmax_kernels.softmax_grad_logits(one, np.ones(1, np.float32)).tolist() == [0.0]


def test_large_input_spot_checked() -> None:
    """The parallel kernels on more rows than threads and tiles; spot-checked rows."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal((3000, 1500)) * 8).astype(np.float32)
    z = rng.random((3000, 1500)).astype(np.float32)
    labels = rng.integers(0, 1500, 3000)
    loss, grad = softmax_kernels.softmax_loss_and_grad(x, z)
    sparse = softmax_kernels.sparse_softmax_loss(x, labels)
    picks = np.concatenate([rng.integers(0, 3000, 40), [0, 2999]])
    ref_loss, ref_grad = reference_pair(x[picks], z[picks], -1)
    close(loss[picks], ref_loss)
    close(softmax_kernels.softmax_loss(x, z)[picks], ref_loss)
    close_grad(grad[picks], ref_grad)
    close(sparse[picks], reference.sparse_softmax(x[picks], labels[picks], xp=np))
    # Serial (one row) and parallel (all rows) give the same numbers: the same row code.
    np.testing.assert_array_equal(softmax_kernels.softmax_loss(x[picks[:1]], z[picks[:1]]),
                                  loss[picks[:1]])  # fmt: skip


# --- upstream, out=, errors --------------------------------------------------------------------


def test_upstream(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    labels = np.random.default_rng(2).integers(0, 9, (13, 17))
    rng = np.random.default_rng(3)
    for up in (rng.normal(size=(13, 17)).astype(np.float32), np.float32(2.5),
               rng.normal(size=(13, 1)).astype(np.float32), rng.normal(size=17)):  # fmt: skip
        full = np.broadcast_to(np.asarray(up, np.float32), (13, 17))
        ref = reference.softmax_grad(x, z, full, axis=-1, wrt="logits", xp=np)
        close_grad(softmax_kernels.softmax_grad_logits(x, z, upstream=up), ref)
        ref = reference.sparse_softmax_grad(x, labels, full, xp=np)
        close_grad(softmax_kernels.sparse_softmax_grad_logits(x, labels, upstream=up), ref)
    # per unit upstream, times upstream later: what the fused kernels are for
    up = rng.normal(size=(13, 17)).astype(np.float32)
    _, per_unit = softmax_kernels.softmax_loss_and_grad(x, z)
    close_grad(per_unit * up[..., None], softmax_kernels.softmax_grad_logits(x, z, upstream=up))


def test_out_argument(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    loss, grad = softmax_kernels.softmax_loss(x, z), softmax_kernels.softmax_grad_logits(x, z)
    out = np.empty((13, 17), np.float32)
    assert softmax_kernels.softmax_loss(x, z, out=out) is out
    np.testing.assert_array_equal(out, loss)
    strided = np.empty((26, 17), np.float32)[::2]
    assert softmax_kernels.softmax_loss(x, z, out=strided) is strided
    np.testing.assert_array_equal(strided, loss)
    g = np.empty((13, 17, 9), np.float32, order="F")
    assert softmax_kernels.softmax_grad_logits(x, z, out=g) is g
    np.testing.assert_array_equal(g, grad)
    in_place = x.copy()  # the gradient written over the logits
    assert softmax_kernels.softmax_grad_logits(in_place, z, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, grad)
    shifted = np.concatenate([x.ravel(), [0.5]]).astype(np.float32)  # out overlaps x, shifted
    expected = softmax_kernels.softmax_grad_logits(shifted[1:].reshape(13, 17, 9), z)
    softmax_kernels.softmax_grad_logits(shifted[1:].reshape(13, 17, 9), z,
                                 out=shifted[:-1].reshape(13, 17, 9))  # fmt: skip
    np.testing.assert_array_equal(shifted[:-1].reshape(13, 17, 9), expected)
    labels = np.zeros((13, 17), int)
    sparse_out = np.empty((13, 17), np.float32)
    softmax_kernels.sparse_softmax_loss(x, labels, out=sparse_out)
    np.testing.assert_array_equal(sparse_out, softmax_kernels.sparse_softmax_loss(x, labels))
    with pytest.raises(TypeError, match="softmax_loss: out must have the logits' dtype or "
                                        "float64 float32, got float16"):  # fmt: skip
        softmax_kernels.softmax_loss(x, z, out=np.empty((13, 17), np.float16))
    # A float64 out: the loss before its rounding to float32 (for reductions). The narrow
    # kernel's exp is float32-sized: within 2^-26 of the reference's float64 value, relative.
    wide = np.empty((13, 17))
    assert softmax_kernels.softmax_loss(x, z, out=wide) is wide
    np.testing.assert_array_equal(wide.astype(np.float32), loss)
    import array_api_compat.numpy as xp

    with np.errstate(invalid="ignore", over="ignore"):
        wx, wz = x.astype(np.float64), z.astype(np.float64)
        reference = softmax_formula.softmax_loss(wx, wz, axis=-1, xp=xp)
    finite = np.isfinite(reference)
    np.testing.assert_allclose(wide[finite], reference[finite], rtol=2.0**-26)
    np.testing.assert_array_equal(wide[~finite], reference[~finite])
    with pytest.raises(ValueError, match=r"softmax_loss: out must have shape \(13, 17\), got "
                                         r"\(13, 17, 9\)"):  # fmt: skip
        softmax_kernels.softmax_loss(x, z, out=np.empty_like(x))
    with pytest.raises(ValueError, match=r"softmax_grad_logits: out must have shape"):
        softmax_kernels.softmax_grad_logits(x, z, out=np.empty((13, 17), np.float32))
    with pytest.raises(TypeError, match="sparse_softmax_grad_logits: out must have the logits'"):
        softmax_kernels.sparse_softmax_grad_logits(x, labels, out=np.empty(x.shape, np.float16))
    readonly = np.empty((13, 17), np.float32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="sparse_softmax_loss: out is read-only"):
        softmax_kernels.sparse_softmax_loss(x, labels, out=readonly)
    with pytest.raises(TypeError, match="softmax_loss: out must be a NumPy array, got list"):
        softmax_kernels.softmax_loss(x, z, out=[0.0])


def test_argument_errors(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    with pytest.raises(TypeError, match="softmax_loss: logits must be float16, bfloat16, "
                                        "float32 or float64, got int32"):  # fmt: skip
        softmax_kernels.softmax_loss(x.astype(np.int32), z)
    with pytest.raises(TypeError, match="softmax_loss_and_grad: logits must be a NumPy array"):
        softmax_kernels.softmax_loss_and_grad([1.0], [1.0])
    with pytest.raises(ValueError, match=r"softmax_loss: labels of shape \(5, 9\) must "
                                         r"broadcast to the logits' shape"):  # fmt: skip
        softmax_kernels.softmax_loss(x, z[0, :5])
    # Labels that broadcast are read as broadcast (one row for every row: a zero stride).
    np.testing.assert_array_equal(
        softmax_kernels.softmax_loss(x, z[0]),
        softmax_kernels.softmax_loss(x, np.broadcast_to(z[0], x.shape).copy()),
    )
    with pytest.raises(ValueError, match=r"softmax_grad_logits: axis 3 is out of range"):
        softmax_kernels.softmax_grad_logits(x, z, axis=3)
    with pytest.raises(ValueError, match=r"softmax_grad_logits: upstream of shape \(5,\) must "
                                         r"broadcast to the loss's shape \(13, 17\)"):  # fmt: skip
        softmax_kernels.softmax_grad_logits(x, z, upstream=np.ones(5))
    with pytest.raises(TypeError, match="sparse_softmax_loss: labels must have an integer "
                                        "dtype, got float32"):  # fmt: skip
        softmax_kernels.sparse_softmax_loss(x, z[..., 0])
    with pytest.raises(ValueError, match=r"sparse_softmax_loss_and_grad: labels must have shape "
                                         r"\(13, 17\), got \(13,\)"):  # fmt: skip
        softmax_kernels.sparse_softmax_loss_and_grad(x, np.zeros(13, int))
    with pytest.raises(ValueError, match="softmax_loss: logits must have a class axis"):
        softmax_kernels.softmax_loss(np.ones((), np.float32), np.ones((), np.float32))


def test_inputs_not_modified(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    labels = np.arange(13 * 17).reshape(13, 17) % 9
    up = np.ones((13, 17), np.float32)
    copies = [a.copy() for a in (x, z, labels, up)]
    softmax_kernels.softmax_loss_and_grad(x, z, axis=0)
    softmax_kernels.softmax_grad_logits(x.T, z.T, axis=0, upstream=up.T)
    softmax_kernels.sparse_softmax_loss_and_grad(x, labels)
    softmax_kernels.sparse_softmax_grad_logits(x, labels, upstream=up)
    for a, b in zip((x, z, labels, up), copies, strict=True):
        np.testing.assert_array_equal(a, b)


# --- Fused == separate, threads ----------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_fused_equals_separate(dtype: str) -> None:
    rng = np.random.default_rng(4)
    x = as_array(rng.standard_normal((70, 300)) * 6, dtype)
    z = as_array(rng.random((70, 300)), dtype)
    labels = rng.integers(0, 300, 70)
    loss, grad = softmax_kernels.softmax_loss_and_grad(x, z)
    np.testing.assert_array_equal(grad, softmax_kernels.softmax_grad_logits(x, z))
    # The fused loss uses the float64-accurate exp the gradient needs: equal, or 1 ULP apart
    # where the loss-only kernel's float32-sized exp rounds the other way.
    np.testing.assert_array_max_ulp(floats(loss), floats(softmax_kernels.softmax_loss(x, z)),
                                    maxulp=1 if dtype != "float16" else 2**-13 * 2**29)  # fmt: skip
    loss, grad = softmax_kernels.sparse_softmax_loss_and_grad(x, labels)
    np.testing.assert_array_equal(grad, softmax_kernels.sparse_softmax_grad_logits(x, labels))
    close(floats(loss), floats(softmax_kernels.sparse_softmax_loss(x, labels)))
    q = as_array(rng.random(300) * 3, dtype)
    for weight in (None, 2.0, q):
        loss, grad = logistic_kernels.logistic_loss_and_grad(x, z, weight)
        np.testing.assert_array_equal(loss, logistic_kernels.logistic_loss(x, z, weight))
        np.testing.assert_array_equal(grad, logistic_kernels.logistic_grad_logits(x, z, weight))


def test_threads_get_the_same_results() -> None:
    rng = np.random.default_rng(12)
    jobs = []
    for i in range(6):
        rows = 300 if i % 2 else 4  # parallel and serial kernels at once
        dtype = np.float32 if i % 3 else np.float64
        x = (rng.standard_normal((rows, 700)) * 6).astype(dtype)
        z = rng.random((rows, 700)).astype(dtype)
        labels = rng.integers(0, 700, rows)
        expected = (
            softmax_kernels.softmax_loss_and_grad(x, z),
            softmax_kernels.sparse_softmax_loss(x, labels),
        )
        jobs.append((x, z, labels, expected))
    failures: list[str] = []

    def work(k: int) -> None:
        x, z, labels, ((loss, grad), sparse) = jobs[k]
        for _ in range(10):
            got_loss, got_grad = softmax_kernels.softmax_loss_and_grad(x, z)
            if not (np.array_equal(got_loss, loss) and np.array_equal(got_grad, grad)):
                failures.append(f"soft {k}")
            if not np.array_equal(softmax_kernels.sparse_softmax_loss(x, labels), sparse):
                failures.append(f"sparse {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures
