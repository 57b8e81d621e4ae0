"""Softmax losses over many classes (10^3 to 10^5) against mpmath, on both paths.

A sum over the classes gathers one rounding error per class when it is a plain running sum:
float64 losses of smoothed one-hot labels were 23 ULP off at 1000 classes and 951 at 20 000 on
the kernels. Both paths now compensate their class sums (``_formulas.class_sum``, the kernels'
blocked two-sum), so the bounds hold whatever the class count: 1 ULP for float32, 4 for float64.
The label kinds are those of training: smoothed one-hot (thousands of equal small labels), a
uniform spread, random soft labels, and class indices.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
from conftest import BOUND

import logitloss
from logitloss._tools import oracle

mp = pytest.importorskip("mpmath")

CLASS_COUNTS = [1000, 10_000, 100_000]


def exact_loss(x: np.ndarray, z: np.ndarray) -> Any:
    """``sum z_j (logsumexp(x) - x_j)`` at 40 digits (no term is near cancellation here)."""
    with mp.workdps(40):
        xs = [mp.mpf(float(v)) for v in x]
        top = max(xs)
        lse = top + mp.log(mp.fsum(mp.exp(v - top) for v in xs))
        return mp.fsum(mp.mpf(float(w)) * (lse - v) for w, v in zip(z, xs, strict=True) if w)


@functools.cache
def _exact_losses(n: int, dtype: str) -> tuple[list[Any], list[Any]]:
    """The exact soft and sparse losses of :func:`_rows`' three rows (shared by both paths)."""
    x, z, index = _rows(n, dtype)
    soft = [exact_loss(x[row], z[row]) for row in range(3)]
    sparse = []
    for row in range(3):
        one_hot = np.zeros(n)
        one_hot[index[row]] = 1
        sparse.append(exact_loss(x[row], one_hot))
    return soft, sparse


def _rows(n: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, soft labels and the index labels of three rows: smoothed one-hot, uniform, random."""
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((3, n)) * np.array([[3.0], [1.0], [8.0]])).astype(dtype)
    index = rng.integers(0, n, 3)
    z = np.empty((3, n), dtype)
    z[0] = 0.1 / n
    z[0, index[0]] += 0.9
    z[1] = 1e-3
    z[2] = rng.random(n)
    return x, z, index


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n", CLASS_COUNTS)
@pytest.mark.parametrize("path", ["kernels", "reference"])
def test_many_classes_against_mpmath(n: int, dtype: str, path: str) -> None:
    x, z, index = _rows(n, dtype)
    # Three rows are under the kernels' threshold at 1000 classes: tile them past it.
    tiles = 1 + 16384 // x.size
    xt, zt, it = np.tile(x, (tiles, 1)), np.tile(z, (tiles, 1)), np.tile(index, tiles)
    if path == "reference":
        with logitloss.reference_path():
            soft = logitloss.softmax_cross_entropy_with_logits(zt, xt)
            sparse = logitloss.sparse_softmax_cross_entropy_with_logits(it, xt)
    else:
        soft = logitloss.softmax_cross_entropy_with_logits(zt, xt)
        sparse = logitloss.sparse_softmax_cross_entropy_with_logits(it, xt)
    exact_soft, exact_sparse = _exact_losses(n, dtype)
    for row in range(3):
        error = oracle.ulp_error(float(soft[row]), exact_soft[row], dtype)
        assert error <= BOUND[dtype], f"row {row}: {error:.2f} ULP"
        error = oracle.ulp_error(float(sparse[row]), exact_sparse[row], dtype)
        assert error <= BOUND[dtype], f"sparse row {row}: {error:.2f} ULP"
    # Every copy of a row gets the same bits: the sums do not depend on where a row lies.
    assert np.array_equal(soft.reshape(tiles, 3), np.broadcast_to(soft[:3], (tiles, 3)))


@pytest.mark.parametrize("gap", [0.0, 1e-9])
@pytest.mark.parametrize("path", ["kernels", "reference"])
def test_long_row_gradient_against_mpmath(path: str, gap: float) -> None:
    """float64 gradient of a 20 000-class row of smoothed labels within 8 scale-ULP (ULPs of
    the larger of ``softmax_j S`` and ``z_j``), also with a logit ``gap`` below the maximum, for
    which the kernels recompute the row with ``expm1`` (its sums compensated too)."""
    rng = np.random.default_rng(1)
    n = 20_000
    x = rng.standard_normal(n) * 2
    top = int(np.argmax(x))
    if gap:
        x[(top + 1) % n] = x[top] - gap
    z = np.full(n, 0.1 / n)
    z[top] += 0.9
    rows = (np.tile(x, (2, 1)), np.tile(z, (2, 1)))  # 40 000 elements: past the threshold
    if path == "reference":
        with logitloss.reference_path():
            grad = logitloss.softmax_cross_entropy_with_logits_grad(rows[1], rows[0])[0]
    else:
        grad = logitloss.softmax_cross_entropy_with_logits_grad(rows[1], rows[0])[0]
    with mp.workdps(40):
        xs = [mp.mpf(float(v)) for v in x]
        m = max(xs)
        e = [mp.exp(v - m) for v in xs]
        share = mp.fsum(mp.mpf(float(v)) for v in z) / mp.fsum(e)
        for k in [*range(0, n, 499), top, (top + 1) % n]:
            exact = e[k] * share - mp.mpf(float(z[k]))
            scale = max(e[k] * share, mp.mpf(float(z[k])))
            error = oracle.scale_ulp_error(float(grad[k]), exact, scale, "float64")
            assert error <= 8, f"class {k}: {error:.2f} scale-ULP"
