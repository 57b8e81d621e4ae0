"""The printed results of the seed documents (../shared/seeds/001_95a1afc68d342df6.txt),
reproduced. TensorFlow printed float32 values rounded to 8 digits, up to 2 ULP from the exact
value; logitloss is held to 1 ULP of mpmath on the same inputs and to 3 ULP of the printed values.
"""

from __future__ import annotations

import numpy as np
import pytest

import logitloss
from logitloss._tools import oracle

# feed_dict of the sigmoid example
P = np.array([[0, 0, 0, 1, 0], [1, 0, 0, 0, 0]], dtype=np.float32)
LOGIT_Q = np.array([[0.2, 0.2, 0.2, 0.2, 0.2], [0.3, 0.3, 0.2, 0.1, 0.1]], dtype=np.float32)

# prob2 (p * -log(q) + (1 - p) * -log(1 - q)) as printed
PRINTED_PROB2 = [
    [0.79813886, 0.79813886, 0.79813886, 0.59813887, 0.79813886],
    [0.5543552, 0.85435522, 0.79813886, 0.74439669, 0.74439669],
]
# prob3 and prob4 (tf.nn.sigmoid_cross_entropy_with_logits) as printed
PRINTED_PROB4 = [
    [0.7981388, 0.7981388, 0.7981388, 0.59813893, 0.7981388],
    [0.55435514, 0.85435534, 0.7981388, 0.74439663, 0.74439663],
]
# prob1 (-p * log(q)) as printed: the part of the loss for p = 1
PRINTED_PROB1 = [[0.0, 0.0, 0.0, 0.59813893, 0.0], [0.55435514, 0.0, 0.0, 0.0, 0.0]]

# the softmax example
SOFT_P = np.array([[0, 1], [1, 0], [1, 0]], dtype=np.float32)
SOFT_LOGIT_Q = np.array([[0.2, 0.8], [0.7, 0.3], [0.5, 0.5]], dtype=np.float32)
PRINTED_SOFTMAX = [0.43748799, 0.51301527, 0.69314718]


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    return np.abs(a.astype(np.float64) - np.asarray(b, np.float32)) / np.spacing(np.abs(a))


@pytest.mark.parametrize("printed", [PRINTED_PROB2, PRINTED_PROB4], ids=["prob2", "prob4"])
def test_sigmoid_tables(printed: list) -> None:
    loss = logitloss.sigmoid_cross_entropy_with_logits(labels=P, logits=LOGIT_Q)
    assert loss.dtype == np.float32 and loss.shape == (2, 5)
    assert ulps(loss, printed).max() <= 3
    for x, z, value in zip(LOGIT_Q.ravel(), P.ravel(), loss.ravel(), strict=True):
        assert oracle.ulp_error(float(value), oracle.logistic(float(x), float(z)), "float32") <= 1


def test_sigmoid_table_positive_part_matches_prob1() -> None:
    """Where p = 1 the loss is prob1's -log(q); where p = 0, prob1 is 0 and the loss is not."""
    loss = logitloss.sigmoid_cross_entropy_with_logits(labels=P, logits=LOGIT_Q)
    printed = np.array(PRINTED_PROB1, dtype=np.float32)
    assert ulps(loss[P == 1], printed[P == 1]).max() <= 3
    assert (loss[P == 0] > 0.7).all()


def test_sigmoid_reduce_sum_differs_from_loss1() -> None:
    """The question's loss2 sums the full binary loss; loss1 (-sum p log q) only its p = 1 part."""
    loss2 = logitloss.sigmoid_cross_entropy_with_logits(labels=P, logits=LOGIT_Q).sum(axis=1)
    loss1 = np.array(PRINTED_PROB1, dtype=np.float32).sum(axis=1)
    expected = [sum(float(oracle.logistic(float(x), float(z))) for x, z in zip(r, p, strict=True))
                for r, p in zip(LOGIT_Q, P, strict=True)]  # fmt: skip
    np.testing.assert_allclose(loss2, expected, rtol=4e-7)
    assert (loss2 > loss1 + 2).all()


def test_softmax_example() -> None:
    loss = logitloss.softmax_cross_entropy_with_logits(labels=SOFT_P, logits=SOFT_LOGIT_Q)
    assert loss.dtype == np.float32 and loss.shape == (3,)
    assert ulps(loss, PRINTED_SOFTMAX).max() <= 3
    for x, z, value in zip(SOFT_LOGIT_Q, SOFT_P, loss, strict=True):
        exact = oracle.softmax(list(x.astype(float)), list(z.astype(float)))
        assert oracle.ulp_error(float(value), exact, "float32") <= 1


def test_softmax_example_equals_prob1_formula() -> None:
    """The seed's point: -sum(p log softmax(q)) and the fused loss agree (here in float64)."""
    x = SOFT_LOGIT_Q.astype(np.float64)
    log_softmax = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    prob1 = -(SOFT_P * log_softmax).sum(axis=1)
    loss = logitloss.softmax_cross_entropy_with_logits(labels=SOFT_P.astype(np.float64), logits=x)
    np.testing.assert_allclose(loss, prob1, rtol=1e-15)
