"""Checks on the training losses' options, in the style of :mod:`.checks`: each message names the
function, the argument and what was received. TypeError for a wrong kind of object or dtype,
ValueError for a wrong value or shape. Arrays come back in the logits' library and device.
"""

from __future__ import annotations

import math
import reprlib
from typing import Any

import numpy as np

from . import arrays, checks
from .arrays import Array

REDUCTIONS = ("none", "mean", "sum")
# How messages list them (one wording for every function and module).
REDUCTION_CHOICES = "'none', 'mean' or 'sum'"


def reduction(fn: str, value: Any) -> str:
    """One of ``"none"``, ``"mean"``, ``"sum"``."""
    if not isinstance(value, str):
        raise TypeError(f"{fn}: `reduction` must be a str, got {checks.describe(value)}")
    if value not in REDUCTIONS:
        raise ValueError(f"{fn}: `reduction` must be {REDUCTION_CHOICES}, got {value!r}")
    return value


def real(fn: str, arg: str, value: Any, *, low: float, high: float = math.inf) -> float:
    """A real Python number in ``[low, high]`` (NaN is outside every interval)."""
    # bool is an int, but `label_smoothing=True` is a mistake, not a number.
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise TypeError(f"{fn}: `{arg}` must be a real number, got {checks.describe(value)}")
    if isinstance(value, np.number) and not np.isrealobj(value):
        raise TypeError(f"{fn}: `{arg}` must be a real number, got {value!r}")
    number = float(value)
    if not (math.isfinite(number) and low <= number <= high):
        wanted = f">= {low:g}" if high == math.inf else f"in [{low:g}, {high:g}]"
        raise ValueError(f"{fn}: `{arg}` must be {wanted}, got {value!r}")
    return number


def integer(fn: str, arg: str, value: Any, *, low: int | None = None) -> int:
    """A Python int (from a NumPy integer too, not from a bool), ``>= low`` if given."""
    return _integer(fn, arg, value, "an int", low)


def optional_integer(fn: str, arg: str, value: Any, *, low: int | None = None) -> int | None:
    """None, or an int as :func:`integer` takes it."""
    return None if value is None else _integer(fn, arg, value, "an int or None", low)


def _integer(fn: str, arg: str, value: Any, wanted: str, low: int | None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"{fn}: `{arg}` must be {wanted}, got {checks.describe(value)} ({reprlib.repr(value)})"
        )
    if low is not None and value < low:
        raise ValueError(f"{fn}: `{arg}` must be >= {low}, got {value}")
    return int(value)


def optional_floats(
    fn: str, arg: str, value: Any, x: Array, xp: Any, shape: tuple[int, ...], target: str
) -> Array | None:
    """None, or real numbers cast to the logits' dtype that broadcast into ``shape``."""
    if value is None:
        return None
    array = checks.float_labels(fn, arg, value, x, xp)
    checks.broadcasts_into(fn, arg, array, shape, target)
    return array


def mask(fn: str, value: Any, x: Array, xp: Any, shape: tuple[int, ...]) -> Array | None:
    """None, or a boolean array (the ``where`` argument) that broadcasts into ``shape``."""
    if value is None:
        return None
    where = checks.in_namespace_of(fn, "where", value, x, xp)
    try:
        is_bool = arrays.isdtype(xp, where.dtype, "bool")
    except (TypeError, ValueError):
        is_bool = False
    if not is_bool:
        raise TypeError(
            f"{fn}: `where` must be a boolean mask, got dtype {arrays.dtype_name(where.dtype)}"
        )
    checks.broadcasts_into(fn, "where", where, shape, "the loss")
    return where
