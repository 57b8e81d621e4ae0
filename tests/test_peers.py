"""Parity with the real TensorFlow, PyTorch and optax where they are right, and the documented
improvements where they are not (each pinned: the peer's wrong answer, and ours)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest

import logitloss
from logitloss._tools import oracle

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

RNG = np.random.default_rng(11)
X = RNG.uniform(-8, 8, (16, 6))
Z = RNG.uniform(0.05, 0.95, (16, 6))
P = RNG.dirichlet(np.ones(6), size=16)
K = RNG.integers(0, 6, size=16)
Q = RNG.uniform(0.2, 5, 6)
# The peers form logsumexp(x) - x_j by subtraction: their error is a few ULP of |x|, not of the
# loss, wherever the loss is small. Compare within that.
RTOL, ATOL = 1e-13, 16 * np.finfo(np.float64).eps * np.abs(X).max()


@pytest.fixture(scope="module")
def tf():
    tf = pytest.importorskip("tensorflow")
    return tf


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


@pytest.fixture(scope="module")
def optax():
    jax = pytest.importorskip("jax")
    optax = pytest.importorskip("optax")
    with jax.enable_x64(True):
        yield optax


def test_tensorflow_parity(tf) -> None:
    """Well-conditioned float64 inputs: TF and logitloss agree to a few float64 ULP."""
    pairs = [
        (tf.nn.sigmoid_cross_entropy_with_logits(labels=Z, logits=X),
         logitloss.sigmoid_cross_entropy_with_logits(labels=Z, logits=X)),
        (tf.nn.weighted_cross_entropy_with_logits(labels=Z, logits=X, pos_weight=Q),
         logitloss.weighted_cross_entropy_with_logits(labels=Z, logits=X, pos_weight=Q)),
        (tf.nn.softmax_cross_entropy_with_logits(labels=P, logits=X),
         logitloss.softmax_cross_entropy_with_logits(labels=P, logits=X)),
        (tf.nn.softmax_cross_entropy_with_logits(labels=P.T, logits=X.T, axis=0),
         logitloss.softmax_cross_entropy_with_logits(labels=P.T, logits=X.T, axis=0)),
        (tf.nn.sparse_softmax_cross_entropy_with_logits(labels=K, logits=X),
         logitloss.sparse_softmax_cross_entropy_with_logits(labels=K, logits=X)),
    ]  # fmt: skip
    for theirs, ours in pairs:
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=RTOL, atol=ATOL)


def test_torch_parity(torch) -> None:
    F = torch.nn.functional
    x, z, p, k, q = (torch.tensor(a) for a in (X, Z, P, K, Q))
    pairs = [
        (F.binary_cross_entropy_with_logits(x, z, reduction="none"),
         logitloss.sigmoid_cross_entropy_with_logits(z, x)),
        (F.binary_cross_entropy_with_logits(x, z, pos_weight=q, reduction="none"),
         logitloss.weighted_cross_entropy_with_logits(z, x, q)),
        (F.cross_entropy(x, p, reduction="none"),
         logitloss.softmax_cross_entropy_with_logits(p, x)),
        (F.cross_entropy(x, k, reduction="none"),
         logitloss.sparse_softmax_cross_entropy_with_logits(k, x)),
    ]  # fmt: skip
    for theirs, ours in pairs:
        assert isinstance(ours, torch.Tensor)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=RTOL, atol=ATOL)


def test_optax_parity(optax) -> None:
    import jax.numpy as jnp

    x, z, p, k = (jnp.asarray(a) for a in (X, Z, P, K))
    pairs = [
        (optax.sigmoid_binary_cross_entropy(x, z),
         logitloss.sigmoid_cross_entropy_with_logits(z, x)),
        (optax.softmax_cross_entropy(x, p), logitloss.softmax_cross_entropy_with_logits(p, x)),
        (optax.softmax_cross_entropy_with_integer_labels(x, k),
         logitloss.sparse_softmax_cross_entropy_with_logits(k, x)),
    ]  # fmt: skip
    for theirs, ours in pairs:
        np.testing.assert_allclose(np.asarray(ours), np.asarray(theirs), rtol=RTOL, atol=ATOL)


# The documented improvements. Each: the peer's answer today, and ours against mpmath.


def test_tf_sigmoid_cancellation_near_one(tf) -> None:
    x, z = np.float32([24.0]), np.float32([1 - 2**-23])
    exact = oracle.logistic(24.0, float(z[0]))
    theirs = tf.nn.sigmoid_cross_entropy_with_logits(labels=z, logits=x).numpy()[0]
    ours = logitloss.sigmoid_cross_entropy_with_logits(labels=z, logits=x)[0]
    assert oracle.ulp_error(float(theirs), exact, "float32") > 1e6
    assert oracle.ulp_error(float(ours), exact, "float32") <= 1


def test_weighted_negative_logit_loses_the_log_term(tf, torch) -> None:
    x, z = np.float32([-20.0]), np.float32([0.0])
    exact = oracle.logistic(-20.0, 0.0, 2.0)  # 2.06e-9
    ours = logitloss.weighted_cross_entropy_with_logits(z, x, 2.0)[0]
    tf_value = tf.nn.weighted_cross_entropy_with_logits(labels=z, logits=x, pos_weight=2.0)
    torch_value = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(x), torch.tensor(z), pos_weight=torch.tensor(2.0), reduction="none"
    )
    assert float(tf_value.numpy()[0]) == 0.0
    assert float(torch_value[0]) == 0.0
    assert oracle.ulp_error(float(ours), exact, "float32") <= 1


def test_softmax_log_of_one_plus_small(tf, torch) -> None:
    logits, labels = np.float32([[20.0, 0.0]]), np.float32([[1.0, 0.0]])
    exact = oracle.softmax([20.0, 0.0], [1.0, 0.0])
    theirs = [
        tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits).numpy()[0],
        torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(labels))[()].item(),
    ]
    assert theirs == [0.0, 0.0]
    ours = logitloss.softmax_cross_entropy_with_logits(labels, logits)[0]
    assert oracle.ulp_error(float(ours), exact, "float32") <= 1


def test_infinite_logit_with_label_one(tf, torch) -> None:
    x, z = np.float32([math.inf]), np.float32([1.0])
    assert np.isnan(tf.nn.sigmoid_cross_entropy_with_logits(labels=z, logits=x).numpy()[0])
    torch_value = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor(x), torch.tensor(z), reduction="none"
    )
    assert math.isnan(float(torch_value[0]))
    assert logitloss.sigmoid_cross_entropy_with_logits(z, x)[0] == 0.0


def test_tf_enlarges_pos_weight_we_raise(tf) -> None:
    x = np.zeros((2, 3), np.float32)
    q = np.ones((2, 1, 3), np.float32)
    assert tf.nn.weighted_cross_entropy_with_logits(labels=x, logits=x, pos_weight=q).shape == (
        2,
        2,
        3,
    )
    with pytest.raises(ValueError, match="without enlarging"):
        logitloss.weighted_cross_entropy_with_logits(labels=x, logits=x, pos_weight=q)
