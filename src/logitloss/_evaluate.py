"""``logitloss eval``: a loss over prediction arrays, chunk by chunk, with a summary.

The rows (axis 0) of the logits are taken in chunks, so a memory-mapped ``.npy`` file larger
than memory is streamed; each chunk's labels are checked (NaN, range, integrality) before its
loss is computed with the public functions, and the summary (count, sum, mean, min, max; per
class for multi-label sigmoid and weighted losses) is accumulated in float64 with exact sums.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _losses
from ._files import DataError

KINDS = ("sigmoid", "weighted", "softmax", "sparse")
CHUNK_BYTES = 64 * 2**20


@dataclass
class Stats:
    """Count, exact sum, min and max of a stream of losses (NaN propagates)."""

    count: int = 0
    partial_sums: list[float] = field(default_factory=list)
    min: float = math.inf
    max: float = -math.inf

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        values = np.asarray(values, dtype=np.float64)
        self.count += values.size
        self.partial_sums.append(math.fsum(values.ravel().tolist()))
        self.min = float(min(self.min, np.min(values)))
        self.max = float(max(self.max, np.max(values)))

    def as_dict(self) -> dict[str, Any]:
        total = math.fsum(self.partial_sums)
        empty = self.count == 0
        return {
            "count": self.count,
            "mean": math.nan if empty else total / self.count,
            "sum": total,
            "min": math.nan if empty else self.min,
            "max": math.nan if empty else self.max,
        }


@dataclass
class Result:
    loss: str
    total: Stats
    per_class: list[Stats] | None

    def as_dict(self) -> dict[str, Any]:
        summary = {"loss": self.loss, **self.total.as_dict()}
        if self.per_class is not None:
            summary["per_class"] = [s.as_dict() for s in self.per_class]
        return summary


def _check_shapes(
    kind: str, logits: np.ndarray, labels: np.ndarray, axis: int, names: tuple[str, str]
) -> None:
    logits_name, labels_name = names
    if logits.ndim == 0 or labels.ndim == 0:
        raise DataError(
            f"{logits_name if logits.ndim == 0 else labels_name}: need rows, got a scalar"
        )
    if len(labels) != len(logits):
        raise DataError(
            f"row counts differ: {logits_name} has {len(logits)}, {labels_name} has {len(labels)}"
        )
    if kind == "sparse":
        if labels.shape != logits.shape[:-1]:
            raise DataError(
                f"{labels_name}: need one class index per row, shape {logits.shape[:-1]}; "
                f"got {labels.shape}"
            )
        return
    if kind == "softmax" and (logits.ndim < 2 or axis % logits.ndim == 0):
        raise DataError(f"{logits_name}: softmax needs rows of classes (classes not on axis 0)")
    if labels.shape != logits.shape:
        raise DataError(f"{labels_name}: shape {labels.shape} differs from logits {logits.shape}")


def _check_labels(kind: str, labels: np.ndarray, start: int, num_classes: int, name: str) -> None:
    """Labels of one chunk (rows from ``start``): no NaN, binary in [0, 1], sparse integral."""
    values = np.asarray(labels, dtype=np.float64)
    bad = np.isnan(values)
    problem = "NaN label"
    if not bad.any() and kind in ("sigmoid", "weighted"):
        bad, problem = (values < 0) | (values > 1), "label outside [0, 1]"
    if not bad.any() and kind == "sparse":
        bad, problem = values != np.round(values), "non-integer class label"
        if not bad.any():
            bad = (values < 0) | (values >= num_classes)
            problem = f"class label outside [0, {num_classes})"
    if bad.any():
        where = np.argwhere(bad)[0]
        row = start + int(where[0])
        value = values[tuple(where)]
        raise DataError(f"{name}: {problem} in row {row}: {value:g}")


def _pos_weight(values: list[float] | None, logits: np.ndarray) -> np.ndarray | float:
    if values is None:
        raise DataError("weighted: give --pos-weight Q or Q1,Q2,... (one per class)")
    if len(values) == 1:
        return values[0]
    classes = logits.shape[-1] if logits.ndim > 1 else 1
    if len(values) != classes:
        raise DataError(f"--pos-weight: {len(values)} values for {classes} classes")
    return np.asarray(values)


def chunks(rows: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, rows, chunk_rows):
        yield start, min(rows, start + chunk_rows)


def default_chunk_rows(logits: np.ndarray) -> int:
    row_bytes = max(1, logits[:1].nbytes)
    return max(1, CHUNK_BYTES // row_bytes)


def evaluate(
    kind: str,
    logits: np.ndarray,
    labels: np.ndarray,
    *,
    pos_weight: list[float] | None = None,
    axis: int = -1,
    chunk_rows: int | None = None,
    sink: Callable[[int, np.ndarray], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    names: tuple[str, str] = ("logits", "labels"),
) -> Result:
    """The loss ``kind`` of ``logits`` against ``labels``, summarised; ``sink(start, losses)``
    receives each chunk's losses (for ``--out``), ``progress(done, rows)`` the rows done, and
    ``names`` (the files) appear in error messages."""
    if not np.issubdtype(logits.dtype, np.floating):
        raise DataError(f"{names[0]}: need floating-point values, got {logits.dtype}")
    if not np.issubdtype(labels.dtype, np.number) and labels.dtype != np.bool_:
        raise DataError(f"{names[1]}: need numbers, got {labels.dtype}")
    _check_shapes(kind, logits, labels, axis, names)
    q = _pos_weight(pos_weight, logits) if kind == "weighted" else None
    multi_label = kind in ("sigmoid", "weighted") and logits.ndim == 2
    per_class = [Stats() for _ in range(logits.shape[1])] if multi_label else None
    total = Stats()
    num_classes = logits.shape[axis] if logits.ndim > 1 else 0
    rows = len(logits)
    for start, stop in chunks(rows, chunk_rows or default_chunk_rows(logits)):
        x = np.asarray(logits[start:stop])
        z = np.asarray(labels[start:stop])
        _check_labels(kind, z, start, num_classes, names[1])
        loss = _loss(kind, x, z, q, axis)
        total.add(loss)
        if per_class is not None:
            for column, stats in zip(loss.T, per_class, strict=True):
                stats.add(column)
        if sink is not None:
            sink(start, loss)
        if progress is not None:
            progress(stop, rows)
    return Result(kind, total, per_class)


def _loss(kind: str, x: np.ndarray, z: np.ndarray, q: Any, axis: int) -> np.ndarray:
    if kind == "sigmoid":
        return _losses.sigmoid_cross_entropy_with_logits(z.astype(x.dtype), x)
    if kind == "weighted":
        return _losses.weighted_cross_entropy_with_logits(z.astype(x.dtype), x, q)
    if kind == "softmax":
        return _losses.softmax_cross_entropy_with_logits(z.astype(x.dtype), x, axis=axis)
    return _losses.sparse_softmax_cross_entropy_with_logits(z.astype(np.int64), x)
