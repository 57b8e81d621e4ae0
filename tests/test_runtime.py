"""``_kernels.runtime``: how the kernels are compiled."""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from logitloss._kernels import runtime  # noqa: E402


def test_runtime_compiles_new_signatures_with_the_kernel_options(monkeypatch: Any) -> None:
    """A kernel prepared by ``runtime.call`` for a writeable array, then called with a
    read-only one (another numba signature, compiled by numba in the call): that compilation
    too runs under the kernels' LLVM options (without them, the float64 cross-entropy
    gradients of read-only logits came out 1-2 ULP from the writeable ones')."""
    compilations = []
    real = runtime.compiling

    @contextlib.contextmanager
    def recording() -> Any:
        compilations.append(1)
        with real():
            yield

    monkeypatch.setattr(runtime, "compiling", recording)

    @numba.njit
    def total(a: np.ndarray) -> float:
        return a.sum()

    values = np.arange(10.0)
    assert runtime.call(total, ("test",), (values,)) == 45.0
    assert len(compilations) == 1
    frozen = values.copy()
    frozen.flags.writeable = False
    assert total(frozen) == 45.0
    assert len(compilations) == 2
    assert len(total.overloads) == 2
