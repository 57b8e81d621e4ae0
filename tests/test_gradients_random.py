"""Seeded random cases where the gradients cancel, on both paths, against mpmath.

``test_gradients`` walks fixed grids; these draw new points each seed from the places where the
formulas have to work hardest: logits next to the logistic gradient's zero (``x`` rounded from
``log(q z / (1 - z))`` and nudged by a few ULP), with ``pos_weight`` from 1e-3 to 1e3; softmax
rows with ties and with logits closer together than the dtype's spacing near the maximum. Each
point is computed on the reference path and by the kernels (the same values tiled past the
kernels' threshold), and held to the promise: 1 ULP of the result in float32 and bfloat16, 8
scale-ULP in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import np_dtype
from test_gradients import KERNEL_SIZE, SCALE_BOUND, ULP_BOUND, Errors, exact_logistic

import logitloss
from logitloss._tools import oracle

pytest.importorskip("mpmath")

SEEDS = [11, 12, 13]


def _on_path(fn, path: str, *arrays: np.ndarray) -> np.ndarray:
    """``fn(*arrays)`` on the reference path, or by the kernels on the arrays tiled past their
    threshold (the first copy returned)."""
    if path == "reference":
        with logitloss.reference_path():
            return fn(*arrays)
    n = arrays[1].shape[0]
    tiles = 1 + KERNEL_SIZE // arrays[1].size
    tiled = [np.concatenate([a] * tiles) for a in arrays]
    return fn(*tiled)[:n]


def _nudge(x: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """``x`` moved by ``steps`` units in the last place (through its bits)."""
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[x.dtype.itemsize]
    return (x.view(bits) + steps.astype(bits)).view(x.dtype)


def _near_zero(rng: np.random.Generator, dtype: str, count: int) -> list[np.ndarray]:
    """``(x, z, q)``: the ``count`` of 20 000 random points closest to the gradient's zero,
    relative to its terms. ``q`` log-uniform in [1e-3, 1e3]; ``x`` rounded from the zero's
    ``log(q z / (1 - z))`` and moved a few ULP either side, where the two terms agree in most of
    their bits."""
    dt = np_dtype(dtype)
    n = 20_000
    z = rng.uniform(1e-3, 1 - 1e-3, n).astype(dt)
    q = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), n)).astype(dt)
    with np.errstate(all="ignore"):  # labels that round to 1 give infinite logits: dropped
        zf, qf = z.astype(np.float64), q.astype(np.float64)
        x = _nudge(np.log(qf * zf / (1 - zf)).astype(dt), rng.integers(-3, 4, n))
        keep = np.isfinite(x.astype(np.float64))
        x, z, q = (a.astype(np.float64) for a in (x[keep], z[keep], q[keep]))
        # Chosen in float64 (only to choose them): |gradient| over its larger term.
        grad = logitloss.weighted_cross_entropy_with_logits_grad(z, x, q)
        terms = np.maximum((1 - z) / (1 + np.exp(-x)), q * z / (1 + np.exp(x)))
        closest = np.argsort(np.abs(grad) / terms)[:count]
    return [a[closest].astype(dt) for a in (x, z, q)]


def _bound(errors: Errors, dtype: str) -> None:
    if dtype == "float64":
        errors.check(ulp=None, scale_ulp=SCALE_BOUND)
    else:
        errors.check(ulp=ULP_BOUND, scale_ulp=ULP_BOUND)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
@pytest.mark.parametrize("path", ["reference", "kernels"])
def test_logistic_grad_near_its_zero(seed: int, dtype: str, path: str) -> None:
    x, z, q = _near_zero(np.random.default_rng(seed), dtype, 60)
    out = _on_path(logitloss.weighted_cross_entropy_with_logits_grad, path, z, x, q)
    errors = Errors(dtype)
    for a, b, c, computed in zip(*(v.astype(np.float64).tolist() for v in (x, z, q, out)),
                                 strict=True):  # fmt: skip
        exact, scale = exact_logistic(a, b, c, "logits")
        errors.add(computed, exact, scale, f"x={a!r}, z={b!r}, q={c!r}")
    _bound(errors, dtype)


def _softmax_rows(rng: np.random.Generator, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of 2 to 6 classes: ties with the maximum, and logits a few ULP of float64 (far
    below the dtype's spacing) or a few of the dtype's ULP from the maximum."""
    dt = np_dtype(dtype)
    rows, cols = 40, 5
    top = rng.uniform(-3, 3, rows)
    x = np.empty((rows, cols))
    z = rng.dirichlet(np.ones(cols), rows)
    z[::3] = rng.random((len(z[::3]), cols))  # labels that do not sum to 1
    for r in range(rows):
        kind = r % 4
        if kind == 0:  # ties
            x[r] = top[r]
            x[r, rng.integers(0, cols)] = top[r] - rng.uniform(0, 5)
        elif kind == 1:  # closer than float64 resolves next to 1: tiny logits around 0
            x[r] = rng.choice([-1, 1], cols) * 10.0 ** rng.uniform(-37, -20, cols)
            # Four classes of uniform labels (the fifth out of reach): the gradient is that tiny.
            x[r, 4] = -np.inf
            z[r] = 0.25 * (np.arange(cols) < 4)
        elif kind == 2:  # a few ULP of the dtype apart
            spacing = float(np.spacing(np.asarray(abs(top[r]) + 1, dt)))
            x[r] = top[r] + spacing * rng.integers(-3, 4, cols)
        else:  # ordinary spread
            x[r] = top[r] + rng.standard_normal(cols) * 2
    return x.astype(dt), z.astype(dt)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
@pytest.mark.parametrize("path", ["reference", "kernels"])
def test_softmax_grad_random_rows(seed: int, dtype: str, path: str) -> None:
    x, z = _softmax_rows(np.random.default_rng(seed), dtype)
    out = _on_path(logitloss.softmax_cross_entropy_with_logits_grad, path, z, x)
    errors = Errors(dtype)
    for row in range(x.shape[0]):
        xs = tuple(x[row].astype(np.float64).tolist())
        zs = tuple(z[row].astype(np.float64).tolist())
        exact = oracle.softmax_grad(xs, zs, "logits")
        scale = oracle.softmax_grad_scale(xs, zs, "logits")
        for j, computed in enumerate(out[row].astype(np.float64).tolist()):
            errors.add(computed, exact[j], scale[j], f"x={xs}, z={zs}, j={j}")
    _bound(errors, dtype)
