"""The kernels' host side shared by every family: operand checks, the one narrow-dtype widening
(``through_float32``), the one launch loop (``launch``: operands, serial or parallel, call), and
the run of an elementwise kernel pair (``elementwise``).

NumPy arrays only. The family modules (``_losses.<family>.kernel``) build their entry points from
these; ``_core.route`` decides when a call comes to them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._core import arrays, buffers
from . import layout, loops, narrow, runtime

# Computed through float32 (exact widening), rounded to their own dtype at the end: the float32
# result carries 13 (float16) or 16 (bfloat16) more bits, so the double rounding stays within
# 0.5 + 2^-13 ULP of the float32 result's own error.
THROUGH_FLOAT32 = ("float16", "bfloat16")


DIRECT = ("float32", "float64")


def dtype_name(dtype: np.dtype) -> str:
    # arrays.dtype_name's cache: NumPy's dtype.name costs microseconds a call.
    return arrays.dtype_name(dtype)


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
    if a.shape == x.shape or (not elementwise and a.ndim == 0):
        return a  # the common cases, without np.broadcast_shapes' microseconds
    if elementwise:
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


def through_float32(run: Callable[..., tuple[Any, ...]]) -> Callable[..., tuple[Any, ...]]:
    """Decorator: the one widening of float16 and bfloat16 logits, for a kernel runner
    ``run(x, inputs, outs, **options) -> results``.

    ``inputs`` and ``outs`` are dicts of arrays (or ``None``) by the kernel's operand names; the
    results come in the order of ``outs`` (``None`` for one not wanted), then any others (the
    reductions' sums). For float16 and bfloat16 logits ``run`` gets the logits and every input
    of their dtype as float32 (exact), and only the float64 outputs (the softmax loss may be
    one: written as they are); each float32 result is then rounded to the logits' dtype, into
    the matching output where given (:data:`THROUGH_FLOAT32`). The logits' dtype is one of the
    four (checked by the caller): the narrow ones are those of 2 bytes.
    """

    @functools.wraps(run)
    def run_any(
        x: np.ndarray,
        inputs: dict[str, np.ndarray | None],
        outs: dict[str, np.ndarray | None],
        **options: Any,
    ) -> tuple[Any, ...]:
        if x.itemsize > 2:  # float32, float64 (dtype_name would cost more than the rest)
            return run(x, inputs, outs, **options)
        wide = {
            name: narrow.widen(a) if a is not None and a.dtype == x.dtype else a
            for name, a in inputs.items()
        }
        kept = {name: out if is_wide(out) else None for name, out in outs.items()}
        results = run(narrow.widen(x), wide, kept, **options)
        given = list(outs.values())
        return tuple(
            cast_into(r, given[i] if i < len(given) else None, x.dtype)
            if isinstance(r, np.ndarray) and r.dtype == np.float32
            else r
            for i, r in enumerate(results)
        )

    return run_any


def launch(
    kernels: loops.KernelPair,
    pieces: Iterable[layout.Plan],
    values: Callable[[layout.Plan], dict[str, Any]] | None = None,
) -> None:
    """The one launch loop: for each piece, the kernels' operands from its descriptions (and
    ``values(piece)``, the operands that are plain values), the serial or the parallel kernel
    by size, the call."""
    for piece in pieces:
        ops = loops.fill(kernels.operands_type, piece.operands, values(piece) if values else {})
        kernel = runtime.pick(kernels.serial, kernels.parallel, piece.rows * piece.cols)
        size = (piece.rows, piece.cols, runtime.TILE) if kernels.tiled else (piece.rows, piece.cols)
        runtime.call(kernel, _type_key(ops), (ops, *size))


def _type_key(ops: tuple[Any, ...]) -> tuple[Any, ...]:
    """What the operands' numba types follow from (given the kernel: the operands' type and
    which are read-only are fixed), for :func:`runtime.call`."""
    return tuple([a.dtype.char if type(a) is np.ndarray else type(a) for a in ops])


def tiles(
    kernels: loops.KernelPair,
    x: np.ndarray,
    inputs: dict[str, np.ndarray],
    outs: dict[str, np.ndarray],
) -> tuple[list[layout.Plan], dict[str, np.ndarray]]:
    """The pieces of rows (``layout.plan``, ``layout.group_rows``) for an elementwise kernel:
    ``x``, the inputs (a :data:`loops.BROADCAST` one may be constant along the rows) and the
    outputs, by name. Returns them and the arrays used, by name (an output replaced by a
    contiguous copy is copied back from it by the caller)."""
    kinds = kernels.operands_type.kinds
    spec = {"x": (x, False, False)}
    spec |= {name: (a, kinds[name] == loops.BROADCAST, False) for name, a in inputs.items()}
    spec |= {name: (a, False, True) for name, a in outs.items()}
    plan, used = layout.plan(x, spec)
    return layout.group_rows(plan, runtime.TILE), used


@through_float32
def elementwise(
    x: np.ndarray,
    inputs: dict[str, np.ndarray],
    outs: dict[str, np.ndarray | None],
    *,
    kernels: loops.KernelPair,
    x_order: bool = False,
) -> tuple[np.ndarray, ...]:
    """Run an elementwise kernel pair on ``x`` and ``inputs`` (broadcast to ``x``) into
    ``outs`` (new arrays for ``None``: in ``x``'s memory order with ``x_order``, else C order);
    returns the outputs."""
    targets = {}
    for name, out in outs.items():
        target = out
        # An output that overlaps an input other than as the very same view (the kernels read
        # each element before writing it) is written through a temporary.
        if out is not None and any(
            np.may_share_memory(out, a) and not same_view(out, a) for a in (x, *inputs.values())
        ):
            target = None
        if target is None:
            target = buffers.empty_like(x) if x_order else buffers.empty(x.shape, x.dtype)
        targets[name] = target
    if x.size:
        pieces, used = tiles(kernels, x, inputs, targets)
        launch(kernels, pieces)
        for name, target in targets.items():
            if used[name] is not target:
                target[...] = used[name]
    results = []
    for name, out in outs.items():
        if out is not None and targets[name] is not out:
            out[...] = targets[name]
        results.append(targets[name] if out is None else out)
    return tuple(results)


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
    """The float32 ``wide`` rounded once to the narrow ``dtype``, into ``out`` if given."""
    assert wide is not None
    return narrow.round_into(buffers.empty(wide.shape, dtype) if out is None else out, wide)
