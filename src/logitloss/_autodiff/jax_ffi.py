"""The fused training kernels as XLA FFI custom calls on JAX CPU: ``(value, grad)`` of the
reduced ``cross_entropy`` / ``binary_cross_entropy`` computed by a ``numba.cfunc`` handler (XLA's
typed FFI, custom call API version 4) on XLA's own buffers, with no copy of the operands or of
the gradient and no Python in the call.

:func:`cross_entropy` and :func:`binary_cross_entropy` are ``_autodiff.jax_training``'s kernel
call: they give the same numbers, bit for bit, as ``_losses.training.reduced`` on the same
inputs, and are traced like any JAX operation (``jit``; ``vmap`` calls the handler once per batch
element, ``vmap_method="sequential"``). The shape work is XLA's, before the call: the class axis
moved last, float16 and bfloat16 widened to float32 (exact), the operands cast to the logits'
dtype as ``_losses.training`` does, a row mask broadcast to the rows. The handler then runs the
NumPy path's own compiled entries (``softmax.reduced.fused``, ``logistic.reduced.fused``: the
rows or tiles, the sums, the mean; compiled by ``_kernels.runtime.call`` for the handler's
argument types, and the handler with them, under the kernels' LLVM options: the same machine
code for the same sums), the probability targets' denominator as NumPy sums it
(``_kernels.host_sums``), and rounds the float64 value once to the output dtype (for float16
directly, for bfloat16 through float32, as NumPy and ml_dtypes round a Python float), written
in float32 there and converted exactly by XLA.

One handler per logits' dtype (float32, float64) and, for cross-entropy, kind of targets (int32
or int64 index labels, probabilities), compiled on first use (cached on disk by numba) and
registered with XLA then (``jax.ffi.register_ffi_target``, once per process). The options are
two array attributes: ``ints`` (int64) and ``reals`` (float64).

Threads: the attribute ``threads`` is ``_kernels.runtime.threads_for`` of the logits at trace
time (1 below ``runtime.PARALLEL_MIN``, and 1 under numba's workqueue threading layer, which
must not launch from two threads at once, as XLA may do); the handler sets numba's thread count
and chunk size around a parallel launch (both are numba's per-thread settings, callable from
compiled code) and puts them back.

Operand shapes: a ``pos_weight`` or element weight of binary cross-entropy that is neither one
value, one per class (the last axis) nor the logits' shape is broadcast to the logits' shape by
XLA before the call; the NumPy path reads such an operand in place, in other tiles, so the
float64 sum may then round differently there in the last bit (the results are as exact).
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import jax
import jax.numpy as jnp
import numba
import numpy as np
from llvmlite import ir
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._kernels import host_sums, runtime, xla_ffi
from .._losses.logistic import reduced as logistic
from .._losses.softmax import reduced as softmax

# Module globals, for the handlers (numba freezes them at compilation; a dispatcher is found by
# name there, which keeps the handlers' closures picklable for numba's cache).
_CHUNK_TILES = runtime.CHUNK_TILES
_NAN = math.nan

# How the handler rounds the float64 value: to the output dtype itself, or first to float16 /
# bfloat16 (the output is then float32 holding that value exactly).
_WIDE, _FLOAT16, _BFLOAT16 = 0, 1, 2

_lock = threading.Lock()
_registered: dict[str, Any] = {}


# --- numba's thread settings, by symbol ---------------------------------------------------------
#
# numba.set_num_threads and friends, called from compiled code, go through ctypes function
# objects, which numba's cache cannot store (the handler would be compiled again in every
# process). The threading layer registers the same C functions with LLVM by name once its
# threads are launched (``numba.get_num_threads()`` on the host, before the handler compiles):
# called by name, the handler is cached.


def _threading_call(builder: Any, name: str, args: list, returns: bool) -> Any:
    """Call the threading layer's C function ``name`` (C ``int`` / ``unsigned`` arguments and
    result) on int64 ``args``; its result widened to int64."""
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(i32 if returns else ir.VoidType(), [i32] * len(args))
    fn = cgutils.get_or_insert_function(builder.module, fnty, name)
    out = builder.call(fn, [builder.trunc(a, i32) for a in args])
    return builder.zext(out, ir.IntType(64)) if returns else None


@intrinsic
def _get_num_threads(typingctx):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return _threading_call(builder, "get_num_threads", [], True)

    return types.int64(), codegen


@intrinsic
def _set_num_threads(typingctx, n):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        _threading_call(builder, "set_num_threads", list(args), False)
        return context.get_dummy_value()

    return types.none(types.int64), codegen


@intrinsic
def _set_parallel_chunksize(typingctx, n):  # type: ignore[no-untyped-def]
    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return _threading_call(builder, "set_parallel_chunksize", list(args), True)

    return types.int64(types.int64), codegen


# --- Rounding ---------------------------------------------------------------------------------


@numba.njit(error_model="numpy")
def _round_to(v, precision, min_exponent, largest):
    """``v`` rounded to nearest-even into a binary format of ``precision`` significant bits,
    normal exponents from ``min_exponent`` and largest finite value ``largest`` (subnormals
    below), as a float64."""
    if v != v or v == 0.0 or math.isinf(v):
        return v
    _, e = math.frexp(abs(v))
    q = max(e - precision, min_exponent + 1 - precision)
    r = math.ldexp(np.rint(math.ldexp(v, -q)), q)
    if abs(r) > largest:
        return math.copysign(math.inf, v)
    return r


@numba.njit(error_model="numpy")
def _rounded(v, narrow):
    """The value as the NumPy path rounds a Python float to the logits' dtype: float16 from
    float64 directly (NumPy), bfloat16 through float32 (ml_dtypes); other dtypes by the store."""
    if narrow == _FLOAT16:
        return _round_to(v, 11, -14, 65504.0)
    if narrow == _BFLOAT16:
        return _round_to(np.float64(np.float32(v)), 8, -126, 3.3895313892515355e38)
    return v


# --- cross_entropy ----------------------------------------------------------------------------


def _cross_entropy_handler(x_type: Any, label_type: Any, soft: bool) -> Any:
    """The handler for float ``x_type`` logits and ``label_type`` index labels (``soft``:
    probabilities of ``x_type``; ``label_type`` then only types an empty stand-in).

    Arguments ``x (N, C)``, labels ``(N,)`` or probabilities ``(N, C)``, class weights ``(C,)``
    or ``(0,)``, row mask (bool) ``(N,)`` or ``(0,)``; results the value ``()`` and the gradient
    ``(N, C)``, both ``x_type``; attributes ``ints = [ignore_index, mean, threads, narrow]``,
    ``reals = [smoothing, z_scale]``."""
    x_code = xla_ffi.code_of(x_type)
    t_code = x_code if soft else xla_ffi.code_of(label_type)

    def handler(frame_pointer):  # type: ignore[no-untyped-def]
        frame = xla_ffi.address(frame_pointer)
        done, result = xla_ffi.begin(frame, 4, 2, 2)
        if done:
            return result
        xb, tb = xla_ffi.arg(frame, 0), xla_ffi.arg(frame, 1)
        wb, mb = xla_ffi.arg(frame, 2), xla_ffi.arg(frame, 3)
        vb, gb = xla_ffi.ret(frame, 0), xla_ffi.ret(frame, 1)
        if (xla_ffi.dtype(xb) != x_code or xla_ffi.dtype(tb) != t_code
                or xla_ffi.dtype(wb) != x_code or xla_ffi.dtype(mb) != xla_ffi.PRED
                or xla_ffi.dtype(vb) != x_code or xla_ffi.dtype(gb) != x_code):  # fmt: skip
            return xla_ffi.error(frame, xla_ffi.WRONG_DTYPE)
        if (xla_ffi.rank(xb) != 2 or xla_ffi.rank(gb) != 2 or xla_ffi.rank(vb) != 0
                or xla_ffi.rank(wb) != 1 or xla_ffi.rank(mb) != 1
                or xla_ffi.rank(tb) != (2 if soft else 1)):  # fmt: skip
            return xla_ffi.error(frame, xla_ffi.WRONG_SHAPE)
        n, c = xla_ffi.dim(xb, 0), xla_ffi.dim(xb, 1)
        nw, nm = xla_ffi.dim(wb, 0), xla_ffi.dim(mb, 0)
        has_w, has_mask = nw != 0, nm != 0
        if (xla_ffi.dim(gb, 0) != n or xla_ffi.dim(gb, 1) != c or xla_ffi.dim(tb, 0) != n
                or (soft and xla_ffi.dim(tb, 1) != c) or (has_w and nw != c)
                or (has_mask and nm != n)):  # fmt: skip
            return xla_ffi.error(frame, xla_ffi.WRONG_SHAPE)
        ints_at, nints = xla_ffi.array_attr(frame, 0, xla_ffi.S64)
        reals_at, nreals = xla_ffi.array_attr(frame, 1, xla_ffi.F64)
        if nints != 4 or nreals != 2:
            return xla_ffi.error(frame, xla_ffi.WRONG_ATTRIBUTE)
        ints = carray(xla_ffi.pointer(ints_at), 4, np.int64)
        reals = carray(xla_ffi.pointer(reals_at), 2, np.float64)
        ignore_index, mean, threads, narrow = ints[0], ints[1] != 0, ints[2], ints[3]
        smoothing, z_scale = reals[0], reals[1]
        x = carray(xla_ffi.data(xb), (n, c), x_type)
        grad = carray(xla_ffi.data(gb), (n, c), x_type)
        value = carray(xla_ffi.data(vb), 1, x_type)
        w = carray(xla_ffi.data(wb), nw, x_type)
        mask = carray(xla_ffi.data(mb), nm, np.bool_)
        denominator = 0.0
        if soft:
            z = carray(xla_ffi.data(tb), (n, c), x_type)
            labels = np.empty(0, label_type)
            if has_w:
                row_weight = softmax.probability_row_weights(z, w, mask, has_mask, np.empty(n))
                denominator = host_sums.numpy_sum(row_weight)
            else:
                denominator = np.float64(np.count_nonzero(mask) if has_mask else n)
        else:
            z = np.empty((0, c), x_type)
            labels = carray(xla_ffi.data(tb), n, label_type)
        if threads > 1:
            previous = _get_num_threads()
            _set_num_threads(threads)
            chunk = _set_parallel_chunksize(_CHUNK_TILES)
        result, _, bad = softmax.fused(x, labels, z, w, has_w, mask, has_mask, ignore_index,
                                       soft, smoothing, z_scale, mean, denominator, grad,
                                       threads)  # fmt: skip
        if threads > 1:
            _set_parallel_chunksize(chunk)
            _set_num_threads(previous)
        if bad >= 0:
            # An index label out of range (only traced labels get here): NaN, as documented.
            value[0] = _NAN
            grad[:] = _NAN
            return xla_ffi.success()
        value[0] = _rounded(result, narrow)
        return xla_ffi.success()

    return handler


# --- binary_cross_entropy ---------------------------------------------------------------------


def _binary_cross_entropy_handler(x_type: Any) -> Any:
    """The handler for float ``x_type`` logits.

    Arguments ``x (R, C)``, labels ``(R, C)``, ``pos_weight`` and weights each ``(1,)``,
    ``(C,)`` or ``(R, C)`` (by kind: ``ints``); results the value ``()`` and the gradient
    ``(R, C)``, all ``x_type``; attributes ``ints = [q_kind, w_kind, weighted, wide_weights,
    weights' size, mean, threads, narrow]``, ``reals = [smoothing]``."""
    x_code = xla_ffi.code_of(x_type)

    def handler(frame_pointer):  # type: ignore[no-untyped-def]
        frame = xla_ffi.address(frame_pointer)
        done, result = xla_ffi.begin(frame, 4, 2, 2)
        if done:
            return result
        xb, zb = xla_ffi.arg(frame, 0), xla_ffi.arg(frame, 1)
        qb, wb = xla_ffi.arg(frame, 2), xla_ffi.arg(frame, 3)
        vb, gb = xla_ffi.ret(frame, 0), xla_ffi.ret(frame, 1)
        for buffer in (xb, zb, qb, wb, vb, gb):
            if xla_ffi.dtype(buffer) != x_code:
                return xla_ffi.error(frame, xla_ffi.WRONG_DTYPE)
        ints_at, nints = xla_ffi.array_attr(frame, 0, xla_ffi.S64)
        reals_at, nreals = xla_ffi.array_attr(frame, 1, xla_ffi.F64)
        if nints != 8 or nreals != 1:
            return xla_ffi.error(frame, xla_ffi.WRONG_ATTRIBUTE)
        ints = carray(xla_ffi.pointer(ints_at), 8, np.int64)
        q_kind, w_kind, weighted, wide_weights = ints[0], ints[1], ints[2] != 0, ints[3] != 0
        w_size, mean, threads, narrow = ints[4], ints[5] != 0, ints[6], ints[7]
        smoothing = carray(xla_ffi.pointer(reals_at), 1, np.float64)[0]
        if xla_ffi.rank(xb) != 2 or xla_ffi.rank(vb) != 0:
            return xla_ffi.error(frame, xla_ffi.WRONG_SHAPE)
        rows, cols = xla_ffi.dim(xb, 0), xla_ffi.dim(xb, 1)
        size = rows * cols
        kind_size = (1, cols, size)
        if (xla_ffi.size(zb) != size or xla_ffi.size(gb) != size
                or xla_ffi.size(qb) != kind_size[q_kind] or xla_ffi.size(wb) != kind_size[w_kind]
                or (weighted and xla_ffi.size(wb) != w_size)):  # fmt: skip
            return xla_ffi.error(frame, xla_ffi.WRONG_SHAPE)
        x = carray(xla_ffi.data(xb), (rows, cols), x_type)
        z = carray(xla_ffi.data(zb), (rows, cols), x_type)
        q = carray(xla_ffi.data(qb), xla_ffi.size(qb), x_type)
        w = carray(xla_ffi.data(wb), xla_ffi.size(wb), x_type)
        grad = carray(xla_ffi.data(gb), (rows, cols), x_type)
        value = carray(xla_ffi.data(vb), 1, x_type)
        if threads > 1:
            previous = _get_num_threads()
            _set_num_threads(threads)
            chunk = _set_parallel_chunksize(_CHUNK_TILES)
        result = logistic.fused(x, z, q, q_kind, w, w_kind, weighted, wide_weights, w_size, mean,
                                smoothing, grad, threads)  # fmt: skip
        if threads > 1:
            _set_parallel_chunksize(chunk)
            _set_num_threads(previous)
        value[0] = _rounded(result, narrow)
        return xla_ffi.success()

    return handler


# --- Compilation and registration -------------------------------------------------------------


def _prepare_kernels(loss: str, x_type: Any, label_type: Any, soft: bool) -> None:
    """Compile the njit kernels a handler calls, for the argument types it calls them with
    (C-contiguous writeable arrays: ``numba.carray``'s), through ``runtime.call``: with the
    kernels' LLVM options, so that the handler runs the very code the NumPy path runs (the
    handler's own compilation then links them as they are). A run on empty operands."""
    key = ("xla_ffi", loss, np.dtype(x_type).name, np.dtype(label_type).name, soft)
    x = np.empty((0, 1), x_type)
    if loss == "cross_entropy":
        args = (x, np.empty(0, label_type), np.empty((0, 1), x_type), np.empty(0, x_type),
                False, np.empty(0, np.bool_), False, -100, soft, 0.0, 0.0, True, 0.0,
                np.empty((0, 1), x_type))  # fmt: skip
        runtime.call(softmax.fused, key, (*args, 1))
        return
    args = (np.empty((0, 1), x_type), np.empty((0, 1), x_type), np.ones(1, x_type),
            logistic.SINGLE, np.ones(1, x_type), logistic.SINGLE, False, False, 1, True, 0.0,
            np.empty((0, 1), x_type), 1)  # fmt: skip
    runtime.call(logistic.fused, key, args)


def target(loss: str, x_dtype: Any, label_dtype: Any = None) -> str:
    """The FFI target's name for these dtypes (``label_dtype`` None: probability targets),
    its handler compiled and registered with XLA on first use."""
    x_type = np.dtype(x_dtype).type
    soft = label_dtype is None
    label_type = np.int64 if soft else np.dtype(label_dtype).type
    suffix = "soft" if soft else np.dtype(label_type).name
    name = f"logitloss_{loss}_{np.dtype(x_type).name}"
    if loss == "cross_entropy":
        name += "_" + suffix
    with _lock:
        if name in _registered:
            return name
        _prepare_kernels(loss, x_type, label_type, soft)
        numba.get_num_threads()  # launches numba's threads: the symbols above resolve
        if loss == "cross_entropy":
            handler = _cross_entropy_handler(x_type, label_type, soft)
        else:
            handler = _binary_cross_entropy_handler(x_type)
        # Under the kernels' LLVM options: numba optimises the handler's module with the
        # kernels it calls linked in, and with other options their reassociated sums would
        # vectorise, and round, differently from the NumPy path's (float64 gradients measured
        # 1-2 ULP apart).
        with runtime.compiling():
            compiled = numba.cfunc(xla_ffi.HANDLER_SIGNATURE, error_model="numpy",
                                   cache=True)(handler)  # fmt: skip
        jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(compiled.address), platform="cpu")
        # The compiled code lives as long as the cfunc object: kept for the process.
        _registered[name] = compiled
    return name


# --- The calls, in the graph ------------------------------------------------------------------


def _work_dtype(x: Any) -> Any:
    """The kernels' dtype: float16 and bfloat16 read as float32 (exact)."""
    return jnp.float32 if jnp.dtype(x.dtype).itemsize == 2 else x.dtype


def _narrow(x: Any) -> int:
    name = jnp.dtype(x.dtype).name
    return _FLOAT16 if name == "float16" else _BFLOAT16 if name == "bfloat16" else _WIDE


def _threads(size: int) -> int:
    """``runtime.threads_for(size)``, 1 under numba's workqueue layer (not safe to launch from
    two threads at once, which XLA may do). Read at trace time: a later change of the limit
    (``torch.set_num_threads``) reaches a jitted function when it is traced again. After
    :func:`target` (numba's threads launched)."""
    threads = runtime.threads_for(size)
    if threads > 1 and numba.threading_layer() == "workqueue":
        return 1
    return threads


def _labels(labels: Any, ignore_index: int) -> Any:
    """Index labels as int32 or int64 (the handlers' types): other integer dtypes converted,
    exactly where they fit; uint32 values beyond int32 (x64 off) become a negative class other
    than ``ignore_index``, out of range as they were."""
    dtype = jnp.dtype(labels.dtype)
    if dtype in (jnp.dtype(jnp.int32), jnp.dtype(jnp.int64)):
        return labels
    if dtype.itemsize < 4 or (dtype.kind == "i" and dtype.itemsize <= 4):
        return labels.astype(jnp.int32)
    if jax.config.jax_enable_x64:
        return labels.astype(jnp.int64)
    bad = -1 if ignore_index != -1 else -2
    too_big = labels > np.iinfo(np.int32).max
    return jnp.where(too_big, bad, labels.astype(jnp.int32))


def cross_entropy(
    x: Any, labels: Any, z: Any, w: Any, mask: Any, *, axis: int, ignore_index: int,
    smoothing: float, z_scale: float, reduction: str, vmap_method: str = "sequential",
) -> tuple[Any, Any]:  # fmt: skip
    """``(value, grad)`` of ``_losses.training.cross_entropy`` (the same arguments, JAX arrays)
    by the FFI handler, in the logits' dtype."""
    work = _work_dtype(x)
    axis %= x.ndim
    last = axis == x.ndim - 1
    moved = x if last else jnp.moveaxis(x, axis, -1)
    rows_shape, cols = moved.shape[:-1], moved.shape[-1]
    flat = moved.reshape(-1, cols).astype(work)
    n = flat.shape[0]
    if labels is None:
        zb = jnp.broadcast_to(z.astype(x.dtype), x.shape)
        zb = zb if last else jnp.moveaxis(zb, axis, -1)
        targets = zb.reshape(-1, cols).astype(work)
        name = target("cross_entropy", work)
    else:
        targets = _labels(jnp.broadcast_to(labels, rows_shape).reshape(-1), ignore_index)
        name = target("cross_entropy", work, targets.dtype)
    if w is None:
        wf = jnp.zeros((0,), work)
    else:
        wf = jnp.broadcast_to(w.astype(x.dtype), (cols,)).astype(work)
    mf = jnp.zeros((0,), bool) if mask is None else jnp.broadcast_to(mask, rows_shape).reshape(-1)
    ints = np.array([ignore_index, reduction == "mean", _threads(n * cols), _narrow(x)], np.int64)
    reals = np.array([smoothing, z_scale], np.float64)
    shapes = (jax.ShapeDtypeStruct((), work), jax.ShapeDtypeStruct(flat.shape, work))
    call = jax.ffi.ffi_call(name, shapes, vmap_method=vmap_method)
    value, grad = call(flat, targets, wf, mf, ints=ints, reals=reals)
    grad = grad.reshape(moved.shape)
    if not last:
        grad = jnp.moveaxis(grad, -1, axis)
    return value.astype(x.dtype), grad.astype(x.dtype)


def binary_cross_entropy(
    x: Any, z: Any, q: Any, w: Any, *, smoothing: float, reduction: str,
    vmap_method: str = "sequential",
) -> tuple[Any, Any]:  # fmt: skip
    """``(value, grad)`` of ``_losses.training.binary_cross_entropy`` (the same arguments, JAX
    arrays) by the FFI handler, in the logits' dtype."""
    work = _work_dtype(x)
    shape = tuple(x.shape)
    cols = shape[-1]
    size = math.prod(shape)
    flat = x.astype(work).reshape(size // cols, cols)
    zf = z.astype(x.dtype).astype(work).reshape(flat.shape)
    operands, kinds = [], []
    for a in (q, w):
        if a is None:
            a = jnp.ones((1,), x.dtype)
        kind = logistic.kind(a, shape)
        if kind < 0:
            a, kind = jnp.broadcast_to(a, shape), logistic.FULL
        operands.append(a.astype(x.dtype).astype(work).reshape(-1))
        kinds.append(kind)
    name = target("binary_cross_entropy", work)  # first: numba's threads launched (_threads)
    # The denominator sums the weights as given: in float64 directly, or cast from their dtype.
    wide_weights = w is not None and jnp.dtype(w.dtype) == jnp.dtype(jnp.float64)
    ints = np.array([kinds[0], kinds[1], w is not None, wide_weights, operands[1].size,
                     reduction == "mean", _threads(size), _narrow(x)], np.int64)  # fmt: skip
    reals = np.array([smoothing], np.float64)
    shapes = (jax.ShapeDtypeStruct((), work), jax.ShapeDtypeStruct(flat.shape, work))
    call = jax.ffi.ffi_call(name, shapes, vmap_method=vmap_method)
    value, grad = call(flat, zf, *operands, ints=ints, reals=reals)
    return value.astype(x.dtype), grad.reshape(shape).astype(x.dtype)


@functools.cache
def probe_target() -> str:
    """The tests' probe handler (``_kernels.xla_ffi.probe``), registered: it writes back what
    it reads of the call frame."""
    compiled = numba.cfunc(xla_ffi.PROBE_SIGNATURE, cache=True)(_probe)
    jax.ffi.register_ffi_target("logitloss_probe", jax.ffi.pycapsule(compiled.address),
                                platform="cpu")  # fmt: skip
    _registered["logitloss_probe"] = compiled
    return "logitloss_probe"


def _probe(frame_pointer):  # type: ignore[no-untyped-def]
    return xla_ffi.probe(xla_ffi.address(frame_pointer))


__all__ = ["binary_cross_entropy", "cross_entropy", "probe_target", "target"]
