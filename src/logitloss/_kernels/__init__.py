"""The machinery of the fused, multi-threaded CPU kernels (numba); the kernels themselves, one
tile or row function per loss, are in ``_losses.<family>.kernel``, their entry points in
``_losses.<family>.kernel``.

NumPy arrays only; ``_core.route`` decides when a call comes to the kernels. Importing this
package imports numba (``import logitloss`` does not import it); the kernels are compiled on
first use and cached on disk (numba's ``cache=True``), and the threading layer is picked then
(``runtime``).

How the work is split:

- ``vector_math``: ``exp``, ``expm1`` and ``log1p`` as polynomials that vectorise (numba's
  ``math.exp`` is a libm call that does not), at float32 and at float64 accuracy, and the small
  numba helpers both families use (``is_float64``, ``any_nan``, ``two_sum``...);
- ``loops``: each serial/parallel kernel pair generated from one tile or row function (the
  ``over_tiles`` and ``over_rows`` decorators), and the flat NamedTuples of their operands;
- ``layout``: any shape and strides described as rows for the loops, copying only what they
  cannot read;
- ``runtime``: compile options, threading layer, serial below 65536 elements;
- ``drivers``: the host side every family shares: operand checks, the one float16/bfloat16
  widening (``through_float32``), the one launch loop (``launch``), the elementwise run;
- ``fit``: the polynomial fits behind ``vector_math``'s coefficients.
"""
