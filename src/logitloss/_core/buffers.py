"""Memory for large kernel results, kept and handed out again once its arrays are gone.

Why: the first touch of each 4 KiB page of a new array is a page fault, and the system zeroes
the page. On the benchmark machine (a VM, Intel Xeon) that cost 11-15 ms for 32 MiB, more than
the whole softmax loss over 32 MiB of logits (12 ms, one thread). glibc's malloc keeps freed
blocks below 32 MiB for reuse (its adaptive mmap threshold) but maps larger ones anew for
every request and returns them on free, so a training loop paid those faults on every step's
gradient from that size up (torch's own losses pay them too).

A block here is an anonymous private mapping. Each array handed out is a view of a fresh lease
on its block (a ctypes array over the block's memory, which every view of the array keeps
alive); when the last array, view or tensor sharing that memory is gone, the lease's finalizer
puts the block back in the pool, never before. Blocks are matched by exact size (a training
loop asks for the same shapes every step). At most :data:`LIMIT` bytes of free blocks are kept
(the environment variable ``LOGITLOSS_CACHED_BYTES``, 0 to keep none), the most recently freed
ones: a block freed when the pool is full pushes the oldest out, so that sizes no longer asked
for do not hold the pool (they did in a first version: every new size then came fresh).
torch's CUDA caching allocator keeps freed memory for the same reason.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import weakref

import numpy as np

#: From this size up results come from the pool (glibc reuses smaller blocks itself).
MIN_BYTES = 32 << 20
#: The most bytes of free blocks kept for reuse.
LIMIT = int(os.environ.get("LOGITLOSS_CACHED_BYTES", 1 << 30))

# Free blocks, the most recently freed last. list.append and list.pop are atomic under the GIL,
# and a finalizer may run on any thread, inside any allocation: no lock (a lock taken there
# could deadlock); a race costs at most a block taken fresh or dropped.
_free: list[mmap.mmap | bytearray] = []


def empty(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.empty(shape, dtype)``: C order, uninitialised; from :data:`MIN_BYTES` up in a block
    from the pool where one of its size is free."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    block = _take(nbytes)
    lease = (ctypes.c_byte * nbytes).from_buffer(block)
    release = weakref.finalize(lease, _give_back, block)
    release.atexit = False  # at exit there is nothing to reuse it for
    return np.frombuffer(lease, dtype=dtype).reshape(shape)


def empty_like(a: np.ndarray) -> np.ndarray:
    """``np.empty_like(a)`` (``a``'s memory order), from the pool where that is C order."""
    if a.flags.c_contiguous:
        return empty(a.shape, a.dtype)
    return np.empty_like(a)


def cached_bytes() -> int:
    """The bytes of free blocks kept now."""
    return sum(len(block) for block in list(_free))


def _take(nbytes: int) -> mmap.mmap | bytearray:
    for i in range(len(_free) - 1, -1, -1):
        try:
            if len(_free[i]) == nbytes:
                block = _free.pop(i)
                if len(block) == nbytes:
                    return block
                _free.append(block)  # another thread moved the list meanwhile
                break
        except IndexError:  # another thread took blocks meanwhile
            break
    return _new_block(nbytes)


def _new_block(nbytes: int) -> mmap.mmap | bytearray:
    """Zeroed memory from the system, mapped lazily (no page touched yet). Private: a forked
    process gets its own copy, as with malloc's memory."""
    if hasattr(mmap, "MAP_PRIVATE"):
        return mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    return bytearray(nbytes)  # Windows: no anonymous private mapping in the mmap module


def _give_back(block: mmap.mmap | bytearray) -> None:
    if len(block) > LIMIT:
        return
    _free.append(block)
    while cached_bytes() > LIMIT:
        try:
            _free.pop(0)  # the oldest: returned to the system
        except IndexError:
            break


__all__ = ["LIMIT", "MIN_BYTES", "cached_bytes", "empty", "empty_like"]
