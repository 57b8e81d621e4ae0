"""The pool of large results (``_core.buffers``): a block is handed out again only after every
array, view and tensor of its memory is gone; results through it are the same numbers."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import logitloss
from logitloss._core import buffers, route

MIB = 1 << 20


@pytest.fixture
def pool(monkeypatch: pytest.MonkeyPatch) -> None:
    """An empty pool that takes arrays from 1 MiB up (the tests' arrays stay small)."""
    monkeypatch.setattr(buffers, "_free", [])
    monkeypatch.setattr(buffers, "MIN_BYTES", MIB)
    monkeypatch.setattr(buffers, "LIMIT", 64 * MIB)


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


@pytest.mark.usefixtures("pool")
@pytest.mark.parametrize("keep", ["view", "slice", "reshaped", "tensor", "tensor_view"])
def test_a_block_returns_only_when_every_view_is_gone(keep: str) -> None:
    a = buffers.empty((512, 1024), np.float32)
    assert a.shape == (512, 1024) and a.dtype == np.float32
    assert a.flags.c_contiguous and a.flags.writeable
    first = _address(a)
    a[...] = 7.0
    if keep.startswith("tensor"):
        torch = pytest.importorskip("torch")
        kept = torch.from_numpy(a)
        if keep == "tensor_view":
            kept = kept[3:].view(-1)
    else:
        kept = {"view": a.view(np.int32), "slice": a[5:, 2:], "reshaped": a.reshape(-1)}[keep]
    before = np.asarray(kept).copy()
    del a
    gc.collect()
    b = buffers.empty((512, 1024), np.float32)  # the block is still in use: a new one
    assert _address(b) != first
    b[...] = -1.0
    np.testing.assert_array_equal(np.asarray(kept), before)
    del kept
    gc.collect()
    c = buffers.empty((512, 1024), np.float32)  # now it is free: handed out again
    assert _address(c) == first
    assert buffers.cached_bytes() == 0


@pytest.mark.usefixtures("pool")
def test_blocks_match_by_size_and_the_limit_keeps_the_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    a = buffers.empty((2 * MIB,), np.uint8)
    first = _address(a)
    del a
    assert buffers.cached_bytes() == 2 * MIB
    other = buffers.empty((3 * MIB,), np.uint8)  # another size: not that block
    assert _address(other) != first and buffers.cached_bytes() == 2 * MIB
    third = _address(other)
    monkeypatch.setattr(buffers, "LIMIT", 4 * MIB)
    del other  # 2 + 3 MiB > 4 MiB: the older block (2 MiB) is dropped, the newer kept
    assert buffers.cached_bytes() == 3 * MIB
    assert _address(buffers.empty((3 * MIB,), np.uint8)) == third
    b = buffers.empty((2 * MIB,), np.uint8)
    monkeypatch.setattr(buffers, "LIMIT", MIB)
    del b  # larger than the whole limit: not kept
    assert buffers.cached_bytes() == 3 * MIB


@pytest.mark.usefixtures("pool")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_value_and_grad_through_reused_blocks(dtype: type) -> None:
    """The NumPy training path's gradient comes from the pool past its threshold: a second
    call that reuses the first call's block, and one that cannot (the first gradient still
    held), give the same numbers as the reference path."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((256, 1024)).astype(dtype)  # 1 or 2 MiB
    labels = rng.integers(0, 1024, 256)
    with route.reference_path():
        import torch

        xt = torch.from_numpy(x).requires_grad_()
        logitloss.cross_entropy(xt, torch.from_numpy(labels), label_smoothing=0.1).backward()
        expected = xt.grad.numpy()
    _, held = logitloss.cross_entropy_value_and_grad(x, labels, label_smoothing=0.1)
    _, fresh = logitloss.cross_entropy_value_and_grad(x, labels, label_smoothing=0.1)
    assert _address(fresh) != _address(held)
    address = _address(held)
    np.testing.assert_array_equal(held, fresh)
    del held
    _, reused = logitloss.cross_entropy_value_and_grad(x, labels, label_smoothing=0.1)
    assert _address(reused) == address
    np.testing.assert_array_equal(reused, fresh)
    np.testing.assert_allclose(reused, expected, rtol=2e-6 if dtype == np.float32 else 1e-14,
                               atol=1e-12)  # fmt: skip


@pytest.mark.usefixtures("pool")
def test_torch_gradients_come_back_after_grad_is_dropped() -> None:
    torch = pytest.importorskip("torch")
    from logitloss.torch import BCEWithLogitsLoss

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 1024, generator=gen, requires_grad=True)  # 2 MiB
    z = (torch.rand(512, 1024, generator=gen) < 0.3).float()
    loss_fn = BCEWithLogitsLoss()
    loss_fn(x, z).backward()  # (a first call may compile: autograd may copy that gradient)
    x.grad = None
    loss_fn(x, z).backward()
    first = x.grad.clone()
    address = x.grad.data_ptr()
    loss_fn(x, z).backward()  # accumulates into the held gradient: a new block for the step
    torch.testing.assert_close(x.grad, 2 * first, rtol=0, atol=0)
    x.grad = None  # the first block is free again: the next step's gradient is written there
    gc.collect()
    loss_fn(x, z).backward()
    assert x.grad.data_ptr() == address
    torch.testing.assert_close(x.grad, first, rtol=0, atol=0)
    reference = torch.nn.BCEWithLogitsLoss()
    y = x.detach().clone().requires_grad_()
    reference(y, z).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=1e-6, atol=1e-12)


def _unreduced_cases(rng: np.random.Generator, dtype: type) -> dict:
    """Each unreduced loss with its arguments, 512 x 1024 (2 or 4 MiB: past the test pool's
    1 MiB), classes last and, for the softmax losses, first (the gradient's other layout)."""
    x = rng.standard_normal((512, 1024)).astype(dtype)
    z = rng.random((512, 1024)).astype(dtype)
    p = z / z.sum(-1, keepdims=True)
    q = rng.random(1024).astype(dtype) * 3
    labels = rng.integers(0, 1024, 512)
    return {
        "sigmoid": (logitloss.sigmoid_cross_entropy_with_logits, {"labels": z, "logits": x}),
        "weighted": (
            logitloss.weighted_cross_entropy_with_logits,
            {"labels": z, "logits": x, "pos_weight": q},
        ),
        "softmax": (logitloss.softmax_cross_entropy_with_logits, {"labels": p, "logits": x}),
        "softmax_first": (
            logitloss.softmax_cross_entropy_with_logits,
            {"labels": np.ascontiguousarray(p.T), "logits": np.ascontiguousarray(x.T), "axis": 0},
        ),
        "sparse": (
            logitloss.sparse_softmax_cross_entropy_with_logits,
            {"labels": labels, "logits": x},
        ),
    }


@pytest.mark.usefixtures("pool")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", ["sigmoid", "weighted", "softmax", "softmax_first", "sparse"])
def test_unreduced_losses_and_gradients_through_reused_blocks(case: str, dtype: type) -> None:
    """The kernels' unreduced outputs (loss and, through torch's backward, the gradient) come
    from the pool past its threshold; a step that reuses the previous step's blocks gives the
    reference path's numbers, and what the caller still holds is never written."""
    torch = pytest.importorskip("torch")
    fn, kwargs = _unreduced_cases(np.random.default_rng(5), dtype)[case]

    def step() -> tuple[np.ndarray, np.ndarray]:
        logits = torch.from_numpy(kwargs["logits"]).requires_grad_()
        tensors = {k: torch.from_numpy(v) for k, v in kwargs.items() if isinstance(v, np.ndarray)}
        loss = fn(**(kwargs | tensors | {"logits": logits}))
        (loss * torch.linspace(0.5, 1.5, loss.numel()).reshape(loss.shape).to(loss.dtype)).sum(
        ).backward()  # fmt: skip
        return loss.detach().numpy(), logits.grad.numpy()

    with route.reference_path():
        expected_loss, expected_grad = step()
    held = step()
    held_copy = tuple(a.copy() for a in held)
    again = step()  # the first step's arrays still held: other blocks
    np.testing.assert_array_equal(held[0], held_copy[0])
    np.testing.assert_array_equal(held[1], held_copy[1])
    addresses = {_address(a) for a in held}
    del held
    gc.collect()
    reused = step()
    if case != "softmax_first":  # (there autograd copies the gradient into the logits' layout)
        assert {_address(a) for a in reused} & addresses
    for result in (again, reused):  # bit for bit the first step's
        np.testing.assert_array_equal(result[0], held_copy[0])
        np.testing.assert_array_equal(result[1], held_copy[1])
    # and the reference path's numbers (the kernels' float64 bound is a few ULP)
    # (float64 gradients near a cancellation differ by a few ULP of the terms: atol)
    rtol, atol = (1e-6, 1e-12) if dtype == np.float32 else (1e-12, 1e-15)
    np.testing.assert_allclose(held_copy[0], expected_loss, rtol=rtol, atol=atol)
    np.testing.assert_allclose(held_copy[1], expected_grad, rtol=rtol, atol=atol)
