"""``logitloss stability``: the error of three formulas against the exact loss, over a sweep.

For each loss, at every logit of a sweep (-100..100 and ±inf) and several labels, in one dtype
(float32 by default):

- **naive**: the definition written plainly, ``-z log σ(x) - (1 - z) log(1 - σ(x))`` and
  ``-Σ z_j log softmax(x)_j``;
- **TensorFlow**: the formulas of ``tf.nn`` (the seed documents): ``max(x, 0) - x z +
  log(1 + exp(-|x|))``, the weighted ``(1 - z) x + l (log(1 + exp(-|x|)) + max(-x, 0))`` with
  ``l = 1 + (q - 1) z``, and ``logsumexp(x) - x_j`` with ``logsumexp = m + log Σ exp(x - m)``;
- **logitloss**: the public functions;

each computed in the dtype and measured in ULPs against mpmath (``_exact``). Softmax rows are
``[x, 0]`` (two classes), so the sweep of ``x`` is a sweep of the margin. matplotlib is imported
only to draw the plot.
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

from .._api import tf_nn
from . import oracle

EXAMPLE = "logitloss stability --plot docs/stability.png"
LOSSES = ("sigmoid", "weighted", "softmax", "sparse")
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


def _sigmoid(x: np.ndarray) -> np.ndarray:
    one = np.ones_like(x)
    return one / (one + np.exp(-x))


def naive(kind: str, x: np.ndarray, z: np.ndarray, q: float) -> np.ndarray:
    """The definition, written plainly in the inputs' dtype."""
    with np.errstate(all="ignore"):
        if kind in ("sigmoid", "weighted"):
            p = _sigmoid(x)
            w = x.dtype.type(q if kind == "weighted" else 1.0)
            return -w * z * np.log(p) - (1 - z) * np.log(1 - p)
        rows, labels = _softmax_rows(kind, x, z)
        e = np.exp(rows)
        softmax = e / e.sum(axis=1, keepdims=True)
        return -(labels * np.log(softmax)).sum(axis=1)


def tensorflow(kind: str, x: np.ndarray, z: np.ndarray, q: float) -> np.ndarray:
    """TensorFlow's formulas (sigmoid, weighted: ``nn_impl.py``; softmax: logsumexp), in the
    inputs' dtype."""
    with np.errstate(all="ignore"):
        if kind == "sigmoid":
            return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))
        if kind == "weighted":
            log_weight = 1 + (x.dtype.type(q) - 1) * z
            tail = np.log1p(np.exp(-np.abs(x))) + np.maximum(-x, 0)
            return (1 - z) * x + log_weight * tail
        rows, labels = _softmax_rows(kind, x, z)
        m = rows.max(axis=1, keepdims=True)
        lse = m + np.log(np.exp(rows - m).sum(axis=1, keepdims=True))
        return (labels * (lse - rows)).sum(axis=1)


def ours(kind: str, x: np.ndarray, z: np.ndarray, q: float) -> np.ndarray:
    """logitloss's public functions."""
    if kind == "sigmoid":
        return tf_nn.sigmoid_cross_entropy_with_logits(z, x)
    if kind == "weighted":
        return tf_nn.weighted_cross_entropy_with_logits(z, x, x.dtype.type(q))
    rows, labels = _softmax_rows(kind, x, z)
    if kind == "softmax":
        return tf_nn.softmax_cross_entropy_with_logits(labels, rows)
    return tf_nn.sparse_softmax_cross_entropy_with_logits(np.zeros(len(x), np.int64), rows)


def _softmax_rows(kind: str, x: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``[x, 0]`` with labels ``[z, 1 - z]`` (sparse: class 0, i.e. ``[1, 0]``)."""
    rows = np.stack([x, np.zeros_like(x)], axis=1)
    first = np.ones_like(z) if kind == "sparse" else z
    return rows, np.stack([first, 1 - first], axis=1)


def exact(kind: str, x: float, z: float, q: float, other: float) -> Any:
    """The exact loss (mpmath) of the inputs' exact binary values; ``other`` is the softmax
    label of class 1 (``1 - z`` as rounded in the dtype, as the formulas receive it)."""
    if kind == "sigmoid":
        return oracle.logistic(x, z)
    if kind == "weighted":
        return oracle.logistic(x, z, q)
    if kind == "sparse":
        return oracle.sparse_softmax([x, 0.0], 0)
    return oracle.softmax([x, 0.0], [z, other])


FORMULAS: dict[str, Callable[[str, np.ndarray, np.ndarray, float], np.ndarray]] = {
    "naive": naive,
    "TensorFlow": tensorflow,
    "logitloss": ours,
}


def sweep(dtype_name: str = "float32") -> dict[str, Any]:
    """Errors in ULPs: ``{loss: {"logits": [...], method: [worst error over labels per logit]}}``
    plus, per loss and method, the worst finite error and the count of wrong NaN/inf results."""
    dtype = np.dtype(dtype_name)
    xs = logit_sweep(dtype)
    zs = label_sweep(dtype)
    out: dict[str, Any] = {"dtype": dtype_name, "pos_weight": POS_WEIGHT, "losses": {}}
    for kind in LOSSES:
        labels = zs[-1:] if kind == "sparse" else zs  # sparse: one label (class 0)
        worst = {m: np.zeros(len(xs)) for m in METHODS}
        for z in labels:
            zcol = np.full_like(xs, z)
            other = float(1 - z)  # class 1's softmax label, rounded in the dtype
            exact_values = [exact(kind, float(x), float(z), POS_WEIGHT, other) for x in xs]
            for method, formula in FORMULAS.items():
                computed = np.asarray(formula(kind, xs, zcol, POS_WEIGHT))
                errors = [
                    oracle.ulp_error(float(c), e, dtype_name)
                    for c, e in zip(computed, exact_values, strict=True)
                ]
                worst[method] = np.maximum(worst[method], errors)
        summary = {}
        for method in METHODS:
            errors = worst[method]
            finite = errors[np.isfinite(errors)]
            summary[method] = {
                "max_ulp": float(finite.max()) if finite.size else math.nan,
                "wrong_nan_inf": int((~np.isfinite(errors)).sum()),
            }
        out["losses"][kind] = {
            "logits": xs.astype(np.float64).tolist(),
            "labels": labels.astype(np.float64).tolist(),
            "errors": {m: worst[m].tolist() for m in METHODS},
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
    for kind, data in result["losses"].items():
        cells = []
        for method in METHODS:
            s = data["summary"][method]
            wrong = f" +{s['wrong_nan_inf']} NaN/inf" if s["wrong_nan_inf"] else ""
            cells.append(f"{s['max_ulp']:.3g}{wrong}")
        lines.append(f"{kind:<10}" + "".join(f"{c:>24}" for c in cells))
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    """Four panels (one per loss): worst error over the labels vs logit, log scale, to ``path``
    (written atomically: a temporary file, then a rename)."""
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
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True, sharey=True)
    for ax, (kind, data) in zip(axes.ravel(), result["losses"].items(), strict=True):
        xs = np.asarray(data["logits"])
        shown = np.clip(xs, -110, 110)  # ±inf drawn at ±110
        infinite = np.isinf(xs)
        for method in METHODS:
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
        ax.set_title(_TITLES[kind], fontsize=10)
        ax.set_xticks([-110, -50, 0, 50, 110], ["-inf", "-50", "0", "50", "+inf"])
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"error, ULPs of {result['dtype']}")
    for ax in axes[1]:
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


_TITLES = {
    "sigmoid": "sigmoid: labels 0, eps, 0.3, 1-eps/2, 1",
    "weighted": f"weighted (pos_weight {POS_WEIGHT:g}): same labels",
    "softmax": "softmax, rows [x, 0], labels [z, 1-z]",
    "sparse": "sparse softmax, rows [x, 0], class 0",
}


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
