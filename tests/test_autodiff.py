"""Autodiff works through the losses: PyTorch autograd (gradcheck in float64 against finite
differences), and jax.grad / jax.jit (check_grads, and the closed-form derivatives)."""

from __future__ import annotations

import numpy as np
import pytest

import logitloss

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 5)) * 3
Z = RNG.uniform(0, 1, (4, 5))
P = RNG.dirichlet(np.ones(5), size=4)
K = RNG.integers(0, 5, size=4)
Q = RNG.uniform(0.1, 3, 5)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# d loss / dx in closed form (textbook derivatives, independent of the formulas under test).
GRADIENTS = {
    "sigmoid": sigmoid(X) - Z,
    "weighted": (1 - Z) * sigmoid(X) - Q * Z * sigmoid(-X),
    "softmax": softmax(X) * P.sum(-1, keepdims=True) - P,
    "sparse": softmax(X) - np.eye(5)[K],
}


def losses(mod):
    """The four losses as functions of the logits only, built for array library ``mod``."""
    return {
        "sigmoid": lambda x: logitloss.sigmoid_cross_entropy_with_logits(mod.asarray(Z), x),
        "weighted": lambda x: logitloss.weighted_cross_entropy_with_logits(
            mod.asarray(Z), x, mod.asarray(Q)
        ),
        "softmax": lambda x: logitloss.softmax_cross_entropy_with_logits(mod.asarray(P), x),
        "sparse": lambda x: logitloss.sparse_softmax_cross_entropy_with_logits(mod.asarray(K), x),
    }


@pytest.mark.parametrize("name", list(GRADIENTS))
def test_torch_autograd(name: str) -> None:
    torch = pytest.importorskip("torch")
    fn = losses(torch)[name]
    x = torch.tensor(X, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))
    fn(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), GRADIENTS[name], rtol=1e-12, atol=1e-15)


def test_torch_gradient_reaches_labels_and_pos_weight() -> None:
    torch = pytest.importorskip("torch")
    x = torch.tensor(X)
    z = torch.tensor(Z, requires_grad=True)
    q = torch.tensor(Q, requires_grad=True)
    logitloss.weighted_cross_entropy_with_logits(z, x, q).sum().backward()
    # d/dz = q softplus(-x) - softplus(x); d/dq = sum over rows of z softplus(-x)
    softplus = np.logaddexp(0, X)
    softplus_neg = np.logaddexp(0, -X)
    np.testing.assert_allclose(z.grad.numpy(), Q * softplus_neg - softplus, rtol=1e-12)
    np.testing.assert_allclose(q.grad.numpy(), (Z * softplus_neg).sum(0), rtol=1e-12)


def test_torch_gradient_at_zero_logit() -> None:
    """The branch on the sign of x keeps the true derivative at x = 0 (|x| would give 0)."""
    torch = pytest.importorskip("torch")
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    z = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    logitloss.sigmoid_cross_entropy_with_logits(z, x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.0, -0.5])


@pytest.mark.parametrize("name", list(GRADIENTS))
def test_jax_grad_and_jit(name: str) -> None:
    jax = pytest.importorskip("jax")
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        jnp = jax.numpy
        fn = losses(jnp)[name]
        x = jnp.asarray(X)
        check_grads(lambda v: fn(v).sum(), (x,), order=2, modes=["fwd", "rev"])
        grad = jax.jit(jax.grad(lambda v: fn(v).sum()))(x)
        np.testing.assert_allclose(np.asarray(grad), GRADIENTS[name], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(
            np.asarray(jax.jit(fn)(x)), np.asarray(fn(x)), rtol=1e-15, atol=0
        )


def test_jax_jit_out_of_range_sparse_label_is_nan() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    fn = jax.jit(logitloss.sparse_softmax_cross_entropy_with_logits)
    out = np.asarray(fn(jnp.asarray([0, 3, -1]), jnp.zeros((3, 3))))
    assert out[0] == pytest.approx(np.log(3), rel=1e-6)
    assert np.isnan(out[1:]).all()
