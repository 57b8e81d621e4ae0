"""Running the kernels: compile options, the threading layer, serial or parallel.

Nothing here happens at import: the threading layer is picked and the LLVM options are set the
first time a kernel is compiled or run, and the options are restored right after.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numba
from llvmlite import binding as llvm
from numba.core import codegen as numba_codegen
from numba.core.compiler_lock import global_compiler_lock
from numba.np.ufunc import parallel as _parallel

# Elements per tile: 64 KiB of float32 per operand, so a tile's operands stay in L2.
TILE = 16384
# Below this many elements the serial kernel runs on the calling thread: waking the other
# threads costs more than the work (about 20-150 us depending on the threading layer).
PARALLEL_MIN = 1 << 16
# Tiles handed out at a time: a few per thread and call, so that a thread delayed by another
# process (or by PyTorch's OpenMP threads spinning) does not hold back the whole call.
CHUNK_TILES = 8

# The order in which numba tries its threading layers when the caller has not chosen one and
# numba has not started one yet (numba's own default is tbb, omp, workqueue). Measured on the
# benchmark machine (2 cores, pip's torch 2.13; ``benchmarks/bench_logistic.py``, last section),
# a 0.1 ms parallel call:
# - omp: 0.044 ms alone, 0.057 ms right after a PyTorch call. pip's torch ships GNU libgomp
#   with the same soname as the system's, so the process has one OpenMP runtime and one pool of
#   threads: no second set of spinning threads to stall on. Thread-safe (concurrent calls).
# - workqueue: 0.15 ms alone (slower hand-off), and the PyTorch call after it slowed to a p90 of
#   4-20 ms; not thread-safe (concurrent launches abort the process: ``call`` serialises them).
# - tbb (pip's tbb, found only with LD_LIBRARY_PATH set): 0.05 ms alone, 0.12 ms (p90 1.6 ms)
#   after PyTorch: a second runtime whose threads compete with OpenMP's.
THREADING_LAYER_PRIORITY = ["omp", "tbb", "workqueue"]

_state_lock = threading.Lock()
_launch_lock = threading.Lock()
_prepared: set[tuple[Any, ...]] = set()
_layer_checked = False


def _vector_options() -> list[tuple[str, str]]:
    """LLVM options for the kernels' compilation, with the values that restore the defaults.

    LLVM's default vectorisation of these loops runs one stream of vector lanes whose long
    dependency chains (exp, division, log1p) leave the FMA units half idle; four interleaved
    streams cut the time by 25-40 % on AVX-512 (measured on the benchmark's 4096 x 4096 arrays).
    Only where the host has AVX-512: with half as many registers the four streams may spill (not
    measured).

    The vector width is not set here. ``-force-vector-width=8`` (process-global, every loop of
    every kernel) makes LLVM print a remark for each loop it then cannot vectorise; the width is
    instead lifted per function, where the kernels ask for it, by the function attribute
    ``"prefer-vector-width"="512"`` (``vector_math.prefer_wide_vectors``, :func:`wide_vectors`),
    which leaves each loop's width to LLVM's cost model.
    """
    features = llvm.get_host_cpu_features()
    if not features.get("avx512f", False):
        return []
    return [("-force-vector-interleave=4", "-force-vector-interleave=0")]


@functools.cache
def wide_vectors() -> bool:
    """Whether the kernels' functions are compiled for 512-bit vectors
    (``vector_math.prefer_wide_vectors``): where the target numba compiles for has AVX-512F,
    the host's features or ``NUMBA_CPU_FEATURES`` (with which an AVX2-only CPU is emulated:
    the code is then what it was, no attribute, no AVX-512 instruction).

    LLVM otherwise keeps to 256-bit vectors on the Intel CPUs that have AVX-512 (its tuning
    for Skylake-X and later). Measured on the 2-core AVX-512 Xeon (Emerald Rapids), one
    thread, the thread's CPU time (best of 21; the machine was shared), float32 unless said:
    soft-label softmax loss 2048 x 32768 105 -> 82 ms, its loss+grad 263 -> 210 ms, 8192 x 1024
    14.0 -> 11.4 ms and 35 -> 28 ms; sparse softmax 2048 x 32768 80 -> 63.5 ms (loss+grad 161 ->
    139 ms); the training entry's sparse mean 138 -> 112 ms; float64 sigmoid and weighted
    4096 x 4096 77 -> 61 ms; binary cross-entropy's reduced sum with gradient 4096 x 1000
    15.3 -> 12.8 ms. float32 elementwise sigmoid and weighted losses unchanged (within 1.5 %),
    the reference row sums and adds too. Two threads: the same ratios in CPU time.
    """
    features = numba.config.CPU_FEATURES
    if features is None:
        features = numba_codegen.get_host_cpu_features()
    return "+avx512f" in features.split(",")


@contextlib.contextmanager
def compiling() -> Iterator[None]:
    """Set the LLVM options around a compilation, under numba's compiler lock so that no other
    compilation in the process sees them (they are process-global), and restore them. For code
    compiled outside :func:`call` (a ``numba.cfunc`` that links the kernels), so that it is
    optimised as the kernels are."""
    options = _vector_options()
    with global_compiler_lock:
        for option, _ in options:
            llvm.set_option("logitloss", option)
        try:
            yield
        finally:
            for _, default in options:
                llvm.set_option("logitloss", default)


def _choose_threading_layer() -> None:
    """Put :data:`THREADING_LAYER_PRIORITY` in force, unless the caller chose a layer
    (``NUMBA_THREADING_LAYER``, ``numba.config.THREADING_LAYER``) or an order
    (``NUMBA_THREADING_LAYER_PRIORITY``), or numba already started its threads (the layer is then
    fixed for the process, and used as it is)."""
    global _layer_checked
    with _state_lock:
        if _layer_checked:
            return
        untouched = numba.config.THREADING_LAYER_PRIORITY == ["tbb", "omp", "workqueue"]
        if (
            not _parallel._is_initialized
            and numba.config.THREADING_LAYER == "default"
            and untouched
        ):
            numba.config.THREADING_LAYER_PRIORITY = list(THREADING_LAYER_PRIORITY)
        _layer_checked = True


def _needs_launch_lock() -> bool:
    """The workqueue layer aborts the process when two threads launch parallel work at once:
    serialise launches there (and before numba has started its threads, when the layer is not
    known yet)."""
    return not _parallel._is_initialized or numba.threading_layer() == "workqueue"


def call(
    kernel: Any, key: tuple[Any, ...], args: tuple[Any, ...], *, threads: int | None = None
) -> Any:
    """Run ``kernel(*args)`` and return what it returns; the first call for ``key`` (kernel
    and dtype: the argument types follow from them) compiles it, or loads it from numba's
    on-disk cache, with our options.

    A kernel compiled ``parallel=True`` runs with numba's threads capped by
    :func:`_thread_limit`; so does a serial entry that launches a parallel kernel itself when
    the caller passes the ``threads`` it asked of :func:`threads_for` (more than 1)."""
    if (kernel, key) not in _prepared:
        _choose_threading_layer()
        with compiling():
            kernel.compile(tuple(numba.typeof(a) for a in args))
        _compile_later_with_options(kernel)
        with _state_lock:
            _prepared.add((kernel, key))
    parallel = kernel.targetoptions.get("parallel", False) if threads is None else threads > 1
    if not parallel:
        return kernel(*args)
    with _launch_guard():
        previous = numba.set_parallel_chunksize(CHUNK_TILES)
        threads = numba.get_num_threads()
        numba.set_num_threads(min(threads, _thread_limit()))
        try:
            return kernel(*args)
        finally:
            numba.set_num_threads(threads)
            numba.set_parallel_chunksize(previous)


def _compile_later_with_options(kernel: Any) -> None:
    """Have numba compile ``kernel`` with our LLVM options also when a call brings argument
    types ``key`` did not tell apart (a read-only array where a writeable one was compiled,
    another memory layout): numba then compiles on its own, in the call. Without this, that
    version missed the options: its reassociated sums vectorised, and rounded, otherwise
    (float64 cross-entropy gradients 1-2 ULP apart between read-only and writeable logits)."""
    compile_for_args = getattr(kernel, "_compile_for_args", None)
    if compile_for_args is None or getattr(compile_for_args, "with_options", False):
        return

    def with_options(*args: Any, **kwargs: Any) -> Any:
        with compiling():
            return compile_for_args(*args, **kwargs)

    with_options.with_options = True  # type: ignore[attr-defined]
    # numba's dispatcher looks the method up on the instance for every new signature.
    kernel._compile_for_args = with_options


@contextlib.contextmanager
def _launch_guard() -> Iterator[None]:
    if _needs_launch_lock():
        with _launch_lock:
            yield
    else:
        yield


def pick(serial: Callable[..., None], parallel: Callable[..., None], size: int) -> Any:
    """The parallel kernel for large inputs, the serial one below :data:`PARALLEL_MIN`."""
    return parallel if threads_for(size) > 1 else serial


def threads_for(size: int) -> int:
    """How many threads a kernel over ``size`` elements uses: 1 below :data:`PARALLEL_MIN`
    (waking threads costs more than the work), else numba's thread count capped by
    :func:`_thread_limit`."""
    if size < PARALLEL_MIN:
        return 1
    # numba.get_num_threads() would start numba's threads, fixing the threading layer before
    # _choose_threading_layer has run: the configured count until they are started.
    threads = numba.config.NUMBA_NUM_THREADS
    if _parallel._is_initialized:
        threads = numba.get_num_threads()
    return min(threads, _thread_limit())


def _thread_limit() -> int:
    """The cores this process may use (its CPU affinity), and no more than PyTorch's intra-op
    threads where PyTorch is loaded: a caller who limits torch (``torch.set_num_threads``, a
    data-loader worker, a container's quota) limits the kernels too, so that the two thread
    pools never oversubscribe the cores between them (measured on a loaded 2-core machine:
    12 ms a call with more threads than cores, 0.5 ms with one)."""
    try:
        limit = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        limit = os.cpu_count() or 1
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_num_threads"):
        limit = min(limit, torch.get_num_threads())
    return max(1, limit)
