"""The logistic family: sigmoid and weighted cross-entropy, elementwise. ``formula``: the math, its
exact gradients and the family's description (``LOGISTIC``); ``kernel``: the numba loops that
mirror it and their entry points.
"""
