"""The training losses (``binary_cross_entropy_with_logits``, ``cross_entropy``,
``sigmoid_focal_loss``) against mpmath, across every backend, under autodiff, and their errors.

The oracles are independent of the code under test: every expected value is the loss's
definition evaluated in mpmath at 50 digits on the exact binary inputs (label smoothing, weights,
z-loss and the reductions included), every expected gradient mpmath's numerical derivative of
that definition or ``torch.autograd.gradcheck``'s finite differences.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import mpmath as mp
import numpy as np
import pytest
from conftest import Backend

import logitloss
from logitloss._tools import oracle

mp.mp.dps = 50
RNG = np.random.default_rng(5)


# --- mpmath definitions ------------------------------------------------------------------------


def _softplus(t: Any) -> Any:
    return mp.log1p(mp.exp(t))


def mp_bce(x: float, z: float, q: float = 1.0, w: float = 1.0, eps: float = 0.0) -> Any:
    """``w (q z' softplus(-x) + (1 - z') softplus(x))`` with ``z' = z (1 - eps) + eps / 2``."""
    x, z, q, w, eps = (mp.mpf(float(v)) for v in (x, z, q, w, eps))
    zs = z * (1 - eps) + eps / 2
    return w * (q * zs * _softplus(-x) + (1 - zs) * _softplus(x))


def mp_neg_log_softmax(row: np.ndarray) -> list[Any]:
    xs = [mp.mpf(float(v)) for v in row]
    lse = mp.log(mp.fsum(mp.exp(v) for v in xs))
    return [lse - v for v in xs]


def mp_lse(row: np.ndarray) -> Any:
    return mp.log(mp.fsum(mp.exp(mp.mpf(float(v))) for v in row))


def mp_ce_index(row, label, w=None, eps=0.0, zl=0.0) -> tuple[Any, Any]:
    """PyTorch's smoothed, weighted index loss plus ``zl * w_y * lse^2``; and the row weight."""
    c = len(row)
    w = [mp.mpf(1)] * c if w is None else [mp.mpf(float(v)) for v in w]
    nl = mp_neg_log_softmax(row)
    eps = mp.mpf(eps)
    loss = (1 - eps) * w[label] * nl[label] + eps / c * mp.fsum(
        wc * n for wc, n in zip(w, nl, strict=True)
    )
    return loss + mp.mpf(zl) * w[label] * mp_lse(row) ** 2, w[label]


def mp_ce_probs(row, z, w=None, eps=0.0, zl=0.0) -> tuple[Any, Any]:
    c = len(row)
    w = [mp.mpf(1)] * c if w is None else [mp.mpf(float(v)) for v in w]
    nl = mp_neg_log_softmax(row)
    eps = mp.mpf(eps)
    zs = [(1 - eps) * mp.mpf(float(v)) + eps / c for v in z]
    r = mp.fsum(wc * mp.mpf(float(v)) for wc, v in zip(w, z, strict=True))
    return mp.fsum(wc * s * n for wc, s, n in zip(w, zs, nl, strict=True)) + mp.mpf(
        zl
    ) * r * mp_lse(row) ** 2, r


def mp_focal(x: Any, z: Any, alpha: float | None, gamma: float) -> Any:
    """torchvision's definition, ``alpha_t (1 - p_t)^gamma CE``, at 50 digits."""
    x, z = (v if isinstance(v, mp.mpf) else mp.mpf(float(v)) for v in (x, z))
    p = 1 / (1 + mp.exp(-x))
    ce = z * _softplus(-x) + (1 - z) * _softplus(x)
    loss = ce * (p * (1 - z) + (1 - p) * z) ** mp.mpf(gamma)
    if alpha is not None:
        loss *= mp.mpf(alpha) * z + (1 - mp.mpf(alpha)) * (1 - z)
    return loss


def max_ulps(got: Any, exact: list[Any] | Any, fmt: str) -> float:
    got = np.atleast_1d(np.asarray(got, dtype=np.float64))
    exact = exact if isinstance(exact, list) else [exact]
    return max(oracle.ulp_error(float(g), e, fmt) for g, e in zip(got, exact, strict=True))


# --- Values against mpmath ---------------------------------------------------------------------

N, C = 12, 5
X32 = (RNG.standard_normal((N, C)) * 6).astype(np.float32)
X32[0, 0], X32[1, 1] = 30.0, -25.0  # far tails, where the loss is tiny or linear
Z32 = RNG.uniform(0, 1, (N, C)).astype(np.float32)
Z32[:3] = np.round(Z32[:3])
Q32 = RNG.uniform(0.2, 4, C).astype(np.float32)
W32 = RNG.uniform(0, 3, (N, 1)).astype(np.float32)
LABELS = RNG.integers(0, C, N)
CLASS_W = RNG.uniform(0.2, 3, C).astype(np.float32)
PROBS = RNG.dirichlet(np.ones(C), N).astype(np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_bce_against_mpmath(dtype: str, eps: float) -> None:
    x, z, q, w = (a.astype(dtype) for a in (X32, Z32, Q32, W32))
    # float64 has nothing wider: the smoothed label z' is rounded once, and 1 - z' carries that
    # error relative to 1 - z' >= eps / 2: up to 1 / eps ULP.
    bound = 1 if dtype == "float32" else (4 if eps == 0 else 4 + 2 / eps)
    got = logitloss.binary_cross_entropy_with_logits(
        x, z, pos_weight=q, weight=w, label_smoothing=eps, reduction="none"
    )
    exact = [mp_bce(x[i, j], z[i, j], q[j], w[i, 0], eps) for i in range(N) for j in range(C)]
    assert max_ulps(got.ravel(), exact, dtype) <= bound
    total = mp.fsum(exact)
    for reduction, value in (
        ("sum", total),
        ("mean", total / (C * mp.fsum(mp.mpf(float(v)) for v in w[:, 0]))),
    ):
        got = logitloss.binary_cross_entropy_with_logits(
            x, z, pos_weight=q, weight=w, label_smoothing=eps, reduction=reduction
        )
        assert got.shape == () and got.dtype == np.dtype(dtype)
        assert max_ulps(got, value, dtype) <= bound


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("eps", "zl", "weighted"), [(0.0, 0.0, False), (0.1, 0.0, True),
                                                     (0.25, 1e-3, False), (1.0, 1e-2, True)])  # fmt: skip
def test_cross_entropy_index_against_mpmath(dtype: str, eps: float, zl: float, weighted: bool):
    x = X32.astype(dtype)
    w = CLASS_W.astype(dtype) if weighted else None
    labels = LABELS.copy()
    labels[4] = -100  # ignored
    where = np.ones(N, bool)
    where[5] = False  # masked
    bound = 1 if dtype == "float32" else 4
    kw = dict(weight=w, label_smoothing=eps, z_loss=zl, where=where)
    got = logitloss.cross_entropy(x, labels, reduction="none", **kw)
    rows = [mp_ce_index(x[i], labels[i], w, eps, zl) if where[i] and labels[i] >= 0
            else (mp.mpf(0), mp.mpf(0)) for i in range(N)]  # fmt: skip
    assert got[4] == 0 and got[5] == 0
    assert max_ulps(got, [r[0] for r in rows], dtype) <= bound
    mean = mp.fsum(r[0] for r in rows) / mp.fsum(r[1] for r in rows)
    assert max_ulps(logitloss.cross_entropy(x, labels, **kw), mean, dtype) <= bound


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("eps", "zl"), [(0.0, 0.0), (0.2, 1e-3)])
def test_cross_entropy_probabilities_against_mpmath(dtype: str, eps: float, zl: float) -> None:
    x, p, w = X32.astype(dtype), PROBS.astype(dtype), CLASS_W.astype(dtype)
    bound = 1 if dtype == "float32" else 4
    got = logitloss.cross_entropy(x, p, weight=w, label_smoothing=eps, z_loss=zl, reduction="none")
    rows = [mp_ce_probs(x[i], p[i], w, eps, zl) for i in range(N)]
    assert max_ulps(got, [r[0] for r in rows], dtype) <= bound
    mean = mp.fsum(r[0] for r in rows) / mp.fsum(r[1] for r in rows)
    got = logitloss.cross_entropy(x, p, weight=w, label_smoothing=eps, z_loss=zl)
    assert max_ulps(got, mean, dtype) <= bound


def test_integer_smoothing_without_cancellation() -> None:
    """A large common offset: ``logsumexp - mean(x)`` would lose ``log C`` to the rounding of
    1e4 (an ULP of 1e4 in float32 is 1e-3); the exact softmax loss with ones as labels keeps it."""
    x = (1e4 + RNG.uniform(0, 1e-2, (4, 7))).astype(np.float32)
    labels = np.array([0, 3, 6, 2])
    got = logitloss.cross_entropy(x, labels, label_smoothing=1.0, reduction="none")
    exact = [mp_ce_index(x[i], labels[i], eps=1.0)[0] for i in range(4)]
    assert max_ulps(got, exact, "float32") <= 1


def test_z_loss_of_infinite_and_tied_rows() -> None:
    """logsumexp with ties (the first maximum carries it) and at +inf (the true limit)."""
    x = np.array([[3.0, 3.0, 3.0, -1.0], [np.inf, 0.0, 1.0, 2.0]])
    got = logitloss.cross_entropy(x, np.array([1, 0]), z_loss=0.5, reduction="none")
    exact = mp_ce_index(x[0], 1, zl=0.5)[0]
    assert max_ulps(got[0], exact, "float64") <= 4
    assert got[1] == np.inf


FOCAL_POINTS = [(3.0, 1.0), (-1.0, 1.0), (40.0, 1.0), (-30.0, 0.0), (0.0, 0.0), (2.5, 0.3),
                (-7.0, 0.8), (0.25, 0.5), (15.0, 0.9), (-0.5, 0.0)]  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (None, 0.5), (0.75, 1.5), (0.5, 0.0)])
def test_focal_against_mpmath(dtype: str, alpha: float | None, gamma: float) -> None:
    x = np.array([p[0] for p in FOCAL_POINTS], dtype=dtype)
    z = np.array([p[1] for p in FOCAL_POINTS], dtype=dtype)
    got = logitloss.sigmoid_focal_loss(x, z, alpha=alpha, gamma=gamma)
    exact = [mp_focal(float(a), float(b), alpha, gamma) for a, b in zip(x, z, strict=True)]
    # float64: e^(gamma log(1 - p_t)) carries the rounding of log(1 - p_t), which is about
    # |x| for confident predictions: gamma |x| ULP (float32 is computed in float64: 1 ULP).
    bound = 1 if dtype == "float32" else 4 + gamma * float(np.abs(x).max())
    assert max_ulps(got, exact, dtype) <= bound
    got = logitloss.sigmoid_focal_loss(x, z, alpha=alpha, gamma=gamma, reduction="mean")
    assert max_ulps(got, mp.fsum(exact) / len(exact), dtype) <= bound


# --- Gradients ---------------------------------------------------------------------------------


def mp_focal_grad(x: float, z: float, alpha: float | None, gamma: float, wrt: str) -> Any:
    if wrt == "logits":
        return mp.diff(lambda t: mp_focal(t, z, alpha, gamma), mp.mpf(x))
    # A one-sided derivative at labels 0 and 1 (the definition stops there).
    direction = -1 if z == 1 else 1
    return mp.diff(lambda t: mp_focal(x, t, alpha, gamma), mp.mpf(z), direction=direction)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gradients_against_mpmath_torch(gamma: float) -> None:
    """Finite, and the derivative of the definition, also where torchvision's is NaN
    (``gamma = 0.5, x = 40, z = 1``: see test_training_parity)."""
    torch = pytest.importorskip("torch")
    x = torch.tensor([p[0] for p in FOCAL_POINTS], dtype=torch.float64, requires_grad=True)
    z = torch.tensor([p[1] for p in FOCAL_POINTS], dtype=torch.float64, requires_grad=True)
    logitloss.sigmoid_focal_loss(x, z, alpha=0.25, gamma=gamma).sum().backward()
    for wrt, grad in (("logits", x.grad), ("labels", z.grad)):
        assert torch.isfinite(grad).all()
        exact = [mp_focal_grad(a, b, 0.25, gamma, wrt) for a, b in FOCAL_POINTS]
        for g, e in zip(grad.tolist(), exact, strict=True):
            assert abs(g - e) <= 1e-12 * abs(e) + 1e-300, (wrt, g, e)


def test_focal_gradients_against_mpmath_jax() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(True):
        x = jnp.array([p[0] for p in FOCAL_POINTS])
        z = jnp.array([p[1] for p in FOCAL_POINTS])
        f = jax.jit(lambda a, b: logitloss.sigmoid_focal_loss(a, b, gamma=0.5, reduction="sum"))
        gx, gz = jax.grad(f, argnums=(0, 1))(x, z)
    for wrt, grad in (("logits", gx), ("labels", gz)):
        exact = [mp_focal_grad(a, b, 0.25, 0.5, wrt) for a, b in FOCAL_POINTS]
        for g, e in zip(np.asarray(grad).tolist(), exact, strict=True):
            assert abs(g - e) <= 1e-12 * abs(e) + 1e-300, (wrt, g, e)


def test_gradcheck_every_differentiable_argument() -> None:
    """torch's finite differences (float64) for logits, labels, pos_weight and weights."""
    torch = pytest.importorskip("torch")
    from torch.autograd import gradcheck

    def t(a: np.ndarray) -> Any:
        return torch.tensor(a[:4, :3], dtype=torch.float64, requires_grad=True)

    x, z = t(X32 / 3), t(Z32 * 0.8 + 0.1)
    q = torch.tensor(Q32[:3], dtype=torch.float64, requires_grad=True)
    w = torch.tensor(W32[:4] + 0.5, dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([[True], [False], [True], [True]])
    bce = logitloss.binary_cross_entropy_with_logits
    assert gradcheck(lambda *a: bce(*a[:2], pos_weight=a[2], weight=a[3], label_smoothing=0.1,
                                    where=mask), (x, z, q, w))  # fmt: skip
    cw = torch.tensor(CLASS_W[:3], dtype=torch.float64, requires_grad=True)
    p = torch.tensor(PROBS[:4, :3] / PROBS[:4, :3].sum(1, keepdims=True), dtype=torch.float64,
                     requires_grad=True)  # fmt: skip
    ce = logitloss.cross_entropy
    labels = torch.tensor([0, 2, -100, 1])
    for kw in (dict(label_smoothing=0.2, z_loss=0.01), dict(reduction="sum")):
        assert gradcheck(lambda a, b, kw=kw: ce(a, labels, weight=b, **kw), (x, cw))
        assert gradcheck(lambda a, b, c, kw=kw: ce(a, b, weight=c, **kw), (x, p, cw))
    assert gradcheck(lambda a, b: ce(a, b, axis=0, reduction="none"), (x, p))
    focal = logitloss.sigmoid_focal_loss
    assert gradcheck(lambda a, b: focal(a, b, gamma=0.5, reduction="mean"), (x, z))


def test_nothing_counted_gives_zero_and_zero_gradient() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor(X32[:3], requires_grad=True)
    w = torch.ones(C, requires_grad=True)
    losses = [
        logitloss.cross_entropy(x, torch.full((3,), -100), weight=w),
        logitloss.cross_entropy(x, torch.tensor(PROBS[:3]), where=torch.zeros(3, dtype=bool)),
        logitloss.binary_cross_entropy_with_logits(x, torch.tensor(Z32[:3]), weight=0 * w),
        logitloss.binary_cross_entropy_with_logits(x[:0], torch.tensor(Z32[:0])),
        logitloss.sigmoid_focal_loss(x[:0], torch.tensor(Z32[:0]), reduction="mean"),
    ]
    for loss in losses:
        assert loss.item() == 0.0
        x.grad = None
        loss.backward()
        assert x.grad is None or (x.grad == 0).all()


def test_one_hot_and_index_targets_agree() -> None:
    """The documented meaning of "mean": the same for indices and their one-hot rows, under
    weights, smoothing, z-loss, masks and every reduction."""
    onehot = np.eye(C, dtype=np.float32)[LABELS]
    where = RNG.uniform(size=N) < 0.7
    for reduction in ("none", "sum", "mean"):
        kw = dict(weight=CLASS_W, label_smoothing=0.15, z_loss=1e-3, where=where,
                  reduction=reduction)  # fmt: skip
        a = logitloss.cross_entropy(X32, LABELS, **kw)
        b = logitloss.cross_entropy(X32, onehot, **kw)
        np.testing.assert_allclose(a, b, rtol=2 * np.finfo(np.float32).eps)


def test_class_axis_and_extra_dimensions() -> None:
    """Classes on axis 1 of (N, C, L), as torch's modules: the same as classes last."""
    x = X32.reshape(3, 4, C)
    labels = LABELS.reshape(3, 4)
    last = logitloss.cross_entropy(x, labels, weight=CLASS_W, label_smoothing=0.1, z_loss=1e-2,
                                   reduction="none")  # fmt: skip
    moved = logitloss.cross_entropy(np.moveaxis(x, 2, 1), labels, axis=1, weight=CLASS_W,
                                    label_smoothing=0.1, z_loss=1e-2, reduction="none")  # fmt: skip
    np.testing.assert_array_equal(last, moved)
    probs = np.moveaxis(PROBS.reshape(3, 4, C), 2, 1)
    got = logitloss.cross_entropy(np.moveaxis(x, 2, 1), probs, axis=1, reduction="none")
    exact = [mp_ce_probs(x[i, j], PROBS.reshape(3, 4, C)[i, j])[0] for i in range(3)
             for j in range(4)]  # fmt: skip
    assert max_ulps(got.ravel(), exact, "float32") <= 1


# --- Every backend -----------------------------------------------------------------------------


def test_every_backend(backend: Backend) -> None:
    """The same numbers as NumPy, in the backend's own arrays and the logits' dtype."""
    b = backend
    x, z, w = X32[:6], Z32[:6], W32[:6]
    labels = LABELS[:6].copy()
    labels[1] = -100
    mask = np.array([True, True, False, True, True, True])
    calls = [
        lambda m: logitloss.binary_cross_entropy_with_logits(
            m.asarray(x), m.asarray(z), pos_weight=m.asarray(Q32), weight=m.asarray(w),
            label_smoothing=0.1, where=m.asarray(mask[:, None])),
        lambda m: logitloss.binary_cross_entropy_with_logits(
            m.asarray(x), m.asarray(z), reduction="none"),
        lambda m: logitloss.cross_entropy(
            m.asarray(x), m.asarray(labels), weight=m.asarray(CLASS_W), label_smoothing=0.1,
            z_loss=1e-3, where=m.asarray(mask)),
        lambda m: logitloss.cross_entropy(
            m.asarray(x.T), m.asarray(PROBS[:6].T), axis=0, label_smoothing=0.2,
            reduction="none"),
        lambda m: logitloss.sigmoid_focal_loss(m.asarray(x), m.asarray(z), gamma=0.5),
        lambda m: logitloss.sigmoid_focal_loss(m.asarray(x), m.asarray(z), reduction="sum"),
    ]  # fmt: skip
    ident = Backend("numpy", np, np.array, np.asarray, lambda a: True)
    for call in calls:
        expected = np.asarray(call(ident))
        got = call(b)
        assert b.is_native(got)
        got = b.to_numpy(got)
        assert got.dtype == np.float32 and got.shape == expected.shape
        # JAX's 32-bit mode computes in float32: a few ULP, not one.
        rtol = 4 * np.finfo(np.float32).eps if b.has_float64 else 1e-5
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=1e-30)


def test_jax_jit_and_grad_match_torch() -> None:
    """JAX (x64, jit) and torch differentiate the same options to the same gradients."""
    jax = pytest.importorskip("jax")
    torch = pytest.importorskip("torch")
    jnp = jax.numpy
    x, cw = X32.astype(np.float64), CLASS_W.astype(np.float64)
    labels = LABELS.copy()
    labels[2] = -100

    def loss(lib: Any, a: Any, w: Any, p: Any) -> Any:
        a_ = logitloss.cross_entropy(a, lib.asarray(labels), weight=w, label_smoothing=0.1,
                                     z_loss=1e-2)  # fmt: skip
        b_ = logitloss.cross_entropy(a, p, weight=w, label_smoothing=0.1, reduction="sum")
        c_ = logitloss.binary_cross_entropy_with_logits(a, p, weight=w, pos_weight=w)
        return a_ + b_ + c_

    with jax.enable_x64(True):
        grads = jax.jit(jax.grad(lambda *a: loss(jnp, *a), argnums=(0, 1, 2)))(
            jnp.asarray(x), jnp.asarray(cw), jnp.asarray(PROBS, dtype=jnp.float64)
        )
    ts = [torch.tensor(a, dtype=torch.float64, requires_grad=True)
          for a in (x, cw, PROBS.astype(np.float64))]  # fmt: skip
    loss(torch, *ts).backward()
    for g, t in zip(grads, ts, strict=True):
        np.testing.assert_allclose(np.asarray(g), t.grad.numpy(), rtol=1e-13, atol=1e-15)


def test_inputs_are_not_modified() -> None:
    args = [a.copy() for a in (X32, Z32, Q32, W32, LABELS, CLASS_W)]
    labels = args[4].copy()
    labels[0] = -100
    logitloss.binary_cross_entropy_with_logits(*args[:2], pos_weight=args[2], weight=args[3],
                                               label_smoothing=0.3)  # fmt: skip
    logitloss.cross_entropy(args[0], labels, weight=args[5], label_smoothing=0.3, z_loss=0.1)
    logitloss.sigmoid_focal_loss(args[0], args[1])
    for a, b in zip(args, (X32, Z32, Q32, W32, LABELS, CLASS_W), strict=True):
        np.testing.assert_array_equal(a, b)
    assert labels[0] == -100


# --- Errors ------------------------------------------------------------------------------------

XE = np.zeros((2, 3), dtype=np.float32)
bce, ce, focal = (logitloss.binary_cross_entropy_with_logits, logitloss.cross_entropy,
                  logitloss.sigmoid_focal_loss)  # fmt: skip


# ruff: noqa: E501 (one table row per error case reads better than wrapped rows)
# fmt: off
ERROR_CASES = [
    (lambda: bce(XE, XE, reduction="avg"), ValueError, r"binary_cross_entropy_with_logits: `reduction` must be 'none', 'mean' or 'sum', got 'avg'"),
    (lambda: bce(XE, XE, reduction=None), TypeError, r"`reduction` must be a str, got builtins.NoneType"),
    (lambda: bce(XE, XE, label_smoothing=1.5), ValueError, r"`label_smoothing` must be in \[0, 1\], got 1.5"),
    (lambda: bce(XE, XE, label_smoothing=math.nan), ValueError, r"`label_smoothing` must be in \[0, 1\]"),
    (lambda: bce(XE, XE, label_smoothing=True), TypeError, r"`label_smoothing` must be a real number, got builtins.bool"),
    (lambda: bce(XE, XE[0]), ValueError, r"same shape; got labels \(3,\) and logits \(2, 3\)"),
    (lambda: bce(XE, XE, weight=np.ones((2, 2))), ValueError, r"`weight` of shape \(2, 2\) must broadcast"),
    (lambda: bce(XE, XE, pos_weight=np.ones((2, 2, 3))), ValueError, r"`pos_weight` of shape \(2, 2, 3\)"),
    (lambda: bce(XE, XE, where=np.ones((2, 3))), TypeError, r"`where` must be a boolean mask, got dtype float64"),
    (lambda: bce(XE.astype(int), XE), TypeError, r"`logits` must have a real floating dtype"),
    (lambda: ce(XE, np.array([0, 3])), ValueError, r"cross_entropy: `labels` must lie in \[0, 3\)"),
    (lambda: ce(XE, np.array([0, -1])), ValueError, r"`labels` must lie in \[0, 3\)"),
    (lambda: ce(XE, np.array([0, 1, 2])), ValueError, r"integer `labels` \(class indices\) must have the shape of `logits` without axis 1, \(2,\); got \(3,\)"),
    (lambda: ce(XE, XE[:, :2]), ValueError, r"`labels` of shape \(2, 2\) must broadcast"),
    (lambda: ce(XE, np.array([0, 1]), weight=np.ones(4)), ValueError, r"`weight` of shape \(4,\) must broadcast to the shape of the classes \(3,\)"),
    (lambda: ce(XE, np.array([0, 1]), z_loss=-1.0), ValueError, r"`z_loss` must be >= 0, got -1.0"),
    (lambda: ce(XE, np.array([0, 1]), ignore_index=1.5), TypeError, r"`ignore_index` must be an int, got builtins.float"),
    (lambda: ce(XE, np.array([0, 1]), axis=2), ValueError, r"`axis` must be in \[-2, 2\)"),
    (lambda: ce(XE, np.array([0, 1]), where=np.ones(3, bool)), ValueError, r"`where` of shape \(3,\) must broadcast to the shape of the loss \(2,\)"),
    (lambda: ce(XE, None), TypeError, r"cross_entropy: `labels` is required"),
    (lambda: focal(XE, XE, gamma=-1.0), ValueError, r"sigmoid_focal_loss: `gamma` must be >= 0, got -1.0"),
    (lambda: focal(XE, XE, alpha=1.5), ValueError, r"`alpha` must be in \[0, 1\], or -1 or None, got 1.5"),
    (lambda: focal(XE, XE, alpha=-0.5), ValueError, r"`alpha` must be in \[0, 1\], or -1 or None, got -0.5"),
    (lambda: focal(XE, XE, reduction="max"), ValueError, r"sigmoid_focal_loss: `reduction` must be"),
]
# fmt: on


@pytest.mark.parametrize(("call", "error", "pattern"), ERROR_CASES)
def test_errors(call: Any, error: type, pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_masked_and_ignored_labels_need_not_be_classes() -> None:
    """Padding rows may hold any label when they are masked or carry ``ignore_index``."""
    labels = np.array([0, 99])
    got = ce(XE, labels, where=np.array([True, False]))
    np.testing.assert_allclose(got, math.log(3), rtol=1e-7)
    assert ce(XE, np.array([-1, 2]), ignore_index=-1, reduction="sum") == np.float32(math.log(3))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("count", [65, 66, 100])
def test_a_sum_beyond_the_dtype_rounds_to_inf_silently(dtype: Any, count: int) -> None:
    """The reduced value is rounded once into the logits' dtype: a float16 sum past 65504 is
    inf (no overflow warning), one below it finite, and wider dtypes keep it (the mpmath
    value of ``count`` elements of ``softplus(1000)``)."""
    x = np.full(count, -1000.0, dtype)
    z = np.ones(count, dtype)
    exact = count * _softplus(mp.mpf(1000))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        total = logitloss.binary_cross_entropy_with_logits(x, z, reduction="sum")
    assert total.dtype == dtype and total.shape == ()
    with np.errstate(over="ignore"):  # NumPy's rounding of the exact value: inf past the max
        expected = np.asarray(float(exact)).astype(dtype)
    assert total == expected
    assert np.isinf(total) == (dtype is np.float16 and count * 1000 > 65520)
