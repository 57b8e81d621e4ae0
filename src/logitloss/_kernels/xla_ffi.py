"""XLA's typed FFI (custom call API version 4) read from numba: the C structs of
``xla/ffi/api/c_api.h`` (XLA FFI API 0.3, as jaxlib ships it) as field offsets, and the njit
helpers a ``numba.cfunc`` handler ``XLA_FFI_Error* handler(XLA_FFI_CallFrame*)`` uses to answer
XLA's metadata query, read its buffers and attributes, and report an error.

A handler takes the call frame's address (:func:`address`), returns
:func:`answer_metadata`'s result when :func:`metadata_query` says XLA only asks for the handler's
API version (at registration), and otherwise reads :func:`arg` / :func:`ret` buffers (their
:func:`dtype`, :func:`rank`, :func:`dim`, :func:`data`) and array attributes
(:func:`array_attr`; the attributes come sorted by name), returning :func:`success` or
:func:`error`. Nothing here imports JAX: registering the handler is the caller's.

Offsets on a 64-bit platform: pointers, ``size_t`` and ``int64_t`` are 8 bytes, enums 4 (the
next pointer field is aligned to 8). ``tests/test_jax_training.py`` checks them through a probe
handler (:data:`PROBE_SIGNATURE`) that writes back what it reads.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import carray, njit, types
from numba.extending import intrinsic

#: A handler's numba signature: ``XLA_FFI_Error* (XLA_FFI_CallFrame*)``.
HANDLER_SIGNATURE = types.voidptr(types.voidptr)
#: The same signature, named for the probe handler of the tests.
PROBE_SIGNATURE = HANDLER_SIGNATURE

# XLA_FFI_DataType: the ones the handlers read.
PRED, S32, S64, F16, F32, F64, BF16 = 1, 4, 5, 10, 11, 12, 16
# XLA_FFI_AttrType_ARRAY; XLA_FFI_ExecutionStage_EXECUTE; XLA_FFI_Extension_Metadata.
_ATTR_ARRAY = 1
_EXECUTE = 3
_METADATA = 1
# XLA_FFI_Error_Code_INVALID_ARGUMENT.
_INVALID_ARGUMENT = 3
# The API version the handlers are written against (XLA_FFI_API_MAJOR, _MINOR).
_API_MAJOR, _API_MINOR = 0, 3

# XLA_FFI_CallFrame {struct_size; extension_start*; api*; ctx*; stage (enum, padded);
# XLA_FFI_Args args; XLA_FFI_Rets rets; XLA_FFI_Attrs attrs; future*}.
_FRAME_EXTENSION = 8
_FRAME_API = 16
_FRAME_STAGE = 32
_FRAME_ARGS = 40  # XLA_FFI_Args {struct_size; extension_start*; size; types*; args**}: 40 bytes
_FRAME_RETS = 80  # XLA_FFI_Rets: the same fields
_FRAME_ATTRS = 120  # XLA_FFI_Attrs {struct_size; extension_start*; size; types*; names**; attrs**}
# Within XLA_FFI_Args / _Rets / _Attrs.
_LIST_SIZE = 16
_LIST_TYPES = 24
_LIST_ITEMS = 32  # args**, rets**
_ATTRS_ITEMS = 40  # attrs** (after names**)
# XLA_FFI_Buffer {struct_size; extension_start*; dtype (enum, padded); data*; rank; dims*}.
_BUFFER_DTYPE = 16
_BUFFER_DATA = 24
_BUFFER_RANK = 32
_BUFFER_DIMS = 40
# XLA_FFI_Array {dtype (enum, padded); size; data*}.
_ARRAY_DTYPE = 0
_ARRAY_SIZE = 8
_ARRAY_DATA = 16
# XLA_FFI_Extension_Base {struct_size; type (enum, padded); next*}, then in
# XLA_FFI_Metadata_Extension the XLA_FFI_Metadata*.
_EXTENSION_TYPE = 8
_EXTENSION_METADATA = 24
# XLA_FFI_Metadata {struct_size; XLA_FFI_Api_Version api_version (24 bytes: struct_size;
# extension_start*; int major; int minor); traits (uint32, padded); state_type_id (int64)}.
_METADATA_VERSION = 8
_VERSION_SIZE = 24
_METADATA_TRAITS = 32
_METADATA_STATE = 40
# XLA_FFI_Api {struct_size; extension_start*; api_version (24 bytes); internal_api*;
# XLA_FFI_Error_Create*; ...}.
_API_ERROR_CREATE = 48
# XLA_FFI_Error_Create_Args {struct_size; extension_start*; message*; errc (enum)}: 28 bytes
# up to the end of errc (XLA_FFI_STRUCT_SIZE), 32 allocated.
_ERROR_ARGS_SIZE = 28


# --- Pointers ----------------------------------------------------------------------------------


@intrinsic
def pointer(typingctx, addr):  # type: ignore[no-untyped-def]
    """The address ``addr`` (int64) as a ``void*``."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.inttoptr(args[0], ir.IntType(8).as_pointer())

    return types.voidptr(types.int64), codegen


@intrinsic
def address(typingctx, ptr):  # type: ignore[no-untyped-def]
    """A ``void*`` as its address (int64): the handlers compute field addresses."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        return builder.ptrtoint(args[0], ir.IntType(64))

    return types.int64(types.voidptr), codegen


@intrinsic
def _call_error_create(typingctx, fn, args):  # type: ignore[no-untyped-def]
    """``((XLA_FFI_Error_Create*) fn)(args)``: both given as addresses."""

    def codegen(context, builder, signature, llargs):  # type: ignore[no-untyped-def]
        i8p = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(i8p, [i8p])
        callee = builder.inttoptr(llargs[0], fnty.as_pointer())
        return builder.call(callee, [builder.inttoptr(llargs[1], i8p)])

    return types.voidptr(types.int64, types.int64), codegen


@njit(inline="always")
def _i64(addr):
    return carray(pointer(addr), 1, np.int64)[0]


@njit(inline="always")
def _i32(addr):
    return carray(pointer(addr), 1, np.int32)[0]


@njit(inline="always")
def _put_i64(addr, value):
    carray(pointer(addr), 1, np.int64)[0] = value


@njit(inline="always")
def _put_i32(addr, value):
    carray(pointer(addr), 1, np.int32)[0] = value


# --- The call frame ----------------------------------------------------------------------------


@njit(inline="always")
def metadata_query(frame):
    """Whether XLA only asks for the handler's metadata (the call frame carries the metadata
    extension): no buffers then, and nothing is to be computed."""
    extension = _i64(frame + _FRAME_EXTENSION)
    return extension != 0 and _i32(extension + _EXTENSION_TYPE) == _METADATA


@njit(inline="always")
def answer_metadata(frame):
    """Fill the metadata XLA asked for: this API version, no traits, no state; success."""
    metadata = _i64(_i64(frame + _FRAME_EXTENSION) + _EXTENSION_METADATA)
    version = metadata + _METADATA_VERSION
    _put_i64(version, _VERSION_SIZE)
    _put_i64(version + 8, 0)
    _put_i32(version + 16, _API_MAJOR)
    _put_i32(version + 20, _API_MINOR)
    _put_i32(metadata + _METADATA_TRAITS, 0)
    if _i64(metadata) >= _METADATA_STATE + 8:
        _put_i64(metadata + _METADATA_STATE, 0)
    return success()


@njit(inline="always")
def executing(frame):
    """Whether XLA calls the handler to execute (not to instantiate, prepare, initialise)."""
    return _i32(frame + _FRAME_STAGE) == _EXECUTE


@njit(inline="always")
def success():
    """What a handler returns when it succeeded: NULL."""
    return pointer(0)


# A handler's error messages, by reason: constant strings of the compiled code (XLA copies
# the message).
_MESSAGES = (
    "logitloss FFI handler: not called at the execute stage",
    "logitloss FFI handler: wrong number of arguments, results or attributes",
    "logitloss FFI handler: an argument or result of an unexpected dtype",
    "logitloss FFI handler: an argument or result of an unexpected shape",
    "logitloss FFI handler: an attribute of an unexpected type or size",
)
WRONG_STAGE, WRONG_COUNT, WRONG_DTYPE, WRONG_SHAPE, WRONG_ATTRIBUTE = range(len(_MESSAGES))


@intrinsic
def _message(typingctx, reason):  # type: ignore[no-untyped-def]
    """The address of the message of ``reason`` (int64), a constant string of the module."""

    def codegen(context, builder, signature, args):  # type: ignore[no-untyped-def]
        i64 = ir.IntType(64)
        chosen = builder.ptrtoint(context.insert_const_string(builder.module, _MESSAGES[0]), i64)
        for i, text in enumerate(_MESSAGES[1:], 1):
            here = builder.ptrtoint(context.insert_const_string(builder.module, text), i64)
            is_it = builder.icmp_signed("==", args[0], ir.Constant(i64, i))
            chosen = builder.select(is_it, here, chosen)
        return chosen

    return types.int64(types.int64), codegen


@njit
def error(frame, reason):
    """An ``XLA_FFI_Error*`` made by XLA's ``XLA_FFI_Error_Create`` (INVALID_ARGUMENT) with the
    message of ``reason`` (:data:`WRONG_COUNT`...)."""
    create = _i64(_i64(frame + _FRAME_API) + _API_ERROR_CREATE)
    args = np.zeros(4, np.int64)  # 32 bytes: the struct, zeroed (no extension)
    args[0] = _ERROR_ARGS_SIZE
    args[2] = _message(np.int64(reason))
    args[3] = _INVALID_ARGUMENT
    return _call_error_create(create, np.int64(args.ctypes.data))


@njit(inline="always")
def counts(frame):
    """``(arguments, results, attributes)`` of the call."""
    return (
        _i64(frame + _FRAME_ARGS + _LIST_SIZE),
        _i64(frame + _FRAME_RETS + _LIST_SIZE),
        _i64(frame + _FRAME_ATTRS + _LIST_SIZE),
    )


@njit(inline="always")
def begin(frame, nargs, nrets, nattrs):
    """Every handler's start: ``(done, result)``; ``done`` where the handler must return
    ``result`` at once (XLA's metadata query answered, an error for another stage or for other
    counts of arguments, results and attributes than ``nargs``, ``nrets``, ``nattrs``)."""
    if metadata_query(frame):
        return True, answer_metadata(frame)
    if not executing(frame):
        return True, error(frame, WRONG_STAGE)
    n_args, n_rets, n_attrs = counts(frame)
    if n_args != nargs or n_rets != nrets or n_attrs != nattrs:
        return True, error(frame, WRONG_COUNT)
    return False, success()


@njit(inline="always")
def arg(frame, i):
    """The address of argument ``i``'s ``XLA_FFI_Buffer`` (every argument is a buffer here)."""
    return _i64(_i64(frame + _FRAME_ARGS + _LIST_ITEMS) + 8 * i)


@njit(inline="always")
def ret(frame, i):
    """The address of result ``i``'s ``XLA_FFI_Buffer``."""
    return _i64(_i64(frame + _FRAME_RETS + _LIST_ITEMS) + 8 * i)


@njit(inline="always")
def dtype(buffer):
    """A buffer's ``XLA_FFI_DataType`` (:data:`F32`...)."""
    return _i32(buffer + _BUFFER_DTYPE)


@njit(inline="always")
def data(buffer):
    """A buffer's data, as a ``void*`` (row-major, dense)."""
    return pointer(_i64(buffer + _BUFFER_DATA))


@njit(inline="always")
def rank(buffer):
    return _i64(buffer + _BUFFER_RANK)


@njit(inline="always")
def dim(buffer, k):
    """A buffer's length along axis ``k``."""
    return _i64(_i64(buffer + _BUFFER_DIMS) + 8 * k)


@njit(inline="always")
def size(buffer):
    """A buffer's number of elements."""
    n = 1
    for k in range(rank(buffer)):
        n *= dim(buffer, k)
    return n


@njit(inline="always")
def array_attr(frame, i, code):
    """Attribute ``i`` (in the order of their names) as ``(address of its data, size)`` if it
    is an array of ``XLA_FFI_DataType`` ``code``, else ``(0, -1)``."""
    attrs = frame + _FRAME_ATTRS
    if _i32(_i64(attrs + _LIST_TYPES) + 4 * i) != _ATTR_ARRAY:
        return 0, -1
    array = _i64(_i64(attrs + _ATTRS_ITEMS) + 8 * i)
    if _i32(array + _ARRAY_DTYPE) != code:
        return 0, -1
    return _i64(array + _ARRAY_DATA), _i64(array + _ARRAY_SIZE)


def code_of(dtype: np.dtype) -> int:
    """The ``XLA_FFI_DataType`` of a NumPy dtype the handlers read."""
    codes = {"bool": PRED, "int32": S32, "int64": S64, "float16": F16, "float32": F32,
             "float64": F64, "bfloat16": BF16}  # fmt: skip
    return codes[np.dtype(dtype).name]


@njit
def probe(frame):
    """A test handler: writes what it reads of the call into its one result (int64, at least
    ``64`` long): the counts, each argument's dtype, rank and dims, and the first array
    attribute (int64) as it was given. Errors as the handlers report them."""
    if metadata_query(frame):
        return answer_metadata(frame)
    if not executing(frame):
        return error(frame, WRONG_STAGE)
    nargs, nrets, nattrs = counts(frame)
    out_buffer = ret(frame, 0)
    if nrets != 1 or dtype(out_buffer) != S64:
        return error(frame, WRONG_COUNT)
    out = carray(data(out_buffer), size(out_buffer), np.int64)
    out[:] = -7
    out[0], out[1], out[2] = nargs, nrets, nattrs
    j = 3
    for i in range(nargs):
        buffer = arg(frame, i)
        out[j], out[j + 1] = dtype(buffer), rank(buffer)
        j += 2
        for k in range(rank(buffer)):
            out[j] = dim(buffer, k)
            j += 1
    if nattrs:
        where, n = array_attr(frame, 0, S64)
        if n < 0:
            return error(frame, WRONG_ATTRIBUTE)
        values = carray(pointer(where), n, np.int64)
        for i in range(n):
            out[j] = values[i]
            j += 1
    return success()


__all__ = [
    "BF16",
    "F16",
    "F32",
    "F64",
    "HANDLER_SIGNATURE",
    "PRED",
    "PROBE_SIGNATURE",
    "S32",
    "S64",
    "WRONG_ATTRIBUTE",
    "WRONG_COUNT",
    "WRONG_DTYPE",
    "WRONG_SHAPE",
    "WRONG_STAGE",
    "address",
    "answer_metadata",
    "arg",
    "array_attr",
    "begin",
    "code_of",
    "counts",
    "data",
    "dim",
    "dtype",
    "error",
    "executing",
    "metadata_query",
    "pointer",
    "probe",
    "rank",
    "ret",
    "size",
    "success",
]
