"""Exact, mergeable summaries (count, sum, mean, min, max) of streams of float losses.

A :class:`Stats` holds the sum of its values *exactly*, as an integer multiple of 2^-1126 (every
float64 is one), so partial summaries of chunks, computed anywhere (a loop over a file, Dask
workers in any order, any chunking), merge into the same sum and the same correctly rounded mean.
``math.fsum`` of per-chunk ``fsum`` results would not: each chunk's rounding depends on where the
chunks start. Non-finite values are counted apart: NaN (or +inf with -inf) makes the sum NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Every float64 (and float32) is an integer multiple of 2^-SHIFT: the smallest subnormal
# float64 is 2^-1074 = 2^-(SHIFT - 1) and mantissas are summed as integers.
SHIFT = 1075
# bincount sums mantissas (or 27-bit halves of float64 mantissas) in float64, exact while the
# sum stays below 2^53: pieces of at most 2^24 elements keep that true.
_PIECE = 2**24
_SUB = 2**16
# Bit layout: (unsigned view, exponent bits, exponent bias + mantissa bits, mantissa bits).
_LAYOUT = {
    np.dtype(np.float32): (np.uint32, 8, 150, 23),
    np.dtype(np.float64): (np.uint64, 11, 1075, 52),
}


@dataclass
class Stats:
    """Count, exact sum, min and max of a set of losses; ``merge`` combines two exactly.

    Attributes
    ----------
    count : int
        Number of values (NaN and infinities included).
    scaled_sum : int
        The exact sum of the finite values, times 2^SHIFT.
    nan, posinf, neginf : int
        How many values were NaN, +inf, -inf.
    min, max : float
        Over the non-NaN values (+inf/-inf when there are none).
    """

    count: int = 0
    scaled_sum: int = 0
    nan: int = 0
    posinf: int = 0
    neginf: int = 0
    min: float = math.inf
    max: float = -math.inf

    def merge(self, other: Stats) -> Stats:
        """The summary of both sets of values (exact, independent of order)."""
        return Stats(
            count=self.count + other.count,
            scaled_sum=self.scaled_sum + other.scaled_sum,
            nan=self.nan + other.nan,
            posinf=self.posinf + other.posinf,
            neginf=self.neginf + other.neginf,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    def total(self) -> float:
        """The sum, correctly rounded to float64 (NaN if any value is NaN or +inf meets -inf)."""
        if self.nan or (self.posinf and self.neginf):
            return math.nan
        if self.posinf or self.neginf:
            return math.inf if self.posinf else -math.inf
        return _ratio(self.scaled_sum, 1 << SHIFT)

    def as_dict(self) -> dict[str, Any]:
        """``count``, ``mean``, ``sum``, ``min``, ``max`` (NaN for an empty set or any NaN)."""
        total = self.total()
        if self.count == 0:
            return {"count": 0, "mean": math.nan, "sum": 0.0, "min": math.nan, "max": math.nan}
        finite = math.isfinite(total)
        mean = _ratio(self.scaled_sum, self.count << SHIFT) if finite else total
        return {
            "count": self.count,
            "mean": mean,
            "sum": total,
            "min": math.nan if self.nan else self.min,
            "max": math.nan if self.nan else self.max,
        }


def _ratio(numerator: int, denominator: int) -> float:
    """``numerator / denominator`` correctly rounded (Python's int division is), inf past
    the float64 range."""
    try:
        return numerator / denominator
    except OverflowError:
        return math.inf if numerator > 0 else -math.inf


def column_stats(values: np.ndarray) -> list[Stats]:
    """One :class:`Stats` per column of a 2-D array of losses (float32 kept, others float64)."""
    values = np.asarray(values)
    if values.dtype not in _LAYOUT:
        values = values.astype(np.float64)
    if values.ndim != 2:
        raise ValueError(f"column_stats: need a 2-D array, got shape {values.shape}")
    rows, columns = values.shape
    out = [Stats() for _ in range(columns)]
    piece_rows = max(1, _PIECE // max(columns, 1))
    for start in range(0, rows, piece_rows):
        block = values[start : start + piece_rows]
        out = [a.merge(b) for a, b in zip(out, _piece_stats(block), strict=True)]
    return out


def _piece_stats(block: np.ndarray) -> list[Stats]:
    rows, columns = block.shape
    sums = _scaled_sums(block)
    nan = np.isnan(block).sum(axis=0)
    posinf = (block == np.inf).sum(axis=0)
    neginf = (block == -np.inf).sum(axis=0)
    # NaN-ignoring extremes (fmin/fmax skip NaN), so merging stays order-independent.
    lows = np.fmin.reduce(block, axis=0, initial=np.inf)
    highs = np.fmax.reduce(block, axis=0, initial=-np.inf)
    return [
        Stats(
            rows,
            sums[c],
            int(nan[c]),
            int(posinf[c]),
            int(neginf[c]),
            float(lows[c]),
            float(highs[c]),
        )
        for c in range(columns)
    ]


def _scaled_sums(block: np.ndarray) -> list[int]:
    """Per column, the exact sum of the finite values times 2^SHIFT.

    The values' bits give sign, exponent field ``E`` and integer mantissa ``M`` (implicit bit
    included): a value is ``±M 2^(max(E, 1) - bias)``. Mantissas are summed per (column, E) bin
    with ``bincount`` (exactly, see ``_PIECE``), then the bins are shifted into one Python int.
    Sub-pieces of ``_SUB`` elements keep the temporaries in cache (new large arrays page-fault).
    """
    unsigned, exp_bits, bias, mant_bits = _LAYOUT[block.dtype]
    rows, columns = block.shape
    bins = 1 << exp_bits
    halves = mant_bits > 26  # float64: 53-bit mantissas, summed as two 27-bit halves
    binned = np.zeros((2 if halves else 1, bins * columns))
    offsets = bins * np.arange(columns, dtype=np.intp)
    step = max(1, _SUB // max(columns, 1))
    for start in range(0, rows, step):
        bits = np.ascontiguousarray(block[start : start + step]).view(unsigned)
        field = ((bits >> mant_bits) & (bins - 1)).astype(np.intp)
        mantissa = (bits & ((1 << mant_bits) - 1)) | ((field != 0).astype(unsigned) << mant_bits)
        negative = (bits >> (mant_bits + exp_bits)).astype(bool)
        index = (field + offsets).ravel()
        parts = [mantissa >> 26, mantissa & ((1 << 26) - 1)] if halves else [mantissa]
        for row, part in zip(binned, parts, strict=True):
            weights = part.astype(np.float64)
            np.negative(weights, out=weights, where=negative)
            row += np.bincount(index, weights=weights.ravel(), minlength=bins * columns)
    binned = binned.reshape(len(binned), columns, bins)
    binned[:, :, bins - 1] = 0  # the all-ones exponent holds inf and NaN, counted apart
    extra = (26, 0) if halves else (0,)
    sums = [0] * columns
    for part, extra_shift in zip(binned, extra, strict=True):
        for c in range(columns):
            for e in np.flatnonzero(part[c]):
                shift = max(int(e), 1) - bias + SHIFT + extra_shift
                sums[c] += int(part[c, e]) << shift
    return sums


def merge_all(items: list[Stats]) -> Stats:
    """The merge of any number of summaries."""
    total = Stats()
    for item in items:
        total = total.merge(item)
    return total
