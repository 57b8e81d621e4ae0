"""logitloss: cross-entropy losses from logits, exact to the last bit, on every array library.

The four ``tf.nn`` losses, with TensorFlow's names, arguments and shapes, computed within 1 ULP
of the exact value (float16, bfloat16, float32) and with the true limits at infinite logits, for
NumPy, PyTorch, JAX, CuPy, Dask and array-api-strict arrays.
"""

from ._api.focal import sigmoid_focal_loss, softmax_focal_loss
from ._api.gradients import (
    sigmoid_cross_entropy_with_logits_grad,
    softmax_cross_entropy_with_logits_grad,
    sparse_softmax_cross_entropy_with_logits_grad,
    weighted_cross_entropy_with_logits_grad,
)
from ._api.linear import linear_cross_entropy, linear_cross_entropy_value_and_grad
from ._api.tf_nn import (
    sigmoid_cross_entropy_with_logits,
    softmax_cross_entropy_with_logits,
    sparse_softmax_cross_entropy_with_logits,
    weighted_cross_entropy_with_logits,
)
from ._api.training import binary_cross_entropy_with_logits, cross_entropy
from ._api.value_and_grad import (
    binary_cross_entropy_with_logits_value_and_grad,
    cross_entropy_value_and_grad,
)
from ._core.arrays import float32_internals
from ._core.route import reference_path

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_value_and_grad",
    "cross_entropy",
    "cross_entropy_value_and_grad",
    "float32_internals",
    "linear_cross_entropy",
    "linear_cross_entropy_value_and_grad",
    "reference_path",
    "sigmoid_cross_entropy_with_logits",
    "sigmoid_cross_entropy_with_logits_grad",
    "sigmoid_focal_loss",
    "softmax_cross_entropy_with_logits",
    "softmax_cross_entropy_with_logits_grad",
    "softmax_focal_loss",
    "sparse_softmax_cross_entropy_with_logits",
    "sparse_softmax_cross_entropy_with_logits_grad",
    "weighted_cross_entropy_with_logits",
    "weighted_cross_entropy_with_logits_grad",
]
