"""The benchmark's results as a CSV (long format), a markdown table of ratios, and a chart."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import files
from .workloads import PEER_GOAL, Workload

SUFFIXES = (".csv", ".md", ".png")  # the outputs: results, ratio table, chart

PEERS = ("torch", "jax", "tensorflow")
FIELDS = ("workload", "loss", "rows", "cols", "dtype", "direction", "impl", "seconds",
          "ratio_to_limit", "quiet_machine")  # fmt: skip


def rows_for(w: Workload, seconds: dict[str, float], quiet: bool) -> list[dict[str, Any]]:
    limit = seconds["limit"]
    return [
        {
            "workload": w.name,
            "loss": w.loss,
            "rows": w.shape[0],
            "cols": w.shape[1],
            "dtype": w.dtype,
            "direction": w.direction,
            "impl": impl,
            "seconds": f"{s:.6g}",
            "ratio_to_limit": f"{s / limit:.3f}",
            "quiet_machine": quiet,
        }
        for impl, s in seconds.items()
    ]


def csv_text(rows: list[dict[str, Any]], env: dict[str, str]) -> str:
    return csv_text_for(rows, env, FIELDS)


def csv_text_for(rows: list[dict[str, Any]], env: dict[str, str], fields: tuple[str, ...]) -> str:
    """The long-format CSV of a benchmark with its own columns: ``# key: value`` header lines
    (the environment), then one line per row."""
    out = io.StringIO()
    for key, value in env.items():
        out.write(f"# {key}: {value}\n")
    writer = csv.DictWriter(out, fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _by_workload(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        table.setdefault(row["workload"], {})[row["impl"]] = row
    return table


def _ours(impls: dict[str, dict[str, Any]]) -> str:
    """logitloss's implementation of a workload: the PyTorch path for loss+grad."""
    return "logitloss-torch" if "logitloss-torch" in impls else "logitloss"


def markdown(rows: list[dict[str, Any]], goals: dict[str, float]) -> str:
    """One line per workload: logitloss against the limit (a loss: its goal), loss+grad against
    the loss alone (its goal), and each peer's time as a multiple of logitloss's (the goal:
    :data:`workloads.PEER_GOAL` or more for the fastest peer). A missed goal says so."""
    head = (
        "| workload | logitloss / limit | goal | loss+grad / loss | torch | jax | tensorflow "
        f"| fastest peer / logitloss (goal {PEER_GOAL:g}x) |"
    )
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    table = _by_workload(rows)
    for name, impls in table.items():
        row = impls[_ours(impls)]
        ours, ratio = float(row["seconds"]), float(row["ratio_to_limit"])
        goal = goals[name]
        if row["direction"] == "loss":
            limit_cell = f"{ratio:.2f}x" + ("" if ratio <= goal else " (missed)")
            goal_cell, grad_cell = f"{goal:.1f}x", "-"
        else:
            limit_cell, goal_cell = f"{ratio:.2f}x", f"{goal:.1f}x the loss"
            loss_name = name.removesuffix(" loss+grad") + " loss"
            alone = table.get(loss_name, {}).get("logitloss")
            grad_cell = "-"
            if alone is not None:
                over = ours / float(alone["seconds"])
                grad_cell = f"{over:.2f}x" + ("" if over <= goal else " (missed)")
        peers = {p: float(impls[p]["seconds"]) / ours for p in PEERS if p in impls}
        best = min(peers.values(), default=math.nan)
        cells = [f"{peers[p]:.1f}x" if p in peers else "-" for p in PEERS]
        best_mark = "" if best >= PEER_GOAL else " (missed)"
        label = name + (" (torch .backward)" if row["impl"] == "logitloss-torch" else "")
        lines.append(
            f"| {label} | {limit_cell} | {goal_cell} | {grad_cell} | {' | '.join(cells)} "
            f"| {best:.1f}x{best_mark} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    """Horizontal bars: each implementation's time as a multiple of the limit, per workload."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = _by_workload(rows)
    impls = ["logitloss", "logitloss-torch", "numpy-stable", *PEERS]
    colors = dict(zip(impls, ["#1b7837", "#5aae61", "#999999", "#d6604d", "#4393c3", "#f4a582"],
                      strict=True))  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(table) * 2 + 1.5))
    height = 0.8 / len(impls)
    labelled: set[str] = set()
    for i, found in enumerate(table.values()):
        for j, impl in enumerate(impls):
            if impl in found:
                label = None if impl in labelled else impl
                labelled.add(impl)
                ratio = float(found[impl]["ratio_to_limit"])
                ax.barh(i + j * height, ratio, height, color=colors[impl], label=label)
    ax.set_yticks([i + 0.4 - height / 2 for i in range(len(table))], list(table))
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1, color="black", linewidth=0.8)
    ax.axvline(1.5, color="black", linewidth=0.8, linestyle="--")
    ax.set_xlabel("time / memory limit (np.add or row sum on the same arrays; log scale)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def write_atomically(path: Path, write: Callable[[Any], None]) -> None:
    """Write through a temporary file beside ``path``, renamed over it only when complete
    (``files.atomic_path``; the type follows from the suffix, see :data:`SUFFIXES`)."""
    with files.atomic_path(path, SUFFIXES) as temporary, open(temporary, "wb") as f:
        write(f)
