"""One ``xp`` fixture runs a test on every installed array library.

Each backend is a small adapter: ``asarray`` from NumPy (keeping the dtype), ``to_numpy`` back,
and the array type a result must have. JAX runs twice: with its default 32-bit mode (no float64
anywhere) and with ``jax_enable_x64``.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

# A script run by test_keras in subprocesses, one per Keras backend: importing it (doctest
# collection) would import Keras for nothing.
collect_ignore = ["keras_checks.py"]

# The promised accuracy of the losses, in ULPs of the exact value: float16, bfloat16 and float32
# within 1 ULP, float64 within 4 (results in the normal range). Shared by the tests of the
# reference path (test_exactness) and of the kernels (test_kernels, test_kernels_softmax).
BOUND = {"float16": 1.0, "bfloat16": 1.0, "float32": 1.0, "float64": 4.0}

_INF = float("inf")
# (x, z, q, limit): the true limits of the logistic losses at infinite logits, written out by
# hand. Shared by the reference path's tests (test_exactness) and the kernels' (test_kernels).
LOGISTIC_LIMITS = [
    (_INF, 1.0, 1.0, 0.0),
    (_INF, 0.5, 1.0, _INF),
    (_INF, 0.0, 1.0, _INF),
    (-_INF, 0.0, 1.0, 0.0),
    (-_INF, 0.5, 1.0, _INF),
    (-_INF, 1.0, 1.0, _INF),
    (_INF, 1.0, 3.0, 0.0),
    (_INF, 0.25, 0.0, _INF),
    (-_INF, 0.0, 5.0, 0.0),
    (-_INF, 1.0, 0.0, 0.0),  # q = 0: positives cost nothing
    (-_INF, 0.5, 2.0, _INF),
    (_INF, 1.0, 0.0, 0.0),
    (-_INF, 1e-3, 1e4, _INF),
]


@dataclass
class Backend:
    name: str
    module: Any
    asarray: Callable[[np.ndarray], Any]
    to_numpy: Callable[[Any], np.ndarray]
    is_native: Callable[[Any], bool]
    context: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext
    has_float64: bool = True
    dtypes: tuple[str, ...] = ("float16", "float32", "float64")
    extra: dict = field(default_factory=dict)


def _numpy() -> Backend:
    return Backend(
        "numpy",
        np,
        np.array,
        np.asarray,
        lambda a: isinstance(a, np.ndarray),
        dtypes=("float16", "bfloat16", "float32", "float64"),
    )


def _strict() -> Backend:
    xps = importlib.import_module("array_api_strict")
    return Backend(
        "array_api_strict",
        xps,
        lambda a: xps.asarray(np.array(a)),
        lambda a: np.asarray(a._array),
        lambda a: type(a).__module__.startswith("array_api_strict"),
        dtypes=("float32", "float64"),
    )


def _torch() -> Backend:
    torch = importlib.import_module("torch")

    def asarray(a: np.ndarray) -> Any:
        if a.dtype.name == "bfloat16":
            return torch.from_numpy(a.astype(np.float32)).to(torch.bfloat16)
        return torch.from_numpy(np.array(a))

    def to_numpy(t: Any) -> np.ndarray:
        t = t.detach()
        if t.dtype == torch.bfloat16:
            import ml_dtypes

            return t.float().numpy().astype(ml_dtypes.bfloat16)
        return t.numpy()

    return Backend(
        "torch",
        torch,
        asarray,
        to_numpy,
        lambda a: isinstance(a, torch.Tensor),
        dtypes=("float16", "bfloat16", "float32", "float64"),
    )


def _jax(x64: bool) -> Backend:
    jax = importlib.import_module("jax")
    jnp = importlib.import_module("jax.numpy")
    return Backend(
        "jax-x64" if x64 else "jax",
        jnp,
        jnp.asarray,
        np.asarray,
        lambda a: isinstance(a, jax.Array),
        context=lambda: jax.enable_x64(x64),
        has_float64=x64,
        dtypes=("float16", "bfloat16", "float32", "float64") if x64 else ("float32",),
    )


def _dask() -> Backend:
    da = importlib.import_module("dask.array")
    return Backend(
        "dask",
        da,
        lambda a: da.from_array(np.array(a), chunks=tuple(max(1, (n + 1) // 2) for n in a.shape)),
        lambda a: np.asarray(a.compute()),
        lambda a: isinstance(a, da.Array),
        dtypes=("float32", "float64"),
    )


_FACTORIES: dict[str, Callable[[], Backend]] = {
    "numpy": _numpy,
    "array_api_strict": _strict,
    "torch": _torch,
    "jax": lambda: _jax(False),
    "jax-x64": lambda: _jax(True),
    "dask": _dask,
}


@pytest.fixture(params=list(_FACTORIES))
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    """Every installed array library; a test using it runs once per library."""
    try:
        b = _FACTORIES[request.param]()
    except ImportError:
        pytest.skip(f"{request.param} is not installed")
    with b.context():
        yield b


def np_dtype(name: str) -> Any:
    if name == "bfloat16":
        return pytest.importorskip("ml_dtypes").bfloat16
    return np.dtype(name)
