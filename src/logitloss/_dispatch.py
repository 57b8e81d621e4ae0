"""The single place that decides how a validated call is computed.

Today: the array-API reference (``_reference``) for every library; autodiff follows its
formulas. The exact-gradient autodiff paths (PyTorch ``autograd.Function``, JAX ``custom_jvp``)
and the fast CPU kernels plug in here, each imported only when its library's arrays arrive.
"""

from __future__ import annotations

from typing import Any

from . import _reference

Array = Any


def logistic(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    return _reference.logistic(x, z, q, xp=xp)


def softmax(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    return _reference.softmax(x, z, axis=axis, xp=xp)


def sparse_softmax(x: Array, labels: Array, *, xp: Any) -> Array:
    return _reference.sparse_softmax(x, labels, xp=xp)
