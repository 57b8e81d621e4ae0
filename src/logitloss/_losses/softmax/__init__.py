"""The softmax family: soft labels along a class axis, and integer (sparse) labels. ``formula``:
the math, its exact gradients and the descriptions (``SOFTMAX``, ``SPARSE_SOFTMAX``); ``kernel``:
the numba row loops that mirror it and their entry points.
"""
