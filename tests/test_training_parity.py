"""Parity of the training losses with the real PyTorch, torchvision, optax and Keras functions on
the same arguments, and each documented difference pinned: the peer's answer, and ours.

Documented differences (README "Training losses"):
- "mean" with weights is the weighted mean: for probability targets with class weights
  PyTorch divides by N, for ``binary_cross_entropy_with_logits`` with ``weight`` it divides by
  the number of elements; logitloss divides by the weights' sum (pinned as the exact ratio).
- Nothing counted gives 0 (PyTorch, torchvision: NaN).
- Exact values where the peers round (a common offset in float32 smoothing).
- The focal loss's gradient is finite for gamma < 1 (torchvision: NaN at x = 40, z = 1).
"""

from __future__ import annotations

import importlib.util
import math
import os
import pathlib
import sys
from collections.abc import Callable
from typing import Any

import mpmath as mp
import numpy as np
import pytest

import logitloss
from logitloss._tools import oracle

RNG = np.random.default_rng(8)
N, C = 10, 4
X = RNG.standard_normal((N, C)) * 4
Z = RNG.uniform(0, 1, (N, C))
Q = RNG.uniform(0.3, 3, C)
W = RNG.uniform(0.1, 2, (N, 1))
LABELS = RNG.integers(0, C, N)
LABELS[3] = -100
CLASS_W = RNG.uniform(0.3, 3, C)
PROBS = RNG.dirichlet(np.ones(C), N)
F64 = dict(rtol=1e-13, atol=1e-14)


@pytest.fixture(scope="module")
def torch() -> Any:
    return pytest.importorskip("torch")


def _t(torch: Any, a: Any) -> Any:
    return torch.as_tensor(a)


# --- PyTorch -----------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_torch_binary_cross_entropy_with_logits(torch: Any, reduction: str) -> None:
    F = torch.nn.functional
    x, z, q, w = (_t(torch, a) for a in (X, Z, Q, W))
    theirs = F.binary_cross_entropy_with_logits(x, z, pos_weight=q, reduction=reduction)
    ours = logitloss.binary_cross_entropy_with_logits(x, z, pos_weight=q, reduction=reduction)
    np.testing.assert_allclose(ours, theirs, **F64)
    theirs = F.binary_cross_entropy_with_logits(x, z, weight=w, pos_weight=q, reduction=reduction)
    ours = logitloss.binary_cross_entropy_with_logits(
        x, z, weight=w, pos_weight=q, reduction=reduction
    )
    if reduction != "mean":
        np.testing.assert_allclose(ours, theirs, **F64)
    else:
        # Documented: torch divides sum(w l) by N elements, logitloss by sum(w).
        assert not np.isclose(ours, theirs)
        np.testing.assert_allclose(ours * (C * W.sum()) / (N * C), theirs, **F64)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("eps", [0.0, 0.1, 1.0])
def test_torch_cross_entropy_index_targets(torch: Any, reduction: str, eps: float) -> None:
    F = torch.nn.functional
    x, y, cw = _t(torch, X), _t(torch, LABELS), _t(torch, CLASS_W)
    for weight in (None, cw):
        theirs = F.cross_entropy(x, y, weight=weight, label_smoothing=eps, reduction=reduction)
        ours = logitloss.cross_entropy(x, y, weight=weight, label_smoothing=eps,
                                       reduction=reduction)  # fmt: skip
        np.testing.assert_allclose(ours, theirs, **F64)
    # (N, C, d): classes on dimension 1, another ignore_index.
    x3 = _t(torch, RNG.standard_normal((3, C, 5)))
    y3 = _t(torch, RNG.integers(0, C, (3, 5)))
    y3[0, 0] = 7
    theirs = F.cross_entropy(x3, y3, weight=cw, ignore_index=7, label_smoothing=eps,
                             reduction=reduction)  # fmt: skip
    ours = logitloss.cross_entropy(x3, y3, axis=1, weight=cw, ignore_index=7,
                                   label_smoothing=eps, reduction=reduction)  # fmt: skip
    np.testing.assert_allclose(ours, theirs, **F64)


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_torch_cross_entropy_probability_targets(torch: Any, reduction: str) -> None:
    F = torch.nn.functional
    x, p, cw = _t(torch, X), _t(torch, PROBS), _t(torch, CLASS_W)
    theirs = F.cross_entropy(x, p, label_smoothing=0.2, reduction=reduction)
    ours = logitloss.cross_entropy(x, p, label_smoothing=0.2, reduction=reduction)
    np.testing.assert_allclose(ours, theirs, **F64)
    theirs = F.cross_entropy(x, p, weight=cw, label_smoothing=0.2, reduction=reduction)
    ours = logitloss.cross_entropy(x, p, weight=cw, label_smoothing=0.2, reduction=reduction)
    if reduction != "mean":
        np.testing.assert_allclose(ours, theirs, **F64)
    else:
        # Documented: torch divides by N; logitloss by sum_i sum_c w_c z_ic, the row weights
        # (so that one-hot rows give the index targets' mean, which torch divides by sum w_y).
        row_weights = (PROBS * CLASS_W).sum()
        assert not np.isclose(ours, theirs)
        np.testing.assert_allclose(ours * row_weights / N, theirs, **F64)
    onehot = np.eye(C)[np.where(LABELS < 0, 0, LABELS)]
    keep = LABELS >= 0
    theirs = F.cross_entropy(x[keep], _t(torch, LABELS[keep]), weight=cw, reduction=reduction)
    ours = logitloss.cross_entropy(x, _t(torch, onehot), weight=cw, where=_t(torch, keep),
                                   reduction=reduction)  # fmt: skip
    np.testing.assert_allclose(ours[keep] if reduction == "none" else ours, theirs, **F64)


def test_torch_nothing_counted(torch: Any) -> None:
    """An all-padding batch: torch's mean is 0/0 = NaN, logitloss's 0."""
    F = torch.nn.functional
    x = _t(torch, X)
    y = torch.full((N,), -100)
    assert math.isnan(F.cross_entropy(x, y).item())
    assert logitloss.cross_entropy(x, y).item() == 0.0
    assert math.isnan(F.cross_entropy(x, y, label_smoothing=0.1).item())
    assert logitloss.cross_entropy(x, y, label_smoothing=0.1).item() == 0.0
    w = torch.zeros(N, C)
    assert F.binary_cross_entropy_with_logits(x, _t(torch, Z), weight=w).item() == 0.0
    assert logitloss.binary_cross_entropy_with_logits(x, _t(torch, Z), weight=w).item() == 0.0


def test_torch_rounds_small_losses_away(torch: Any) -> None:
    """The core's exactness carries through the options: torch's float32 ``log_softmax`` gives
    ``log(1 + 2e-9) = 0`` for a confident correct row (with weights, smoothing, reductions), and
    its ``binary_cross_entropy_with_logits`` loses the small log term next to ``-x``."""
    F = torch.nn.functional
    x = np.array([[20.0, 0.0], [20.0, 0.0]], dtype=np.float32)
    y = np.array([0, 0])
    w = np.array([2.0, 1.0], dtype=np.float32)
    exact = 2 * oracle.sparse_softmax([20.0, 0.0], 0)  # the weighted sum over both rows
    assert F.cross_entropy(_t(torch, x), _t(torch, y), weight=_t(torch, w), reduction="sum") == 0
    ours = logitloss.cross_entropy(x, y, weight=w, reduction="sum")
    assert oracle.ulp_error(float(ours), 2 * exact, "float32") <= 1
    xb = np.array([-20.0], dtype=np.float32)
    zb, qb = np.zeros(1, np.float32), np.array([3.0], np.float32)
    theirs = F.binary_cross_entropy_with_logits(
        _t(torch, xb), _t(torch, zb), pos_weight=_t(torch, qb)
    )
    assert theirs == 0
    ours = logitloss.binary_cross_entropy_with_logits(xb, zb, pos_weight=qb)
    assert oracle.ulp_error(float(ours), oracle.logistic(-20.0, 0.0, 3.0), "float32") <= 1


# --- torchvision -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_focal(torch: Any) -> Callable[..., Any]:
    """``torchvision.ops.sigmoid_focal_loss``. Where torchvision's compiled operators do not
    match the installed torch (``import torchvision`` then fails registering ``nms``), its
    ``ops/focal_loss.py`` is run from the installed package itself, with only the usage-logging
    import removed: torchvision's own code either way."""
    try:
        from torchvision.ops import sigmoid_focal_loss

        return sigmoid_focal_loss
    except ImportError:
        pytest.skip("torchvision is not installed")
    except RuntimeError:
        spec = importlib.util.find_spec("torchvision")
        path = pathlib.Path(spec.origin).parent / "ops" / "focal_loss.py"
        source = path.read_text().replace("from ..utils import _log_api_usage_once", "")
        namespace: dict[str, Any] = {"_log_api_usage_once": lambda _: None}
        exec(compile(source, str(path), "exec"), namespace)
        return namespace["sigmoid_focal_loss"]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (-1, 0.5), (0.6, 0.0), (0.9, 3.0)])
def test_torchvision_focal(torch: Any, torchvision_focal: Any, reduction: str, alpha: float,
                           gamma: float) -> None:  # fmt: skip
    x, z = _t(torch, X), _t(torch, np.round(Z))
    theirs = torchvision_focal(x, z, alpha=alpha, gamma=gamma, reduction=reduction)
    ours = logitloss.sigmoid_focal_loss(x, z, alpha=alpha, gamma=gamma, reduction=reduction)
    # torchvision forms 1 - p_t by subtraction (relative error gamma eps / (1 - p_t)) and its
    # cross-entropy as log(1 + e) (error eps / loss): digits lost where the prediction is
    # confident. Ours is held to mpmath in test_training_losses.
    p = 1 / (1 + np.exp(-X))
    one_minus_pt = np.where(np.round(Z) == 1, 1 - p, p)
    ce = np.logaddexp(0, np.where(np.round(Z) == 1, -X, X))
    rtol = 1e-13 + 8 * np.finfo(np.float64).eps * (gamma / one_minus_pt + 1 / ce)
    if reduction != "none":
        rtol = rtol.max()
    ours, theirs = np.asarray(ours), theirs.numpy()
    assert np.all(np.abs(ours - theirs) <= rtol * np.abs(theirs)), (ours, theirs)


def test_torchvision_focal_gradient_nan_ours_finite(torch: Any, torchvision_focal: Any) -> None:
    """gamma = 0.5, x = 40, z = 1 in float32: torchvision's ``(1 - p_t) ** 0.5`` has an infinite
    derivative at 1 - p_t = 0 and autograd gives NaN; logitloss gives mpmath's derivative."""
    x = torch.tensor([40.0, 3.0], requires_grad=True)
    z = torch.tensor([1.0, 1.0])
    torchvision_focal(x, z, gamma=0.5, reduction="sum").backward()
    assert math.isnan(x.grad[0].item())
    x.grad = None
    logitloss.sigmoid_focal_loss(x, z, gamma=0.5, reduction="sum").backward()
    with mp.workdps(50):
        for i, xi in enumerate((40.0, 3.0)):

            def f(t: Any) -> Any:
                p = 1 / (1 + mp.exp(-t))
                return mp.mpf(0.25) * (1 - p) ** mp.mpf(0.5) * mp.log1p(mp.exp(-t))

            exact = mp.diff(f, mp.mpf(xi))
            assert oracle.ulp_error(x.grad[i].item(), exact, "float32") <= 1


def test_torchvision_focal_empty_mean(torch: Any, torchvision_focal: Any) -> None:
    x = torch.zeros(0)
    assert math.isnan(torchvision_focal(x, x, reduction="mean").item())
    assert logitloss.sigmoid_focal_loss(x, x, reduction="mean").item() == 0.0


# --- optax -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def optax() -> Any:
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        yield optax


def test_optax(optax: Any) -> None:
    import jax.numpy as jnp

    x, z, p = jnp.asarray(X), jnp.asarray(Z), jnp.asarray(PROBS)
    np.testing.assert_allclose(
        logitloss.binary_cross_entropy_with_logits(x, z, reduction="none"),
        optax.losses.sigmoid_binary_cross_entropy(x, z), **F64,
    )  # fmt: skip
    mask = jnp.asarray(RNG.uniform(size=N) < 0.6)
    # optax's row mask (where.ndim < logits.ndim) is logitloss's `where`: masked rows give 0.
    np.testing.assert_allclose(
        logitloss.cross_entropy(x, p, where=mask, reduction="none"),
        optax.losses.softmax_cross_entropy(x, p, where=mask), **F64,
    )  # fmt: skip
    labels = jnp.asarray(np.where(LABELS < 0, 1, LABELS))
    np.testing.assert_allclose(
        logitloss.cross_entropy(x, labels, where=mask, reduction="none"),
        optax.losses.softmax_cross_entropy_with_integer_labels(
            x, labels, where=jnp.broadcast_to(mask[:, None], x.shape)), **F64,
    )  # fmt: skip
    # A mean over the kept rows, as optax users write it by hand.
    kept = optax.losses.softmax_cross_entropy(x, p, where=mask).sum() / mask.sum()
    np.testing.assert_allclose(logitloss.cross_entropy(x, p, where=mask), kept, **F64)


# --- Keras -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras() -> Any:
    """Keras 3 on its NumPy backend (no TensorFlow import, which is slow), unless Keras was
    already imported in this process with another backend, which serves as well."""
    if "keras" not in sys.modules:
        before = os.environ.get("KERAS_BACKEND")
        os.environ["KERAS_BACKEND"] = "numpy"
        try:
            return pytest.importorskip("keras")
        finally:
            if before is None:
                del os.environ["KERAS_BACKEND"]
            else:
                os.environ["KERAS_BACKEND"] = before
    return pytest.importorskip("keras")


@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_keras(keras: Any, eps: float) -> None:
    """Keras computes in float32: equal to float32 rounding (its formulas, not ours, limit it)."""
    x, z, p = (a.astype(np.float32) for a in (X, Z, PROBS))
    close = dict(rtol=2e-6, atol=1e-7)
    bce = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=eps)
    np.testing.assert_allclose(
        logitloss.binary_cross_entropy_with_logits(x, z, label_smoothing=eps),
        np.asarray(bce(z, x)), **close)  # fmt: skip
    cce = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=eps)
    np.testing.assert_allclose(logitloss.cross_entropy(x, p, label_smoothing=eps),
                               np.asarray(cce(p, x)), **close)  # fmt: skip
    labels = np.where(LABELS < 0, 0, LABELS)
    np.testing.assert_allclose(
        logitloss.cross_entropy(x, labels, label_smoothing=eps),
        np.asarray(cce(np.eye(C, dtype=np.float32)[labels], x)),
        **close,
    )
    if eps == 0:
        scce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        np.testing.assert_allclose(logitloss.cross_entropy(x, labels), np.asarray(scce(labels, x)),
                                   **close)  # fmt: skip
