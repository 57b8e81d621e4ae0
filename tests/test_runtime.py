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


_WIDE_PROBE = """
import json, sys
import numba
import numpy as np
from logitloss._kernels import runtime
from logitloss._kernels.vector_math import add_reassoc, prefer_wide_vectors

@numba.njit(error_model="numpy")
def squares(x):
    prefer_wide_vectors()
    total = 0.0
    for j in range(x.size):
        total = add_reassoc(total, x[j] * x[j])
    return total

assert squares(np.arange(100.0)) == 328350.0
(signature,) = squares.signatures
json.dump({
    "wide": runtime.wide_vectors(),
    "attribute": '"prefer-vector-width"="512"' in squares.inspect_llvm(signature),
    "zmm": "zmm" in squares.inspect_asm(signature),
}, sys.stdout)
"""


def _wide_probe(env: dict[str, str]) -> dict[str, bool]:
    import json
    import os
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", _WIDE_PROBE], env={**os.environ, **env},
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert done.stderr == ""  # no LLVM remark or warning at compile time
    return json.loads(done.stdout)


def test_wide_vectors_only_where_the_target_has_avx512() -> None:
    """``prefer_wide_vectors`` marks its function ``"prefer-vector-width"="512"`` where numba's
    target has AVX-512F (LLVM then widens the loop to 512-bit vectors) and does nothing for an
    AVX2-only target (emulated with numba's CPU name and features): no attribute, no AVX-512
    register; and no compile-time warnings either way."""
    from llvmlite import binding as llvm

    host = llvm.get_host_cpu_features()
    found = _wide_probe({})
    assert found["wide"] == bool(host.get("avx512f", False))
    assert found["attribute"] == found["wide"]
    if found["wide"]:
        assert found["zmm"]
    for name in list(host):
        if name.startswith(("avx512", "avx10", "evex512", "amx")):
            host[name] = False
    haswell = _wide_probe({"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": host.flatten()})
    assert haswell == {"wide": False, "attribute": False, "zmm": False}
