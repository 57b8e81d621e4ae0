"""bfloat16 to float32 and back (``_kernels.narrow``), bit for bit against ml_dtypes'
conversions, on the serial and the parallel kernel (sizes either side of
``runtime.PARALLEL_MIN``), and the fallbacks (float16, non-contiguous arrays)."""

from __future__ import annotations

import numpy as np
import pytest

ml_dtypes = pytest.importorskip("ml_dtypes")
pytest.importorskip("numba")

from logitloss._kernels import narrow, runtime  # noqa: E402

BF16 = np.dtype(ml_dtypes.bfloat16)
# Ties (to even, both ways), the largest float32 (rounds to inf), the largest bfloat16 and
# the value just below the halfway point to inf, subnormals, signed zeros and infinities.
SPECIAL = [0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7F7FFFFF, 0x7F7F0000, 0x7F7F7FFF,
           0x7F7F8000, 0x3F808000, 0x3F818000, 0xBF808000, 0x00008000, 0x00018000, 0x00000001,
           0x807FFFFF, 0x3F7FFFFF]  # fmt: skip


def _float32_bits(size: int, seed: int) -> np.ndarray:
    """Every kind of float32: random bit patterns (NaN and subnormals among them) and the
    special values."""
    bits = np.random.default_rng(seed).integers(0, 2**32, size, dtype=np.uint64)
    return np.concatenate([bits.astype(np.uint32), np.array(SPECIAL, np.uint32)]).view(np.float32)


@pytest.mark.parametrize("size", [1000, runtime.PARALLEL_MIN * 3 + 17])
def test_round_into_matches_ml_dtypes_bit_for_bit(size: int) -> None:
    values = _float32_bits(size, size)
    got = narrow.round_into(np.empty(values.shape, BF16), values)
    with np.errstate(invalid="ignore"):
        want = values.astype(BF16)
    nan = np.isnan(values)
    assert np.array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])
    # NaN stays NaN, with its sign.
    back = got.astype(np.float32)
    assert np.isnan(back[nan]).all()
    assert np.array_equal(np.signbit(back[nan]), np.signbit(values[nan]))


@pytest.mark.parametrize("size", [1000, runtime.PARALLEL_MIN * 3 + 17])
def test_widen_is_exact(size: int) -> None:
    with np.errstate(invalid="ignore"):
        narrow_values = _float32_bits(size, size + 1).astype(BF16)
    got = narrow.widen(narrow_values)
    assert got.dtype == np.float32
    assert np.array_equal(got.view(np.uint32), narrow_values.astype(np.float32).view(np.uint32))
    out = np.empty(narrow_values.shape, np.float32)
    assert narrow.widen(narrow_values, out) is out
    assert np.array_equal(out.view(np.uint32), got.view(np.uint32))


def test_shapes_fallbacks_and_empty() -> None:
    values = np.random.default_rng(3).standard_normal((64, 33)).astype(np.float32) * 1e3
    # A 2-D array, a non-contiguous view (NumPy's conversion), float16 (NumPy's too).
    for source in (values, values[:, ::2], values.T):
        for dtype in (BF16, np.dtype(np.float16)):
            with np.errstate(over="ignore"):
                want = source.astype(dtype)
            got = narrow.round_into(np.empty(source.shape, dtype), source)
            assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
            assert np.array_equal(narrow.widen(want), want.astype(np.float32))
    empty = np.empty((0, 5), np.float32)
    assert narrow.round_into(np.empty((0, 5), BF16), empty).shape == (0, 5)
    assert narrow.widen(np.empty((0, 5), BF16)).shape == (0, 5)


def test_caller_arrays_unchanged() -> None:
    values = _float32_bits(5000, 9)
    kept = values.copy()
    narrow.round_into(np.empty(values.shape, BF16), values)
    assert np.array_equal(values.view(np.uint32), kept.view(np.uint32))
