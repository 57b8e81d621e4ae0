"""Which calls the fused kernels take, the switch that keeps them off, and that the public
functions give the reference's numbers (within the shared 1 ULP bound) on the kernel path.

The kernels' own accuracy against mpmath is tested in ``test_kernels*.py``; here the public
layer around them: NumPy arrays and PyTorch CPU tensors, autograd through them, and everything
that must stay on the reference path.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

import logitloss
from logitloss._core import route

pytest.importorskip("numba")

LARGE = (256, 128)  # 32768 elements: above route.KERNEL_MIN
SMALL = (16, 16)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts the calls of each kernel (which still run)."""
    from logitloss._losses.logistic import kernel as logistic_kernels
    from logitloss._losses.softmax import kernel as softmax_kernels

    calls = {}
    for host in (logistic_kernels, softmax_kernels):
        for name in host.__all__:
            calls[name] = 0
            original = getattr(host, name)

            def counted(*args: Any, _name: str = name, _original: Any = original, **kw: Any) -> Any:
                calls[_name] += 1
                return _original(*args, **kw)

            monkeypatch.setattr(host, name, counted)
    # Binary cross-entropy's fused entry (the training step's one pass for contiguous operands).
    from logitloss._losses.logistic import reduced as logistic_reduced

    calls["fused_bce"] = 0
    original_run = logistic_reduced.run

    def counted_run(*args: Any, **kw: Any) -> Any:
        calls["fused_bce"] += 1
        return original_run(*args, **kw)

    monkeypatch.setattr(logistic_reduced, "run", counted_run)
    return calls


def _data(shape: tuple[int, ...], dtype: Any = np.float32, seed: int = 0) -> tuple:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 30).astype(dtype)
    x.flat[:4] = [np.inf, -np.inf, 0.0, 1e-10]
    z = rng.random(shape).astype(dtype)
    return x, z


def _peak_bytes(call: Any, keep: bool = False) -> Any:
    """The peak of the NumPy (Python) allocations during ``call()`` (and its result)."""
    import tracemalloc

    tracemalloc.start()
    try:
        result = call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return (result, peak) if keep else peak


def _ulp_in(a: Any, b: Any) -> float:
    """Largest difference between ``a`` and ``b`` in ULP of ``b``'s dtype (NumPy or torch)."""
    finfo = torch_or_numpy_finfo(b)
    a, b = (np.asarray(_float64(t)) for t in (a, b))
    finite = np.isfinite(b)
    assert np.array_equal(a[~finite], b[~finite], equal_nan=True)
    a, b = a[finite], b[finite]
    magnitude = np.maximum(
        np.exp2(np.floor(np.log2(np.abs(b), where=b != 0, out=np.zeros_like(b)))), finfo.tiny
    )
    return float(np.max(np.abs(a - b) / (magnitude * finfo.eps), initial=0.0))


def torch_or_numpy_finfo(a: Any) -> Any:
    if isinstance(a, np.ndarray):
        return np.finfo(a.dtype)
    import torch

    return torch.finfo(a.dtype)


def _float64(a: Any) -> Any:
    return a.astype(np.float64) if isinstance(a, np.ndarray) else a.detach().double().numpy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_numpy_losses_take_the_kernels_and_match_the_reference(dtype: Any, spy: dict) -> None:
    x, z = _data(LARGE, dtype)
    q = np.linspace(0.1, 4, LARGE[1]).astype(dtype)  # per class
    fast_s = logitloss.sigmoid_cross_entropy_with_logits(z, x)
    fast_w = logitloss.weighted_cross_entropy_with_logits(z, x, q)
    assert spy["logistic_loss"] == 2
    with logitloss.reference_path():
        slow_s = logitloss.sigmoid_cross_entropy_with_logits(z, x)
        slow_w = logitloss.weighted_cross_entropy_with_logits(z, x, q)
    assert spy["logistic_loss"] == 2
    # Both paths are within 1 ULP of the exact value (float64: 4), so within 2 of each other;
    # measured: 1 ULP (narrow), 2 (float64).
    bound = 2 if dtype == np.float64 else 1
    assert fast_s.dtype == x.dtype and fast_w.dtype == x.dtype
    assert _ulp_in(fast_s, slow_s) <= bound
    assert _ulp_in(fast_w, slow_w) <= bound


def test_small_arrays_stay_on_the_reference(spy: dict) -> None:
    x, z = _data(SMALL)
    logitloss.sigmoid_cross_entropy_with_logits(z, x)
    logitloss.sigmoid_cross_entropy_with_logits_grad(z, x)
    assert not any(spy.values())


def test_numpy_gradient_takes_the_kernel(spy: dict) -> None:
    x, z = _data(LARGE)
    upstream = np.linspace(-2, 2, LARGE[1], dtype=np.float32)
    fast = logitloss.weighted_cross_entropy_with_logits_grad(z, x, 2.5, upstream=upstream)
    assert spy["logistic_grad_logits"] == 1
    with logitloss.reference_path():
        slow = logitloss.weighted_cross_entropy_with_logits_grad(z, x, 2.5, upstream=upstream)
    assert spy["logistic_grad_logits"] == 1
    assert _ulp_in(fast, slow) <= 1
    # labels and pos_weight gradients have no kernel: the reference answers
    logitloss.weighted_cross_entropy_with_logits_grad(z, x, 2.5, wrt="pos_weight")
    assert spy["logistic_grad_logits"] == 1


def test_inputs_are_not_modified() -> None:
    x, z = _data(LARGE)
    x0, z0 = x.copy(), z.copy()
    logitloss.sigmoid_cross_entropy_with_logits(z, x)
    logitloss.sigmoid_cross_entropy_with_logits_grad(z, x)
    assert np.array_equal(x, x0, equal_nan=True) and np.array_equal(z, z0)


def test_the_switch_is_scoped_to_the_thread(spy: dict) -> None:
    x, z = _data(LARGE)
    seen: list[bool] = []

    def other_thread() -> None:
        seen.append(route.forced_reference())
        logitloss.sigmoid_cross_entropy_with_logits(z, x)

    with logitloss.reference_path():
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        assert route.forced_reference()
    assert seen == [False] and spy["logistic_loss"] == 1
    assert not route.forced_reference()


def test_concurrent_calls_agree() -> None:
    x, z = _data((512, 256))
    expected = logitloss.sigmoid_cross_entropy_with_logits(z, x)
    results: list[np.ndarray] = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(5):
            r = logitloss.sigmoid_cross_entropy_with_logits(z, x)
            with lock:
                results.append(r)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    assert all(np.array_equal(r, expected) for r in results)


# --------------------------------------------------------------------------------- PyTorch


torch = pytest.importorskip("torch")


def _tensors(dtype: Any = None, seed: int = 0) -> tuple:
    x, z = _data(LARGE, np.float32, seed)
    tx, tz = torch.from_numpy(x), torch.from_numpy(z)
    if dtype is not None:
        tx, tz = tx.to(dtype), tz.to(dtype)
    return tx, tz


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_torch_without_grad_takes_the_kernel(dtype: str, spy: dict) -> None:
    tx, tz = _tensors(getattr(torch, dtype))
    fast = logitloss.sigmoid_cross_entropy_with_logits(tz, tx)
    assert spy["logistic_loss"] == 1
    assert isinstance(fast, torch.Tensor) and fast.dtype == tx.dtype and fast.grad_fn is None
    with logitloss.reference_path():
        slow = logitloss.sigmoid_cross_entropy_with_logits(tz, tx)
    assert _ulp_in(fast, slow) <= (2 if dtype == "float64" else 1)


def test_torch_strided_tensor(spy: dict) -> None:
    tx, tz = _tensors()
    tx, tz = tx.t(), tz.t()[:, ::1]  # transposed views: not contiguous
    fast = logitloss.sigmoid_cross_entropy_with_logits(tz, tx)
    assert spy["logistic_loss"] == 1 and fast.shape == tx.shape
    with logitloss.reference_path():
        slow = logitloss.sigmoid_cross_entropy_with_logits(tz, tx)
    assert _ulp_in(fast, slow) <= 1


def _used(spy: dict) -> dict[str, int]:
    return {name: n for name, n in spy.items() if n}


def test_torch_backward_takes_the_fused_kernel(spy: dict) -> None:
    tx, tz = _tensors()
    tx.requires_grad_(True)
    q = torch.tensor(3.0, requires_grad=True)
    loss = logitloss.weighted_cross_entropy_with_logits(tz, tx, q)
    (loss * 0.5).sum().backward()
    assert _used(spy) == {"logistic_loss_and_grad": 1}  # q's gradient: the reference
    fast_x, fast_q = tx.grad.clone(), q.grad.clone()
    tx.grad, q.grad = None, None
    with logitloss.reference_path():
        loss = logitloss.weighted_cross_entropy_with_logits(tz, tx, q)
    (loss * 0.5).sum().backward()  # outside the block: follows the forward's path
    assert _used(spy) == {"logistic_loss_and_grad": 1}
    assert _ulp_in(fast_x, tx.grad) <= 1
    assert torch.allclose(fast_q, q.grad, rtol=1e-6)


def test_torch_double_backward_uses_the_reference(spy: dict) -> None:
    """``create_graph=True`` needs a backward that autograd can differentiate: the reference."""
    tx, tz = _tensors(torch.float64)
    tx.requires_grad_(True)
    loss = logitloss.sigmoid_cross_entropy_with_logits(tz, tx).sum()
    (g,) = torch.autograd.grad(loss, tx, create_graph=True)
    assert _used(spy) == {"logistic_loss_and_grad": 1}  # the forward only
    (h,) = torch.autograd.grad(g.sum(), tx)
    t = tx.detach()
    assert torch.allclose(h, torch.sigmoid(t) * torch.sigmoid(-t), rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("kind", ["softmax", "sparse"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_losses_take_the_kernels(kind: str, dtype: Any, spy: dict) -> None:
    x, z = _data(LARGE, dtype)
    labels = np.arange(LARGE[0]) % LARGE[1]
    name = (
        "softmax_cross_entropy_with_logits"
        if kind == "softmax"
        else "sparse_" + ("softmax_cross_entropy_with_logits")
    )
    loss, grad = getattr(logitloss, name), getattr(logitloss, name + "_grad")
    target = z if kind == "softmax" else labels
    upstream = np.linspace(-1, 1, LARGE[0]).astype(dtype)
    fast = loss(target, x), grad(target, x, upstream=upstream)
    prefix = "softmax" if kind == "softmax" else "sparse_softmax"
    assert _used(spy) == {f"{prefix}_loss": 1, f"{prefix}_grad_logits": 1}
    with logitloss.reference_path():
        slow = loss(target, x), grad(target, x, upstream=upstream)
    bound = 4 if dtype == np.float64 else 1
    assert _ulp_in(fast[0], slow[0]) <= bound
    # gradients: both within a few ULP of their scale (the row's largest entry): 0.5 narrow,
    # 4.6 float64 (measured), so within twice that of each other
    scale = np.max(np.abs(slow[1]), axis=1, keepdims=True)
    gbound = (10 if dtype == np.float64 else 1) * np.spacing(scale)
    assert np.all(np.abs(fast[1] - slow[1]) <= gbound)
    # torch: forward and .backward() through the fused kernel
    tx = torch.from_numpy(x).requires_grad_(True)
    tloss = loss(torch.from_numpy(target), tx)
    (tloss * torch.from_numpy(upstream)).sum().backward()
    assert spy[f"{prefix}_loss_and_grad"] == 1
    assert _ulp_in(tloss, torch.from_numpy(slow[0])) <= bound
    assert np.all(np.abs(tx.grad.numpy() - slow[1]) <= gbound)


def test_torch_func_transforms_fall_back(spy: dict) -> None:
    tx, tz = _tensors(torch.float64)
    grad = torch.func.grad(lambda t: logitloss.sigmoid_cross_entropy_with_logits(tz, t).sum())(tx)
    batched = torch.func.vmap(logitloss.sigmoid_cross_entropy_with_logits)(tz, tx)
    expected = torch.sigmoid(tx) - tz
    finite = torch.isfinite(tx)
    assert torch.allclose(grad[finite], expected[finite], rtol=0, atol=1e-15)  # |grad| <= 1
    # vmap: the reference, row by row; the direct call: the float64 kernel (both within 4 ULP)
    assert _ulp_in(batched, logitloss.sigmoid_cross_entropy_with_logits(tz, tx)) <= 2


@pytest.mark.parametrize("kind", ["softmax", "sparse"])
def test_softmax_losses_allocate_only_their_output(kind: str) -> None:
    """No temporaries: the peak of NumPy allocations during the call is the (N,) loss plus
    bookkeeping, not anything of the logits' N x C size (the reference path allocates several)."""
    x, z = _data((512, 8192))
    labels = np.arange(512) % 8192
    if kind == "softmax":
        call = lambda: logitloss.softmax_cross_entropy_with_logits(z, x)  # noqa: E731
    else:
        call = lambda: logitloss.sparse_softmax_cross_entropy_with_logits(labels, x)  # noqa: E731
    call()  # compiled, layouts cached
    peak = _peak_bytes(call)
    assert peak < 512 * 4 + 64 * 1024, peak
    with logitloss.reference_path():  # the check can fail: the reference path does allocate
        reference_peak = _peak_bytes(call)
    assert reference_peak > x.nbytes


def test_torch_fused_backward_twice_with_retain_graph(spy: dict) -> None:
    """The first backward hands the forward's gradient over; a second one computes it anew."""
    tx, tz = _tensors()
    tx.requires_grad_(True)
    loss = logitloss.sigmoid_cross_entropy_with_logits(tz, tx).mean()
    loss.backward(retain_graph=True)
    first = tx.grad.clone()
    loss.backward()
    assert spy["logistic_loss_and_grad"] == 1 and spy["logistic_grad_logits"] == 1
    assert _ulp_in(tx.grad, 2 * first) <= 1
    expected = (torch.sigmoid(tx.detach().double()) - tz.double()) / tx.numel()
    finite = torch.isfinite(tx.detach())
    assert torch.allclose(first.double()[finite], expected[finite], rtol=0, atol=1e-12)


# ------------------------------------------------------------------------ reduced training losses


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_binary_cross_entropy_reduces_in_the_kernel(reduction: str, dtype: Any, spy: dict) -> None:
    """ "mean" and "sum" without weights, mask or smoothing: the sum kernel, which writes no
    per-element loss; the same result as the reference path within its rounding."""
    x, z = _data(LARGE, dtype)
    x[np.isinf(x)] = 3.0  # finite, so the reduction is too
    q = np.linspace(0.5, 3, LARGE[1]).astype(dtype)
    call = lambda: logitloss.binary_cross_entropy_with_logits(  # noqa: E731
        x, z, pos_weight=q, reduction=reduction
    )
    call()
    fast, peak = _peak_bytes(call, keep=True)
    assert _used(spy) == {"logistic_loss_sum": 2}
    if dtype == np.float32:  # float16 goes through float32 copies of the inputs
        assert peak < x.nbytes  # no per-element loss: the checks' bookkeeping only
    with logitloss.reference_path(), np.errstate(over="ignore"):  # float16 sum: inf
        slow = call()
    assert fast.shape == () and fast.dtype == x.dtype
    assert _ulp_in(fast, slow) <= 1


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_reduced_path_with_weights_mask_and_smoothing(reduction: str, spy: dict) -> None:
    """Weights, a mask (also one that counts nothing) and label smoothing stay in the kernel
    pass; the same result as the reference path within its rounding."""
    x, z = _data(LARGE)
    rng = np.random.default_rng(5)
    weight = rng.random(LARGE).astype(np.float32)
    weight[0, :4] = 0.0  # zero weight against the infinite losses of x = +-inf
    mask = rng.random(LARGE[1]) < 0.7  # per class, broadcast down the rows
    cases = [
        {"weight": weight},
        {"where": mask},
        {"weight": weight, "where": mask, "label_smoothing": 0.1, "pos_weight": 2.5},
        {"where": np.zeros(LARGE, bool)},
    ]
    for options in cases:
        fast = logitloss.binary_cross_entropy_with_logits(x, z, reduction=reduction, **options)
        with logitloss.reference_path():
            slow = logitloss.binary_cross_entropy_with_logits(x, z, reduction=reduction, **options)
        assert _ulp_in(fast, slow) <= 1, options
    assert _used(spy) == {"logistic_loss_sum": len(cases)}


def test_reduced_path_only_where_it_applies(spy: dict) -> None:
    x, z = _data(LARGE)
    logitloss.binary_cross_entropy_with_logits(x.astype(np.float64), z.astype(np.float64))
    assert spy["logistic_loss_sum"] == 0 and spy["logistic_loss"] == 1
    tx = torch.from_numpy(x).requires_grad_(True)
    logitloss.binary_cross_entropy_with_logits(tx, torch.from_numpy(z)).backward()
    # A gradient to follow: the training step's one pass, loss sum and gradient together (the
    # fused entry for contiguous operands; the drivers' entry for other layouts).
    assert spy["logistic_loss_sum"] == 0 and spy["fused_bce"] == 1
    assert spy["logistic_loss_sum_and_grad"] == spy["logistic_loss_and_grad"] == 0
    logitloss.binary_cross_entropy_with_logits(tx, torch.from_numpy(z).T.contiguous().T).backward()
    assert spy["fused_bce"] == 2 and spy["logistic_loss_sum_and_grad"] == 1
    with torch.no_grad():
        logitloss.binary_cross_entropy_with_logits(tx, torch.from_numpy(z))
    assert spy["logistic_loss_sum"] == 1


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_cross_entropy_with_class_indices_never_widens_the_logits(dtype: Any, spy: dict) -> None:
    """The per-row loss comes from the kernel in float64 (its ``out``), not from a float64
    copy of the N x C logits; the mean agrees with the reference path's within its rounding."""
    x = (np.random.default_rng(3).standard_normal((512, 8192)) * 4).astype(dtype)
    labels = np.arange(512) * 7 % 8192
    weight = np.linspace(0.5, 2, 8192)
    call = lambda: logitloss.cross_entropy(x, labels, weight=weight)  # noqa: E731
    call()
    fast, peak = _peak_bytes(call, keep=True)
    assert spy["sparse_softmax_loss"] == 2
    if dtype == np.float32:  # float16 goes through a float32 copy
        assert peak < x.nbytes // 4
    with logitloss.reference_path():
        slow = call()
    assert fast.dtype == x.dtype and _ulp_in(fast, slow) <= 1


def test_cross_entropy_with_probabilities_never_widens_the_logits(spy: dict) -> None:
    """Probability targets (no weights, smoothing or z-loss): the softmax kernel's float64
    per-row loss, from the logits in their dtype; the same mean as the reference path's."""
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((512, 8192)) * 4).astype(np.float32)
    z = rng.random(x.shape).astype(np.float32)
    z /= z.sum(axis=1, keepdims=True)
    call = lambda: logitloss.cross_entropy(x, z)  # noqa: E731
    call()
    fast, peak = _peak_bytes(call, keep=True)
    assert spy["softmax_loss"] == 2 and peak < x.nbytes // 4
    with logitloss.reference_path():
        slow = call()
    assert _ulp_in(fast, slow) <= 1
