"""The kernels' loops, generated: each serial/parallel pair from one tile or row function.

A family's kernel module writes what one tile (a stretch of one row: the elementwise losses) or
one row (a row of classes: the softmax losses) does, and decorates it with the flat NamedTuple
type of its operands (:func:`operands`), whose fields begin the function's parameters:

    LossOperands = operands("LossOperands", __name__, x=ELEMENTWISE, z=ELEMENTWISE, ...)

    @over_tiles(LossOperands)
    def loss(x, x_stride, z, z_stride, ..., t, row, c0, c1, wide): ...

``loss`` is then a :class:`KernelPair`: ``loss.serial(ops, rows, cols, tile)`` runs the tiles on
the calling thread, ``loss.parallel(ops, rows, cols, tile)`` shares them among numba's threads
(``prange``), ``ops`` a ``LossOperands``. Both are the one loop (``_TILE_LOOP``, ``_ROW_LOOP``),
compiled without and with ``parallel``: the same tiles, so the same numbers for any thread
count. ``wide`` is whether the logits (the first operand) are float64: a compile-time constant
in the inlined tile functions. The host side (``drivers.launch``) fills the operands from
``layout``'s descriptions by name and picks one of the two kernels by size.

The loops are written for each function from a template (its operands unpacked before the loop
and passed one by one: numba's parfors lose the writes to an array reached through a NamedTuple
inside a ``prange`` body, numba issues 5872, 7135, 10338) and compiled as code of the function's
file and line (``co_filename``, ``co_firstlineno``), for numba's on-disk cache: a cached function
is found by file, qualified name and line, and is stale when that file changes, so an edit of a
family's kernel module recompiles its loops, as when they were written out there (the loop's own
bytecode is part of numba's cache key too). A closure over the function would not do: numba keys
a closure's cache entries by its pickled cells, and a dispatcher pickles with a new random id in
every process (never a cache hit). Errors numba reports inside a loop name that file, with the
template's line offsets. As for ``vector_math``, numba does not track the inlined helpers here
(:func:`span`...): after editing them, delete the families' ``__pycache__``.
"""

from __future__ import annotations

import collections
import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import numba
import numpy as np
from numba import prange, types
from numba.core.imputils import impl_ret_borrowed
from numba.extending import intrinsic

from .vector_math import is_float64, prefer_wide_vectors

# Every kernel (and row function): numpy's error model (no ZeroDivisionError checks in the
# loops), no GIL, cached.
OPTIONS = {"error_model": "numpy", "nogil": True, "cache": True}
# The tile functions and the helpers, inlined where they are called (numba's IR inliner: flags
# such as ``wide`` are then constants there, and the loops vectorise as if written there).
INLINE = {"inline": "always", "error_model": "numpy"}


# --- Operands ----------------------------------------------------------------------------------
#
# A kernel takes its operands as one flat NamedTuple, which its loop unpacks into arrays and
# scalars before the ``prange`` loop (what numba's parfors handle: see the loops below), and which
# numba types about as fast as separate arguments (a nested one: 2-3 us more a call). An operand
# ``q`` described by ``layout`` is the fields ``q`` (its base array), ``q_stride`` (its row
# stride) and, by kind, ``q_varies`` or ``q_offset``; a plain value (an output array, a scalar)
# is one field.

#: A ``layout.Operand`` that varies along the row (logits, labels, per-element outputs).
ELEMENTWISE = ("base", "row_stride")
#: A ``layout.Operand`` that may be constant along the row (pos_weight, upstream, weights).
BROADCAST = ("base", "row_stride", "varies")
#: A ``layout.RowOperand``: a class-axis or per-row operand of the softmax kernels.
ROWS = ("base", "offset", "row_stride")
#: A value passed as it is.
VALUE = ()

_SUFFIX = {"base": "", "row_stride": "_stride", "varies": "_varies", "offset": "_offset"}


def operands(typename: str, module: str, **kinds: tuple[str, ...]) -> Any:
    """The flat NamedTuple type of a kernel's operands, the logits' (``x``) first: each keyword
    an operand's name and kind (:data:`ELEMENTWISE`, :data:`BROADCAST`, :data:`ROWS`,
    :data:`VALUE`). To be bound to ``typename`` in ``module`` (numba's cache pickles the type by
    reference)."""
    sources = []
    for name, kind in kinds.items():
        sources += [(name + _SUFFIX[attr], name, attr) for attr in kind] or [(name, name, None)]
    cls = collections.namedtuple(typename, [field for field, _, _ in sources], module=module)
    cls._sources = tuple(sources)
    #: Each operand's kind, by name.
    cls.kinds = dict(kinds)
    return cls


def fill(operands_type: Any, described: dict[str, Any], values: dict[str, Any]) -> Any:
    """An ``operands_type`` from ``layout``'s descriptions and the plain values, by name."""
    return operands_type(
        *[
            values[name] if attr is None else getattr(described[name], attr)
            for _, name, attr in operands_type._sources
        ]
    )


class KernelPair(NamedTuple):
    """A kernel on the calling thread and across numba's threads: the same loop over the same
    tiles or rows, so the same numbers."""

    serial: Any
    parallel: Any
    #: The type of the kernels' operands (:func:`operands`).
    operands_type: Any
    #: Whether the kernels take the tile length after ``rows, cols`` (tile kernels).
    tiled: bool


# --- Reading the operands in a tile or row function -------------------------------------------


@numba.njit(**INLINE)
def span(base, row_stride, row, c0, c1):
    """Columns ``c0:c1`` of row ``row`` of an operand that varies along the row: a contiguous
    slice (what lets LLVM vectorise the loop; indexing the base with ``offset + j`` makes numba
    emit gathers for its negative-index check, 3x slower, measured)."""
    start = row * row_stride
    return base[start + c0 : start + c1]


@numba.njit(**INLINE)
def span_or_first(base, row_stride, varies, row, c0, c1):
    """:func:`span` if the operand varies along the row, else its row's one value (a slice of
    one element)."""
    start = row * row_stride
    return base[start + c0 : start + c1] if varies else base[start : start + 1]


@numba.njit(**INLINE)
def class_row(base, offset, row_stride, r, cols):
    """Row ``r`` of a class-axis operand (its ``cols`` classes, contiguous)."""
    start = offset + r * row_stride
    return base[start : start + cols]


@intrinsic
def unowned(typingctx, a):
    """A view of the array ``a`` that numba does not reference-count (``a`` itself for another
    type): for a row loop's operands, which its caller keeps alive for the whole loop.

    numba counts the references of every array a function binds, with an atomic increment and
    decrement; inlined row functions bind a dozen per row that its pruning pass leaves, about
    150 ns a row (measured: ``softmax.reduced``'s rows of 2 or 10 classes, 190 ns a row, 58 %
    of it in ``NRT_incref``/``NRT_decref``). A view without a meminfo makes each a null test.
    Never returned or stored past the call: its memory is the caller's. Not used by the tile
    loop: passed to its inlined tile functions, the tiles' partial sums came out as garbage (a
    reason not found), and a tile's counts are nothing next to its 16 384 elements."""
    if not isinstance(a, types.Array):
        return a(a), lambda context, builder, sig, args: args[0]

    def codegen(context, builder, sig, args):
        owned = context.make_array(a)(context, builder, value=args[0])
        view = context.make_array(a)(context, builder)
        for field in ("nitems", "itemsize", "data", "shape", "strides"):
            setattr(view, field, getattr(owned, field))
        view.meminfo = context.get_constant_null(types.MemInfoPointer(a.dtype))
        view.parent = context.get_constant_null(types.pyobject)
        return view._getvalue()

    return a(a), codegen


@intrinsic
def as_input(typingctx, a):
    """``a`` as a read-only array (the same array: numba's read-only and writeable arrays share
    their data model), or a literal as a plain value of its type: what a compiled entry passes
    to the large functions it calls.

    numba compiles a function once for each tuple of argument types, and a caller's array is
    read-only or not as it comes (JAX's are, broadcast views are, NumPy's and torch's are not),
    while a constant in the calling code is typed as its literal. Each combination was a new
    compilation of the whole loop, 20-45 s each (``softmax.reduced``'s 28 in one test run,
    logistic's 30); through this the entry's small body is compiled per combination, its
    loops once per dtype."""
    if isinstance(a, types.Array):
        result = a.copy(readonly=True)

        def codegen(context, builder, sig, args):
            return impl_ret_borrowed(context, builder, sig.return_type, args[0])

        return result(a), codegen
    result = types.unliteral(a)
    return result(a), lambda context, builder, sig, args: context.cast(
        builder, args[0], sig.args[0], sig.return_type
    )


# --- The loops ---------------------------------------------------------------------------------
#
# The operands are unpacked before the loop, and the tile or row function gets them one by one:
# numba's parfors lose the writes to an array reached through a NamedTuple inside the ``prange``
# body (numba issues 5872, 7135, 10338); arrays and scalars are what the parfors handle well.

_TILE_LOOP = """
def {name}(operands, rows, cols, tile):
    ({fields},) = operands
    wide = is_float64({first})
    per_row = (cols + tile - 1) // tile
    for t in prange(rows * per_row):
        row = t // per_row
        c0 = (t - row * per_row) * tile
        c1 = min(cols, c0 + tile)
        prefer_wide_vectors()
        body({fields}, t, row, c0, c1, wide)
"""

_ROW_LOOP = """
def {name}(operands, rows, cols):
    ({fields},) = operands
    wide = is_float64({first})
    per_block = rows_per_block(rows)
    for b in prange((rows + per_block - 1) // per_block):
        prefer_wide_vectors()
        scratch = np.empty(cols if {scratch} else 0)
        for r in range(b * per_block, min(rows, (b + 1) * per_block)):
            body({unowned_fields}, r, cols, wide, unowned(scratch))
"""


@numba.njit(**INLINE)
def rows_per_block(rows):
    """Rows of a row loop's block, which allocates its float64 scratch row once: up to 16, and
    blocks enough to share among the threads (each chunk numba hands out is a few blocks)."""
    return max(1, min(16, rows // 64))


def _pair(
    template: str, fn: Any, operands_type: Any, tiled: bool, scratch: bool = False
) -> KernelPair:
    """The serial and parallel kernels: ``template`` for ``fn`` (a dispatcher) and its operands,
    named ``<fn>_serial`` and ``<fn>_parallel``, compiled as code of ``fn``'s file and line."""
    fields = operands_type._fields
    params = list(inspect.signature(fn.py_func).parameters)
    if tuple(params[: len(fields)]) != fields:
        raise TypeError(f"{fn.__name__}: the parameters must begin with the operands {fields}")
    source = fn.py_func.__code__
    kernels = []
    for suffix, parallel in (("serial", False), ("parallel", True)):
        name = f"{fn.__name__}_{suffix}"
        text = template.format(
            name=name, fields=", ".join(fields), first=fields[0], scratch=scratch,
            unowned_fields=", ".join(f"unowned({field})" for field in fields),
        )  # fmt: skip
        namespace = {"__name__": fn.py_func.__module__, "body": fn, "unowned": unowned}
        namespace |= {"prange": prange, "is_float64": is_float64, "np": np}
        namespace |= {"rows_per_block": rows_per_block, "prefer_wide_vectors": prefer_wide_vectors}
        exec(compile(text, source.co_filename, "exec"), namespace)
        loop = namespace[name]
        loop.__code__ = loop.__code__.replace(co_firstlineno=source.co_firstlineno)
        loop.__doc__ = f"The {suffix} kernel of :func:`{fn.__name__}` (``_kernels.loops``)."
        kernels.append(numba.njit(parallel=parallel, **OPTIONS)(loop))
    return KernelPair(kernels[0], kernels[1], operands_type, tiled)


def over_tiles(operands_type: Any) -> Callable[[Callable[..., None]], KernelPair]:
    """Decorator: the kernels over tiles around ``fn(<operands>, t, row, c0, c1, wide)``,
    inlined; called as ``kernel(ops, rows, cols, tile)``, ``ops`` an ``operands_type``.

    Tiles of at most ``tile`` elements along each row, numbered row by row (``ceil(cols /
    tile)`` a row): tile ``t`` is columns ``c0:c1`` of row ``row``."""
    return lambda fn: _pair(_TILE_LOOP, numba.njit(**INLINE)(fn), operands_type, tiled=True)


def over_rows(
    operands_type: Any, *, scratch: bool = False
) -> Callable[[Callable[..., None]], KernelPair]:
    """Decorator: the kernels over rows around ``fn(<operands>, r, cols, wide, scratch)``
    (with ``scratch``, a float64 row of ``cols`` for ``fn``'s use, allocated once per block of
    rows; else an empty array), compiled apart (inlined, its inner loops' running sums would be
    taken by numba's parfor pass for reductions of the row loop, which fails); called as
    ``kernel(ops, rows, cols)``. Being compiled apart, ``fn`` calls
    ``vector_math.prefer_wide_vectors()`` itself for its loops' 512-bit vectors (the loops here
    do it in their ``prange`` bodies, where the tile functions are inlined)."""
    return lambda fn: _pair(
        _ROW_LOOP, numba.njit(**OPTIONS)(fn), operands_type, tiled=False, scratch=scratch
    )
