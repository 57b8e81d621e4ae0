"""The kernels' host side shared by every family: operand checks, narrow-dtype widening, and
the launch of an elementwise serial/parallel kernel pair over rows (``run_pair``).

NumPy arrays only. The family modules (``_losses.<family>.host``) build their entry points from
these; ``_core.route`` decides when a call comes to them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import layout, runtime

# Computed through float32 (exact widening), rounded to their own dtype at the end: the float32
# result carries 13 (float16) or 16 (bfloat16) more bits, so the double rounding stays within
# 0.5 + 2^-13 ULP of the float32 result's own error.
THROUGH_FLOAT32 = ("float16", "bfloat16")


DIRECT = ("float32", "float64")


def dtype_name(dtype: np.dtype) -> str:
    return dtype.name if dtype.name != "void" else str(dtype)


def arguments(
    fn: str, x: Any, z: Any, q: Any, upstream: Any, out: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: logits must be a NumPy array, got {type(x).__name__}")
    name = dtype_name(x.dtype)
    if name not in DIRECT + THROUGH_FLOAT32:
        raise TypeError(f"{fn}: logits must be float16, bfloat16, float32 or float64, got {name}")
    z = operand(fn, "labels", z, x, elementwise=True)
    q = operand(fn, "pos_weight", 1.0 if q is None else q, x, elementwise=False)
    upstream = operand(fn, "upstream", 1.0 if upstream is None else upstream, x, elementwise=False)
    if out is not None:
        if not isinstance(out, np.ndarray):
            raise TypeError(f"{fn}: out must be a NumPy array, got {type(out).__name__}")
        if out.dtype != x.dtype:
            raise TypeError(
                f"{fn}: out must have the logits' dtype {name}, got {dtype_name(out.dtype)}"
            )
        if out.shape != x.shape:
            raise ValueError(f"{fn}: out must have the logits' shape {x.shape}, got {out.shape}")
        if not out.flags.writeable:
            raise ValueError(f"{fn}: out is read-only")
    return x, z, q, upstream, out


def operand(fn: str, arg: str, value: Any, x: np.ndarray, *, elementwise: bool) -> np.ndarray:
    """``value`` as an array of ``x``'s dtype that broadcasts to ``x``'s shape."""
    try:
        a = np.asarray(value, dtype=x.dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{fn}: {arg} cannot be cast to {dtype_name(x.dtype)}: {error}") from None
    if elementwise and a.shape != x.shape:
        raise ValueError(f"{fn}: {arg} must have the logits' shape {x.shape}, got {a.shape}")
    try:
        fits = np.broadcast_shapes(a.shape, x.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"{fn}: {arg} of shape {a.shape} must broadcast to the logits' shape {x.shape}"
        )
    return a


def same_view(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.strides == b.strides
        and a.shape == b.shape
        and a.dtype == b.dtype
    )


def run_pair(
    serial: Any, parallel: Any, x: np.ndarray, inputs: list[np.ndarray], out: np.ndarray | None
) -> np.ndarray:
    """Run the kernel pair on ``x`` and ``inputs`` (labels first, then the broadcast ones)."""
    result = out
    if dtype_name(x.dtype) in THROUGH_FLOAT32:
        wide = run_pair(
            serial, parallel, x.astype(np.float32), [a.astype(np.float32) for a in inputs], None
        )
        # A float32 result beyond the narrow range rounds to inf: correct, not worth a warning.
        with np.errstate(over="ignore"):
            if result is None:
                return wide.astype(x.dtype)
            result[...] = wide
        return result
    target = out
    # An output that overlaps an input other than as the very same view (the kernels read each
    # element before writing it) is written through a temporary.
    if out is not None and any(
        np.may_share_memory(out, a) and not same_view(out, a) for a in (x, *inputs)
    ):
        target = None
    if target is None:
        target = np.empty(x.shape, x.dtype)
    if x.size:
        operands = [(x, False, False), (inputs[0], False, False)]
        operands += [(a, True, False) for a in inputs[1:]]
        operands.append((target, False, True))
        plan, arrays = layout.plan(x, operands)
        for piece in layout.group_rows(plan, runtime.TILE):
            kernel = runtime.pick(serial, parallel, piece.rows * piece.cols)
            logits, labels, *broadcast, written = piece.operands
            args: list[Any] = [logits.base, logits.row_stride, labels.base, labels.row_stride]
            for op in broadcast:  # these also say whether they vary along the row
                args += [op.base, op.row_stride, op.varies]
            args += [written.base, written.row_stride, piece.rows, piece.cols, runtime.TILE]
            runtime.call(kernel, (x.dtype.char,), tuple(args))
        if arrays[-1] is not target:
            target[...] = arrays[-1]
    if result is None:
        return target
    if target is not result:
        result[...] = target
    return result


def loss_shape(x: np.ndarray, axis: int) -> tuple[int, ...]:
    return x.shape[:axis] + x.shape[axis + 1 :]


def output(
    fn: str,
    arg: str,
    out: np.ndarray | None,
    dtype: np.dtype,
    shape: tuple[int, ...],
    *,
    wide_ok: bool = False,
) -> np.ndarray | None:
    """``out`` checked: ``dtype`` (or float64 too, with ``wide_ok``), ``shape``, writeable."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{fn}: {arg} must be a NumPy array, got {type(out).__name__}")
    if out.dtype != dtype and not (wide_ok and out.dtype == np.float64):
        allowed = "the logits' dtype" + (" or float64" if wide_ok else "")
        raise TypeError(
            f"{fn}: {arg} must have {allowed} {dtype_name(dtype)}, got {dtype_name(out.dtype)}"
        )
    if out.shape != shape:
        raise ValueError(f"{fn}: {arg} must have shape {shape}, got {out.shape}")
    if not out.flags.writeable:
        raise ValueError(f"{fn}: {arg} is read-only")
    return out


def per_row(fn: str, upstream: Any, x: np.ndarray, axis: int) -> np.ndarray:
    """``upstream`` (``None``: ones) as an array of ``x``'s dtype broadcast to the loss's shape."""
    shape = loss_shape(x, axis)
    try:
        a = np.asarray(1.0 if upstream is None else upstream, dtype=x.dtype)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"{fn}: upstream cannot be cast to {dtype_name(x.dtype)}: {error}"
        ) from None
    try:
        return np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(
            f"{fn}: upstream of shape {a.shape} must broadcast to the loss's shape {shape}"
        ) from None


def c_contiguous(a: np.ndarray) -> bool:
    return a.flags.c_contiguous


def is_wide(out: np.ndarray | None) -> bool:
    return out is not None and out.dtype == np.float64


def cast_into(wide: np.ndarray | None, out: np.ndarray | None, dtype: np.dtype) -> np.ndarray:
    assert wide is not None
    if out is None:
        return wide.astype(dtype)
    out[...] = wide
    return out
