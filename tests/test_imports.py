"""``import logitloss`` imports no array library but NumPy (einops' rule: frameworks are touched
only when the caller uses them), and no CLI, plotting or mpmath."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ["torch", "jax", "dask", "tensorflow", "cupy", "array_api_strict", "mpmath", "scipy",
         "numba", "matplotlib", "ml_dtypes", "logitloss.cli"]  # fmt: skip


def test_import_is_light() -> None:
    code = f"import sys, logitloss\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_using_numpy_imports_nothing_else() -> None:
    code = (
        "import sys, numpy as np, logitloss\n"
        "logitloss.softmax_cross_entropy_with_logits([1.0, 0.0], np.array([2.0, 1.0]))\n"
        "logitloss.sparse_softmax_cross_entropy_with_logits([0], np.array([[2.0, 1.0]]))\n"
        "logitloss.weighted_cross_entropy_with_logits([1.0], np.array([2.0]), 2.0)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
