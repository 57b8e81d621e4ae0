"""The logistic family: sigmoid and weighted cross-entropy, elementwise. ``formula``: the math and
its exact gradients; ``kernel``: the numba loops that mirror it; ``host``: the kernels' entry
points.
"""
