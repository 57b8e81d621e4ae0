"""``logistic.reduced.run_narrow``: binary cross-entropy's fused entry reading float16 and
bfloat16 logits as their bits, a tile at a time through float32, the gradient rounded into the
narrow output. Held bit for bit to what it replaced (float32 copies of every narrow operand
through ``reduced.run``, the gradient rounded once: ``narrow.round_into``) for every operand
layout and option, on a few rows, grouped short rows and past the parallel threshold; within
a rounding of the float64 reference; and the float16 conversions it uses against NumPy's."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

pytest.importorskip("numba")
ml_dtypes = pytest.importorskip("ml_dtypes")

from logitloss._kernels import narrow, runtime  # noqa: E402
from logitloss._losses.logistic import kernel, reduced  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = {"bfloat16": BF16, "float16": np.dtype(np.float16)}
# (rows, cols): a few rows; short rows the plan groups (and a rest of rows after the groups);
# past the parallel threshold (several tiles a row, a short last tile); one row.
SHAPES = [(7, 5), (3 * runtime.TILE // 10 + 3, 10), (40, 2 * runtime.TILE + 7), (1, 300)]
assert 40 * (2 * runtime.TILE + 7) >= runtime.PARALLEL_MIN
LAYOUTS = ("none", "single", "class", "full")


def _operand(layout: str, shape: tuple[int, int], dtype: np.dtype, rng: np.random.Generator):  # type: ignore[no-untyped-def]
    sizes = {"none": None, "single": (1,), "class": (shape[1],), "full": shape}
    size = sizes[layout]
    if size is None:
        return None
    a = rng.uniform(0.0, 2.0, size)
    a.flat[3::7] = 0.0  # masked elements: a zero weight drops an infinite loss
    return a.astype(dtype)


def _copies(x, z, q, w, smoothing, mean):  # type: ignore[no-untyped-def]
    """The path ``run_narrow`` replaces: float32 copies, the float32 entry, one rounding."""
    wide = [a if a is None or a.dtype != x.dtype else narrow.widen(a) for a in (z, q, w)]
    wide_grad = np.empty(x.shape, np.float32)
    value = reduced.run(narrow.widen(x), *wide, smoothing=smoothing, mean=mean, grad=wide_grad)
    assert value is not None
    return value, narrow.round_into(np.empty(x.shape, x.dtype), wide_grad)


def _logits(shape: tuple[int, int], dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(shape) * 4
    x.flat[::97] = np.inf
    x.flat[5::89] = -np.inf
    x.flat[11::101] = 0.0
    x.flat[13::103] = 1e-6  # next to the gradient's zero with z = 1/2: the near-zero fix
    return x.astype(dtype)


def _same(value: float, want: float) -> bool:
    return value == want or (math.isnan(value) and math.isnan(want))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("name", list(DTYPES))
def test_matches_the_float32_copies_bit_for_bit(shape: tuple[int, int], name: str) -> None:
    dtype = DTYPES[name]
    rng = np.random.default_rng(3)
    x = _logits(shape, dtype, rng)
    z = rng.random(shape)
    z.flat[::3] = 0.5
    z.flat[1::3] = 1.0
    z = z.astype(dtype)
    for q_layout, w_layout, smoothing, mean in itertools.product(
        LAYOUTS, LAYOUTS, (0.0, 0.1), (True, False)
    ):
        q = _operand(q_layout, shape, dtype, rng)
        w = _operand(w_layout, shape, dtype, rng)
        grad = np.full(shape, np.nan, dtype)
        value = reduced.run_narrow(x, z, q, w, smoothing=smoothing, mean=mean, grad=grad)
        case = f"{shape} {name} q={q_layout} w={w_layout} smoothing={smoothing} mean={mean}"
        assert value is not None, case
        want_value, want_grad = _copies(x, z, q, w, smoothing, mean)
        assert _same(value, want_value), f"{case}: {value} != {want_value}"
        np.testing.assert_array_equal(grad.view(np.uint16), want_grad.view(np.uint16), case)


@pytest.mark.parametrize("name", list(DTYPES))
def test_float32_and_strided_operands(name: str) -> None:
    """Labels, pos_weight and weights of float32 with narrow logits (read as they are), and
    narrow ones that are not contiguous (as their copies were): the copies' bits; operands of
    another dtype are refused (the drivers take them), nothing written."""
    dtype = DTYPES[name]
    rng = np.random.default_rng(5)
    shape = (50, 1400)  # past the parallel threshold, grouped rows: neither
    x = _logits(shape, dtype, rng)
    z32 = rng.random(shape).astype(np.float32)
    cases = {
        "float32 labels": (z32, None, None),
        "float32 full weights": (z32.astype(dtype), None, rng.random(shape).astype(np.float32)),
        "float32 class pos_weight": (z32, rng.random(shape[1]).astype(np.float32), None),
        "strided labels": (np.tile(z32.astype(dtype), 2)[:, ::2], None, None),
        "strided weights": (z32.astype(dtype), None, np.tile(z32.astype(dtype), 2)[:, ::2]),
    }
    for case, (z, q, w) in cases.items():
        assert z.flags.c_contiguous == ("strided labels" != case)
        for mean in (True, False):
            grad = np.empty(shape, dtype)
            value = reduced.run_narrow(x, z, q, w, smoothing=0.1, mean=mean, grad=grad)
            want_value, want_grad = _copies(x, z, q, w, 0.1, mean)
            assert _same(value, want_value), case
            np.testing.assert_array_equal(grad.view(np.uint16), want_grad.view(np.uint16), case)
    refused = {
        "float64 labels": (z32.astype(np.float64), None, None),
        "float64 pos_weight": (z32, np.ones(1), None),
        "per-row weights": (z32, None, np.ones((shape[0], 1), dtype)),
        "float32 strided weights": (z32, None, np.tile(z32, 2)[:, ::2]),
    }
    for case, (z, q, w) in refused.items():
        grad = np.full(shape, np.nan, dtype)
        assert reduced.run_narrow(x, z, q, w, smoothing=0.0, mean=True, grad=grad) is None, case
        assert np.isnan(grad.astype(np.float32)).all(), case


@pytest.mark.parametrize("name", list(DTYPES))
def test_within_a_rounding_of_float64(name: str) -> None:
    """Against the float64 kernels on the same (exactly widened) values: the value to float32
    accuracy, each gradient element the float64 gradient rounded to the narrow dtype, or its
    neighbour (the float32 gradient rounded twice)."""
    dtype = DTYPES[name]
    rng = np.random.default_rng(7)
    shape = (64, 1100)
    x = _logits(shape, dtype, rng)
    x[~np.isfinite(x.astype(np.float32))] = 30.0  # a finite loss to compare
    z = rng.random(shape).astype(dtype)
    q = rng.uniform(0.5, 2.0, shape[1]).astype(dtype)
    w = rng.uniform(0.0, 2.0, shape).astype(dtype)
    grad = np.empty(shape, dtype)
    value = reduced.run_narrow(x, z, q, w, smoothing=0.1, mean=True, grad=grad)
    x64, z64, q64, w64 = (a.astype(np.float64) for a in (x, z, q, w))
    denominator = float(np.sum(w64))
    total, want = kernel.logistic_loss_sum_and_grad(x64, z64, q64, w64, 0.1, 1.0 / denominator)
    assert value == pytest.approx(total / denominator, rel=1e-6)
    got = grad.astype(np.float64)
    rounded = want.astype(dtype).astype(np.float64)
    ulp = 2.0**-8 if dtype == BF16 else 2.0**-11
    tiny = 2.0**-133 if dtype == BF16 else 2.0**-24
    bound = np.maximum(np.abs(rounded) * ulp * 2, tiny)
    finite = np.isfinite(want)
    assert (np.abs(got - rounded)[finite] <= bound[finite]).all()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))


def test_half_widening_is_exact() -> None:
    """Every float16 bit pattern widened as NumPy widens it (NaN payloads kept)."""
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    out = np.empty(bits.size, np.uint32)
    narrow.widen_half_span(bits, out, 0, bits.size)
    np.testing.assert_array_equal(out, bits.view(np.float16).astype(np.float32).view(np.uint32))


def test_half_rounding_as_numpy() -> None:
    """float32 to float16 to nearest even as NumPy rounds: random bit patterns, every float32
    around each float16 (its ties, its neighbours), the subnormal and overflow boundaries,
    infinities and quiet NaNs."""
    rng = np.random.default_rng(11)
    halves = np.arange(1 << 15, dtype=np.uint32).astype(np.uint16).view(np.float16)
    centres = halves[np.isfinite(halves)].astype(np.float32).view(np.uint32).astype(np.int64)
    # Around each float16: itself, the ties with its neighbours (13 or more bits dropped: the
    # midpoint's float32 bits are below 2^13 apart), and one float32 ULP either side of them.
    steps = np.array([0, 1, -1, 4095, 4096, 4097, -4095, -4096, -4097, 1 << 12, 1 << 13])
    near = (centres[:, None] + steps[None, :]).reshape(-1)
    near = near[(near >= 0) & (near < 0x7F800000)]
    special = np.array([0x7F800000, 0x7FC00000, 0x7FC12345, 0x477FEFFF, 0x477FF000,
                        0x477FF001, 0x33000000, 0x33000001, 0x32FFFFFF, 0x00000001,
                        0x007FFFFF, 0x38800000, 0x387FFFFF, 0x387FF000], np.int64)  # fmt: skip
    random = rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64)
    b = np.concatenate([near, special, random.astype(np.int64)]).astype(np.uint32)
    b = np.concatenate([b, b ^ np.uint32(0x80000000)])  # both signs
    f = b.view(np.float32)
    keep = ~np.isnan(f) | ((b & np.uint32(0x400000)) != 0)  # signalling NaNs: not ours
    b = b[keep]
    out = np.empty(b.size, np.uint16)
    narrow.round_half_span(b, out, 0, b.size)
    with np.errstate(over="ignore", invalid="ignore"):
        want = b.view(np.float32).astype(np.float16).view(np.uint16)
    np.testing.assert_array_equal(out, want)
