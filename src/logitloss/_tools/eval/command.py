"""The ``eval`` command: options, and the run that ties files, an engine and the output together.

``--engine local`` (the default) loops over chunks in this process (``evaluate``);
``--engine dask`` maps the same per-chunk function over a Dask cluster (``dask_engine``):
a ``LocalCluster`` it starts, or ``--scheduler ADDRESS``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..._api import registry
from ..._api.registry import PROBABILITIES

EXAMPLE = (
    "logitloss eval sparse --logits preds.npz:logits --labels preds.npz:labels --json\n"
    "  logitloss eval weighted --logits scores.parquet:a,b,c --labels truth.parquet:a,b,c "
    "--pos-weight 2,1,4 --out losses.parquet\n"
    "  logitloss eval sigmoid --logits logits/ --labels labels.zarr --engine dask "
    "--worker-memory 300MB"
)


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Q or Q1,Q2,... numbers, got {text!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _bytes(text: str) -> int:
    """A size such as ``300MB`` or ``2GiB`` (dask's spelling), in bytes."""
    units = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
             "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip
    number = text.strip().lower().rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = text.strip().lower()[len(number) :].strip()
    try:
        value = float(number) * units[unit]
    except (ValueError, KeyError):
        raise argparse.ArgumentTypeError(
            f"expected a size such as 300MB or 2GiB, got {text!r}"
        ) from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return int(value)


def _names(losses: list[registry.Loss]) -> str:
    """``"a"``, ``"a and b"``, ``"a, b and c"``."""
    names = [loss.name for loss in losses]
    return " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)


WEIGHTED = [loss for loss in registry.LOSSES if loss.pos_weight]
WITH_CLASS_AXIS = [loss for loss in registry.LOSSES if loss.class_axis]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("loss", choices=registry.NAMES, help="which tf.nn loss")
    parser.add_argument(
        "--logits",
        required=True,
        metavar="PATH[:KEY]",
        help=".npy, .npz member, or CSV/Parquet columns (comma-separated names or patterns such "
        "as logit_*); without KEY in the labels' own file: every column but the labels'",
    )
    parser.add_argument(
        "--labels", required=True, metavar="PATH[:KEY]", help="labels, same forms as --logits"
    )
    parser.add_argument(
        "--pos-weight",
        type=_floats,
        metavar="Q[,Q2,...]",
        help=f"{', '.join(loss.name for loss in WEIGHTED)}: one pos_weight, or one per class",
    )
    parser.add_argument("--axis", type=int, default=None,
                        help=f"{', '.join(loss.name for loss in WITH_CLASS_AXIS)}: the logits' "
                             "class axis (default: the last; not 0, the rows)")  # fmt: skip
    parser.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="write per-row losses (.npy, .csv or .parquet), atomically",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--chunk-rows", type=_positive, metavar="N",
                        help="rows per chunk (default: about 64 MiB of logits; dask: "
                             "1/64 of a worker's memory limit)")  # fmt: skip
    dask = parser.add_argument_group("Dask engine")
    dask.add_argument("--engine", choices=("local", "dask"), default=None,
                      help="local: in this process (default); dask: on a cluster")  # fmt: skip
    dask.add_argument("--scheduler", metavar="ADDRESS",
                      help="use the Dask scheduler at ADDRESS (implies --engine dask) instead of "
                           "starting a LocalCluster")  # fmt: skip
    dask.add_argument("--workers", type=_positive, default=2, metavar="N",
                      help="LocalCluster: worker processes, 1 thread each (default 2)")  # fmt: skip
    dask.add_argument("--worker-memory", type=_bytes, default=2**30, metavar="SIZE",
                      help="LocalCluster: memory limit per worker (default 1GiB)")  # fmt: skip


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and sys.stderr.isatty()

    def __call__(self, done: int, rows: int) -> None:
        if self.enabled:
            filled = int(30 * done / max(rows, 1))
            bar = "#" * filled + "." * (30 - filled)
            sys.stderr.write(f"\r[{bar}] {done}/{rows} rows")
            if done == rows:
                sys.stderr.write("\n")
            sys.stderr.flush()


class _Output:
    """Collects per-row losses; ``.npy`` outputs are streamed into a memory map."""

    def __init__(self, path: Path, temporary: Path, rows: int) -> None:
        self.path, self.temporary, self.rows = path, temporary, rows
        self.memmap: np.memmap | None = None
        self.parts: list[tuple[int, np.ndarray]] = []

    def __call__(self, start: int, losses: np.ndarray) -> None:
        if self.path.suffix.lower() == ".npy":
            if self.memmap is None:
                shape = (self.rows, *losses.shape[1:])
                self.memmap = np.lib.format.open_memmap(
                    self.temporary, mode="w+", dtype=losses.dtype, shape=shape
                )
            self.memmap[start : start + len(losses)] = losses
        else:
            self.parts.append((start, np.asarray(losses)))  # the Dask engine's come unordered

    def finish(self) -> None:
        from .. import files

        if self.memmap is not None:
            self.memmap.flush()
            del self.memmap
        elif self.path.suffix.lower() != ".npy" or not self.parts:
            self.parts.sort(key=lambda part: part[0])
            values = np.concatenate([p for _, p in self.parts]) if self.parts else np.zeros(0)
            files.write_to(self.temporary, self.path.suffix.lower(), values)


def _format(summary: dict[str, Any]) -> str:
    lines = [f"loss   {summary['loss']}"]
    lines += [f"{key:<6} {summary[key]:.10g}" for key in ("count", "mean", "sum", "min", "max")]
    if "per_class" in summary:
        lines.append("class  count  mean  sum  min  max")
        for i, stats in enumerate(summary["per_class"]):
            cells = "  ".join(f"{stats[k]:.10g}" for k in ("count", "mean", "sum", "min", "max"))
            lines.append(f"{i:<5}  {cells}")
    return "\n".join(lines)


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN or Infinity
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value


def run(args: argparse.Namespace) -> int:
    """Load the inputs, evaluate on the chosen engine, print the summary; 0 on success."""
    from .. import files
    from .evaluate import evaluate as evaluate_local

    if args.engine == "local" and args.scheduler is not None:
        raise files.DataError("--scheduler: needs --engine dask (it was --engine local)")
    engine = "dask" if args.scheduler is not None else (args.engine or "local")
    _check_before_work(args, engine)
    logits, labels = files.load_inputs(args.logits, args.labels)
    logits, labels = _classes_last(args, logits, labels)
    options = dict(
        pos_weight=args.pos_weight,
        axis=-1,  # _classes_last moved --axis there
        chunk_rows=args.chunk_rows,
        progress=_Progress(not args.quiet),
        names=(args.logits, args.labels),
    )
    with contextlib.ExitStack() as stack:
        if engine == "dask":
            evaluate = _dask_evaluator(args, stack)
        else:
            evaluate = evaluate_local
        if args.out is None:
            result = evaluate(args.loss, logits, labels, **options)
        else:
            temporary = stack.enter_context(files.atomic_path(args.out))
            output = _Output(args.out, temporary, len(logits))
            result = evaluate(args.loss, logits, labels, sink=output, **options)
            output.finish()
    summary = result.as_dict()
    print(json.dumps(_json_ready(summary)) if args.json else _format(summary))
    return 0


def _check_before_work(args: argparse.Namespace, engine: str) -> None:
    """The optional packages the inputs, ``--out`` and the engine need, and ``--out``'s type and
    directory: refused now, in one line, rather than after the inputs were read."""
    from ..files import check_output, require, split_spec

    if engine == "dask":
        require("distributed", "--scheduler" if args.scheduler is not None else "--engine dask")
    for option, spec in (("--logits", args.logits), ("--labels", args.labels)):
        path, _ = split_spec(spec)
        suffix = path.suffix.lower()
        if suffix == ".zarr":
            require("zarr", f"{option} {path}")
        elif suffix == ".parquet" or (path.is_dir() and any(path.glob("*.parquet"))):
            require("pyarrow.parquet", f"{option} {path}")
    if args.out is not None:
        check_output(args.out)
        if args.out.suffix.lower() == ".parquet":
            require("pyarrow.parquet", f"--out {args.out}")


def _classes_last(args: argparse.Namespace, logits: Any, labels: Any) -> tuple[Any, Any]:
    """The inputs with ``--axis`` of the logits moved last (probability labels: theirs too).

    The losses with class indices take their classes on the last axis only, so every loss is
    computed there; ``np.moveaxis`` keeps the other axes in order, so the losses have the shape
    the library's ``axis=`` gives. Lazy sources move the axis of each slice of rows as it is read.
    """
    from ..files import DataError

    if args.axis is None:
        return logits, labels
    loss = registry.get(args.loss)
    if not loss.class_axis:
        raise DataError(
            f"--axis {args.axis}: only {_names(WITH_CLASS_AXIS)} have a class axis, not "
            f"{args.loss} (drop --axis)"
        )
    ndim = logits.ndim
    if not -ndim <= args.axis < ndim:
        raise DataError(
            f"--axis {args.axis}: {args.logits} has {ndim} axes (shape {tuple(logits.shape)})"
        )
    axis = args.axis % ndim
    if axis == 0:
        raise DataError(
            f"--axis {args.axis}: axis 0 of {args.logits} is its rows; the classes "
            f"must be on another axis (shape {tuple(logits.shape)})"
        )
    if axis == ndim - 1:
        return logits, labels
    if loss.labels == PROBABILITIES:  # labels shaped like the logits
        if tuple(labels.shape) != tuple(logits.shape):  # said before moving, in the files' shapes
            raise DataError(
                f"{args.labels}: shape {tuple(labels.shape)} differs from logits "
                f"{tuple(logits.shape)}"
            )
        labels = _move(labels, axis)
    return _move(logits, axis), labels


def _move(array: Any, axis: int) -> Any:
    """``array`` with ``axis`` last: a view of an in-memory array (the Dask engine scatters it
    once), a lazy wrapper of a source on disk."""
    from ..sources import MovedAxis

    if isinstance(array, np.ndarray):
        return np.moveaxis(array, axis, -1)
    return MovedAxis(array, axis)


def _dask_evaluator(args: argparse.Namespace, stack: contextlib.ExitStack) -> Any:
    """``evaluate_dask`` bound to a client (closed by ``stack``), reporting the workers' peak
    memory on stderr unless ``--quiet``."""
    from . import dask_engine

    client = stack.enter_context(
        dask_engine.connect(args.scheduler, args.workers, args.worker_memory)
    )
    if not args.quiet:
        holder: dict[str, Any] = {}
        # Registered first, so it runs after watch_memory's exit has filled the report (LIFO).
        stack.callback(lambda: _report_memory(holder.get("memory", {})))
        holder["memory"] = stack.enter_context(dask_engine.watch_memory(client))

    return functools.partial(dask_engine.evaluate_dask, client)


def _report_memory(memory: dict[str, dict[str, Any]]) -> None:
    """One stderr line: the workers' peak resident memory against their limit."""
    peaks = [w["peak"] for w in memory.values() if w.get("peak")]
    limits = [w["limit"] for w in memory.values() if w.get("limit")]
    if peaks:
        limit = f" (limit {min(limits) / 2**20:.0f} MiB)" if limits else ""
        restarted = sum(w["restarted"] for w in memory.values())
        sys.stderr.write(
            f"dask: {len(memory)} workers, peak memory {max(peaks) / 2**20:.0f} MiB{limit}, "
            f"{restarted} restarted\n"
        )
