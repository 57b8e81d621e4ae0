"""Fused, multi-threaded CPU kernels (numba) for the four losses and their logit gradients.

The same numbers as the reference path (``_reference``, ``_formulas``), in one pass over memory
with no temporaries: float16, bfloat16 and float32 within 1 ULP of the exact value, float64
within 4 ULP (normal range), the exact limits at infinite logits, NaN in -> NaN out. Close to the
memory limit: the logistic losses at about the time of ``np.add(logits, labels)``
(``logitloss bench``). Loss, gradient, fused loss and gradient (``*_loss_and_grad``), and the
summed logistic loss (``logistic_loss_sum``, for reductions).

NumPy arrays only; ``_dispatch`` decides when to come here. Importing this package imports numba
(``import logitloss`` does not import this package); the kernels are compiled on first use and
cached on disk (numba's ``cache=True``), and the threading layer is picked then (``_runtime``).

How the work is split:

- ``_math``: ``exp``, ``log1p`` and ``tanh`` as polynomials that vectorise (numba's ``math.exp``
  is a libm call that does not), at float32 and at float64 accuracy;
- ``_logistic``: one element of each formula, and the row/tile loops, serial and parallel;
- ``_softmax``: the softmax losses, a row per thread, in passes that stay in its cache;
- ``_layout``: any shape and strides described as rows for the loops, copying only what they
  cannot read;
- ``_runtime``: compile options, threading layer, serial below 65536 elements.
"""
