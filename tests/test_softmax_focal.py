"""``softmax_focal_loss`` against mpmath (values and derivatives), on every backend, with its
options, limits and errors."""

from __future__ import annotations

import math
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from conftest import np_dtype

import logitloss
from logitloss._tools import oracle

RNG = np.random.default_rng(13)
C = 5
X = RNG.standard_normal((20, C)) * 6
X[0, :2] = [0.0, 40.0]  # Keras' clip: 16.12 where the exact value is 40
X[1, :3] = [40.0, 0.0, -10.0]  # a confident right row: its factor is e^(-40 gamma)
X[2] = 2.0  # ties
X[3, :3] = [100.0, -100.0, 0.0]
X[4] = [0.0, 0.0, -50.0, -50.0, -50.0]  # p = 1/2: the two branches meet
X[5] = [30.0, 29.9, 0.0, 0.0, 0.0]
X[6] = [-3.0, 80.0, 1.0, 2.0, 0.0]
LABELS = RNG.integers(0, C, len(X))
LABELS[:2] = 0
LABELS[6] = 1
PROBS = RNG.dirichlet(np.ones(C), len(X))
ALPHA = RNG.uniform(0.2, 3.0, C)


def mp_focal(row: Any, z: Any, alpha: Any, gamma: float, eps: float = 0.0) -> Any:
    """The definition, ``sum_c alpha_c z'_c (1 - p_c)^gamma (-log p_c)``, at 50 digits, with
    ``1 - p_c`` summed from the other classes' probabilities (at mp.diff's higher precision
    where it asks for one)."""
    with mp.workdps(max(50, mp.mp.dps)):
        x = [v if isinstance(v, mp.mpf) else mp.mpf(float(v)) for v in row]
        m = max(x)
        lse = m + mp.log(mp.fsum(mp.exp(v - m) for v in x))
        total = mp.mpf(0)
        for c in range(len(x)):
            zc = (1 - mp.mpf(eps)) * mp.mpf(float(z[c])) + mp.mpf(eps) / len(x)
            if zc == 0:
                continue
            rest = mp.fsum(mp.exp(x[j] - lse) for j in range(len(x)) if j != c)
            weight = 1 if alpha is None else mp.mpf(float(alpha[c]))
            factor = rest ** mp.mpf(gamma) if gamma else 1
            total += weight * zc * factor * (lse - x[c])
        return total


def max_ulps(got: Any, exact: list[Any], fmt: str) -> float:
    got = np.atleast_1d(np.asarray(got, dtype=np.float64))
    return max(oracle.ulp_error(float(g), e, fmt) for g, e in zip(got, exact, strict=True))


def float64_bound(x: np.ndarray, gamma: float) -> float:
    """float64 has nothing wider: ``e^(gamma log(1 - p))`` carries the rounding of
    ``log(1 - p)``, about the row's range for a confident row (as the sigmoid focal loss)."""
    return 4 + gamma * float(np.ptp(x, axis=-1).max())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("kind", ["index", "probs"])
def test_against_mpmath(dtype: str, gamma: float, kind: str) -> None:
    """Narrow dtypes within 1 ULP (float64 inside, one rounding: 0.5 measured); float64
    within ``4 + gamma * range`` (68 measured, for row 6 with gamma 2)."""
    x = X.astype(np_dtype(dtype))
    labels = LABELS if kind == "index" else PROBS.astype(x.dtype)
    dense = np.eye(C)[LABELS] if kind == "index" else labels
    bound = float64_bound(X, gamma) if dtype == "float64" else 1.0
    for alpha, eps in [(None, 0.0), (ALPHA, 0.1)]:
        got = logitloss.softmax_focal_loss(x, labels, alpha=alpha, gamma=gamma,
                                           label_smoothing=eps)  # fmt: skip
        exact = [mp_focal(r, z, alpha, gamma, eps) for r, z in zip(x, dense, strict=True)]
        assert got.dtype == x.dtype
        assert max_ulps(got, exact, dtype) <= bound
        total = logitloss.softmax_focal_loss(x, labels, alpha=alpha, gamma=gamma,
                                             label_smoothing=eps, reduction="sum")  # fmt: skip
        assert max_ulps(total, [mp.fsum(exact)], dtype) <= max(bound, 1.0)


def test_keras_clipping_example() -> None:
    """Logits [0, 40], label 0, gamma 0, alpha 1: the exact 40 (Keras clips p to 1e-7 and
    gives -log(1e-7) = 16.12; test_keras pins Keras' value)."""
    got = logitloss.softmax_focal_loss(np.array([[0.0, 40.0]], np.float32), np.array([0]),
                                       gamma=0.0, alpha=1.0)  # fmt: skip
    assert float(got[0]) == float(mp_focal([0.0, 40.0], [1, 0], None, 0.0)) == 40.0


def test_backends(backend: Any) -> None:
    """Every library: its own array type back, the dtype kept, within the bound (JAX without
    x64 computes in float32, where the float64 bound's reasoning applies to float32)."""
    dtype = "float32"
    x = backend.asarray(X.astype(dtype))
    labels = backend.asarray(LABELS)
    got = logitloss.softmax_focal_loss(x, labels, gamma=2.0, alpha=ALPHA)
    assert backend.is_native(got)
    exact = [mp_focal(r, z, ALPHA, 2.0) for r, z in zip(X.astype(dtype), np.eye(C)[LABELS],
                                                          strict=True)]  # fmt: skip
    bound = 1.0 if backend.has_float64 else float64_bound(X, 2.0)
    assert max_ulps(backend.to_numpy(got), exact, dtype) <= bound


def test_axis_and_labels_agree() -> None:
    """Classes on axis 1 of a 3-D batch, index labels and one-hot labels: one value."""
    x = RNG.standard_normal((3, C, 4)).astype(np.float32) * 4
    labels = RNG.integers(0, C, (3, 4))
    one_hot = np.moveaxis(np.eye(C, dtype=np.float32)[labels], -1, 1)
    by_index = logitloss.softmax_focal_loss(x, labels, axis=1, alpha=ALPHA, gamma=1.5)
    by_probs = logitloss.softmax_focal_loss(x, one_hot, axis=1, alpha=ALPHA, gamma=1.5)
    last = logitloss.softmax_focal_loss(np.moveaxis(x, 1, -1), labels, alpha=ALPHA, gamma=1.5)
    assert by_index.shape == (3, 4)
    np.testing.assert_array_equal(by_index, by_probs)
    np.testing.assert_array_equal(by_index, last)
    mean = logitloss.softmax_focal_loss(x, labels, axis=1, gamma=1.5, reduction="mean")
    np.testing.assert_allclose(mean, np.mean(np.float64(
        logitloss.softmax_focal_loss(x, labels, axis=1, gamma=1.5))), rtol=1e-7)  # fmt: skip


INF = math.inf
LIMIT_ROWS = [
    ([INF, 0.0, -1.0], [1, 0, 0], 0.0),  # one +inf: one-hot on it, loss 0
    ([INF, 0.0, -1.0], [0, 1, 0], INF),
    ([0.0, -INF, 1.0], [1, 0, 0], None),  # -inf of zero label: the finite rest's value
    ([-INF, -INF, -INF], [1, 0, 0], math.nan),  # no limit
    ([INF, INF, 0.0], [1, 0, 0], math.nan),
]


@pytest.mark.parametrize(("row", "z", "limit"), LIMIT_ROWS)
def test_limits(row: list[float], z: list[int], limit: float | None) -> None:
    got = float(logitloss.softmax_focal_loss(np.array([row]), np.array([z], np.float64))[0])
    if limit is None:
        finite = [v for v in row if v != -INF]
        limit = float(mp_focal(finite, [1, 0], None, 2.0))
    if math.isnan(limit):
        assert math.isnan(got)
    else:
        assert got == limit


GRAD_ROWS = [
    ([0.0, 40.0], 0), ([0.0, 40.0], 1), ([40.0, 0.0, -10.0], 0), ([2.0, 2.0, 2.0], 1),
    ([-3.0, 80.0, 1.0, 2.0, 0.0], 1), ([0.3, -1.2, 2.0], 2), ([0.0, -INF, 1.0], 0),
]  # fmt: skip


def mp_grad(row: list[float], label: int, gamma: float) -> list[float]:
    """The derivative of the definition with respect to each finite logit (0 at ``-inf``)."""
    z = [1 if j == label else 0 for j in range(len(row))]
    out = []
    for j, v in enumerate(row):
        if v == -INF:
            out.append(0.0)
            continue
        keep = [mp.mpf(w) if w != -INF else None for w in row]

        def f(t: Any, j: int = j, keep: list = keep) -> Any:
            values = [t if k == j else w for k, w in enumerate(keep)]
            kept = [(w, zk) for w, zk in zip(values, z, strict=True) if w is not None]
            return mp_focal([w for w, _ in kept], [zk for _, zk in kept], None, gamma)

        with mp.workdps(80):
            # A central difference: its error, h^2 f'''(x) / 6, is 1e-50 of the value.
            h = mp.mpf("1e-25")
            out.append(float((f(mp.mpf(v) + h) - f(mp.mpf(v) - h)) / (2 * h)))
    return out


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gradients_against_mpmath(gamma: float) -> None:
    """torch and JAX (under jit) give the derivative of the definition, finite at confident
    rows, at ties and next to ``-inf`` logits (the rows padded with them to one batch)."""
    torch = pytest.importorskip("torch")
    jax = pytest.importorskip("jax")
    width = max(len(row) for row, _ in GRAD_ROWS)
    rows = [row + [-INF] * (width - len(row)) for row, _ in GRAD_ROWS]
    labels = [label for _, label in GRAD_ROWS]
    exact = [mp_grad(row, label, gamma) for row, label in zip(rows, labels, strict=True)]
    x = torch.tensor(rows, dtype=torch.float64, requires_grad=True)
    logitloss.softmax_focal_loss(x, torch.tensor(labels), gamma=gamma).sum().backward()
    with jax.enable_x64(True):
        f = jax.jit(lambda a, b: logitloss.softmax_focal_loss(a, b, gamma=gamma, reduction="sum"))
        gj = np.asarray(jax.grad(f)(jax.numpy.array(rows), jax.numpy.array(labels)))
    for got in (x.grad.numpy(), gj):
        np.testing.assert_allclose(got, np.array(exact), rtol=1e-11, atol=1e-300)


def test_torch_gradcheck() -> None:
    torch = pytest.importorskip("torch")
    from torch.autograd import gradcheck

    x = torch.tensor(X[7:10], dtype=torch.float64, requires_grad=True)
    z = torch.tensor(PROBS[7:10], dtype=torch.float64, requires_grad=True)
    f = logitloss.softmax_focal_loss
    assert gradcheck(lambda a, b: f(a, b, gamma=0.7, alpha=ALPHA, reduction="mean"), (x, z))


def test_out_of_range_under_jit_is_nan() -> None:
    jax = pytest.importorskip("jax")
    f = jax.jit(lambda a, lab: logitloss.softmax_focal_loss(a, lab))
    got = np.asarray(f(jax.numpy.zeros((2, 3)), jax.numpy.array([1, 3])))
    assert np.isfinite(got[0]) and np.isnan(got[1])


# ruff: noqa: E501 (one table row per error case reads better than wrapped rows)
# fmt: off
XE = np.zeros((2, 3), np.float32)
focal = logitloss.softmax_focal_loss
ERRORS = [
    (lambda: focal(XE, np.array([0, 3])), ValueError,
     r"softmax_focal_loss: `labels` must lie in \[0, 3\) \(the number of classes\); got values from 0 to 3"),
    (lambda: focal(XE, np.array([0, 1, 2])), ValueError,
     r"softmax_focal_loss: integer `labels` \(class indices\) must have the shape of `logits` without axis 1, \(2,\); got \(3,\)"),
    (lambda: focal(XE, np.zeros((2, 4), np.float32)), ValueError,
     r"softmax_focal_loss: `labels` of shape \(2, 4\) must broadcast to the shape of `logits` \(2, 3\)"),
    (lambda: focal(XE, XE, alpha=[1.0, 2.0]), ValueError,
     r"softmax_focal_loss: `alpha` must be one number or one per class \(3,\), got shape \(2,\)"),
    (lambda: focal(XE, XE, alpha=-1.0), ValueError,
     r"softmax_focal_loss: `alpha` must be finite and >= 0, got -1.0"),
    (lambda: focal(XE, XE, alpha="a"), TypeError,
     r"softmax_focal_loss: `alpha` must be a real number, a sequence of them or None, got builtins.str"),
    (lambda: focal(XE, XE, gamma=-1.0), ValueError, r"softmax_focal_loss: `gamma` must be >= 0, got -1.0"),
    (lambda: focal(XE, XE, label_smoothing=2.0), ValueError,
     r"softmax_focal_loss: `label_smoothing` must be in \[0, 1\], got 2.0"),
    (lambda: focal(XE, XE, axis=2), ValueError, r"softmax_focal_loss: `axis` must be in \[-2, 2\)"),
    (lambda: focal(XE.astype(np.int32), XE), TypeError, r"softmax_focal_loss: `logits`"),
    (lambda: focal(XE, None), TypeError, r"softmax_focal_loss: `labels` is required, got None"),
    (lambda: focal(XE, XE, reduction="max"), ValueError, r"softmax_focal_loss: `reduction` must be"),
]
# fmt: on


@pytest.mark.parametrize(("call", "error", "message"), ERRORS)
def test_errors(call: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()
