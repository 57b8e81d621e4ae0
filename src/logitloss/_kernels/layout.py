"""Describe arrays of any shape and strides to the row kernels, copying only what they cannot read.

The kernels see every operand as rows of a 2-D ``(rows, cols)`` iteration space: a 1-D
contiguous *base* array and a row stride, and for the broadcast operands (``pos_weight``,
``upstream``) whether the value varies along the row or is constant along it. :func:`plan` finds
that description for operands that broadcast to the logits' shape:

1. the axes are put in the order of the logits' strides (largest first), so a transposed
   (Fortran-ordered) input is walked in memory order, not across it;
2. length-1 axes are dropped and neighbouring axes merged wherever every operand allows it
   (NumPy's iterator does the same), which turns any contiguous input into one long row;
3. what still needs more than two axes, or a row with gaps, negative strides or a misaligned
   stride, is copied into a contiguous array: the only copies, and only where needed.

A per-class ``pos_weight`` (constant down the columns) over short rows is repeated along the row
(``group_rows``) so that a tile holds many rows: 1 000 000 rows of 10 classes would otherwise
be 1 000 000 tiles of 10 elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import as_strided


class LayoutError(Exception):
    """An operand cannot be described with the current axes (internal: triggers a copy)."""


@dataclass
class Operand:
    """One operand as the kernels read it: ``base[row * row_stride + col]`` if ``varies``,
    else ``base[row * row_stride]`` (constant along the row)."""

    base: np.ndarray
    row_stride: int
    varies: bool


@dataclass
class Plan:
    """``rows x cols`` elements and the operands that describe them, by the caller's names."""

    rows: int
    cols: int
    operands: dict[str, Operand | RowOperand]


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view: the kernels are compiled for read-only inputs only, whether the
    caller's array is writeable or not (one compiled version per dtype, not two)."""
    view = a.view()
    view.flags.writeable = False
    return view


def _coalesce(shape: tuple[int, ...], strides: list[tuple[int, ...]]) -> list[tuple[int, list]]:
    """Drop length-1 axes and merge an axis into the next where every operand's strides allow."""
    dims: list[tuple[int, list]] = []
    for axis, n in enumerate(shape):
        if n == 1:
            continue
        axis_strides = [s[axis] for s in strides]
        if dims:
            outer_n, outer_strides = dims[-1]
            if all(o == i * n for o, i in zip(outer_strides, axis_strides, strict=True)):
                dims[-1] = (outer_n * n, axis_strides)
                continue
        dims.append((n, axis_strides))
    return dims


def _describe(
    view: np.ndarray,
    dims_strides: tuple[int, int],
    rows: int,
    cols: int,
    constant_allowed: bool,
    writeable: bool,
) -> Operand:
    """The base, row stride and ``varies`` flag of one operand, or LayoutError."""
    item = view.itemsize
    row_stride, col_stride = dims_strides
    if rows == 1:
        row_stride = 0
    if cols == 1:
        col_stride = 0 if constant_allowed else item
    if col_stride == 0 and not constant_allowed:
        raise LayoutError
    if col_stride not in (0, item) or row_stride < 0 or row_stride % item:
        raise LayoutError
    span = (rows - 1) * row_stride + (cols - 1) * col_stride + item
    if view.flags.c_contiguous and view.nbytes == span:
        base = view.reshape(-1)
    else:
        base = as_strided(view, shape=(span // item,), strides=(item,), writeable=writeable)
    if not writeable:
        base = _readonly(base)
    return Operand(base, row_stride // item, col_stride != 0)


def plan(
    x: np.ndarray, operands: dict[str, tuple[np.ndarray, bool, bool]]
) -> tuple[Plan, dict[str, np.ndarray]]:
    """Describe ``operands`` (by name: ``(array, constant_allowed, writeable)``, each of ``x``'s
    shape or broadcasting to it, ``x`` itself among them) to the kernels.

    Returns the plan and the arrays actually used, by name (an operand may have been replaced by
    a contiguous copy: the caller copies an output back from it).
    """
    simple = _contiguous_plan(x, operands)
    if simple is not None:
        return simple
    shape = x.shape
    names = list(operands)
    specs = list(operands.values())
    arrays = [np.broadcast_to(a, shape) if a.shape != shape else a for a, _, _ in specs]
    # Walk in the logits' memory order: sort the axes by x's strides, largest first (stable).
    order = sorted(range(x.ndim), key=lambda axis: -abs(x.strides[axis]))
    for attempt in range(3):
        views = [a.transpose(order) for a in arrays]
        permuted = tuple(shape[axis] for axis in order)
        dims = _coalesce(permuted, [v.strides for v in views])
        try:
            if len(dims) > 2:
                raise LayoutError
            if not dims:
                rows, cols, strides = 1, 1, [(0, 0)] * len(views)
            elif len(dims) == 1:
                rows, cols = 1, dims[0][0]
                strides = [(0, s) for s in dims[0][1]]
            else:
                rows, cols = dims[0][0], dims[1][0]
                strides = list(zip(dims[0][1], dims[1][1], strict=True))
            described = {
                name: _describe(v, s, rows, cols, const, writeable)
                for name, v, s, (_, const, writeable) in zip(
                    names, views, strides, specs, strict=True
                )
            }
            return Plan(rows, cols, described), dict(zip(names, arrays, strict=True))
        except LayoutError:
            # First the operands that take part in every element (logits, labels, output),
            # then the broadcast ones: a contiguous copy in the walking order.
            for i, (a, const, writeable) in enumerate(specs):
                if attempt == 0 and const:
                    continue
                if not _is_walkable(arrays[i], order):
                    arrays[i] = _contiguous(np.broadcast_to(a, shape), order, fill=not writeable)
    raise AssertionError("unreachable: contiguous operands always have a layout")


def _contiguous_plan(
    x: np.ndarray, operands: dict[str, tuple[np.ndarray, bool, bool]]
) -> tuple[Plan, dict[str, np.ndarray]] | None:
    """:func:`plan` at once for the common case (a training step's small arrays, where the
    general search costs tens of microseconds): C-contiguous logits, and operands each
    C-contiguous of the logits' shape, or a single value, or one value per class (the last
    axis); None otherwise. The same description the search finds: one row, or rows of classes
    with the per-class operands read at row stride 0."""
    if not x.flags.c_contiguous or x.size == 0:
        return None
    cols = x.shape[-1] if x.ndim else 1
    kinds = {}
    for name, (a, constant_allowed, writeable) in operands.items():
        if a.shape == x.shape and a.flags.c_contiguous:
            kinds[name] = "full"
        elif writeable or not a.flags.c_contiguous:
            return None
        elif a.size == 1 and constant_allowed:
            kinds[name] = "single"
        elif cols > 1 and a.size == cols and a.shape[-1] == cols:
            kinds[name] = "class"
        else:
            return None
    rows, length = (x.size // cols, cols) if "class" in kinds.values() else (1, x.size)
    described = {}
    for name, (a, _, writeable) in operands.items():
        base = a.reshape(-1) if writeable else _readonly(a.reshape(-1))
        kind = kinds[name]
        stride = length if kind == "full" and rows > 1 else 0
        described[name] = Operand(base, stride, kind != "single")
    return Plan(rows, length, described), {name: a for name, (a, _, _) in operands.items()}


def _is_walkable(a: np.ndarray, order: list[int]) -> bool:
    """True if ``a``, axes in ``order``, is C-contiguous (or all zero strides: a constant)."""
    view = a.transpose(order)
    return view.flags.c_contiguous or all(s == 0 for s in view.strides)


def _contiguous(a: np.ndarray, order: list[int], fill: bool) -> np.ndarray:
    """An array like ``a`` whose memory order is ``order`` (C-contiguous once transposed): a
    copy of ``a`` if ``fill``, else uninitialised (an output, copied back by the caller)."""
    inverse = np.argsort(order)
    walked = a.transpose(order)
    new = np.ascontiguousarray(walked) if fill else np.empty(walked.shape, a.dtype)
    return new.transpose(inverse)


def group_rows(p: Plan, tile: int) -> list[Plan]:
    """Split short rows into groups of ``k`` rows read as one longer row, where possible.

    Possible when every operand either varies along the row with contiguous rows
    (``row_stride == cols``), or is a per-class one (``row_stride == 0``, varies: repeated ``k``
    times, a copy of ``k * cols`` elements, at most a tile), or is constant everywhere. Returns
    the plans to run: the grouped rows, then the rows left over (their bases start there).
    """
    rows, cols = p.rows, p.cols
    # Up to a tile's worth of rows a group, all the rows where they fit in one (512 rows of 10
    # classes: one tile, not 512 of 10 elements, whose per-tile cost was 5x the work).
    k = min(tile // max(cols, 1), rows)
    if k < 2:
        return [p]
    for op in p.operands.values():
        contiguous_rows = op.varies and op.row_stride == cols
        per_class = op.varies and op.row_stride == 0
        constant = not op.varies and op.row_stride == 0
        if not (contiguous_rows or per_class or constant):
            return [p]
    groups = rows // k
    grouped: dict[str, Operand | RowOperand] = {}
    rest: dict[str, Operand | RowOperand] = {}
    for name, op in p.operands.items():
        if op.varies and op.row_stride == 0:
            grouped[name] = Operand(_readonly(np.tile(op.base[:cols], k)), 0, True)
            rest[name] = op
        elif op.varies:
            grouped[name] = Operand(op.base, k * cols, True)
            rest[name] = Operand(op.base[groups * k * cols :], cols, True)
        else:
            grouped[name] = op
            rest[name] = op
    pieces = [Plan(groups, k * cols, grouped)]
    if rows > groups * k:
        pieces.append(Plan(rows - groups * k, cols, rest))
    return pieces


# --- Rows of classes (the softmax kernels) -----------------------------------------------------


@dataclass
class RowOperand:
    """One operand as the softmax kernels read it: row ``r`` is
    ``base[offset + r * row_stride:][:cols]`` (a class-axis operand) or
    ``base[offset + r * row_stride]`` (a per-row operand: the loss, upstream, integer labels)."""

    base: np.ndarray
    offset: int
    row_stride: int


def class_rows(
    full: dict[str, tuple[np.ndarray, bool]], per_row: dict[str, tuple[np.ndarray, bool]]
) -> Plan:
    """Describe operands whose class axis is last (``full``, shape ``(*outer, cols)``) and
    per-row operands (shape ``outer``) as rows, each given by name with whether it is written.

    The outer axes are merged wherever every operand allows it (length-1 axes dropped), which
    must leave at most one; the classes of every ``full`` operand must be contiguous. Any row
    stride is allowed: negative (reversed rows), zero (labels broadcast along the batch).
    Raises :class:`LayoutError` otherwise (the caller copies the operands that are not
    C-contiguous and tries again). Returns the plan (one piece), its operands by name.
    """
    specs = [*full.values(), *per_row.values()]
    arrays = [a for a, _ in specs]
    outer = arrays[0].shape[:-1]
    cols = arrays[0].shape[-1]
    strides = [a.strides[:-1] for a, _ in full.values()] + [a.strides for a, _ in per_row.values()]
    dims = _coalesce(outer, strides)
    if len(dims) > 1:
        raise LayoutError
    rows = dims[0][0] if dims else 1
    row_bytes = dims[0][1] if dims else [0] * len(arrays)
    described: dict[str, Operand | RowOperand] = {}
    names = [*full, *per_row]
    for i, ((a, writeable), rs) in enumerate(zip(specs, row_bytes, strict=True)):
        item = a.itemsize
        is_full = i < len(full)
        if is_full and cols > 1 and a.strides[-1] != item:
            raise LayoutError
        if rs % item or (writeable and rs == 0 and rows > 1):
            raise LayoutError
        width = cols if is_full else 1
        stride = rs // item if rows > 1 else 0
        # A 2-D view of the rows, from which the lowest address is taken: the first row, or
        # the last one for a negative row stride.
        grid = as_strided(a, shape=(rows, width), strides=(stride * item, item), writeable=False)
        low = 0 if stride >= 0 else rows - 1
        span = (rows - 1) * abs(stride) + width
        start = grid[low]
        if writeable:
            start = as_strided(a, shape=(rows, width), strides=(stride * item, item))[low]
        base = as_strided(start, shape=(span,), strides=(item,), writeable=writeable)
        if not writeable:
            base = _readonly(base)
        described[names[i]] = RowOperand(base, (rows - 1) * -stride if stride < 0 else 0, stride)
    return Plan(rows, cols, described)
