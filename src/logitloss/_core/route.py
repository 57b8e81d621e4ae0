"""Whether a call goes to the numba kernels (``_kernels``), and the switch that keeps it off.

The kernels take NumPy arrays and PyTorch CPU tensors (as NumPy views of the same memory, no
copy) of at least :data:`KERNEL_MIN` elements, when numba is installed. Everything else, and
every call inside :func:`reference_path`, takes the array-API reference (``_reference``): JAX,
Dask, CuPy, array-api-strict, GPU tensors, tensors inside ``torch.func`` transforms, and small
arrays, for which importing numba (about 0.3 s, once per process) would cost more than the work.
Inside :func:`kernel_path` NumPy arrays of every size take the kernels (``logitloss eval``: one
path for every block, so the losses do not depend on the chunking).

Nothing here happens at import: numba is looked for on the first large call.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import importlib.util
import math
import sys
from collections.abc import Iterator

import numpy as np

from . import arrays, buffers
from .arrays import Array

# Below this many logits the reference path is used: it is as fast as a kernel call there
# (both are dominated by per-call overhead) and never imports numba.
KERNEL_MIN = 1 << 14

_FORCE_REFERENCE: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "logitloss_force_reference", default=False
)
_FORCE_KERNEL: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "logitloss_force_kernel", default=False
)


@contextlib.contextmanager
def reference_path() -> Iterator[None]:
    """Compute every loss and gradient in this block on the array-API reference path.

    The fast CPU kernels (numba) and the reference path meet the same error bounds (within 1 ULP
    of the exact value for float32 and narrower), and so agree to within 1 ULP of each other;
    this switch is for checking that, or for timing the difference. It applies to
    the calls made in the ``with`` block by the current thread (or asyncio task) only: a
    context variable, not a process-wide setting. A PyTorch ``backward()`` follows the path its
    forward call took.

    Examples
    --------
    >>> import numpy as np
    >>> import logitloss
    >>> x = np.linspace(-30, 30, 1 << 15, dtype=np.float32)
    >>> z = np.full_like(x, 0.25)
    >>> fast = logitloss.sigmoid_cross_entropy_with_logits(z, x)
    >>> with logitloss.reference_path():
    ...     slow = logitloss.sigmoid_cross_entropy_with_logits(z, x)
    >>> bool(np.all(np.abs(fast - slow) <= np.spacing(slow)))
    True
    """
    token = _FORCE_REFERENCE.set(True)
    try:
        yield
    finally:
        _FORCE_REFERENCE.reset(token)


@contextlib.contextmanager
def kernel_path() -> Iterator[None]:
    """Compute the losses of NumPy arrays of every size in this block by the kernels.

    Outside it, arrays under :data:`KERNEL_MIN` elements take the reference path, whose results
    may differ from the kernels' by 1 ULP; a computation cut into blocks of different sizes (the
    chunks of ``logitloss eval``) would then give results that depend on where the cuts fall.
    Inside it every NumPy call goes to the kernels when numba is installed (without numba every
    call takes the reference: also one path). :func:`reference_path` still wins where both are
    in force. PyTorch tensors are not affected. Like :func:`reference_path`, a context variable:
    the current thread (or asyncio task) only.
    """
    token = _FORCE_KERNEL.set(True)
    try:
        yield
    finally:
        _FORCE_KERNEL.reset(token)


def forced_reference() -> bool:
    """Whether the caller is inside :func:`reference_path`."""
    return _FORCE_REFERENCE.get()


@contextlib.contextmanager
def same_path(reference: bool) -> Iterator[None]:
    """Inside :func:`reference_path` if ``reference``, else as the caller is (for a backward
    pass that runs after its forward's ``with`` block has ended)."""
    with reference_path() if reference else contextlib.nullcontext():
        yield


@functools.cache
def _numba_installed() -> bool:
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _ml_dtypes_installed() -> bool:
    """Whether NumPy can view bfloat16 (``find_spec`` costs about 100 us a call: cached)."""
    return importlib.util.find_spec("ml_dtypes") is not None


def _is_numpy(x: Array) -> bool:
    return isinstance(x, np.ndarray)


def _is_cpu_tensor(x: Array) -> bool:
    """A plain strided CPU tensor whose memory NumPy can view (not a functorch wrapper, whose
    storage is not its values, nor a sparse or meta tensor)."""
    torch = sys.modules.get("torch")
    return (
        torch is not None
        and isinstance(x, torch.Tensor)
        and x.is_cpu
        and x.layout == torch.strided
        and not torch._C._functorch.is_functorch_wrapped_tensor(x)
        and (x.dtype != torch.bfloat16 or _ml_dtypes_installed())
    )


def applies(x: Array) -> bool:
    """Whether the kernels take a call on logits ``x`` (validated; other operands alike):
    :func:`kernels_take`, and at least :data:`KERNEL_MIN` logits (any size for NumPy arrays
    inside :func:`kernel_path`)."""
    if not kernels_take(x):
        return False
    if _is_numpy(x):
        return x.size >= KERNEL_MIN or _FORCE_KERNEL.get()
    return x.numel() >= KERNEL_MIN


def kernels_take(x: Array) -> bool:
    """Whether the kernels can take logits ``x`` at all, whatever its size: a NumPy array or a
    PyTorch CPU tensor, numba installed, not inside :func:`reference_path` (the training
    losses' fused path, whose one call replaces many small ones)."""
    if _FORCE_REFERENCE.get():
        return False
    if not (_is_numpy(x) or (arrays.is_torch_tensor(x) and _is_cpu_tensor(x))):
        return False
    return _numba_installed()


# NumPy asks for transparent huge pages from this size up (``empty`` says why that matters).
_HUGE_PAGES_MIN = 4 << 20


def empty(shape: tuple[int, ...], dtype: np.dtype, like: Array) -> np.ndarray:
    """A new C-contiguous NumPy array for a kernel's result (which :func:`like` turns into the
    library of ``like``: a tensor sharing its memory for torch).

    From :data:`buffers.MIN_BYTES` up it comes from :mod:`buffers`' pool (memory that the
    previous step's gradient left, already paged in). Below that, a tensor's from torch's
    allocator and NumPy's own from NumPy: NumPy asks Linux for transparent huge pages on
    arrays of 4 MiB and more (``madvise``), and where the kernel must compact memory to find
    them (``defrag`` set to ``madvise``, the usual default) the first touch of such an array
    stalled for 0.7 to 3 s now and then on the benchmark machine; torch's allocator does not ask.
    """
    dtype = np.dtype(dtype)
    if _is_numpy(like) or math.prod(shape) * dtype.itemsize >= buffers.MIN_BYTES:
        return buffers.empty(shape, dtype)
    import torch

    return to_numpy(torch.empty(shape, dtype=_torch_dtypes()[dtype]))


def empty_like(a: np.ndarray, like: Array) -> tuple[np.ndarray, Array]:
    """A new C-contiguous array of the shape and dtype of ``a`` (a NumPy view of ``like``):
    ``(its NumPy view, itself in the library of like)``, from the allocators :func:`empty`
    explains (below NumPy's huge-page threshold NumPy's for a tensor too: microseconds faster
    than a torch tensor and its NumPy view, a small training step's budget)."""
    if _is_numpy(like):
        result = buffers.empty(a.shape, a.dtype)
        return result, result
    if _HUGE_PAGES_MIN <= a.nbytes < buffers.MIN_BYTES:
        return _torch_empty_like(like)
    result = buffers.empty(a.shape, a.dtype)
    return result, _tensor(result)


def _torch_empty_like(like: Array) -> tuple[np.ndarray, Array]:
    torch = sys.modules["torch"]
    if like.is_contiguous():
        tensor = torch.empty_like(like)  # the same layout: a microsecond less than asking for it
    else:
        tensor = torch.empty_like(like, memory_format=torch.contiguous_format)
    return to_numpy(tensor), tensor


@functools.cache
def _torch_dtypes() -> dict:
    """The torch dtype of each NumPy dtype a kernel writes (looked up by the dtype: its
    ``name`` costs microseconds)."""
    import torch

    table = {np.dtype(np.float16): torch.float16, np.dtype(np.float32): torch.float32,
             np.dtype(np.float64): torch.float64}  # fmt: skip
    if _ml_dtypes_installed():
        import ml_dtypes

        table[np.dtype(ml_dtypes.bfloat16)] = torch.bfloat16
    return table


def to_numpy(a: Array | None) -> np.ndarray | None:
    """A NumPy view of ``a`` (a NumPy array as it is, a CPU tensor's memory without a copy)."""
    if a is None or _is_numpy(a):
        return a
    if a.requires_grad:
        a = a.detach()
    torch = sys.modules["torch"]  # imported: a tensor came (an import statement costs ~0.3 us)
    if a.dtype == torch.bfloat16:
        import ml_dtypes

        return a.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return a.numpy()


def like(result: np.ndarray, x: Array) -> Array:
    """``result`` in the library of ``x``: a tensor sharing ``result``'s memory for torch."""
    if _is_numpy(x):
        return result
    return _tensor(result)


def _tensor(result: np.ndarray) -> Array:
    """A torch tensor sharing ``result``'s memory (ml_dtypes' bfloat16 as torch's)."""
    import torch

    if result.dtype.kind == "V":  # ml_dtypes' bfloat16 (dtype.name costs microseconds)
        return torch.from_numpy(result.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(result)
