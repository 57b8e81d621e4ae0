"""The loss families, each in its folder: its formula (Array API math, with the exact gradients),
its numba kernel with the kernel's entry points, side by side.

Every formula takes arrays already validated, broadcast and converted to the *compute* dtype
(float64 wherever the library has it, see ``_core.arrays``), and the namespace ``xp`` as a
keyword; nothing in a formula validates, converts or picks a backend. The forms are chosen so
that every term added is non-negative for labels in [0, 1] and ``pos_weight >= 0``: no
cancellation, a few float64 roundings, one rounding to the caller's dtype. A term with a zero
coefficient is zero, also where its factor is infinite (the true limit; ``0 * inf`` is NaN).
Each kernel mirrors its formula, and the tests hold both to the same bounds.
"""
