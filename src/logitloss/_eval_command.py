"""The ``eval`` command: options, and the run that ties files, evaluation and output together."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

EXAMPLE = (
    "logitloss eval sparse --logits preds.npz:logits --labels preds.npz:labels --json\n"
    "  logitloss eval weighted --logits scores.parquet:a,b,c --labels truth.parquet:a,b,c "
    "--pos-weight 2,1,4 --out losses.parquet"
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


def configure(parser: argparse.ArgumentParser) -> None:
    from ._evaluate import KINDS

    parser.add_argument("loss", choices=KINDS, help="which tf.nn loss")
    parser.add_argument(
        "--logits",
        required=True,
        metavar="PATH[:KEY]",
        help=".npy, .npz member, or CSV/Parquet columns (comma-separated)",
    )
    parser.add_argument(
        "--labels", required=True, metavar="PATH[:KEY]", help="labels, same forms as --logits"
    )
    parser.add_argument(
        "--pos-weight",
        type=_floats,
        metavar="Q[,Q2,...]",
        help="weighted: one pos_weight, or one per class",
    )
    parser.add_argument("--axis", type=int, default=-1, help="softmax: the class axis")
    parser.add_argument(
        "--out",
        type=Path,
        metavar="PATH",
        help="write per-row losses (.npy, .csv or .parquet), atomically",
    )
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--chunk-rows", type=_positive, metavar="N",
                        help="rows per chunk (default: about 64 MiB of logits)")  # fmt: skip


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
        self.parts: list[np.ndarray] = []

    def __call__(self, start: int, losses: np.ndarray) -> None:
        if self.path.suffix.lower() == ".npy":
            if self.memmap is None:
                shape = (self.rows, *losses.shape[1:])
                self.memmap = np.lib.format.open_memmap(
                    self.temporary, mode="w+", dtype=losses.dtype, shape=shape
                )
            self.memmap[start : start + len(losses)] = losses
        else:
            self.parts.append(np.asarray(losses))

    def finish(self) -> None:
        from . import _files

        if self.memmap is not None:
            self.memmap.flush()
            del self.memmap
        elif self.path.suffix.lower() != ".npy" or not self.parts:
            values = np.concatenate(self.parts) if self.parts else np.zeros(0)
            _files.write_to(self.temporary, self.path.suffix.lower(), values)


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
    from . import _evaluate, _files

    logits = _files.load(args.logits)
    labels = _files.load(args.labels)
    options = dict(
        pos_weight=args.pos_weight,
        axis=args.axis,
        chunk_rows=args.chunk_rows,
        progress=_Progress(not args.quiet),
        names=(args.logits, args.labels),
    )
    if args.out is None:
        result = _evaluate.evaluate(args.loss, logits, labels, **options)
    else:
        with _files.atomic_path(args.out) as temporary:
            output = _Output(args.out, temporary, len(logits))
            result = _evaluate.evaluate(args.loss, logits, labels, sink=output, **options)
            output.finish()
    summary = result.as_dict()
    print(json.dumps(_json_ready(summary)) if args.json else _format(summary))
    return 0
