"""Exactness against independent oracles: the limits at infinite logits, NaN propagation,
hypothesis-drawn inputs against mpmath, and scipy.special where it is exact."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import BOUND, LOGISTIC_LIMITS, np_dtype
from hypothesis import given, settings
from hypothesis import strategies as st

from logitloss import (
    sigmoid_cross_entropy_with_logits,
    softmax_cross_entropy_with_logits,
    sparse_softmax_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits,
)
from logitloss._tools import oracle

INF = math.inf
DTYPES = ["float16", "bfloat16", "float32", "float64"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x", "z", "q", "limit"), LOGISTIC_LIMITS)
def test_logistic_limits(dtype: str, x: float, z: float, q: float, limit: float) -> None:
    dt = np_dtype(dtype)
    args = np.array([z], dtype=dt), np.array([x], dtype=dt)
    out = weighted_cross_entropy_with_logits(*args, q)
    assert out.astype(float)[0] == limit
    if q == 1.0:
        assert sigmoid_cross_entropy_with_logits(*args).astype(float)[0] == limit


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("logits", "labels", "limit"),
    [
        ([INF, 0.0, 1.0], [1.0, 0.0, 0.0], 0.0),  # one +inf logit: one-hot softmax
        ([INF, 0.0, 1.0], [0.5, 0.5, 0.0], INF),
        ([-INF, 0.0, 1.0], [0.0, 0.3, 0.7], None),  # zero label against -inf contributes 0
        ([-INF, 0.0, 1.0], [0.1, 0.2, 0.7], INF),
        ([-INF, -INF, -INF], [1.0, 0.0, 0.0], math.nan),  # no limit
        ([INF, INF, 0.0], [1.0, 0.0, 0.0], math.nan),  # no limit
        ([math.nan, 0.0, 1.0], [0.0, 0.0, 1.0], math.nan),
        ([0.0, 1.0, 2.0], [0.0, math.nan, 1.0], math.nan),
    ],
)
def test_softmax_limits(dtype: str, logits: list, labels: list, limit: float | None) -> None:
    dt = np_dtype(dtype)
    out = float(softmax_cross_entropy_with_logits(np.array(labels, dt), np.array(logits, dt)))
    if limit is None:  # finite: the loss of the other two classes alone
        limit = float(oracle.softmax([0.0, 1.0], [0.3, 0.7]))
        assert oracle.ulp_error(out, oracle.softmax(logits, labels), dtype) <= BOUND[dtype]
    elif math.isnan(limit):
        assert math.isnan(out)
    else:
        assert out == limit


def test_sparse_one_hot_limit() -> None:
    logits = np.array([[INF, 0.0, -INF], [INF, 0.0, -INF], [INF, 0.0, -INF]])
    out = sparse_softmax_cross_entropy_with_logits(np.array([0, 1, 2]), logits)
    assert out.tolist() == [0.0, INF, INF]


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_nan_out(dtype: str) -> None:
    dt = np_dtype(dtype)
    x = np.array([math.nan, 0.0, math.nan], dt)
    z = np.array([0.0, math.nan, 1.0], dt)
    assert np.isnan(sigmoid_cross_entropy_with_logits(z, x).astype(float)).all()
    assert np.isnan(weighted_cross_entropy_with_logits(z, x, 2.0).astype(float)).all()
    assert np.isnan(
        weighted_cross_entropy_with_logits(z[::-1] * 0, x[::-1], math.nan).astype(float)
    ).all()


def finite_floats(dtype: str, limit: float = 1e38) -> st.SearchStrategy[float]:
    width = {"float16": 16, "float32": 32, "float64": 64}[dtype]
    limit = float(np.array(min(limit, float(np.finfo(dtype).max)), dtype))
    return st.floats(-limit, limit, width=width, allow_nan=False)


def unit_floats(dtype: str) -> st.SearchStrategy[float]:
    width = {"float16": 16, "float32": 32, "float64": 64}[dtype]
    near_one = st.integers(1, 30).map(lambda k: 1.0 - 2.0**-k)
    return st.one_of(st.floats(0, 1, width=width), near_one)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_weighted_within_bound(dtype: str, data: st.DataObject) -> None:
    dt = np.dtype(dtype)
    x = np.array(data.draw(st.lists(finite_floats(dtype), min_size=1, max_size=8)), dt)
    z = np.array(data.draw(st.lists(unit_floats(dtype), min_size=len(x), max_size=len(x))), dt)
    q = dt.type(data.draw(st.floats(0, 1e3, width=32)))
    out = weighted_cross_entropy_with_logits(z, x, q)
    for a, b, c in zip(x.astype(float), z.astype(float), out.astype(float), strict=True):
        exact = oracle.logistic(a, b, float(q))
        if dtype == "float64" and 0 < abs(exact) < np.finfo(np.float64).tiny:
            continue  # the float64 bound is for normal-range results
        assert oracle.ulp_error(c, exact, dtype) <= BOUND[dtype], (a, b, float(q), c)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_softmax_within_bound(dtype: str, data: st.DataObject) -> None:
    dt = np.dtype(dtype)
    n = data.draw(st.integers(1, 6))
    x = np.array(data.draw(st.lists(finite_floats(dtype, 1e4), min_size=n, max_size=n)), dt)
    weights = data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    total = sum(weights)
    z = np.array([w / total if total else 1.0 / n for w in weights], dt)
    out = float(softmax_cross_entropy_with_logits(z, x))
    exact = oracle.softmax(list(x.astype(float)), list(z.astype(float)))
    assert oracle.ulp_error(out, exact, dtype) <= BOUND[dtype]
    label = data.draw(st.integers(0, n - 1))
    out = float(sparse_softmax_cross_entropy_with_logits(np.array(label), x))
    exact = oracle.sparse_softmax(list(x.astype(float)), label)
    assert oracle.ulp_error(out, exact, dtype) <= BOUND[dtype]


@pytest.mark.parametrize(
    ("x", "z", "q"),
    [
        (-708.3964185322641, 5e-324, 1e4),  # z |x| is subnormal: q must scale it first
        (710.282712893384, 1.0, 1e4),  # e^-x is subnormal: q must scale it first
        (745.0, 1.0, 30.0),
    ],
)
def test_float64_weighted_near_underflow(x: float, z: float, q: float) -> None:
    out = weighted_cross_entropy_with_logits(np.array([z]), np.array([x]), q)[0]
    assert oracle.ulp_error(float(out), oracle.logistic(x, z, q), "float64") <= 1


@pytest.mark.parametrize("labels", [[0.5, 0.5], [1 - 2**-52, 2**-52], [0.25, 0.75]])
def test_float64_softmax_wider_than_the_range(labels: list) -> None:
    """x_j - max overflows; the loss does not (no inf where the exact value is finite)."""
    big = float(np.finfo(np.float64).max)
    logits = [big, -big]
    out = float(softmax_cross_entropy_with_logits(np.array(labels), np.array(logits)))
    exact = oracle.softmax(logits, labels)
    assert oracle.ulp_error(out, exact, "float64") <= 1


def test_against_scipy_special() -> None:
    """For hard labels the losses are -log_expit and logsumexp - x_j (scipy.special)."""
    special = pytest.importorskip("scipy.special")
    x = np.linspace(-700, 700, 2801)
    np.testing.assert_allclose(
        sigmoid_cross_entropy_with_logits(np.ones_like(x), x), -special.log_expit(x), rtol=4e-16
    )
    np.testing.assert_allclose(
        weighted_cross_entropy_with_logits(np.zeros_like(x), x, 7.0),
        -special.log_expit(-x),
        rtol=4e-16,
    )
    rows = np.random.default_rng(3).standard_normal((200, 7)) * 30
    # scipy's logsumexp(x) - x_j cancels where x_j is the maximum: compare on the minimum.
    labels = np.argmin(rows, axis=1)
    expected = special.logsumexp(rows, axis=1) - rows[np.arange(200), labels]
    out = sparse_softmax_cross_entropy_with_logits(labels, rows)
    np.testing.assert_allclose(out, expected, rtol=1e-13)
