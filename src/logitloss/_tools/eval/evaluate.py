"""``logitloss eval``: a loss over prediction arrays, block by block, with an exact summary.

The work is split in two so that both engines share it: :func:`plan` checks the whole inputs'
shapes, dtypes and ``--pos-weight`` once, and :func:`evaluate_block` checks one block of rows'
labels (NaN, range, integrality), computes its losses with the public functions and summarises
them (:class:`~.stats.Stats`, exact sums). :func:`evaluate` cuts the rows into blocks, has an
engine run them (:class:`Local`: in order, in this process; ``dask_engine.Dask``: mapped over a
cluster) and merges their summaries.

Both give the same numbers for any chunking, to the last bit: every block's losses are computed
on one path, the kernels (``route.kernel_path``: small blocks too, which would otherwise
take the reference path, 1 ULP away on some rows), which compute each row on its own, so a
row's loss does not depend on the block it is in; and the summaries merge exactly.

Each loss is the registry's (``logitloss._api.registry``): its labels (probabilities in [0, 1]
for the elementwise losses, class indices), its pos_weight and its class axis decide the checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..._api import registry
from ..._api.registry import INDICES, Loss
from ..._core import route
from ..files import DataError
from .stats import Stats, column_stats, merge_all

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

    loss: Loss
    q: Any
    axis: int
    num_classes: int
    multi_label: bool
    names: tuple[str, str]

    def empty(self, classes: int) -> Result:
        return Result(
            self.loss.name, Stats(), [Stats() for _ in range(classes)] if self.multi_label else None
        )


def _check_shapes(
    loss: Loss, logits: np.ndarray, labels: np.ndarray, axis: int, names: tuple[str, str]
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
    if loss.labels == INDICES:
        if labels.shape != logits.shape[:-1]:
            raise DataError(
                f"{labels_name}: need one class index per row, shape {logits.shape[:-1]}; "
                f"got {labels.shape}"
            )
        return
    if loss.class_axis and (logits.ndim < 2 or axis % logits.ndim == 0):
        raise DataError(f"{logits_name}: {loss.name} needs rows of classes (classes not on axis 0)")
    if labels.shape != logits.shape:
        raise DataError(f"{labels_name}: shape {labels.shape} differs from logits {logits.shape}")


def _check_labels(loss: Loss, labels: np.ndarray, start: int, num_classes: int, name: str) -> None:
    """Labels of one chunk (rows from ``start``): no NaN; an elementwise loss's in [0, 1] (soft
    labels over a class axis are not checked); class indices integral and in range.

    Compared in the labels' own dtype (no float64 copy), to keep a worker's block small.
    """
    values = labels
    floating = np.issubdtype(values.dtype, np.floating)
    bad = np.isnan(values) if floating else np.zeros(values.shape, dtype=bool)
    problem = "NaN label"
    if not bad.any() and not loss.class_axis:
        bad, problem = (values < 0) | (values > 1), "label outside [0, 1]"
    if not bad.any() and loss.labels == INDICES:
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


def _pos_weight(loss: Loss, values: list[float] | None, logits: np.ndarray) -> np.ndarray | float:
    if values is None:
        raise DataError(f"{loss.name}: give --pos-weight Q or Q1,Q2,... (one per class)")
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
    """Check the inputs as wholes (dtypes, shapes, ``--pos-weight``) without reading rows;
    ``kind`` is the loss's registry name."""
    loss = registry.get(kind)
    if not np.issubdtype(logits.dtype, np.floating):
        raise DataError(f"{names[0]}: need floating-point values, got {logits.dtype}")
    if not np.issubdtype(labels.dtype, np.number) and labels.dtype != np.bool_:
        raise DataError(f"{names[1]}: need numbers, got {labels.dtype}")
    _check_shapes(loss, logits, labels, axis, names)
    q = _pos_weight(loss, pos_weight, logits) if loss.pos_weight else None
    multi_label = not loss.class_axis and logits.ndim == 2
    num_classes = logits.shape[axis] if logits.ndim > 1 else 0
    return Plan(loss, q, axis, num_classes, multi_label, names)


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
    _check_labels(plan.loss, z, start, plan.num_classes, plan.names[1])
    with route.kernel_path():  # one path for blocks of every size (module docstring)
        loss = np.asarray(_loss(plan.loss, x, z, plan.q, plan.axis))
    columns = column_stats(loss if plan.multi_label else loss.reshape(-1, 1))
    per_class = columns if plan.multi_label else None
    return loss, Result(plan.loss.name, merge_all(columns), per_class)


# A block run: its first row, its end, its losses (where kept) and their summary.
Block = tuple[int, int, np.ndarray | None, Result]


class Engine(Protocol):
    """Runs the blocks of a plan: ``chunk_rows`` picks the rows of a block when the caller
    does not, ``run`` yields ``(start, stop, losses or None, summary)`` per block, in any
    order (losses only where ``keep``)."""

    def chunk_rows(self, logits: Any) -> int: ...

    def run(
        self, job: Plan, logits: Any, labels: Any, bounds: list[tuple[int, int]], keep: bool
    ) -> Generator[Block, None, None]: ...


class Local:
    """The local engine: the blocks in order, in this process."""

    def chunk_rows(self, logits: Any) -> int:
        return default_chunk_rows(logits)

    def run(
        self, job: Plan, logits: Any, labels: Any, bounds: list[tuple[int, int]], keep: bool
    ) -> Generator[Block, None, None]:
        for start, stop in bounds:
            loss, part = evaluate_block(job, logits[start:stop], labels[start:stop], start)
            yield start, stop, loss, part


def evaluate(
    kind: str,
    logits: Any,
    labels: Any,
    *,
    chunk_rows: int | None = None,
    sink: Callable[[int, np.ndarray], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    engine: Engine | None = None,
    **checks: Any,
) -> Result:
    """The loss ``kind`` of ``logits`` against ``labels``, summarised.

    ``logits`` and ``labels`` are arrays or lazy sources (sliced by rows); ``checks``
    (``pos_weight``, ``axis``, ``names``: the files, for error messages) go to :func:`plan`;
    ``sink(start, losses)`` receives each block's losses (for ``--out``) and ``progress(done,
    rows)`` the rows done; ``engine`` runs the blocks (default :class:`Local`).
    """
    engine = engine or Local()
    job = plan(kind, logits, labels, **checks)
    result = job.empty(logits.shape[1] if job.multi_label else 0)
    rows = len(logits)
    bounds = list(chunks(rows, chunk_rows or engine.chunk_rows(logits)))
    done = 0
    with contextlib.closing(engine.run(job, logits, labels, bounds, sink is not None)) as blocks:
        for start, stop, loss, part in blocks:
            result = result.merge(part)
            if sink is not None:
                sink(start, loss)
            done += stop - start
            if progress is not None:
                progress(done, rows)
    return result


def _loss(loss: Loss, x: np.ndarray, z: np.ndarray, q: Any, axis: int) -> np.ndarray:
    """The per-row losses; labels cast without a copy where they already have the dtype (the
    functions cast float labels to the logits' dtype themselves, copying only if they must)."""
    dtype = np.int64 if loss.labels == INDICES else x.dtype
    return loss.value(z.astype(dtype, copy=False), x, q, axis=axis)
