"""``logistic.reduced``: binary cross-entropy's reduced loss and gradient in one compiled call,
held bit for bit to the generic drivers' path it replaces for contiguous operands
(``kernel.logistic_loss_sum_and_grad``, its tiles planned and summed in Python), for every
operand layout it reads and every option, on one row, on grouped short rows and past the
parallel threshold; and the layouts it leaves to the drivers."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("numba")

from logitloss._kernels import runtime
from logitloss._losses.logistic import kernel, reduced

# (rows, cols): a few rows; short rows the plan groups (rows >= 2 * TILE // cols); past the
# parallel threshold; one row of many classes.
# Short rows grouped: all in one group (7 x 5), one group and the rest (2000 x 10), several
# groups and the rest (3 TILE / 10 + 3 rows); long rows; one row.
SHAPES = [(7, 5), (2000, 10), (3 * runtime.TILE // 10 + 3, 10), (80, 1024), (1, 300)]
assert 80 * 1024 >= runtime.PARALLEL_MIN


def _operand(layout: str, shape: tuple[int, int], dtype: str, rng: np.random.Generator) -> object:
    rows, cols = shape
    sizes = {"none": None, "single": (1,), "class": (cols,), "class_2d": (1, cols),
             "full": shape, "row": (rows, 1)}  # fmt: skip
    size = sizes[layout]
    return None if size is None else rng.uniform(0.0, 2.0, size).astype(dtype)


def _drivers(x, z, q, w, smoothing, mean):  # type: ignore[no-untyped-def]
    """What ``_losses.training`` computed through the drivers before the fused entry."""
    size = x.size
    denominator = float(size)
    if w is not None:
        denominator = float(np.sum(w, dtype=np.float64)) * (size / max(1, w.size))
    scale = (1.0 / denominator if denominator else 0.0) if mean else 1.0
    total, grad = kernel.logistic_loss_sum_and_grad(x, z, q, w, smoothing, scale)
    return (total / denominator if denominator else 0.0) if mean else total, grad


LAYOUTS = ("none", "single", "class", "class_2d", "full", "row")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_matches_the_drivers_bit_for_bit(shape: tuple[int, int], dtype: str) -> None:
    rng = np.random.default_rng(1)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    x.flat[::97] = np.inf
    x.flat[5::89] = -np.inf
    z = rng.random(shape).astype(dtype)
    taken = 0
    for q_layout, w_layout, smoothing, mean in itertools.product(
        LAYOUTS, LAYOUTS, (0.0, 0.1), (True, False)
    ):
        q = _operand(q_layout, shape, dtype, rng)
        w = _operand(w_layout, shape, dtype, rng)
        grad = np.full(shape, np.nan, dtype)
        value = reduced.run(x, z, q, w, smoothing=smoothing, mean=mean, grad=grad)
        case = f"{shape} {dtype} q={q_layout} w={w_layout} smoothing={smoothing} mean={mean}"
        if "row" in (q_layout, w_layout) and min(shape) > 1:
            assert value is None, f"{case}: a per-row operand is the drivers' layout"
            assert np.isnan(grad).all(), f"{case}: written although refused"
            continue
        taken += 1
        want_value, want_grad = _drivers(x, z, q, w, smoothing, mean)
        assert value == want_value or (math.isnan(value) and math.isnan(want_value)), case
        np.testing.assert_array_equal(grad, want_grad, err_msg=case)
    assert taken >= 5 * 5 * 4


def test_refuses_what_it_does_not_read() -> None:
    x = np.ones((4, 3), np.float32)
    z = np.zeros((4, 3), np.float32)
    grad = np.empty_like(x)
    others = {
        "transposed logits": (np.ones((3, 4), np.float32).T, z, None, None),
        "labels of another dtype": (x, z.astype(np.float64), None, None),
        "pos_weight of another dtype": (x, z, np.ones(3), None),
        "strided weight": (x, z, None, np.ones((4, 6), np.float32)[:, ::2]),
        "0-d logits": (np.ones((), np.float32), np.zeros((), np.float32), None, None),
        "empty logits": (np.ones((0, 3), np.float32), np.ones((0, 3), np.float32), None, None),
    }
    for name, (xa, za, q, w) in others.items():
        out = np.empty(xa.shape, xa.dtype)
        assert reduced.run(xa, za, q, w, smoothing=0.0, mean=True, grad=out) is None, name
    assert reduced.run(x, z, None, None, smoothing=0.0, mean=True, grad=grad) is not None
