"""Every bad input gets a clear error naming the function, the argument and what was received."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import Backend

import logitloss
from logitloss import (
    sigmoid_cross_entropy_with_logits as sigmoid,
)
from logitloss import (
    softmax_cross_entropy_with_logits as softmax,
)
from logitloss import (
    sparse_softmax_cross_entropy_with_logits as sparse,
)
from logitloss import (
    weighted_cross_entropy_with_logits as weighted,
)

X = np.zeros((2, 3), dtype=np.float32)


# ruff: noqa: E501 (one table row per error case reads better than wrapped rows)
@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (lambda: sigmoid(labels=X), TypeError, r"sigmoid_cross_entropy_with_logits: `logits` is required"),
        (lambda: sigmoid(logits=X), TypeError, r"`labels` is required"),
        (lambda: sigmoid(X[0], X), ValueError, r"same shape; got labels \(3,\) and logits \(2, 3\)"),
        (lambda: sigmoid(X, X.astype(int)), TypeError, r"`logits` must have a real floating dtype .* got int64"),
        (lambda: sigmoid(X, X.astype(bool)), TypeError, r"got bool"),
        (lambda: sigmoid(X, X.astype(np.complex64)), TypeError, r"`logits` must hold real numbers, got dtype complex64"),
        (lambda: sigmoid(X.astype(np.complex64), X), TypeError, r"`labels` must hold real numbers"),
        (lambda: sigmoid(["a", "b"], [1.0, 2.0]), TypeError, r"`labels` must hold real numbers"),
        (lambda: sigmoid(X, "logits"), TypeError, r"`logits` must hold real numbers"),
        (lambda: sigmoid(X, object()), TypeError, r"`logits` must hold real numbers"),
        (lambda: weighted(X, X), TypeError, r"weighted_cross_entropy_with_logits: `pos_weight` is required"),
        (lambda: weighted(X, X, 2.0, targets=X), TypeError, r"give `labels` or its TF1 name `targets`, not both"),
        (lambda: weighted(X.T, X, 2.0), ValueError, r"`labels` and `logits` must have the same shape"),
        (lambda: weighted(X, X, np.ones((2, 1, 3))), ValueError, r"`pos_weight` of shape \(2, 1, 3\) must broadcast to the shape of `logits` \(2, 3\) without enlarging it"),
        (lambda: weighted(X, X, np.ones(2)), ValueError, r"`pos_weight` of shape \(2,\)"),
        (lambda: weighted(X, X, "2"), TypeError, r"`pos_weight` must hold real numbers"),
        (lambda: softmax(X, X, axis=2), ValueError, r"softmax_cross_entropy_with_logits: `axis` must be in \[-2, 2\) for logits of shape \(2, 3\), got 2"),
        (lambda: softmax(X, X, axis=-3), ValueError, r"got -3"),
        (lambda: softmax(X, X, axis=1.0), TypeError, r"`axis` must be an int, got builtins.float"),
        (lambda: softmax(X, X, axis=True), TypeError, r"`axis` must be an int, got builtins.bool"),
        (lambda: softmax(1.0, np.float32(2.0)), ValueError, r"`logits` must have at least one dimension"),
        (lambda: softmax(X[:, :0], X[:, :0]), ValueError, r"at least one class along axis 1, got shape \(2, 0\)"),
        (lambda: softmax(np.ones((3, 3)), X), ValueError, r"`labels` of shape \(3, 3\) must broadcast to the shape of `logits` \(2, 3\)"),
        (lambda: softmax(np.ones((1, 2, 3)), X), ValueError, r"without enlarging it"),
        (lambda: sparse(None, X), TypeError, r"sparse_softmax_cross_entropy_with_logits: `labels` is required"),
        (lambda: sparse(np.array([0.0, 1.0]), X), TypeError, r"`labels` must have an integer dtype \(class indices\), got float64"),
        (lambda: sparse(np.array([0, 1, 2]), X), ValueError, r"`labels` must have the shape of `logits` without its last \(class\) axis, \(2,\); got \(3,\)"),
        (lambda: sparse(np.array([[0, 1]]), X), ValueError, r"got \(1, 2\)"),
        (lambda: sparse(np.array([0, 3]), X), ValueError, r"`labels` must lie in \[0, 3\) \(the number of classes\); got values from 0 to 3"),
        (lambda: sparse(np.array([-1, 0]), X), ValueError, r"got values from -1 to 0"),
        (lambda: sparse(np.zeros(2, dtype=int), X[:, :0]), ValueError, r"at least one class"),
        (lambda: sparse(0, np.float32(1.0)), ValueError, r"at least one dimension"),
    ],
)  # fmt: skip
def test_error_messages(call, error: type[Exception], pattern: str) -> None:
    with pytest.raises(error, match=pattern):
        call()


def test_sparse_out_of_range_on_every_eager_backend(backend: Backend) -> None:
    if backend.name == "dask":
        pytest.skip("lazy: out-of-range rows are NaN (tests/test_backends.py)")
    logits = backend.asarray(np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(ValueError, match=r"must lie in \[0, 4\).*from 1 to 4"):
        sparse(backend.asarray(np.array([1, 4])), logits)


def test_arrays_of_two_libraries_are_refused() -> None:
    torch = pytest.importorskip("torch")
    jnp = pytest.importorskip("jax.numpy")
    with pytest.raises(
        TypeError, match=r"arrays of different libraries .*`labels` is a torch.Tensor"
    ):
        sigmoid(torch.zeros(2), jnp.zeros(2))


def test_numpy_labels_join_the_logits_library() -> None:
    torch = pytest.importorskip("torch")
    out = weighted([1.0, 0.0], torch.tensor([0.5, -20.0]), np.array([2.0, 2.0]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    out = sigmoid(torch.tensor([1.0, 0.0]), np.array([0.5, -20.0], dtype=np.float32))
    assert isinstance(out, torch.Tensor)


def test_name_is_accepted_and_targets_is_tf1_labels() -> None:
    z = np.array([1.0, 0.0])
    x = np.array([0.3, -0.4])
    expected = weighted(z, x, 3.0)
    np.testing.assert_array_equal(weighted(targets=z, logits=x, pos_weight=3.0, name="w"), expected)
    np.testing.assert_array_equal(sigmoid(z, x, name="s"), weighted(z, x, 1.0))
    assert logitloss.softmax_cross_entropy_with_logits(z, x, -1, "n") == softmax(z, x)
