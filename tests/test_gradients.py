"""The exact gradient functions (``*_grad``) against independent oracles.

- mpmath (``logitloss._tools.oracle``, from the definitions) on a grid over each dtype's whole range,
  for every function and every ``wrt``, and on hypothesis-drawn inputs: 1 ULP of the result for
  float16, bfloat16 and float32 w.r.t. the logits, 8 "scale-ULP" for float64 (ULPs of the
  larger of the two terms that cancel, the error every formula makes near the gradient's zero);
- the exact limits at infinite logits, NaN in -> NaN out;
- ``upstream`` (scalar, per row, broadcast) and the reductions of broadcast arguments
  (``pos_weight`` per class, broadcast softmax labels);
- central finite differences of the losses (float64), and ``scipy.special`` where it is exact;
- every error message; array-api-strict and PyTorch tensors in, the same kind out;
- the peers' documented gradient failures, pinned against the real TensorFlow
  (``tf.GradientTape``), PyTorch (autograd) and optax (``jax.grad``), with ours right.

Where logitloss misses a promised bound the case is an ``xfail(strict=True)`` with the inputs
and the error measured, so that a fix shows up as an unexpected pass.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from conftest import np_dtype
from hypothesis import given, settings
from hypothesis import strategies as st

import logitloss
from logitloss import (
    sigmoid_cross_entropy_with_logits,
    sigmoid_cross_entropy_with_logits_grad,
    softmax_cross_entropy_with_logits,
    softmax_cross_entropy_with_logits_grad,
    sparse_softmax_cross_entropy_with_logits,
    sparse_softmax_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits_grad,
)
from logitloss._tools import oracle

pytest.importorskip("mpmath")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

INF, NAN = math.inf, math.nan
DTYPES = ("float16", "bfloat16", "float32", "float64")
NARROW = ("float16", "bfloat16", "float32")
KERNEL_SIZE = 16384  # NumPy arrays this large take the numba kernels
ULP_BOUND = 1.0  # narrow dtypes, w.r.t. the logits: ULPs of the result
SCALE_BOUND = 8.0  # float64: ULPs of the scale
POS_WEIGHTS = (0.0, 1e-3, 0.5, 1.0, 2.0, 30.0)
LOGISTIC_WRT = ("logits", "labels", "pos_weight")


# --------------------------------------------------------------------------- grids


def finfo(dtype: str) -> Any:
    if dtype == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)
    return np.finfo(dtype)


def rounded(values: Sequence[float], dtype: str) -> list[float]:
    """``values`` rounded to ``dtype`` (as Python floats), in order, without duplicates
    (``-0.0`` is kept apart from ``0.0``; values beyond the range become infinities)."""
    with np.errstate(over="ignore"):
        cast = np.asarray(values, dtype=np.float64).astype(np_dtype(dtype)).astype(np.float64)
    seen: dict[str, float] = {}
    for v in cast.tolist():
        seen.setdefault(float(v).hex(), float(v))
    return list(seen.values())


def neighbours(value: float, dtype: str) -> list[float]:
    """The value of ``dtype`` nearest ``value`` (positive) and the two next to it."""
    dt = np_dtype(dtype)
    bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[np.dtype(dt).itemsize]
    word = np.array([value], dtype=dt).view(bits)
    near = np.concatenate([word - bits(1), word, word + bits(1)])
    return near.view(dt).astype(np.float64).tolist()


def logit_grid(dtype: str) -> list[float]:
    """0, +-0, the smallest subnormal and normal, 1e-10, the neighbourhood of ln 3 (where the
    formulas change branch), moderate values, the exp thresholds 17/24/40/88/700/745 where the
    dtype has them, the largest finite value and the infinities."""
    fi = finfo(dtype)
    big = float(fi.max)
    magnitudes = [
        float(fi.smallest_subnormal), float(fi.tiny), 1e-10, 1e-5, 0.1, 0.5,
        *neighbours(math.log(3.0), dtype), 1.0, 2.0, 5.0, 10.0, 17.0, 24.0, 40.0, 88.0,
        100.0, 700.0, 745.0, 1e4, big / 2, big,
    ]  # fmt: skip
    finite = [m for m in rounded([m for m in magnitudes if m <= big], dtype) if m != 0]
    return [0.0, -0.0, *finite, *(-m for m in finite), INF, -INF]


def label_grid(dtype: str) -> list[float]:
    """0, 1, 0.5 and labels near 0 and 1 (eps, the smallest normal and subnormal, 1 - eps)."""
    fi = finfo(dtype)
    eps = float(fi.eps)
    near_zero = [eps, float(fi.tiny), float(fi.smallest_subnormal), 1e-3]
    return rounded([0.0, 1.0, 0.5, 0.25, 0.9, *near_zero, 1 - eps / 2, 1 - eps], dtype)


def as_array(values: Any, dtype: str) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).astype(np_dtype(dtype))


def floats(a: Any) -> list:
    return np.asarray(a).astype(np.float64).tolist()


def is_normal(value: Any, dtype: str) -> bool:
    """``value`` is 0 or at least the smallest normal number of ``dtype``."""
    return value == 0 or abs(value) >= 2.0 ** oracle.FORMATS[dtype][1]


# --------------------------------------------------------------------------- oracles


@functools.cache
def exact_logistic(x: float, z: float, q: float, wrt: str) -> tuple[Any, Any]:
    """The exact gradient and its scale (cached: the grids share many points)."""
    return oracle.logistic_grad(x, z, q, wrt), oracle.logistic_grad_scale(x, z, q, wrt)


@functools.cache
def exact_softmax(x: tuple, z: tuple, wrt: str) -> tuple[list, list]:
    return oracle.softmax_grad(x, z, wrt), oracle.softmax_grad_scale(x, z, wrt)


def deep_cancellation(exact: Any, scale: Any, dtype: str) -> bool:
    """Whether the gradient cancels so deeply that float64 cannot promise 1 ULP of it in
    ``dtype``: ``|exact| < 2^(p - 49) scale`` (``p`` the dtype's precision), where 8 float64
    rounding errors of the scale exceed half an ULP of the result. bfloat16 and float32 reach
    such points (float16's range is too narrow); see the misses pinned below."""
    if dtype not in ("bfloat16", "float32") or scale == 0 or not math.isfinite(scale):
        return False
    precision = oracle.FORMATS[dtype][0]
    return bool(abs(exact) < scale * 2.0 ** (precision - 49))


class Errors:
    """The errors of computed gradients against the oracle, with the worst inputs.

    With ``exempt_deep``, points of :func:`deep_cancellation` are held to the scale-ULP bound
    only (their ULP error is kept apart, in ``deep_ulp``)."""

    def __init__(self, dtype: str, *, exempt_deep: bool = False) -> None:
        self.dtype = dtype
        self.exempt_deep = exempt_deep
        self.ulp = 0.0  # ULP of the result (all points but the exempt ones)
        self.deep_ulp = 0.0  # ULP of the result at the exempt points
        self.deep_points = 0
        self.scale_ulp = 0.0  # scale-ULP, points with a normal (or zero) scale
        self.scale_ulp_subnormal = 0.0  # scale-ULP, points with a subnormal scale
        self.worst: dict[str, str] = {}
        self.failures: list[str] = []  # NaN where finite, wrong limits, wrong infinities
        self.points = 0

    def add(self, computed: float, exact: Any, scale: Any, where: str) -> None:
        self.points += 1
        u = oracle.ulp_error(computed, exact, self.dtype)
        if math.isinf(u):
            self.failures.append(f"{where}: {computed} (exact {exact})")
            return
        s = oracle.scale_ulp_error(computed, exact, scale, self.dtype)
        text = f"{where}: {computed!r} (exact {_fmt(exact)})"
        if self.exempt_deep and deep_cancellation(exact, scale, self.dtype):
            self.deep_points += 1
            if u > self.deep_ulp:
                self.deep_ulp, self.worst["deep_ulp"] = u, text
        elif u > self.ulp:
            self.ulp, self.worst["ulp"] = u, text
        kind = "scale_ulp" if is_normal(scale, self.dtype) else "scale_ulp_subnormal"
        if s > getattr(self, kind):
            setattr(self, kind, s)
            self.worst[kind] = text

    def check(self, *, ulp: float | None, scale_ulp: float) -> None:
        """No failure, ULP of the result within ``ulp`` (if given), scale-ULP (normal scales)
        within ``scale_ulp``."""
        assert self.points > 0
        assert not self.failures, self.failures[:5]
        if ulp is not None:
            assert self.ulp <= ulp, (self.ulp, self.worst.get("ulp"))
        assert self.scale_ulp <= scale_ulp, (self.scale_ulp, self.worst.get("scale_ulp"))


def _fmt(value: Any) -> str:
    import mpmath

    return mpmath.nstr(value, 17)


def logistic_errors(
    dtype: str, wrt: str, xs: Sequence[float], zs: Sequence[float], qs: Sequence[float] | None
) -> Errors:
    """The gradient of the sigmoid (``qs`` None) or weighted loss at every combination."""
    weights = [1.0] if qs is None else list(qs)
    points = [(x, z, q) for x in xs for z in zs for q in weights]
    x, z, q = (as_array([p[k] for p in points], dtype) for k in range(3))
    with np.errstate(all="ignore"):
        if qs is None:
            out = sigmoid_cross_entropy_with_logits_grad(z, x, wrt=wrt)
        else:
            out = weighted_cross_entropy_with_logits_grad(z, x, q, wrt=wrt)
    assert out.dtype == np_dtype(dtype) and out.shape == x.shape
    errors = Errors(dtype)
    for (a, b, c), computed in zip(points, floats(out), strict=True):
        exact, scale = exact_logistic(a, b, c, wrt)
        errors.add(computed, exact, scale, f"x={a!r}, z={b!r}, q={c!r}")
    return errors


# --------------------------------------------------------------------------- elementwise grid


def logistic_bounds(wrt: str, dtype: str) -> dict[str, float | None]:
    """The bounds each ``wrt`` is held to on the grid (measured: see the module docstring).

    logits: the promise, 1 ULP (narrow) and 8 scale-ULP (float64). labels: ``-x`` (sigmoid) or
    ``q softplus(-x) - softplus(x)``, which cancels near its zero: 1 ULP where measured on the
    grid, 1 scale-ULP narrow and 8 scale-ULP float64 as the bound. pos_weight: ``z
    softplus(-x)``, no cancellation (its scale is itself): 1 ULP narrow, 8 ULP float64.
    """
    if dtype == "float64":
        return {"ulp": None, "scale_ulp": SCALE_BOUND}
    return {"ulp": ULP_BOUND, "scale_ulp": ULP_BOUND}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wrt", ["logits", "labels"])
def test_sigmoid_grad_grid(dtype: str, wrt: str) -> None:
    errors = logistic_errors(dtype, wrt, logit_grid(dtype), label_grid(dtype), None)
    errors.check(**logistic_bounds(wrt, dtype))
    if wrt == "labels":  # exactly -x (the oracle resolves it to 1e-30 relative)
        assert errors.ulp < 1e-20, errors.worst


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wrt", LOGISTIC_WRT)
def test_weighted_grad_grid(dtype: str, wrt: str) -> None:
    weights = rounded(POS_WEIGHTS, dtype)
    errors = logistic_errors(dtype, wrt, logit_grid(dtype), label_grid(dtype), weights)
    errors.check(**logistic_bounds(wrt, dtype))


def test_weighted_grad_float64_subnormal_scales() -> None:
    """The float64 bound also where the gradient (and its scale) is subnormal: ``l s`` past
    ``|x| = 512`` is ``(l e^(512 - |x|)) e^-512`` (was 4287 ULP at x=745, z=1, q=1e4)."""
    xs = [700.0, 709.0, 740.0, 745.0]
    errors = logistic_errors("float64", "logits", xs, [1.0, 0.5], [1.0, 30.0, 1e4])
    assert errors.scale_ulp_subnormal <= SCALE_BOUND, errors.worst
    errors.check(ulp=None, scale_ulp=SCALE_BOUND)
    out = weighted_cross_entropy_with_logits_grad(1.0, 745.0, 1e4)
    assert float(out) == -2.8226e-320  # exact -2.8226e-320
    kernel = weighted_cross_entropy_with_logits_grad(
        np.ones(KERNEL_SIZE), np.full(KERNEL_SIZE, 745.0), 1e4
    )
    assert (kernel == -2.8226e-320).all()


# --------------------------------------------------------------------------- softmax grid


def softmax_rows(dtype: str) -> list[tuple[float, ...]]:
    """Rows of 2 to 6 classes from the logit grid, and rows of limits and large spreads."""
    big = float(finfo(dtype).max)
    rows: list[tuple[float, ...]] = []
    for v in logit_grid(dtype):
        rows += [(v, 0.0), (v, -v), (0.0, v, 1.0), (v, v, -v, 0.0), (v, 20.0, -20.0, 1.0, 0.0)]
    rows += [
        (20.0, 0.0), (1.0, 1.0, 1.0, 1.0, 1.0, 1.0), (big, -big), (big, big, big), (INF, 0.0, 1.0),
        (INF, INF), (-INF, -INF), (-INF, 0.0), (INF, -INF, 3.0), (-INF, -INF, 5.0), (NAN, 0.0),
        (0.0, 1.0, NAN), (88.0, 0.0, -88.0, 100.0, -100.0), (700.0, -700.0, 0.0),
        (17.0, 0.0, -17.0, 24.0, -24.0), (10.0, 9.0, 8.0, 7.0, 6.0, 5.0), (1e4, 1e4, -1e4),
    ]  # fmt: skip
    out: dict[tuple, tuple[float, ...]] = {}
    for r in rows:
        if all(math.isnan(v) or math.isinf(v) or abs(v) <= big for v in r):
            cast = tuple(rounded_keep(r, dtype))
            out.setdefault(tuple(float(v).hex() for v in cast), cast)
    return list(out.values())


def rounded_keep(values: Sequence[float], dtype: str) -> list[float]:
    """``values`` rounded to ``dtype``, duplicates kept."""
    with np.errstate(over="ignore"):
        cast = np.asarray(values, dtype=np.float64).astype(np_dtype(dtype))
    return cast.astype(np.float64).tolist()


def soft_labels(n: int, dtype: str) -> list[tuple[float, ...]]:
    """One-hot on each class, uniform, near one-hot, halves, and labels summing to 0.7 n (the
    true derivative, not TF's ``softmax - z``)."""
    eps = float(finfo(dtype).eps)
    rows = [tuple(1.0 if k == j else 0.0 for k in range(n)) for j in range(n)]
    rows.append(tuple([1.0 / n] * n))
    rows.append((1.0 - eps, *([eps / (n - 1)] * (n - 1))))
    rows.append((0.5, 0.5, *([0.0] * (n - 2))))
    rows.append(tuple([0.7] * n))
    return [tuple(rounded_keep(r, dtype)) for r in rows]


def softmax_errors(dtype: str, wrt: str, sparse: bool) -> Errors:
    """The gradient of every grid row against every label row (class); for the logits in
    bfloat16 and float32 the deep cancellations are held to scale-ULP only (the misses pinned
    below)."""
    errors = Errors(dtype, exempt_deep=wrt == "logits")
    by_size: dict[int, list[tuple[tuple, tuple, int]]] = {}
    for row in softmax_rows(dtype):
        n = len(row)
        if sparse:
            labels = [(tuple(1.0 if k == j else 0.0 for k in range(n)), j) for j in range(n)]
        else:
            labels = [(z, -1) for z in soft_labels(n, dtype)]
        by_size.setdefault(n, []).extend((row, z, j) for z, j in labels)
    for items in by_size.values():
        x = as_array([r for r, _, _ in items], dtype)
        with np.errstate(all="ignore"):
            if sparse:
                out = sparse_softmax_cross_entropy_with_logits_grad(
                    np.array([j for _, _, j in items]), x
                )
            else:
                z = as_array([z for _, z, _ in items], dtype)
                out = softmax_cross_entropy_with_logits_grad(z, x, wrt=wrt)
        assert out.dtype == np_dtype(dtype) and out.shape == x.shape
        for (row, z, _), computed in zip(items, floats(out), strict=True):
            exact, scale = exact_softmax(row, z, wrt)
            for j in range(len(row)):
                errors.add(computed[j], exact[j], scale[j], f"x={row}, z={z}, class {j}")
    return errors


def softmax_bounds(wrt: str, dtype: str) -> dict[str, float | None]:
    """logits: the promise; labels: ``logsumexp - x_j``, a sum of non-negative terms (its scale
    is itself): 1 ULP narrow, 8 ULP float64."""
    if dtype == "float64":
        return {"ulp": None, "scale_ulp": SCALE_BOUND}
    return {"ulp": ULP_BOUND, "scale_ulp": ULP_BOUND}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wrt", ["logits", "labels"])
def test_softmax_grad_grid(dtype: str, wrt: str) -> None:
    """The whole grid within the bounds, but the deep cancellations of bfloat16 and float32
    (within 1 scale-ULP; the misses pinned below)."""
    errors = softmax_errors(dtype, wrt, False)
    errors.check(**softmax_bounds(wrt, dtype))
    assert errors.deep_ulp <= ULP_BOUND, errors.worst.get("deep_ulp")


@pytest.mark.parametrize("dtype", DTYPES)
def test_sparse_softmax_grad_grid(dtype: str) -> None:
    errors = softmax_errors(dtype, "logits", True)
    errors.check(**softmax_bounds("logits", dtype))
    assert errors.deep_ulp <= ULP_BOUND  # one-hot labels: no miss, deep or not


# Logits closer than float64 resolves next to 1 (e^(x_j - m) rounds to 1): before the expm1
# form of the near entries, 0 for +-2^-127 (4.2e6 ULP float32, 64 bfloat16) and for -2.5e-31
# (1.06e7 ULP float32, 162 bfloat16).
TINY_GAPS = [
    ((2.0**-126, -(2.0**-126)), (0.5, 0.5)),
    ((0.0, 1e-30), (0.5, 0.5)),
    ((0.0, 1e-30, -1e-30, 2.0), (0.25, 0.5, 0.25, 0.0)),
    ((1e-20, 0.0, 0.0, -5.0), (0.1, 0.3, 0.6, 0.0)),
]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
def test_softmax_grad_tie_keeps_the_small_tail(dtype: str) -> None:
    """A tie at the maximum: 1 + T = 2 + e^-40 + e^-80; the 1 must not absorb the tail."""
    x, z = (40.0, 40.0, -40.0, 0.0), (0.5, 0.5, 0.0, 0.0)
    out = floats(softmax_cross_entropy_with_logits_grad(as_array([z], dtype), as_array([x], dtype)))
    exact = oracle.softmax_grad(x, z)
    assert max(oracle.ulp_error(c, e, dtype) for c, e in zip(out[0], exact, strict=True)) <= 1


@pytest.mark.parametrize("dtype", ["bfloat16", "float32", "float64"])
@pytest.mark.parametrize(("x", "z"), TINY_GAPS)
@pytest.mark.parametrize("kernel", [False, True])
def test_softmax_grad_tiny_gaps(dtype: str, x: tuple, z: tuple, kernel: bool) -> None:
    """Logits that differ by less than float64 resolves next to 1: 1 ULP (narrow), 8 scale-ULP
    (float64), on the reference path and on the kernels (the row tiled to 16k elements)."""
    xs = tuple(rounded_keep(x, dtype))
    rows = KERNEL_SIZE // len(x) + 1 if kernel else 1
    xa, za = as_array([xs] * rows, dtype), as_array([z] * rows, dtype)
    out = floats(softmax_cross_entropy_with_logits_grad(za, xa))
    exact, scale = exact_softmax(xs, tuple(rounded_keep(z, dtype)), "logits")
    for row in (out[0], out[-1]):
        for c, e, s in zip(row, exact, scale, strict=True):
            if dtype == "float64":
                assert oracle.scale_ulp_error(c, e, s, dtype) <= SCALE_BOUND
            else:
                assert oracle.ulp_error(c, e, dtype) <= ULP_BOUND, (c, e)


# --------------------------------------------------------------------------- near the zero


def _near_zero_points(
    dtype: str, weighted: bool, count: int
) -> list[tuple[float, float, float, float]]:
    """The ``count`` points closest to the gradient's zero among every label of the dtype in
    (0, 1) (float16, bfloat16: all of them; float32: a sample) with the logit rounded from
    ``log(q z / (1 - z))`` and its two neighbours: ``(x, z, q, computed)``."""
    dt = np_dtype(dtype)
    if dtype == "float32":
        z = np.random.default_rng(5).uniform(0.01, 0.99, 100_000).astype(dt)
    else:
        with np.errstate(invalid="ignore"):
            z = np.arange(2**16, dtype=np.uint16).view(dt)
            z = z[(z.astype(np.float64) > 0) & (z.astype(np.float64) < 1)]
    q = np.full(z.shape, 2.5 if weighted else 1.0).astype(dt)
    zf, qf = z.astype(np.float64), q.astype(np.float64)
    centre = np.log(qf * zf / (1 - zf)).astype(dt)
    bits = np.uint32 if dtype == "float32" else np.uint16
    xs = [(centre.view(bits) + bits(k)).view(dt) for k in (0, 1)]
    xs.append((centre.view(bits) - bits(1)).view(dt))
    x, z, q = np.concatenate(xs), np.tile(z, 3), np.tile(q, 3)
    finite = np.isfinite(x.astype(np.float64))
    x, z, q = x[finite], z[finite], q[finite]
    if weighted:
        out = weighted_cross_entropy_with_logits_grad(z, x, q)
        wide = weighted_cross_entropy_with_logits_grad(*(a.astype(np.float64) for a in (z, x, q)))
    else:
        out = sigmoid_cross_entropy_with_logits_grad(z, x)
        wide = sigmoid_cross_entropy_with_logits_grad(z.astype(np.float64), x.astype(np.float64))
    order = np.argsort(np.abs(wide))[:count]
    return [(float(x[i]), float(z[i]), float(q[i]), float(out[i])) for i in order]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_narrow_grad_near_zero(dtype: str, weighted: bool) -> None:
    """float16 and bfloat16 keep 1 ULP of the result right next to the gradient's zero."""
    errors = Errors(dtype)
    for x, z, q, computed in _near_zero_points(dtype, weighted, 150):
        exact, scale = exact_logistic(x, z, q, "logits")
        errors.add(computed, exact, scale, f"x={x!r}, z={z!r}, q={q!r}")
    errors.check(ulp=ULP_BOUND, scale_ulp=ULP_BOUND)


@pytest.mark.parametrize("weighted", [False, True])
def test_float32_grad_near_zero_scale_ulp(weighted: bool) -> None:
    """float32 next to the gradient's zero: 1 ULP of the result (the double-float step)."""
    errors = Errors("float32")
    for x, z, q, computed in _near_zero_points("float32", weighted, 100):
        exact, scale = exact_logistic(x, z, q, "logits")
        errors.add(computed, exact, scale, f"x={x!r}, z={z!r}, q={q!r}")
    errors.check(ulp=ULP_BOUND, scale_ulp=ULP_BOUND)


FLOAT32_NEAR_ZERO = [
    (float.fromhex("-0x1.cf6e940000000p-2"), float.fromhex("0x1.8e14700000000p-2"), 1.0),
    (-0.7143718004226685, 0.25081372261047363, 1.4621461629867554),
]


@pytest.mark.parametrize(("x", "z", "q"), FLOAT32_NEAR_ZERO)
@pytest.mark.parametrize("kernel", [False, True])
def test_float32_grad_near_zero_ulp(x: float, z: float, q: float, kernel: bool) -> None:
    """Right next to the gradient's zero (1e-14 of the terms) the double-float step keeps 1 ULP
    (before it: 8946 and 2738 ULP, the float64 error of the cancelling terms)."""
    n = KERNEL_SIZE if kernel else 1
    out = weighted_cross_entropy_with_logits_grad(*(np.full(n, v, np.float32) for v in (z, x, q)))
    exact = oracle.logistic_grad(x, z, q)
    assert all(oracle.ulp_error(v, exact, "float32") <= ULP_BOUND for v in set(floats(out)))


# --------------------------------------------------------------------------- hypothesis


def finite_floats(dtype: str) -> st.SearchStrategy[float]:
    width = {"float16": 16, "bfloat16": 32, "float32": 32, "float64": 64}[dtype]
    big = float(finfo(dtype).max)
    values = st.floats(-big, big, width=width, allow_nan=False, allow_infinity=False)
    return values.map(lambda v: rounded_keep([v], dtype)[0]).filter(math.isfinite)


def unit_floats(dtype: str) -> st.SearchStrategy[float]:
    width = {"float16": 16, "bfloat16": 32, "float32": 32, "float64": 64}[dtype]
    near_one = st.integers(1, 60).map(lambda k: 1.0 - 2.0**-k)
    near_zero = st.integers(1, 1074).map(lambda k: 2.0**-k)
    values = st.one_of(st.floats(0, 1, width=width), near_one, near_zero)
    return values.map(lambda v: rounded_keep([v], dtype)[0])


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=60, deadline=None, derandomize=True)
@given(data=st.data())
def test_logistic_grad_hypothesis(dtype: str, data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 6))
    xs = data.draw(st.lists(finite_floats(dtype), min_size=n, max_size=n))
    zs = data.draw(st.lists(unit_floats(dtype), min_size=n, max_size=n))
    q = rounded_keep([data.draw(st.floats(0, 1e3))], dtype)[0]
    wrt = data.draw(st.sampled_from(LOGISTIC_WRT))
    x, z = as_array(xs, dtype), as_array(zs, dtype)
    with np.errstate(all="ignore"):
        out = floats(weighted_cross_entropy_with_logits_grad(z, x, q, wrt=wrt))
    if wrt == "pos_weight":  # summed over the elements: compare with the exact sum
        import mpmath

        with mpmath.workdps(50):
            exact = mpmath.fsum(
                exact_logistic(a, b, q, wrt)[0] for a, b in zip(xs, zs, strict=True)
            )
        assert oracle.ulp_error(out, exact, dtype) <= (4 if dtype == "float64" else 1)
        return
    errors = Errors(dtype)
    for a, b, c in zip(xs, zs, out, strict=True):
        exact, scale = exact_logistic(a, b, q, wrt)
        errors.add(c, exact, scale, f"x={a!r}, z={b!r}, q={q!r}")
    errors.check(**logistic_bounds(wrt, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@settings(max_examples=40, deadline=None, derandomize=True)
@given(data=st.data())
def test_softmax_grad_hypothesis(dtype: str, data: st.DataObject) -> None:
    """Rows of moderate spread with one-hot and soft labels, and sparse labels."""
    n = data.draw(st.integers(2, 6))
    limit = min(1e4, float(finfo(dtype).max) / 4)
    values = st.floats(-limit, limit).map(lambda v: rounded_keep([v], dtype)[0])
    xs = tuple(data.draw(st.lists(values, min_size=n, max_size=n)))
    raw = data.draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
    zs = tuple(rounded_keep(raw, dtype))
    label = data.draw(st.integers(0, n - 1))
    wrt = data.draw(st.sampled_from(["logits", "labels"]))
    x = as_array([xs], dtype)
    out = floats(softmax_cross_entropy_with_logits_grad(as_array([zs], dtype), x, wrt=wrt))[0]
    sparse = floats(sparse_softmax_cross_entropy_with_logits_grad([label], x))[0]
    # Deep cancellations are counted apart (deep_ulp) and held to 1 ULP as well.
    errors = Errors(dtype, exempt_deep=True)
    exact, scale = exact_softmax(xs, zs, wrt)
    one_hot = tuple(1.0 if j == label else 0.0 for j in range(n))
    exact_sparse, scale_sparse = exact_softmax(xs, one_hot, "logits")
    for j in range(n):
        errors.add(out[j], exact[j], scale[j], f"x={xs}, z={zs}, class {j}")
        errors.add(sparse[j], exact_sparse[j], scale_sparse[j], f"x={xs}, label {label}")
    errors.check(**softmax_bounds(wrt, dtype))
    if dtype != "float64":
        assert errors.deep_ulp <= ULP_BOUND, errors.worst.get("deep_ulp")


# --------------------------------------------------------------------------- limits and NaN


# (x, z, q, d/dx, d/dz, d/dq): the exact limits at infinite logits, by hand.
LOGISTIC_LIMITS = [
    (INF, 1.0, 1.0, 0.0, -INF, 0.0),
    (INF, 0.0, 1.0, 1.0, -INF, 0.0),
    (INF, 0.5, 1.0, 0.5, -INF, 0.0),
    (-INF, 0.0, 1.0, 0.0, INF, 0.0),
    (-INF, 1.0, 1.0, -1.0, INF, INF),
    (-INF, 0.5, 1.0, -0.5, INF, INF),
    (INF, 1.0, 3.0, 0.0, -INF, 0.0),
    (INF, 0.25, 0.0, 0.75, -INF, 0.0),
    (-INF, 0.5, 3.0, -1.5, INF, INF),
    (-INF, 1.0, 0.0, 0.0, 0.0, INF),  # q = 0: q softplus(-x) is 0 also at -inf
    (-INF, 0.0, 5.0, 0.0, INF, 0.0),  # z = 0: z softplus(-x) is 0 also at -inf
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x", "z", "q", "dx", "dz", "dq"), LOGISTIC_LIMITS)
def test_logistic_grad_limits(
    dtype: str, x: float, z: float, q: float, dx: float, dz: float, dq: float
) -> None:
    args = as_array([z], dtype), as_array([x], dtype), as_array([q], dtype)
    for wrt, expected in (("logits", dx), ("labels", dz), ("pos_weight", dq)):
        assert floats(weighted_cross_entropy_with_logits_grad(*args, wrt=wrt)) == [expected]
        assert oracle.logistic_grad(x, z, q, wrt) == expected
    if q == 1.0:
        for wrt, expected in (("logits", dx), ("labels", dz)):
            out = sigmoid_cross_entropy_with_logits_grad(*args[:2], wrt=wrt)
            assert floats(out) == [expected]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("logits", "labels", "dx", "dz"),
    [
        ([INF, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, INF, INF]),
        ([INF, 0.0, 1.0], [0.5, 0.5, 0.0], [0.5, -0.5, 0.0], [0.0, INF, INF]),
        ([0.0, INF, -INF], [0.25, 0.25, 0.5], [-0.25, 0.75, -0.5], [INF, 0.0, INF]),
        ([-INF, -INF, -INF], [1.0, 0.0, 0.0], [NAN] * 3, [NAN] * 3),
        ([INF, INF, 0.0], [1.0, 0.0, 0.0], [NAN] * 3, [NAN] * 3),
        ([NAN, 0.0, 1.0], [0.0, 0.0, 1.0], [NAN] * 3, [NAN] * 3),
        ([0.0, 1.0, 2.0], [0.0, NAN, 1.0], [NAN] * 3, None),  # labels' derivative: finite
    ],
)
def test_softmax_grad_limits(
    dtype: str, logits: list, labels: list, dx: list, dz: list | None
) -> None:
    x, z = as_array([logits], dtype), as_array([labels], dtype)
    out = floats(softmax_cross_entropy_with_logits_grad(z, x))[0]
    np.testing.assert_array_equal(out, dx)
    np.testing.assert_array_equal([float(v) for v in oracle.softmax_grad(logits, labels)], dx)
    out = floats(softmax_cross_entropy_with_logits_grad(z, x, wrt="labels"))[0]
    exact = [float(v) for v in oracle.softmax_grad(logits, labels, "labels")]
    if dz is not None:
        np.testing.assert_array_equal(out, dz)
        np.testing.assert_array_equal(exact, dz)
    else:
        assert all(oracle.ulp_error(c, e, dtype) <= 1 for c, e in zip(out, exact, strict=True))


def test_sparse_grad_limits() -> None:
    x = np.array([[INF, 0.0, -INF]] * 3 + [[INF, INF, 0.0], [NAN, 0.0, 0.0]])
    out = sparse_softmax_cross_entropy_with_logits_grad(np.array([0, 1, 2, 0, 1]), x)
    np.testing.assert_array_equal(out, [[0, 0, 0], [1, -1, 0], [1, 0, -1], [NAN] * 3, [NAN] * 3])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_nan_out(dtype: str) -> None:
    """A NaN in an argument the derivative depends on gives NaN; the labels' derivative does
    not depend on the labels, nor ``pos_weight``'s on ``pos_weight`` (as autodiff gives)."""
    x = as_array([NAN, 0.5, 0.5, 0.5], dtype)
    z = as_array([0.5, NAN, 0.5, 0.5], dtype)
    q = as_array([2.0, 2.0, NAN, 2.0], dtype)
    g = as_array([1.0, 1.0, 1.0, NAN], dtype)

    def nans(out: Any) -> list[bool]:
        return np.isnan(np.asarray(out).astype(np.float64)).tolist()

    grad = weighted_cross_entropy_with_logits_grad
    assert nans(grad(z, x, q, upstream=g)) == [True, True, True, True]
    assert nans(grad(z, x, q, upstream=g, wrt="labels")) == [True, False, True, True]
    assert nans(grad(z, x, 2.0, upstream=g, wrt="pos_weight")) is True  # summed to 0-d
    assert nans(grad(z, x, q, wrt="pos_weight")) == [True, True, False, False]
    sigmoid = sigmoid_cross_entropy_with_logits_grad
    assert nans(sigmoid(z, x, upstream=g)) == [True, True, False, True]
    assert nans(sigmoid(z, x, upstream=g, wrt="labels")) == [True, False, False, True]
    rows = as_array([[NAN, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype)
    labels = as_array([[0.5, 0.5], [NAN, 0.5], [0.5, 0.5]], dtype)
    out = softmax_cross_entropy_with_logits_grad(
        labels, rows, upstream=as_array([1, 1, NAN], dtype)
    )
    assert nans(out) == [[True, True], [True, True], [True, True]]
    out = softmax_cross_entropy_with_logits_grad(labels, rows, wrt="labels")
    assert nans(out) == [[True, True], [False, False], [False, False]]
    out = sparse_softmax_cross_entropy_with_logits_grad(np.array([0, 1, 1]), rows)
    assert nans(out) == [[True, True], [False, False], [False, False]]


# --------------------------------------------------------------------------- upstream, shapes


X = np.random.default_rng(3).uniform(-6, 6, (5, 4))
Z = np.random.default_rng(4).uniform(0, 1, (5, 4))
P = np.random.default_rng(5).dirichlet(np.ones(4), size=5)
K = np.array([0, 3, 1, 2, 3])
Q = np.array([0.5, 1.0, 2.0, 30.0])


def test_upstream_scalar_and_broadcast_multiply() -> None:
    """``upstream`` multiplies the gradient elementwise, broadcast to the loss's shape; its
    dtype is the logits' (integers and bools are converted)."""
    base = sigmoid_cross_entropy_with_logits_grad(Z, X)
    for upstream in (2.5, np.array(2.5), np.arange(4.0), np.arange(5.0)[:, None], np.ones((1, 4))):
        out = sigmoid_cross_entropy_with_logits_grad(Z, X, upstream=upstream)
        np.testing.assert_array_equal(out, base * np.broadcast_to(upstream, X.shape))
    out = sigmoid_cross_entropy_with_logits_grad(Z, X, upstream=np.array([True, False] * 2))
    np.testing.assert_array_equal(out, base * [1, 0, 1, 0])
    base = weighted_cross_entropy_with_logits_grad(Z, X, Q, wrt="labels")
    out = weighted_cross_entropy_with_logits_grad(Z, X, Q, wrt="labels", upstream=-3)
    np.testing.assert_array_equal(out, -3 * base)


def test_upstream_per_row() -> None:
    """Softmax losses have one value per row: ``upstream`` scales each row's gradient."""
    u = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    for wrt in ("logits", "labels"):
        base = softmax_cross_entropy_with_logits_grad(P, X, wrt=wrt)
        out = softmax_cross_entropy_with_logits_grad(P, X, upstream=u, wrt=wrt)
        np.testing.assert_array_equal(out, base * u[:, None])
    base = sparse_softmax_cross_entropy_with_logits_grad(K, X)
    np.testing.assert_array_equal(
        sparse_softmax_cross_entropy_with_logits_grad(K, X, upstream=u), base * u[:, None]
    )
    # axis=0: one loss per column.
    out = softmax_cross_entropy_with_logits_grad(P.T, X.T, axis=0, upstream=u)
    np.testing.assert_array_equal(out, softmax_cross_entropy_with_logits_grad(P, X, upstream=u).T)


def test_upstream_in_narrow_dtype_rounds_once() -> None:
    """The product with ``upstream`` is formed before the one rounding (1 ULP of the exact
    product, also where the unscaled gradient would be subnormal in float16)."""
    x = np.float16([12.0, -12.0, 0.001, 3.0])
    z = np.float16([1.0, 0.0, 0.5, 0.25])
    u = 1000.0
    out = floats(sigmoid_cross_entropy_with_logits_grad(z, x, upstream=u))
    for a, b, c in zip(floats(x), floats(z), out, strict=True):
        exact = oracle.logistic_grad(a, b) * u
        assert oracle.ulp_error(c, exact, "float16") <= 1


def test_pos_weight_gradient_reduces_to_its_shape() -> None:
    u = np.arange(1.0, 6.0)[:, None]
    full = weighted_cross_entropy_with_logits_grad(Z, X, np.broadcast_to(Q, X.shape),
                                                   wrt="pos_weight", upstream=u)  # fmt: skip
    assert full.shape == X.shape
    per_class = weighted_cross_entropy_with_logits_grad(Z, X, Q, wrt="pos_weight", upstream=u)
    assert per_class.shape == (4,)
    np.testing.assert_allclose(per_class, full.sum(axis=0), rtol=1e-15)
    kept = weighted_cross_entropy_with_logits_grad(Z, X, Q[None, :], wrt="pos_weight", upstream=u)
    assert kept.shape == (1, 4)
    np.testing.assert_allclose(kept[0], per_class, rtol=1e-15)
    column = weighted_cross_entropy_with_logits_grad(Z, X, np.ones((5, 1)), wrt="pos_weight")
    assert column.shape == (5, 1)
    total = weighted_cross_entropy_with_logits_grad(Z, X, 2.0, wrt="pos_weight", upstream=u)
    assert isinstance(total, np.ndarray) and total.shape == ()
    np.testing.assert_allclose(total, full.sum(), rtol=1e-14)
    # The other arguments' gradients keep the logits' shape.
    assert weighted_cross_entropy_with_logits_grad(Z, X, Q, wrt="labels").shape == X.shape
    assert weighted_cross_entropy_with_logits_grad(Z, X, 2.0).shape == X.shape


def test_softmax_labels_gradient_reduces_to_their_shape() -> None:
    u = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    full = softmax_cross_entropy_with_logits_grad(np.broadcast_to(P[0], X.shape), X,
                                                  wrt="labels", upstream=u)  # fmt: skip
    for labels, reduce in (
        (P[0], lambda a: a.sum(axis=0)),
        (P[:1], lambda a: a.sum(axis=0, keepdims=True)),
        (np.float64(0.25), lambda a: a.sum()),
    ):
        out = softmax_cross_entropy_with_logits_grad(labels, X, wrt="labels", upstream=u)
        assert out.shape == np.shape(labels)
        np.testing.assert_allclose(out, reduce(full), rtol=1e-14)
    # The logits' gradient with broadcast labels: the labels as if repeated.
    np.testing.assert_array_equal(
        softmax_cross_entropy_with_logits_grad(P[0], X),
        softmax_cross_entropy_with_logits_grad(np.broadcast_to(P[0], X.shape), X),
    )


def test_softmax_grad_any_axis() -> None:
    x3 = np.random.default_rng(8).normal(size=(2, 3, 4))
    z3 = np.random.default_rng(9).dirichlet(np.ones(3), size=(2, 4)).transpose(0, 2, 1)
    for wrt in ("logits", "labels"):
        last = softmax_cross_entropy_with_logits_grad(
            np.moveaxis(z3, 1, -1), np.moveaxis(x3, 1, -1), wrt=wrt
        )
        for axis in (1, -2):
            out = softmax_cross_entropy_with_logits_grad(z3, x3, axis=axis, wrt=wrt)
            np.testing.assert_allclose(out, np.moveaxis(last, -1, 1), rtol=1e-14, atol=1e-16)


def test_empty_batch() -> None:
    x = np.zeros((0, 3), dtype=np.float32)
    for out in (
        sigmoid_cross_entropy_with_logits_grad(x, x),
        weighted_cross_entropy_with_logits_grad(x, x, np.ones(3), wrt="labels"),
        softmax_cross_entropy_with_logits_grad(x, x),
        sparse_softmax_cross_entropy_with_logits_grad(np.zeros(0, dtype=int), x),
    ):
        assert out.shape == (0, 3) and out.dtype == np.float32
    out = weighted_cross_entropy_with_logits_grad(x, x, np.ones(3), wrt="pos_weight")
    np.testing.assert_array_equal(out, np.zeros(3, dtype=np.float32))


# --------------------------------------------------------------------------- finite differences


def _central_difference(f: Callable[[np.ndarray], float], a: np.ndarray, h: float) -> np.ndarray:
    """``d f / d a`` by central differences, one entry at a time (float64)."""
    out = np.empty_like(a)
    for index in np.ndindex(a.shape):
        step = h * max(1.0, abs(float(a[index])))
        up, down = a.copy(), a.copy()
        up[index] += step
        down[index] -= step
        out[index] = (f(up) - f(down)) / (up[index] - down[index])
    return out


SMOOTH_X = np.random.default_rng(21).uniform(-5, 5, (3, 4))
SMOOTH_Z = np.random.default_rng(22).uniform(0.1, 0.9, (3, 4))
SMOOTH_Q = np.random.default_rng(23).uniform(0.5, 3, 4)
SMOOTH_U = np.random.default_rng(24).uniform(0.5, 2, 3)


@pytest.mark.parametrize(
    ("name", "loss", "grad", "args", "wrt"),
    [
        ("sigmoid", sigmoid_cross_entropy_with_logits, sigmoid_cross_entropy_with_logits_grad,
         {"labels": SMOOTH_Z, "logits": SMOOTH_X}, "logits"),
        ("sigmoid", sigmoid_cross_entropy_with_logits, sigmoid_cross_entropy_with_logits_grad,
         {"labels": SMOOTH_Z, "logits": SMOOTH_X}, "labels"),
        *[("weighted", weighted_cross_entropy_with_logits, weighted_cross_entropy_with_logits_grad,
           {"labels": SMOOTH_Z, "logits": SMOOTH_X, "pos_weight": SMOOTH_Q}, wrt)
          for wrt in LOGISTIC_WRT],
        *[("softmax", softmax_cross_entropy_with_logits, softmax_cross_entropy_with_logits_grad,
           {"labels": SMOOTH_Z, "logits": SMOOTH_X}, wrt) for wrt in ("logits", "labels")],
        ("sparse", sparse_softmax_cross_entropy_with_logits,
         sparse_softmax_cross_entropy_with_logits_grad,
         {"labels": np.array([0, 3, 1]), "logits": SMOOTH_X}, "logits"),
    ],
)  # fmt: skip
def test_finite_differences(
    name: str, loss: Callable, grad: Callable, args: dict[str, np.ndarray], wrt: str
) -> None:
    """Central differences of ``sum(upstream * loss)`` (float64) agree to about 1e-8."""
    upstream = SMOOTH_U[:, None] if name in ("sigmoid", "weighted") else SMOOTH_U

    def total(value: np.ndarray) -> float:
        return float(np.sum(upstream * loss(**{**args, wrt: value})))

    kwargs = {} if name == "sparse" else {"wrt": wrt}
    analytic = grad(**args, upstream=upstream, **kwargs)
    numeric = _central_difference(total, np.array(args[wrt], dtype=np.float64), 1e-6)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-7, atol=1e-8)


# --------------------------------------------------------------------------- scipy


def test_scipy_expit_where_exact() -> None:
    """With labels 0 and 1 the logistic gradients are one sigmoid each, no cancellation:
    ``expit(x)`` (z = 0) and ``-q expit(-x)`` (z = 1), to a few float64 ULP."""
    special = pytest.importorskip("scipy.special")
    x = np.concatenate([-np.geomspace(1e-300, 700, 300), np.geomspace(1e-300, 700, 300)])
    q = 2.5
    for z, expected in ((0.0, special.expit(x)), (1.0, -q * special.expit(-x))):
        out = weighted_cross_entropy_with_logits_grad(np.full_like(x, z), x, q)
        np.testing.assert_allclose(out, expected, rtol=1e-15, atol=0)
    out = sigmoid_cross_entropy_with_logits_grad(np.zeros_like(x), x)
    np.testing.assert_allclose(out, special.expit(x), rtol=1e-15, atol=0)


def test_scipy_softmax_where_exact() -> None:
    """Classes with label 0 have the gradient ``softmax_j * sum(z)``, no cancellation. (Moderate
    logits: scipy rounds ``x_j - max``, off by up to 32 ULP for logits 200 apart.)"""
    special = pytest.importorskip("scipy.special")
    x = np.random.default_rng(31).normal(scale=5, size=(200, 5))
    z = np.random.default_rng(32).dirichlet(np.ones(5), size=200) * 1.5
    z[:, 2] = 0.0
    out = softmax_cross_entropy_with_logits_grad(z, x)
    expected = special.softmax(x, axis=-1)[:, 2] * z.sum(axis=-1)
    np.testing.assert_allclose(out[:, 2], expected, rtol=1e-14, atol=0)
    k = np.zeros(200, dtype=int)
    out = sparse_softmax_cross_entropy_with_logits_grad(k, x)
    np.testing.assert_allclose(out[:, 1:], special.softmax(x, axis=-1)[:, 1:], rtol=1e-14)


# --------------------------------------------------------------------------- errors


G = np.zeros((2, 3), dtype=np.float32)
sigmoid_grad = sigmoid_cross_entropy_with_logits_grad
weighted_grad = weighted_cross_entropy_with_logits_grad
softmax_grad = softmax_cross_entropy_with_logits_grad
sparse_grad = sparse_softmax_cross_entropy_with_logits_grad


# ruff: noqa: E501 (one table row per error case reads better than wrapped rows)
@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: sigmoid_grad(G, G, wrt="pos_weight"), ValueError, r"^sigmoid_cross_entropy_with_logits_grad: `wrt` must be one of 'logits', 'labels'; got 'pos_weight'$"),
        (lambda: sigmoid_grad(G, G, wrt=None), ValueError, r"one of 'logits', 'labels'; got None"),
        (lambda: weighted_grad(G, G, 1.0, wrt="x"), ValueError, r"^weighted_cross_entropy_with_logits_grad: `wrt` must be one of 'logits', 'labels', 'pos_weight'; got 'x'$"),
        (lambda: softmax_grad(G, G, wrt="pos_weight"), ValueError, r"^softmax_cross_entropy_with_logits_grad: `wrt` must be one of 'logits', 'labels'; got 'pos_weight'$"),
        (lambda: softmax_grad(G, G, wrt=["logits"]), ValueError, r"got \['logits'\]"),
        (lambda: sparse_grad([0, 1], G, wrt="logits"), TypeError, r"unexpected keyword argument 'wrt'"),
        (lambda: sigmoid_grad(G, G, upstream=np.ones((2, 2, 3))), ValueError, r"^sigmoid_cross_entropy_with_logits_grad: `upstream` of shape \(2, 2, 3\) must broadcast to the shape of the loss \(2, 3\) without enlarging it$"),
        (lambda: sigmoid_grad(G, G, upstream=np.ones(2)), ValueError, r"`upstream` of shape \(2,\) must broadcast to the shape of the loss \(2, 3\)"),
        (lambda: weighted_grad(G, G, 1.0, upstream=np.ones((4, 3))), ValueError, r"^weighted_cross_entropy_with_logits_grad: `upstream` of shape \(4, 3\)"),
        (lambda: softmax_grad(G, G, upstream=np.ones((2, 3))), ValueError, r"^softmax_cross_entropy_with_logits_grad: `upstream` of shape \(2, 3\) must broadcast to the shape of the loss \(2,\) without enlarging it$"),
        (lambda: softmax_grad(G, G, axis=0, upstream=np.ones(2)), ValueError, r"the shape of the loss \(3,\)"),
        (lambda: sparse_grad([0, 1], G, upstream=np.ones(3)), ValueError, r"^sparse_softmax_cross_entropy_with_logits_grad: `upstream` of shape \(3,\) must broadcast to the shape of the loss \(2,\)"),
        (lambda: sigmoid_grad(G, G, upstream=G.astype(np.complex64)), TypeError, r"^sigmoid_cross_entropy_with_logits_grad: `upstream` must hold real numbers"),
        (lambda: sigmoid_grad(G, G, upstream="1"), TypeError, r"`upstream` must hold real numbers"),
        (lambda: sigmoid_grad(G, G.astype(int)), TypeError, r"^sigmoid_cross_entropy_with_logits_grad: `logits` must have a real floating dtype \(float16, bfloat16, float32 or float64\), got int64$"),
        (lambda: weighted_grad(G, G.astype(bool), 1.0), TypeError, r"^weighted_cross_entropy_with_logits_grad: `logits` must have a real floating dtype .* got bool$"),
        (lambda: softmax_grad(G.astype(np.complex64), G), TypeError, r"^softmax_cross_entropy_with_logits_grad: `labels` must hold real numbers"),
        (lambda: weighted_grad(G, G, "2"), TypeError, r"`pos_weight` must hold real numbers"),
        (lambda: weighted_grad(G, G, None), TypeError, r"`pos_weight` is required"),
        (lambda: sparse_grad(np.array([0.0, 1.0]), G), TypeError, r"^sparse_softmax_cross_entropy_with_logits_grad: `labels` must have an integer dtype \(class indices\), got float64$"),
        (lambda: sparse_grad(np.array([0, 3]), G), ValueError, r"`labels` must lie in \[0, 3\)"),
        (lambda: sigmoid_grad(G[0], G), ValueError, r"^sigmoid_cross_entropy_with_logits_grad: `labels` and `logits` must have the same shape"),
        (lambda: weighted_grad(G, G, np.ones((2, 1, 3)), wrt="pos_weight"), ValueError, r"`pos_weight` of shape \(2, 1, 3\) must broadcast to the shape of `logits` \(2, 3\) without enlarging it"),
        (lambda: softmax_grad(np.ones((1, 2, 3)), G, wrt="labels"), ValueError, r"`labels` of shape \(1, 2, 3\) must broadcast"),
        (lambda: softmax_grad(G, G, axis=2), ValueError, r"`axis` must be in \[-2, 2\)"),
        (lambda: sigmoid_grad(None, G), TypeError, r"`labels` is required"),
    ],
)  # fmt: skip
def test_errors(call: Callable[[], Any], error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()


# --------------------------------------------------------------------------- other backends


def test_array_api_strict() -> None:
    xps = pytest.importorskip("array_api_strict")
    for dtype in ("float32", "float64"):
        x, z = xps.asarray(X.astype(dtype)), xps.asarray(Z.astype(dtype))
        p, k = xps.asarray(P.astype(dtype)), xps.asarray(K)
        outs = [
            (sigmoid_cross_entropy_with_logits_grad(z, x, wrt="labels"),
             sigmoid_cross_entropy_with_logits_grad(Z.astype(dtype), X.astype(dtype), wrt="labels")),
            (weighted_cross_entropy_with_logits_grad(z, x, xps.asarray(Q.astype(dtype)), wrt="pos_weight"),
             weighted_cross_entropy_with_logits_grad(Z.astype(dtype), X.astype(dtype), Q.astype(dtype), wrt="pos_weight")),
            (softmax_cross_entropy_with_logits_grad(p, x, upstream=xps.asarray(np.arange(5.0).astype(dtype))),
             softmax_cross_entropy_with_logits_grad(P.astype(dtype), X.astype(dtype), upstream=np.arange(5.0))),
            (sparse_softmax_cross_entropy_with_logits_grad(k, x),
             sparse_softmax_cross_entropy_with_logits_grad(K, X.astype(dtype))),
        ]  # fmt: skip
        for ours, reference in outs:
            assert type(ours).__module__.startswith("array_api_strict")
            assert ours.dtype == x.dtype
            np.testing.assert_array_equal(np.asarray(ours._array), reference)


def test_torch_tensors() -> None:
    torch = pytest.importorskip("torch")
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        x, z = torch.tensor(X).to(dtype), torch.tensor(Z).to(dtype)
        reference_x, reference_z = x.double().numpy(), z.double().numpy()
        outs = [
            (weighted_cross_entropy_with_logits_grad(z, x, torch.tensor(Q).to(dtype)),
             weighted_cross_entropy_with_logits_grad(reference_z, reference_x,
                                                     torch.tensor(Q).to(dtype).double().numpy())),
            (softmax_cross_entropy_with_logits_grad(z, x, wrt="labels"),
             softmax_cross_entropy_with_logits_grad(reference_z, reference_x, wrt="labels")),
            (sparse_softmax_cross_entropy_with_logits_grad(torch.tensor(K), x),
             sparse_softmax_cross_entropy_with_logits_grad(K, reference_x)),
        ]  # fmt: skip
        eps = torch.finfo(dtype).eps
        for ours, wide in outs:
            assert isinstance(ours, torch.Tensor) and ours.dtype == dtype
            # One rounding of the float64 value (torch's and NumPy's float64 exp/log1p may
            # differ in the last bit).
            expected = torch.tensor(wide).to(dtype).double().numpy()
            np.testing.assert_allclose(ours.double().numpy(), expected, rtol=4 * eps, atol=4 * eps)


# --------------------------------------------------------------------------- the peers


@pytest.fixture(scope="module")
def tf() -> Any:
    return pytest.importorskip("tensorflow")


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def jax() -> Any:
    jax = pytest.importorskip("jax")
    pytest.importorskip("optax")
    return jax


def tf_grad(tf: Any, loss: Callable[..., Any], x: np.ndarray, *args: Any) -> np.ndarray:
    """``d sum(loss(*args, logits=x)) / d x`` by ``tf.GradientTape``, in ``x``'s dtype."""
    logits = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(logits)
        total = tf.reduce_sum(loss(*(tf.constant(a, dtype=logits.dtype) for a in args), logits))
    return tape.gradient(total, logits).numpy()


def tf_weighted(tf: Any) -> Callable[..., Any]:
    return lambda z, q, x: tf.nn.weighted_cross_entropy_with_logits(z, x, q)


def torch_grad(torch: Any, x: np.ndarray, z: np.ndarray, q: np.ndarray | None) -> np.ndarray:
    """``d sum(binary_cross_entropy_with_logits) / d x`` by PyTorch autograd."""
    logits = torch.tensor(x, requires_grad=True)
    pos_weight = None if q is None else torch.tensor(q)
    torch.nn.functional.binary_cross_entropy_with_logits(
        logits, torch.tensor(z), pos_weight=pos_weight, reduction="sum"
    ).backward()
    return logits.grad.numpy()


def optax_grad(jax: Any, loss: Callable[..., Any], x: np.ndarray, z: np.ndarray) -> np.ndarray:
    """``jax.grad`` of the sum of an optax loss (64-bit mode for float64)."""
    import jax.numpy as jnp

    with jax.enable_x64(x.dtype == np.float64):
        return np.asarray(jax.grad(lambda v: jnp.sum(loss(v, jnp.asarray(z))))(jnp.asarray(x)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_tensorflow_weighted_grad_at_zero(tf: Any, dtype: type) -> None:
    """TF's weighted loss goes through ``|x|`` and ``relu(-x)``, whose TF derivatives at 0 are
    0: its gradient at ``x = 0`` is ``1 - z`` instead of ``(1 - z)/2 - q z/2``."""
    x = np.zeros(2, dtype)
    z = np.array([0.0, 1.0], dtype)
    theirs = tf_grad(tf, tf_weighted(tf), x, z, np.array([3.0, 3.0], dtype))
    assert theirs.tolist() == [1.0, 0.0]
    ours = weighted_cross_entropy_with_logits_grad(z, x, 3.0)
    assert ours.tolist() == [0.5, -1.5]
    assert [float(oracle.logistic_grad(0.0, v, 3.0)) for v in (0.0, 1.0)] == [0.5, -1.5]
    # Its sigmoid loss differentiates its branches with `where`, and is right at 0.
    sigmoid = tf_grad(tf, lambda z, x: tf.nn.sigmoid_cross_entropy_with_logits(z, x), x, z)
    assert sigmoid.tolist() == [0.5, -0.5]


def test_torch_weighted_grad_wrong_sign(torch: Any) -> None:
    """PyTorch's ``(1 + (q - 1) z) sigma(x) - q z`` at x = 80, z = 1, q = 1e-3 in float32: the
    rounded ``1 + (q - 1)`` is not ``q``, and the gradient (exact -1.8e-38) comes out positive."""
    x, z, q = np.float32([80.0]), np.float32([1.0]), np.float32([1e-3])
    exact = oracle.logistic_grad(80.0, 1.0, float(q[0]))
    assert float(exact) == pytest.approx(-1.8048515e-38, rel=1e-7)
    theirs = float(torch_grad(torch, x, z, q)[0])
    assert theirs > 1e-8  # 4.67e-8
    ours = float(weighted_cross_entropy_with_logits_grad(z, x, q)[0])
    assert ours < 0 and oracle.ulp_error(ours, exact, "float32") <= ULP_BOUND
    # float64 (q = 1e-3): the sign survives, the value is 6e21 times too large.
    theirs64 = float(torch_grad(torch, np.array([80.0]), np.array([1.0]), np.array([1e-3]))[0])
    exact64 = oracle.logistic_grad(80.0, 1.0, 1e-3)
    assert theirs64 < -1e-17 and float(exact64) == pytest.approx(-1.8048514e-38)
    ours64 = float(weighted_cross_entropy_with_logits_grad(1.0, 80.0, 1e-3))
    assert oracle.ulp_error(ours64, exact64, "float64") <= 4


def test_every_framework_rounds_the_small_sigmoid_gradient_away(
    tf: Any, torch: Any, jax: Any
) -> None:
    """``sigma(x) - z`` at x = 1e-10, z = 0.5 in float32: 0 everywhere; exactly 2.5e-11."""
    import optax

    x, z = np.float32([1e-10]), np.float32([0.5])
    exact = oracle.logistic_grad(float(x[0]), 0.5)
    peers = {
        "tf sigmoid": tf_grad(tf, lambda z, x: tf.nn.sigmoid_cross_entropy_with_logits(z, x), x, z),
        "tf weighted": tf_grad(tf, tf_weighted(tf), x, z, np.float32([1.0])),
        "torch": torch_grad(torch, x, z, None),
        "torch weighted": torch_grad(torch, x, z, np.float32([1.0])),
        "optax": optax_grad(jax, optax.sigmoid_binary_cross_entropy, x, z),
    }
    assert {name: float(v[0]) for name, v in peers.items()} == dict.fromkeys(peers, 0.0)
    for ours in (sigmoid_cross_entropy_with_logits_grad(z, x),
                 weighted_cross_entropy_with_logits_grad(z, x, 1.0)):  # fmt: skip
        assert oracle.ulp_error(float(ours[0]), exact, "float32") <= 0.5
        assert float(ours[0]) == pytest.approx(2.5e-11, rel=1e-7)


def test_confident_softmax_gradient_rounded_away(tf: Any, torch: Any, jax: Any) -> None:
    """``softmax - 1`` for logits [20, 0], labels [1, 0] in float32: 0 in every framework,
    exactly -2.06e-9; and NaN where one logit is +inf (exact: 0)."""
    import optax

    x, z = np.float32([[20.0, 0.0], [np.inf, 0.0]]), np.float32([[1.0, 0.0], [1.0, 0.0]])
    peers = [
        tf_grad(tf, lambda z, x: tf.nn.softmax_cross_entropy_with_logits(z, x), x, z),
        optax_grad(jax, optax.softmax_cross_entropy, x, z),
    ]
    logits = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(logits, torch.tensor(z), reduction="sum").backward()
    peers.append(logits.grad.numpy())
    for theirs in peers:
        assert theirs[0, 0] == 0.0 and theirs[0, 1] == pytest.approx(2.0611537e-9)
        assert np.isnan(theirs[1]).all()
    ours = softmax_cross_entropy_with_logits_grad(z, x)
    exact = oracle.softmax_grad([20.0, 0.0], [1.0, 0.0])
    assert all(oracle.ulp_error(float(c), e, "float32") <= 0.5
               for c, e in zip(ours[0], exact, strict=True))  # fmt: skip
    assert ours[1].tolist() == [0.0, 0.0]


def test_softmax_semantics_true_derivative(tf: Any, torch: Any, jax: Any) -> None:
    """Labels summing to 2: PyTorch, optax and logitloss give the true derivative ``2 softmax -
    z``; TensorFlow's kernel gives ``softmax - z``."""
    import optax
    from scipy.special import softmax

    x = np.array([[1.0, 2.0, 3.0]])
    z = np.array([[1.0, 1.0, 0.0]])
    true = 2 * softmax(x, axis=-1) - z
    ours = softmax_cross_entropy_with_logits_grad(z, x)
    np.testing.assert_allclose(ours, true, rtol=1e-15)
    logits = torch.tensor(x, requires_grad=True)
    torch.nn.functional.cross_entropy(logits, torch.tensor(z), reduction="sum").backward()
    np.testing.assert_allclose(logits.grad.numpy(), true, rtol=1e-14)
    np.testing.assert_allclose(optax_grad(jax, optax.softmax_cross_entropy, x, z), true, rtol=1e-14)
    theirs = tf_grad(tf, lambda z, x: tf.nn.softmax_cross_entropy_with_logits(z, x), x, z)
    np.testing.assert_allclose(theirs, softmax(x, axis=-1) - z, rtol=1e-14)


def test_peers_agree_where_well_conditioned(tf: Any, torch: Any, jax: Any) -> None:
    """On moderate float64 inputs every framework's gradient agrees with ours (parity)."""
    import optax

    x, z = SMOOTH_X, SMOOTH_Z
    ours = sigmoid_cross_entropy_with_logits_grad(z, x)
    sigmoid = tf_grad(tf, lambda z, x: tf.nn.sigmoid_cross_entropy_with_logits(z, x), x, z)
    for theirs in (sigmoid, torch_grad(torch, x, z, None),
                   optax_grad(jax, optax.sigmoid_binary_cross_entropy, x, z)):  # fmt: skip
        np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-15)
    q = np.broadcast_to(SMOOTH_Q, x.shape).copy()
    ours = weighted_cross_entropy_with_logits_grad(z, x, q)
    for theirs in (tf_grad(tf, tf_weighted(tf), x, z, q), torch_grad(torch, x, z, q)):
        np.testing.assert_allclose(theirs, ours, rtol=1e-12, atol=1e-15)


def test_public_names() -> None:
    for name in ("sigmoid", "weighted", "softmax", "sparse_softmax"):
        assert callable(getattr(logitloss, f"{name}_cross_entropy_with_logits_grad"))
