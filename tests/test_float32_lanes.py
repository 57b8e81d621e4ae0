"""The softmax kernels' float32-lane row maximum (``softmax.kernel.row_max``) against NumPy and
the mpmath oracle.

float32 rows are reduced in float32 lanes, other rows in float64: the two must agree with each
other and with ``np.max`` (NaN anywhere gives NaN, ``+0.0`` above ``-0.0``) at every row length
and position of the maximum (vector body, interleaved streams and the scalar remainder), and the
float32 losses built on that maximum must stay within 1 ULP of the exact value on rows whose
maximum is hard to find: a lone maximum in the last lane, ties, infinities, NaN, gaps that make
the exponentials subnormal, 20 000 classes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("numba")
pytest.importorskip("mpmath")

from numba import njit

from logitloss._losses.softmax import kernel as softmax_kernels
from logitloss._tools import oracle

INF, NAN = math.inf, math.nan


@njit(error_model="numpy")
def _row_maxima(x):
    out = np.empty(x.shape[0])
    for r in range(x.shape[0]):
        out[r] = softmax_kernels.row_max(x[r])
    return out


def _expected_max(row: np.ndarray) -> float:
    wide = row.astype(np.float64)
    if wide.size == 0:
        return -INF
    if np.isnan(wide).any():
        return NAN
    top = wide.max()
    # llvm.maximum orders -0.0 below +0.0, whatever their positions.
    return 0.0 if top == 0 and (np.signbit(wide[wide == 0]) == 0).any() else top


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_every_length_and_position(dtype: type) -> None:
    rng = np.random.default_rng(3)
    for n in range(0, 70):
        base = (rng.standard_normal(n) * 4 - 50).astype(dtype)
        rows = [base]
        for pos in range(n):
            for special in (7.5, INF, NAN, -INF):
                row = base.copy()
                row[pos] = special
                rows.append(row)
        # Signed zeros: the +0.0 wins wherever it is.
        if n >= 2:
            row = np.full(n, -1.0, dtype)
            row[0], row[-1] = -0.0, 0.0
            rows += [row, row[::-1].copy()]
        x = np.array(rows, dtype).reshape(len(rows), n)
        got = _row_maxima(x)
        for row, m in zip(x, got, strict=True):
            want = _expected_max(row)
            if math.isnan(want):
                assert math.isnan(m), (n, row)
            else:
                assert m == want and np.signbit(m) == np.signbit(want), (n, row, m, want)


def _hard_rows(rng: np.random.Generator) -> list[np.ndarray]:
    rows = []
    for n in (1, 2, 3, 15, 16, 17, 31, 33, 63, 64, 65, 257, 1000):
        body = (rng.standard_normal(n) * 3).astype(np.float32)
        for pos in {0, n // 2, n - 1}:
            lone = body.copy()
            lone[pos] = body.max() + np.float32(0.25)  # a lone maximum, anywhere
            rows.append(lone)
        ties = body.copy()
        ties[[0, n - 1]] = body.max() + 1  # ties at both ends
        rows.append(ties)
        far = np.full(n, -120.0, np.float32)  # e^-120: subnormal in float32
        far[n - 1] = 0.0
        rows.append(far)
        spread = (rng.standard_normal(n) * 1e4).astype(np.float32)
        rows.append(spread)
        masked = body.copy()
        masked[::2] = -INF
        masked[n - 1] = body.max() + 1
        rows.append(masked)
    rows.append(np.array([INF, 1.0, -INF, 3.0], np.float32))
    rows.append(np.array([1.0, NAN, 2.0, 3.0] * 5, np.float32))
    rows.append(np.array([-INF] * 20, np.float32))
    wide = (rng.standard_normal(20000) * 5).astype(np.float32)
    wide[19999] = 40.0  # the maximum in the last element of a long row
    rows.append(wide)
    return rows


def test_float32_losses_within_one_ulp_on_hard_rows() -> None:
    rng = np.random.default_rng(11)
    for row in _hard_rows(rng):
        n = row.size
        x = row[None, :]
        labels = sorted({0, n - 1, int(np.nanargmax(np.where(np.isnan(row), -INF, row)))})
        for label in labels:
            got = float(softmax_kernels.sparse_softmax_loss(x, np.array([label]))[0])
            exact = oracle.sparse_softmax([float(v) for v in row], label)
            err = oracle.ulp_error(got, exact, "float32")
            assert err <= 1.0, (n, label, got, exact, err)
        if n <= 300:  # the soft-label oracle costs n^2 exponentials
            z = rng.random(n).astype(np.float32)
            got = float(softmax_kernels.softmax_loss(x, z[None, :])[0])
            exact = oracle.softmax([float(v) for v in row], [float(v) for v in z])
            err = oracle.ulp_error(got, exact, "float32")
            assert err <= 1.0, (n, got, exact, err)


def test_float32_rows_match_their_float64_widening() -> None:
    """The float32 kernels (float32-lane maximum) and the float64 kernels on the same values
    (float64 maximum) agree to float32 rounding: a wrong maximum shifts every exponential."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((300, 517)) * 6).astype(np.float32)
    where = rng.integers(0, 517, 300)
    where[::3] = 516  # lone maxima anywhere, a third in the last element
    x[np.arange(300), where] += 30
    labels = rng.integers(0, 517, 300)
    narrow = softmax_kernels.sparse_softmax_loss(x, labels).astype(np.float64)
    wide = softmax_kernels.sparse_softmax_loss(x.astype(np.float64), labels)
    np.testing.assert_allclose(narrow, wide, rtol=2.0**-23, atol=0)
