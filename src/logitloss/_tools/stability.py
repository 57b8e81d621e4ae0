"""``logitloss stability``: the error of three formulas against the exact loss, over a sweep.

For each loss of the registry (``logitloss._api.registry``), at every logit of a sweep
(-100..100 and ±inf) and several labels, in one dtype (float32 by default):

- **naive**: the definition written plainly, ``-z log σ(x) - (1 - z) log(1 - σ(x))`` and
  ``-Σ z_j log softmax(x)_j``;
- **TensorFlow**: the formulas of ``tf.nn`` (the seed documents): ``max(x, 0) - x z +
  log(1 + exp(-|x|))``, the weighted ``(1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))`` with
  ``l = 1 + (q - 1) z``, and ``logsumexp(x) - x_j`` with ``logsumexp = m + log Σ exp(x - m)``;
- **logitloss**: the public functions;

each computed in the dtype and measured in ULPs against mpmath (``oracle``). The first two are
``peers``'s; a loss without them shows ``n/a``. Losses with a class axis get rows ``[x, 0]``
(two classes), so the sweep of ``x`` is a sweep of the margin. matplotlib is imported only to
draw the plot.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .._api import registry
from .._api.registry import INDICES, Loss
from . import oracle, peers

EXAMPLE = "logitloss stability --plot docs/stability.png"
METHODS = ("naive", "TensorFlow", "logitloss")
POS_WEIGHT = 4.0
DTYPES = ("float16", "float32", "float64")


def logit_sweep(dtype: np.dtype) -> np.ndarray:
    """-100..100 in steps of 0.5, then ±inf, in ``dtype``."""
    finite = np.linspace(-100.0, 100.0, 401)
    return np.concatenate([[-np.inf], finite, [np.inf]]).astype(dtype)


def label_sweep(dtype: np.dtype) -> np.ndarray:
    """Labels at both ends of [0, 1] and between: 0, the smallest step above 0, 0.3, the largest
    value below 1, 1 (each representable in ``dtype``)."""
    eps = float(np.finfo(dtype).eps)
    return np.array([0.0, eps, 0.3, 1.0 - eps / 2, 1.0], dtype=dtype)


def inputs(loss: Loss, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The logits and dense labels of ``loss`` at logits ``x`` and labels ``z``: ``x`` and ``z``
    themselves for an elementwise loss; with a class axis, rows ``[x, 0]`` with labels
    ``[z, 1 - z]``."""
    if not loss.class_axis:
        return x, z
    return np.stack([x, np.zeros_like(x)], axis=1), np.stack([z, 1 - z], axis=1)


def own_labels(loss: Loss, dense: np.ndarray) -> np.ndarray:
    """Dense labels as ``loss`` takes them: class indices (``argmax``: class 0 for
    ``[1, 0]``) where it takes those."""
    return np.argmax(dense, axis=-1) if loss.labels == INDICES else dense


Formula = Callable[[np.ndarray, np.ndarray, Any], Any]


def formulas(loss: Loss) -> dict[str, Formula]:
    """The formulas compared for ``loss``, by method (``METHODS`` order), each called with
    ``(dense labels, logits, pos_weight)``; a method without a formula for it is left out."""
    peer = peers.peers_of(loss)

    def ours(dense: np.ndarray, x: np.ndarray, q: Any) -> Any:
        return loss.value(own_labels(loss, dense), x, q)

    found = {"naive": peer.textbook, "TensorFlow": peer.tensorflow_formula, "logitloss": ours}
    return {method: f for method, f in found.items() if f is not None}


def sweep(dtype_name: str = "float32") -> dict[str, Any]:
    """Errors in ULPs: ``{loss: {"logits": [...], method: [worst error over labels per logit]}}``
    plus, per loss and method, the worst finite error and the count of wrong NaN/inf results."""
    dtype = np.dtype(dtype_name)
    xs = logit_sweep(dtype)
    zs = label_sweep(dtype)
    out: dict[str, Any] = {"dtype": dtype_name, "pos_weight": POS_WEIGHT, "losses": {}}
    for loss in registry.LOSSES:
        labels = zs[-1:] if loss.labels == INDICES else zs  # class indices: one label (class 0)
        methods = formulas(loss)
        q = dtype.type(POS_WEIGHT) if loss.pos_weight else None
        worst = {m: np.zeros(len(xs)) for m in methods}
        for z in labels:
            x, dense = inputs(loss, xs, np.full_like(xs, z))
            # The exact loss of the inputs' exact binary values (labels as rounded in the dtype).
            exact_values = [
                oracle.exact(loss, xi, zi, POS_WEIGHT)
                for xi, zi in zip(x, own_labels(loss, dense), strict=True)
            ]
            for method, formula in methods.items():
                with np.errstate(all="ignore"):
                    computed = np.asarray(formula(dense, x, q))
                errors = [
                    oracle.ulp_error(float(c), e, dtype_name)
                    for c, e in zip(computed, exact_values, strict=True)
                ]
                worst[method] = np.maximum(worst[method], errors)
        summary = {}
        for method, errors in worst.items():
            finite = errors[np.isfinite(errors)]
            summary[method] = {
                "max_ulp": float(finite.max()) if finite.size else math.nan,
                "wrong_nan_inf": int((~np.isfinite(errors)).sum()),
            }
        out["losses"][loss.name] = {
            "logits": xs.astype(np.float64).tolist(),
            "labels": labels.astype(np.float64).tolist(),
            "errors": {m: errors.tolist() for m, errors in worst.items()},
            "summary": summary,
        }
    return out


def table(result: dict[str, Any]) -> str:
    """The summary as a text table: worst ULP error and wrong NaN/inf results per formula."""
    lines = [
        f"error in ULPs of {result['dtype']} against mpmath; logits -100..100 and ±inf; "
        f"weighted pos_weight {result['pos_weight']:g}; softmax rows [x, 0]",
        f"{'loss':<10}" + "".join(f"{m:>24}" for m in METHODS),
    ]
    for name, data in result["losses"].items():
        cells = []
        for method in METHODS:
            s = data["summary"].get(method)
            if s is None:
                cells.append("n/a")
                continue
            wrong = f" +{s['wrong_nan_inf']} NaN/inf" if s["wrong_nan_inf"] else ""
            cells.append(f"{s['max_ulp']:.3g}{wrong}")
        lines.append(f"{name:<10}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """One panel per loss, two a row: worst error over the labels vs logit, log scale, to
    ``path`` (written atomically: a temporary file, then a rename)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import files

    floor, ceiling = 1e-2, 1e12  # zero error drawn at the floor; NaN/inf at the ceiling
    styles = {
        "naive": dict(color="tab:red", lw=1.2),
        "TensorFlow": dict(color="tab:orange", lw=1.6, ls="--"),
        "logitloss": dict(color="tab:blue", lw=2.2),
    }
    panels = len(result["losses"])
    rows = (panels + 1) // 2
    fig, axes = plt.subplots(
        rows, 2, figsize=(11, 3.75 * rows), sharex=True, sharey=True, squeeze=False
    )
    for ax in axes.ravel()[panels:]:
        ax.set_visible(False)
    labels_shown = False
    for ax, (name, data) in zip(axes.ravel()[:panels], result["losses"].items(), strict=True):
        loss = registry.get(name)
        ax.set_title(_title(loss, labels_shown), fontsize=10)
        labels_shown |= not loss.class_axis
        xs = np.asarray(data["logits"])
        shown = np.clip(xs, -110, 110)  # ±inf drawn at ±110
        infinite = np.isinf(xs)
        for method in METHODS:
            if method not in data["errors"]:
                continue
            errors = np.asarray(data["errors"][method])
            y = np.where(np.isfinite(errors), np.maximum(errors, floor), ceiling)
            # Finite logits as a line; x = ±inf as separate markers, not joined to x = ±100.
            ax.plot(shown[~infinite], y[~infinite], label=method, **styles[method])
            ax.plot(shown[infinite], y[infinite], ls="none", marker="o", ms=6,
                    mfc="none" if method == "TensorFlow" else styles[method]["color"],
                    mec=styles[method]["color"])  # fmt: skip
        ax.axhline(1.0, color="gray", lw=0.8, ls=":")
        ax.set_yscale("log")
        ax.set_ylim(floor / 2, ceiling * 5)
        ax.set_xticks([-110, -50, 0, 50, 110], ["-inf", "-50", "0", "50", "+inf"])
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"error, ULPs of {result['dtype']}")
    for ax in axes[-1]:
        ax.set_xlabel("logit x (softmax: margin of [x, 0])")
    axes[0, 0].legend(loc="center left", fontsize=9)
    fig.suptitle(
        f"Error against mpmath, worst over labels, {result['dtype']} "
        f"(top edge: NaN or inf where the loss is finite; bottom edge: exact; dotted: 1 ULP)",
        fontsize=10,
    )
    fig.tight_layout()
    path = Path(path)
    with files.atomic_path(path, suffixes=(".png",)) as temporary:
        fig.savefig(temporary, format="png", dpi=110)
    plt.close(fig)


def _title(loss: Loss, labels_shown: bool) -> str:
    """A panel's title: the loss and its inputs (the labels of the elementwise losses named in
    the first of their panels only)."""
    if loss.class_axis:
        labels = "class 0" if loss.labels == INDICES else "labels [z, 1-z]"
        return f"{loss.title}, rows [x, 0], {labels}"
    weight = f" (pos_weight {POS_WEIGHT:g})" if loss.pos_weight else ""
    labels = "same labels" if labels_shown else "labels 0, eps, 0.3, 1-eps/2, 1"
    return f"{loss.title}{weight}: {labels}"


def configure(parser: argparse.ArgumentParser) -> None:
    """``--dtype``, ``--json``, ``--plot PATH``."""
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="default float32")
    parser.add_argument("--json", action="store_true", help="print the errors as one JSON object")
    parser.add_argument("--plot", type=Path, metavar="PATH", help="write the plot (PNG)")


def run(args: argparse.Namespace) -> int:
    """Sweep, print the table (or JSON), write the plot if asked; 0 on success."""
    from .files import check_output, require

    # Everything the run needs, checked before the sweep's seconds of mpmath, not after them.
    require("mpmath", "logitloss stability")
    if args.plot is not None:
        check_output(args.plot, (".png",))
        require("matplotlib", "--plot")
    result = sweep(args.dtype)
    if args.plot is not None:
        plot(result, args.plot)
    if args.json:
        print(json.dumps(_json_ready(result)))
    else:
        print(table(result))
    sys.stdout.flush()
    return 0


def _json_ready(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    return value
