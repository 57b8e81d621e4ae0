"""The softmax family: soft labels along a class axis, and integer (sparse) labels. ``formula``:
the math and its exact gradients; ``kernel``: the numba row loops that mirror it; ``host``: the
kernels' entry points.
"""
