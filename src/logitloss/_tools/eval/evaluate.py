"""``logitloss eval``: a loss over prediction arrays, block by block, with an exact summary.

The work is split in two so that both engines share it: :func:`plan` checks the whole inputs'
shapes, dtypes and ``--pos-weight`` once, and :func:`evaluate_block` checks one block of rows'
labels (NaN, range, integrality), computes its losses with the public functions and summarises
them (:class:`~.stats.Stats`, exact sums). :func:`evaluate` (the local engine) loops
over blocks of rows; ``_dask_engine`` maps :func:`evaluate_block` over blocks on a cluster.

Both give the same numbers for any chunking, to the last bit: every block's losses are computed
on one path, the kernels (``route.kernel_path``: small blocks too, which would otherwise
take the reference path, 1 ULP away on some rows), which compute each row on its own, so a
row's loss does not depend on the block it is in; and the summaries merge exactly.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..._api import tf_nn
from ..._core import route
from ..files import DataError
from .stats import Stats, column_stats, merge_all

KINDS = ("sigmoid", "weighted", "softmax", "sparse")
CHUNK_BYTES = 64 * 2**20


@dataclass
class Result:
    """The summary of a run: over all losses, and per class for multi-label losses."""

    loss: str
    total: Stats
    per_class: list[Stats] | None

    def merge(self, other: Result) -> Result:
        per_class = None
        if self.per_class is not None and other.per_class is not None:
            per_class = [a.merge(b) for a, b in zip(self.per_class, other.per_class, strict=True)]
        return Result(self.loss, self.total.merge(other.total), per_class)

    def as_dict(self) -> dict[str, Any]:
        summary = {"loss": self.loss, **self.total.as_dict()}
        if self.per_class is not None:
            summary["per_class"] = [s.as_dict() for s in self.per_class]
        return summary


@dataclass(frozen=True)
class Plan:
    """What every block needs: the loss, its parameters, and the names for error messages."""

    kind: str
    q: Any
    axis: int
    num_classes: int
    multi_label: bool
    names: tuple[str, str]

    def empty(self, classes: int) -> Result:
        return Result(
            self.kind, Stats(), [Stats() for _ in range(classes)] if self.multi_label else None
        )


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
    """Labels of one chunk (rows from ``start``): no NaN, binary in [0, 1], sparse integral.

    Compared in the labels' own dtype (no float64 copy), to keep a worker's block small.
    """
    values = labels
    floating = np.issubdtype(values.dtype, np.floating)
    bad = np.isnan(values) if floating else np.zeros(values.shape, dtype=bool)
    problem = "NaN label"
    if not bad.any() and kind in ("sigmoid", "weighted"):
        bad, problem = (values < 0) | (values > 1), "label outside [0, 1]"
    if not bad.any() and kind == "sparse":
        if floating:
            bad, problem = values != np.round(values), "non-integer class label"
        if not bad.any():
            bad = (values < 0) | (values >= num_classes)
            problem = f"class label outside [0, {num_classes})"
    if bad.any():
        where = np.argwhere(bad)[0]
        row = start + int(where[0])
        value = float(values[tuple(where)])
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


def default_chunk_rows(logits: Any, chunk_bytes: int = CHUNK_BYTES) -> int:
    """Rows of about ``chunk_bytes`` of logits."""
    row_bytes = max(1, int(np.prod(logits.shape[1:])) * np.dtype(logits.dtype).itemsize)
    return max(1, chunk_bytes // row_bytes)


def plan(
    kind: str,
    logits: Any,
    labels: Any,
    *,
    pos_weight: list[float] | None = None,
    axis: int = -1,
    names: tuple[str, str] = ("logits", "labels"),
) -> Plan:
    """Check the inputs as wholes (dtypes, shapes, ``--pos-weight``) without reading rows."""
    if not np.issubdtype(logits.dtype, np.floating):
        raise DataError(f"{names[0]}: need floating-point values, got {logits.dtype}")
    if not np.issubdtype(labels.dtype, np.number) and labels.dtype != np.bool_:
        raise DataError(f"{names[1]}: need numbers, got {labels.dtype}")
    _check_shapes(kind, logits, labels, axis, names)
    q = _pos_weight(pos_weight, logits) if kind == "weighted" else None
    multi_label = kind in ("sigmoid", "weighted") and logits.ndim == 2
    num_classes = logits.shape[axis] if logits.ndim > 1 else 0
    return Plan(kind, q, axis, num_classes, multi_label, names)


def evaluate_block(
    plan: Plan, x: np.ndarray, z: np.ndarray, start: int
) -> tuple[np.ndarray, Result]:
    """The losses of one block of rows (rows ``start...`` of the inputs) and their summary.

    Raises
    ------
    DataError
        For a bad label, naming the labels' file and the row.
    """
    x, z = np.asarray(x), np.asarray(z)
    _check_labels(plan.kind, z, start, plan.num_classes, plan.names[1])
    with route.kernel_path():  # one path for blocks of every size (module docstring)
        loss = np.asarray(_loss(plan.kind, x, z, plan.q, plan.axis))
    columns = column_stats(loss if plan.multi_label else loss.reshape(-1, 1))
    per_class = columns if plan.multi_label else None
    return loss, Result(plan.kind, merge_all(columns), per_class)


def evaluate(
    kind: str,
    logits: Any,
    labels: Any,
    *,
    pos_weight: list[float] | None = None,
    axis: int = -1,
    chunk_rows: int | None = None,
    sink: Callable[[int, np.ndarray], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    names: tuple[str, str] = ("logits", "labels"),
) -> Result:
    """The loss ``kind`` of ``logits`` against ``labels``, summarised (the local engine).

    ``logits`` and ``labels`` are arrays or lazy sources (sliced by rows); ``sink(start, losses)``
    receives each chunk's losses (for ``--out``), ``progress(done, rows)`` the rows done, and
    ``names`` (the files) appear in error messages.
    """
    job = plan(kind, logits, labels, pos_weight=pos_weight, axis=axis, names=names)
    result = job.empty(logits.shape[1] if job.multi_label else 0)
    rows = len(logits)
    for start, stop in chunks(rows, chunk_rows or default_chunk_rows(logits)):
        loss, part = evaluate_block(job, logits[start:stop], labels[start:stop], start)
        result = result.merge(part)
        if sink is not None:
            sink(start, loss)
        if progress is not None:
            progress(stop, rows)
    return result


def _loss(kind: str, x: np.ndarray, z: np.ndarray, q: Any, axis: int) -> np.ndarray:
    """The per-row losses; labels cast without a copy where they already have the dtype (the
    functions cast float labels to the logits' dtype themselves, copying only if they must)."""
    if kind == "sigmoid":
        return tf_nn.sigmoid_cross_entropy_with_logits(z.astype(x.dtype, copy=False), x)
    if kind == "weighted":
        return tf_nn.weighted_cross_entropy_with_logits(z.astype(x.dtype, copy=False), x, q)
    if kind == "softmax":
        return tf_nn.softmax_cross_entropy_with_logits(z.astype(x.dtype, copy=False), x, axis=axis)
    return tf_nn.sparse_softmax_cross_entropy_with_logits(z.astype(np.int64, copy=False), x)
