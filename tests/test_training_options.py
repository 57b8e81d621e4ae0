"""Every option combination of the training losses, on small arrays and past the kernel threshold.

The kernels take NumPy arrays and CPU tensors of ``KERNEL_MIN`` logits or more; below that the
array-API reference computes. Each combination of options (enumerated, not picked) is computed
both ways, on NumPy and on torch, with and without a gradient, and must raise nothing, warn
nothing, and agree with the reference path (``logitloss.reference_path()``) within the bounds
both meet against the exact value: 2 ULP apart for float32 (each within 1 ULP), 16 for float64.
The reference itself is held to mpmath in ``test_training_losses``; ``linear_cross_entropy``,
which has no reference path of its own, is held to ``cross_entropy`` on the materialised logits.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import logitloss
from logitloss._core.route import KERNEL_MIN

REDUCTIONS = ("none", "sum", "mean")
# (rows, classes): under the kernel threshold, and past it.
SIZES = {"small": (6, 5), "large": (64, 2 * KERNEL_MIN // 64)}
ULPS = {"float32": 2, "float64": 16}


def _combinations(**choices: tuple[Any, ...]) -> list[dict[str, Any]]:
    """Every combination of the options' values, as keyword dictionaries."""
    names = list(choices)
    product = itertools.product(*choices.values())
    return [dict(zip(names, values, strict=True)) for values in product]


def _close(actual: np.ndarray, expected: np.ndarray, dtype: str, what: str) -> None:
    """Within ``ULPS[dtype]`` ULP of the larger magnitude (a gradient: of its largest entry too,
    since the kernels and the reference round its cancelling terms differently)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    eps = float(np.finfo(dtype).eps)
    scale = np.maximum(np.abs(actual), np.abs(expected))
    if what.endswith("grad"):
        scale = np.maximum(scale, np.max(np.abs(expected), initial=0.0))
    same_inf = np.isinf(expected) & (actual == expected)
    bad = ~same_inf & ~(np.abs(actual - expected) <= ULPS[dtype] * eps * scale)
    bad &= ~(np.isnan(actual) & np.isnan(expected))
    assert not bad.any(), f"{what}: {actual[bad][:4]} != reference {expected[bad][:4]}"


def _both_paths(call: Callable[[], tuple[Any, Any]]) -> tuple[tuple, tuple]:
    """``call()`` as users get it and on the reference path, turning any warning into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fast = call()
        with logitloss.reference_path():
            reference = call()
    return fast, reference


def _numpy_call(fn: Callable, logits: np.ndarray, *args: Any, **kwargs: Any) -> Callable:
    def call() -> tuple[np.ndarray, None]:
        return np.asarray(fn(logits.copy(), *args, **kwargs)), None

    return call


def _torch_call(fn: Callable, logits: np.ndarray, grad: bool, *args: Any, **kwargs: Any) -> Any:
    """``fn`` on tensors; with ``grad`` also the logits' gradient of ``sum(u * loss)``."""
    torch = pytest.importorskip("torch")

    def tensor(a: Any) -> Any:
        return torch.from_numpy(a.copy()) if isinstance(a, np.ndarray) else a

    def call() -> tuple[np.ndarray, np.ndarray | None]:
        x = torch.from_numpy(logits.copy()).requires_grad_(grad)
        loss = fn(x, *map(tensor, args), **{k: tensor(v) for k, v in kwargs.items()})
        if not grad:
            return loss.numpy(), None
        upstream = torch.linspace(0.5, 1.5, loss.numel(), dtype=loss.dtype).reshape(loss.shape)
        (loss * upstream).sum().backward()
        return loss.detach().numpy(), x.grad.numpy()

    return call


def _check(call: Callable, dtype: str, case: str) -> None:
    (value, grad), (ref_value, ref_grad) = _both_paths(call)
    _close(value, ref_value, dtype, f"{case}: loss")
    if grad is not None:
        _close(grad, ref_grad, dtype, f"{case}: grad")


def _data(size: str, dtype: str, seed: int = 0) -> dict[str, Any]:
    rows, classes = SIZES[size]
    rng = np.random.default_rng(seed)
    index = rng.integers(0, classes, rows)
    ignored = index.copy()
    ignored[::3] = -100
    return {
        "logits": (rng.standard_normal((rows, classes)) * 3).astype(dtype),
        "probs": rng.dirichlet(np.ones(classes), rows).astype(dtype),
        "binary": rng.random((rows, classes)).astype(dtype),
        "index": index,
        "ignored": ignored,
        "class_weight": rng.uniform(0.2, 2.0, classes).astype(dtype),
        "element_weight": rng.uniform(0.0, 2.0, (rows, classes)).astype(dtype),
        "row_mask": rng.random(rows) < 0.7,
        "element_mask": rng.random((rows, classes)) < 0.7,
    }


BACKENDS = ("numpy", "torch", "torch-grad")
CASE_GRID = list(itertools.product(SIZES, ("float32", "float64"), BACKENDS))


def _caller(backend: str, fn: Callable, logits: np.ndarray, *args: Any, **kwargs: Any) -> Callable:
    if backend == "numpy":
        return _numpy_call(fn, logits, *args, **kwargs)
    return _torch_call(fn, logits, backend == "torch-grad", *args, **kwargs)


@pytest.mark.parametrize(("size", "dtype", "backend"), CASE_GRID)
def test_cross_entropy_index_every_option(size: str, dtype: str, backend: str) -> None:
    d = _data(size, dtype)
    for o in _combinations(
        axis=(-1, 0), weight=(False, True), ignore=(False, True), where=(False, True),
        label_smoothing=(0.0, 0.1), z_loss=(0.0, 1e-3), reduction=REDUCTIONS,
    ):  # fmt: skip
        x = d["logits"] if o["axis"] == -1 else np.ascontiguousarray(d["logits"].T)
        labels = d["ignored"] if o["ignore"] else d["index"]
        call = _caller(
            backend, logitloss.cross_entropy, x, labels, axis=o["axis"],
            weight=d["class_weight"] if o["weight"] else None,
            where=d["row_mask"] if o["where"] else None,
            label_smoothing=o["label_smoothing"], z_loss=o["z_loss"], reduction=o["reduction"],
        )  # fmt: skip
        _check(call, dtype, f"cross_entropy index {o}")


@pytest.mark.parametrize(("size", "dtype", "backend"), CASE_GRID)
def test_cross_entropy_probabilities_every_option(size: str, dtype: str, backend: str) -> None:
    d = _data(size, dtype)
    for o in _combinations(
        axis=(-1, 0), weight=(False, True), where=(False, True), label_smoothing=(0.0, 0.1),
        z_loss=(0.0, 1e-3), reduction=REDUCTIONS,
    ):  # fmt: skip
        x, z = d["logits"], d["probs"]
        if o["axis"] == 0:
            x, z = np.ascontiguousarray(x.T), np.ascontiguousarray(z.T)
        call = _caller(
            backend, logitloss.cross_entropy, x, z, axis=o["axis"],
            weight=d["class_weight"] if o["weight"] else None,
            where=d["row_mask"] if o["where"] else None,
            label_smoothing=o["label_smoothing"], z_loss=o["z_loss"], reduction=o["reduction"],
        )  # fmt: skip
        _check(call, dtype, f"cross_entropy probabilities {o}")


@pytest.mark.parametrize(("size", "dtype", "backend"), CASE_GRID)
def test_binary_cross_entropy_every_option(size: str, dtype: str, backend: str) -> None:
    d = _data(size, dtype)
    pos_weights = {"none": None, "scalar": np.asarray(2.5, dtype), "class": d["class_weight"]}
    weights = {"none": None, "element": d["element_weight"], "class": d["class_weight"]}
    for o in _combinations(
        pos_weight=tuple(pos_weights), weight=tuple(weights), where=(False, True),
        label_smoothing=(0.0, 0.1), reduction=REDUCTIONS,
    ):  # fmt: skip
        call = _caller(
            backend, logitloss.binary_cross_entropy_with_logits, d["logits"], d["binary"],
            pos_weight=pos_weights[o["pos_weight"]], weight=weights[o["weight"]],
            where=d["element_mask"] if o["where"] else None,
            label_smoothing=o["label_smoothing"], reduction=o["reduction"],
        )  # fmt: skip
        _check(call, dtype, f"binary_cross_entropy_with_logits {o}")


@pytest.mark.parametrize(("size", "dtype", "backend"), CASE_GRID)
def test_sigmoid_focal_loss_every_option(size: str, dtype: str, backend: str) -> None:
    d = _data(size, dtype)
    for o in _combinations(alpha=(None, 0.25), gamma=(0.0, 0.5, 2.0), reduction=REDUCTIONS):
        call = _caller(backend, logitloss.sigmoid_focal_loss, d["logits"], d["binary"], **o)
        _check(call, dtype, f"sigmoid_focal_loss {o}")


@pytest.mark.parametrize(("size", "dtype", "backend"), CASE_GRID)
def test_torch_modules_every_option(size: str, dtype: str, backend: str) -> None:
    if backend == "numpy":
        pytest.skip("the modules take tensors")
    torch = pytest.importorskip("torch")
    modules = pytest.importorskip("logitloss.torch")
    d = _data(size, dtype)
    cw = torch.from_numpy(d["class_weight"])
    for o in _combinations(
        weight=(False, True), ignore=(False, True), label_smoothing=(0.0, 0.1),
        z_loss=(0.0, 1e-3), reduction=REDUCTIONS, target=("index", "probs"),
    ):  # fmt: skip
        if o["target"] == "probs" and o["ignore"]:
            continue  # ignore_index applies to index targets only
        module = modules.CrossEntropyLoss(
            weight=cw if o["weight"] else None, label_smoothing=o["label_smoothing"],
            reduction=o["reduction"], z_loss=o["z_loss"],
        )  # fmt: skip
        target = d["probs"] if o["target"] == "probs" else d["ignored" if o["ignore"] else "index"]
        call = _caller(backend, lambda x, t, m=module: m(x, t), d["logits"], target)
        _check(call, dtype, f"CrossEntropyLoss {o}")
    for o in _combinations(
        weight=(False, True), pos_weight=(False, True), label_smoothing=(0.0, 0.1),
        reduction=REDUCTIONS,
    ):  # fmt: skip
        module = modules.BCEWithLogitsLoss(
            weight=torch.from_numpy(d["element_weight"]) if o["weight"] else None,
            pos_weight=cw if o["pos_weight"] else None,
            label_smoothing=o["label_smoothing"], reduction=o["reduction"],
        )  # fmt: skip
        call = _caller(backend, lambda x, t, m=module: m(x, t), d["logits"], d["binary"])
        _check(call, dtype, f"BCEWithLogitsLoss {o}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_linear_cross_entropy_every_option(backend: str, dtype: str) -> None:
    """Against ``cross_entropy`` of the materialised logits, in chunks and in one piece."""
    rng = np.random.default_rng(3)
    rows, hidden, classes = 48, 16, 400  # 19 200 logits: past the kernel threshold
    h = rng.standard_normal((rows, hidden)).astype(dtype)
    w = (rng.standard_normal((classes, hidden)) / 4).astype(dtype)
    b = rng.standard_normal(classes).astype(dtype)
    labels = rng.integers(0, classes, rows)
    labels[::5] = -100
    for o in _combinations(
        bias=(False, True), ignore=(False, True), label_smoothing=(0.0, 0.1),
        z_loss=(0.0, 1e-3), reduction=REDUCTIONS, chunk_size=(7, None),
    ):  # fmt: skip
        y = labels if o["ignore"] else np.abs(labels)
        bias = b if o["bias"] else None
        options = {k: o[k] for k in ("label_smoothing", "z_loss", "reduction")}
        logits = h.astype(np.float64) @ w.astype(np.float64).T
        if bias is not None:
            logits = logits + bias
        logits = logits.astype(dtype)
        materialised = _caller(backend, logitloss.cross_entropy, logits, y, **options)
        (expected, _), _ = _both_paths(materialised)

        def fused(h_: Any, w_: Any, y_: Any, bias: Any = None, o_: dict = options) -> Any:
            return logitloss.linear_cross_entropy(h_, w_, y_, bias=bias, **o_)

        fused_call = _caller(
            backend, fused, h, w, y, bias=bias, o_={**options, "chunk_size": o["chunk_size"]}
        )
        (value, _), _ = _both_paths(fused_call)
        # The matmul's own rounding differs between the two: a few ULP of the logits.
        np.testing.assert_allclose(value, expected, rtol=2e-5 if dtype == "float32" else 1e-12,
                                   atol=1e-6 if dtype == "float32" else 1e-13,
                                   err_msg=f"linear_cross_entropy {o}")  # fmt: skip
