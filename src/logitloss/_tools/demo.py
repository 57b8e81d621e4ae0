"""``logitloss demo``: TensorFlow's documented outputs beside logitloss's, and where formulas fail.

Part 1 replays two published TensorFlow examples (the project's seed documents 001, a Q&A on
sigmoid and softmax cross-entropy, and 000, a tutorial on the weighted loss; see
shared/seeds/README.md), with the outputs TensorFlow printed there kept below as literal
constants: documented output, an oracle independent of this package. The printed text speaks of
"the Q&A" and "the tutorial", not of seeds, which mean nothing to a user. Part 2 evaluates the
textbook formula, TensorFlow's documented stable formula (written out in NumPy: ``peers``) and
logitloss on inputs where the first two go wrong in float32. With mpmath installed every value
is compared with the exact loss, in units in the last place (ULPs) of float32; without it the
demo still runs and says so.

Only NumPy is required. Nothing here is imported by ``import logitloss``.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import numpy as np

from .. import (
    __version__,
    sigmoid_cross_entropy_with_logits,
    softmax_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits,
)
from .._api import registry
from . import oracle, peers

F32 = np.float32
FMT = "float32"
NO_MPMATH = "install mpmath"
# The column of the outputs as TensorFlow printed them in the published examples.
TF_PRINTED = "TensorFlow printed"

# --- Seed 001: sigmoid_cross_entropy_with_logits and softmax_cross_entropy_with_logits ---------

SIGMOID_LABELS = ((0.0, 0.0, 0.0, 1.0, 0.0), (1.0, 0.0, 0.0, 0.0, 0.0))
SIGMOID_LOGITS = ((0.2, 0.2, 0.2, 0.2, 0.2), (0.3, 0.3, 0.2, 0.1, 0.1))
# print(prob4.eval(feed_dict)), prob4 = tf.nn.sigmoid_cross_entropy_with_logits(p, logit_q).
TF_SIGMOID_PROB4 = (
    ("0.7981388", "0.7981388", "0.7981388", "0.59813893", "0.7981388"),
    ("0.55435514", "0.85435534", "0.7981388", "0.74439663", "0.74439663"),
)

SOFTMAX_LABELS = ((0.0, 1.0), (1.0, 0.0), (1.0, 0.0))
SOFTMAX_LOGITS = ((0.2, 0.8), (0.7, 0.3), (0.5, 0.5))
# print(prob2.eval(feed_dict)), prob2 = tf.nn.softmax_cross_entropy_with_logits(p, logit_q).
TF_SOFTMAX_PROB2 = ("0.43748799", "0.51301527", "0.69314718")

# --- Seed 000: weighted_cross_entropy_with_logits(logits=rand(3, 3), targets=..., pos_weight=2)

WEIGHTED_TARGETS = ((1.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0, 1.0))
WEIGHTED_POS_WEIGHT = 2.0
# print(sess.run(output)); the logits were np.random.rand(3, 3) and are not printed.
TF_WEIGHTED_OUTPUT = (
    ("1.04947078", "0.89594436", "0.92146152"),
    ("0.70252579", "1.00673866", "1.08856964"),
    ("1.07195592", "1.18525708", "1.04106498"),
)


def exact_available() -> bool:
    """Whether mpmath can be imported, for the exact column and the errors in ULPs."""
    return importlib.util.find_spec("mpmath") is not None


def fmt32(value: Any) -> str:
    """The shortest text that reads back as the same float32 (``'0.79813886'``, ``'inf'``)."""
    return str(F32(value))


def fmt_list(values: Sequence[Any] | float) -> str:
    """Numbers as the examples wrote them (``[0, 1]``, ``[0.2, 0.8]``), nested sequences too."""
    if isinstance(values, Sequence):
        return "[" + ", ".join(fmt_list(v) for v in values) + "]"
    return f"{values:g}"


def fmt_exact(value: Any) -> str:
    """An mpmath value to 10 significant digits."""
    return f"{float(value):.10g}"


def fmt_ulps(ulps: float) -> str:
    """An error in ULPs, compactly: ``0.24``, ``1.2``, ``4.2e+06``, ``inf``."""
    if math.isinf(ulps):
        return "inf"
    return f"{ulps:.2g}" if ulps < 100 else f"{ulps:.1e}"


def table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write left-aligned columns separated by two spaces (cells never hold two spaces)."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        cells = (str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        out.write("    " + "  ".join(cells).rstrip() + "\n")
    out.write("\n")


def _errors(values: Sequence[Any], exact: Any) -> list[str]:
    """The error in float32 ULPs of each value against ``exact``."""
    return [fmt_ulps(oracle.ulp_error(float(v), exact, FMT)) for v in values]


# --- Part 1: the published examples ---------------------------------------------------------------


def _header(columns: Sequence[str], with_exact: bool) -> list[str]:
    """The header of a table of TensorFlow's values (among ``columns``) beside logitloss's."""
    return [*columns, "logitloss", *(["exact", "TF ulp", "ours ulp"] if with_exact else [])]


def _beside(cells: list[str], tf: Any, ours: Any, exact: Any) -> list[str]:
    """A line of that table: ``cells``, logitloss's value and, unless ``exact`` is None, the
    exact loss and the errors of TensorFlow's value and logitloss's in ULPs."""
    line = [*cells, fmt32(ours)]
    if exact is not None:
        line += [fmt_exact(exact), *_errors((tf, ours), exact)]
    return line


def _example(
    function: Callable[..., Any], labels: Sequence[Any], logits: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A published example's labels and logits in float32, and logitloss's ``function`` of
    them, called as the example calls ``tf.nn``."""
    z, x = np.array(labels, dtype=F32), np.array(logits, dtype=F32)
    return z, x, function(labels=z, logits=x)


def _sigmoid_example(out: TextIO, with_exact: bool) -> None:
    """The Q&A's (seed 001) ``prob4`` table and its row sums (``loss2`` of the question)."""
    labels, logits, ours = _example(
        sigmoid_cross_entropy_with_logits, SIGMOID_LABELS, SIGMOID_LOGITS
    )
    out.write(
        "1a. tf.nn.sigmoid_cross_entropy_with_logits(labels=p, logits=logit_q), float32\n"
        "    The example of a Q&A on TensorFlow's sigmoid and softmax cross-entropy:\n"
        f"    p = {fmt_list(SIGMOID_LABELS)}\n"
        f"    logit_q = {fmt_list(SIGMOID_LOGITS)}\n\n"
    )
    rows = []
    for (i, j), value in np.ndenumerate(ours):
        printed = TF_SIGMOID_PROB4[i][j]
        cells = [f"[{i},{j}]", fmt_list(SIGMOID_LABELS[i][j]), fmt32(logits[i, j]), printed]
        exact = oracle.logistic(float(logits[i, j]), float(labels[i, j])) if with_exact else None
        rows.append(_beside(cells, F32(printed), value, exact))
    table(out, _header(["element", "p", "logit_q", TF_PRINTED], with_exact), rows)
    _sigmoid_row_sums(out, labels, logits, ours, with_exact)


def _sigmoid_row_sums(
    out: TextIO, labels: np.ndarray, logits: np.ndarray, ours: np.ndarray, with_exact: bool
) -> None:
    """``loss2 = reduce_sum(sigmoid_cross_entropy_with_logits(p, logit_q), 1)``."""
    out.write(
        "    loss2 = reduce_sum(prob4, axis=1). The Q&A prints no value for it; the second\n"
        "    column sums the row TensorFlow printed, in float32.\n\n"
    )
    tf_sums = np.array(TF_SIGMOID_PROB4, dtype=F32).sum(axis=1)
    rows = []
    for i, value in enumerate(ours.sum(axis=1)):
        exact = None
        if with_exact:
            pairs = zip(logits[i], labels[i], strict=True)
            exact = sum(oracle.logistic(float(x), float(z)) for x, z in pairs)
        rows.append(_beside([str(i), fmt32(tf_sums[i])], tf_sums[i], value, exact))
    table(out, _header(["row", "TensorFlow's row summed"], with_exact), rows)


def _softmax_example(out: TextIO, with_exact: bool) -> None:
    """The Q&A's (seed 001) two-class softmax example (``prob2``)."""
    labels, logits, ours = _example(
        softmax_cross_entropy_with_logits, SOFTMAX_LABELS, SOFTMAX_LOGITS
    )
    out.write(
        "1b. tf.nn.softmax_cross_entropy_with_logits(labels=p, logits=logit_q), float32\n"
        "    The same Q&A; TensorFlow printed [ 0.43748799  0.51301527  0.69314718]\n\n"
    )
    rows = []
    for i, value in enumerate(ours):
        printed = TF_SOFTMAX_PROB2[i]
        cells = [str(i), fmt_list(SOFTMAX_LABELS[i]), fmt_list(SOFTMAX_LOGITS[i]), printed]
        exact = None
        if with_exact:
            exact = oracle.softmax([float(v) for v in logits[i]], [float(v) for v in labels[i]])
        rows.append(_beside(cells, F32(printed), value, exact))
    table(out, _header(["row", "p", "logit_q", TF_PRINTED], with_exact), rows)


def weighted_loss64(x: float, z: float, q: float) -> float:
    """``q z softplus(-x) + (1 - z) softplus(x)`` in float64, accurate for ``0 <= x < 1``."""
    softplus_neg = math.log1p(math.exp(-x))
    return q * z * softplus_neg + (1 - z) * (x + softplus_neg)


def recover_logit(loss: float, z: float, q: float, iterations: int = 80) -> float:
    """The ``x`` in ``[0, 1]`` whose weighted loss (labels 0 or 1) is ``loss``, by bisection.

    The loss is monotonic in ``x`` for a label of 0 (increasing) or 1 (decreasing).
    """
    lo, hi = 0.0, 1.0
    increasing = weighted_loss64(1.0, z, q) > weighted_loss64(0.0, z, q)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if (weighted_loss64(mid, z, q) < loss) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def recovered_logits() -> np.ndarray:
    """The tutorial's (seed 000) unprinted random logits, recovered from its printed output,
    as float32."""
    return np.array(
        [
            [recover_logit(float(t), z, WEIGHTED_POS_WEIGHT) for t, z in zip(row, zs, strict=True)]
            for row, zs in zip(TF_WEIGHTED_OUTPUT, WEIGHTED_TARGETS, strict=True)
        ],
        dtype=F32,
    )


def _weighted_example(out: TextIO, with_exact: bool) -> None:
    """The tutorial (seed 000): each printed value reproduced at the logit recovered from it."""
    logits = recovered_logits()
    # TensorFlow 1's spelling `targets=`, as in the tutorial.
    ours = weighted_cross_entropy_with_logits(
        logits=logits, targets=WEIGHTED_TARGETS, pos_weight=WEIGHTED_POS_WEIGHT
    )
    out.write(
        "1c. tf.nn.weighted_cross_entropy_with_logits(logits=input_data, targets=...,\n"
        "                                             pos_weight=2.0), float32\n"
        "    The example of a tutorial on this function. Its logits were np.random.rand(3, 3)\n"
        "    and are not printed: each logit x is recovered from its printed loss by bisection\n"
        "    on [0, 1) (float64, then rounded to float32), and logitloss is evaluated at that x\n"
        "    with TensorFlow 1's spelling `targets=`, as in the tutorial.\n"
        "    diff: logitloss minus the printed value, in float32 ULPs.\n\n"
    )
    header = ["element", "target", "x (recovered)", TF_PRINTED, "logitloss", "diff ulp"]
    header += ["exact at x", "ours ulp"] if with_exact else []
    rows = []
    for (i, j), value in np.ndenumerate(ours):
        printed = F32(TF_WEIGHTED_OUTPUT[i][j])
        diff = abs(float(value) - float(printed)) / float(np.spacing(printed))
        row = [f"[{i},{j}]", fmt_list(WEIGHTED_TARGETS[i][j]), fmt32(logits[i, j])]
        row += [TF_WEIGHTED_OUTPUT[i][j], fmt32(value), fmt_ulps(diff)]
        if with_exact:
            z = WEIGHTED_TARGETS[i][j]
            exact = oracle.logistic(float(logits[i, j]), z, WEIGHTED_POS_WEIGHT)
            row += [fmt_exact(exact), *_errors((value,), exact)]
        rows.append(row)
    table(out, header, rows)


# --- Part 2: where the formulas fail -------------------------------------------------------------


Method = Callable[[np.ndarray, np.ndarray, Any], Any]


@dataclass(frozen=True)
class Case:
    """One input where a formula fails; ``loss`` is the registry's name, ``logits`` and
    ``labels`` are 1-d (elementwise for the losses without a class axis, one row of classes for
    the others)."""

    loss: str
    inputs: str
    logits: tuple[float, ...]
    labels: tuple[float, ...]
    pos_weight: float | None = None

    def arrays(self) -> tuple[np.ndarray, np.ndarray, Any]:
        """The inputs in float32."""
        q = None if self.pos_weight is None else F32(self.pos_weight)
        return np.array(self.logits, dtype=F32), np.array(self.labels, dtype=F32), q

    def methods(self) -> tuple[Method, Method, Method]:
        """The naive formula, TensorFlow's formula (``peers``) and logitloss for this loss, each
        called with ``(logits, labels, pos_weight)``."""
        loss = registry.get(self.loss)
        peer = peers.peers_of(loss)
        naive, tensorflow = peer.textbook, peer.tensorflow_formula
        assert naive is not None and tensorflow is not None, self.loss
        return (
            lambda x, z, q: naive(z, x, q),
            lambda x, z, q: tensorflow(z, x, q),
            lambda x, z, q: loss.value(z, x, q),
        )

    def values(self) -> list[np.float32]:
        """The float32 result of each method, NumPy's warnings (overflow, 0 * inf) silenced."""
        x, z, q = self.arrays()
        with np.errstate(all="ignore"):
            return [F32(np.reshape(method(x, z, q), -1)[0]) for method in self.methods()]

    def exact(self) -> Any:
        """The exact loss (mpmath) at the float32 inputs."""
        loss = registry.get(self.loss)
        x, z, q = self.arrays()
        if loss.class_axis:
            return oracle.exact(loss, x, z, q)
        return oracle.exact(loss, x[0], z[0], q)


MAX32 = float(np.finfo(F32).max)

FAILURE_CASES = (
    Case("sigmoid", "x=24, z=1-2^-23", (24.0,), (1 - 2.0**-23,)),
    Case("sigmoid", "x=+inf, z=1", (math.inf,), (1.0,)),
    Case("weighted", "x=-20, z=0, q=2", (-20.0,), (0.0,), 2.0),
    Case("weighted", "x=-max, z=0.5, q=2", (-MAX32,), (0.5,), 2.0),
    Case("softmax", "x=[20, 0], z=[1, 0]", (20.0, 0.0), (1.0, 0.0)),
    Case("softmax", "x=[+inf, 0], z=[1, 0]", (math.inf, 0.0), (1.0, 0.0)),
)


def _failure_table(out: TextIO, with_exact: bool) -> None:
    """Naive formula, TensorFlow's formula, logitloss and the exact loss on each failure case."""
    out.write(
        f"2. Where the formulas fail, float32 (max = largest float32 = {fmt32(MAX32)})\n"
        "   naive:      -q z log(sigmoid(x)) - (1-z) log(1-sigmoid(x)), q = 1 for sigmoid;\n"
        "               -sum z log(softmax(x)), softmax(x) = exp(x) / sum(exp(x))\n"
        "   TF formula: the stable forms TensorFlow documents, in NumPy (log1p as in its code):\n"
        "               sigmoid  max(x, 0) - x z + log(1 + exp(-|x|))\n"
        "               weighted (1-z) x + l (log(1 + exp(-|x|)) + max(-x, 0)), l = 1 + (q-1) z\n"
        "               softmax  sum z (log(sum(exp(x - m))) - (x - m)), m = max(x)\n"
        "               (on these inputs they give what tf.nn gives)\n"
    )
    if with_exact:
        out.write("   In parentheses: the error in float32 ULPs.\n")
    out.write("\n")
    header = ["loss", "inputs", "naive", "TF formula", "logitloss", "exact"]
    rows = []
    for case in FAILURE_CASES:
        values = case.values()
        if with_exact:
            exact = case.exact()
            cells = [
                f"{fmt32(v)} ({e})" for v, e in zip(values, _errors(values, exact), strict=True)
            ]
            cells.append(fmt_exact(exact))
        else:
            cells = [*(fmt32(v) for v in values), NO_MPMATH]
        rows.append([case.loss, case.inputs, *cells])
    table(out, header, rows)


def run_demo(out: TextIO) -> None:
    """Write the demo: the published examples (part 1) and where the formulas fail (part 2)."""
    with_exact = exact_available()
    out.write(f"logitloss {__version__}: TensorFlow's documented outputs beside logitloss's\n")
    if with_exact:
        out.write("(ulp: error in units in the last place of float32 against the exact loss)\n\n")
    else:
        out.write("(install mpmath for the exact losses and the errors in ULPs)\n\n")
    out.write("1. Published TensorFlow examples, beside the outputs TensorFlow printed there\n\n")
    _sigmoid_example(out, with_exact)
    _softmax_example(out, with_exact)
    _weighted_example(out, with_exact)
    _failure_table(out, with_exact)


def configure(parser: argparse.ArgumentParser) -> None:
    """``logitloss demo`` takes no options."""


def run(args: argparse.Namespace) -> int:
    """Print the demo to standard output; 0."""
    run_demo(sys.stdout)
    return 0
