"""The training losses' fused path: the reduced loss and the logits' gradient in one kernel pass.

It takes PyTorch CPU logits that need a gradient (any size: the modules' training step) and the
NumPy ``*_value_and_grad`` functions. Held here to the reference path (every option combination,
enumerated; sizes below the kernel threshold, past it and past the parallel threshold), to mpmath
(the gradient within 1 ULP for float32, a few scale-ULP for float64), and to what training
code relies on: torch.compile without graph breaks, autocast's float32, the label check, second
derivatives, a second backward, the thread limit.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
from typing import Any

import mpmath
import numpy as np
import pytest
from test_training_options import _close

import logitloss
from logitloss._core.route import KERNEL_MIN
from logitloss._kernels import runtime

torch = pytest.importorskip("torch")
pytest.importorskip("numba")

# (rows, classes): one numba call on the calling thread, past the kernel threshold (which the
# fused path ignores: it must agree with what the reference gives there too), and past the
# parallel threshold (the rows shared among threads).
SIZES = {"small": (6, 5), "kernel": (64, 2 * KERNEL_MIN // 64), "parallel": (96, 1024)}
assert 96 * 1024 >= runtime.PARALLEL_MIN


def _combinations(**choices: tuple[Any, ...]) -> list[dict[str, Any]]:
    names = list(choices)
    return [dict(zip(names, v, strict=True)) for v in itertools.product(*choices.values())]


def _data(size: str, dtype: str, seed: int = 0) -> dict[str, np.ndarray]:
    rows, classes = SIZES[size]
    rng = np.random.default_rng(seed)
    index = rng.integers(0, classes, rows)
    index[::3] = -100
    return {
        "logits": (rng.standard_normal((rows, classes)) * 3).astype(dtype),
        "index": index,
        "probs": rng.dirichlet(np.ones(classes), rows).astype(dtype),
        "binary": rng.random((rows, classes)).astype(dtype),
        "class_weight": rng.uniform(0.2, 2.0, classes).astype(dtype),
        "element_weight": rng.uniform(0.0, 2.0, (rows, classes)).astype(dtype),
        "row_mask": rng.random(rows) < 0.7,
        "element_mask": rng.random((rows, classes)) < 0.7,
    }


def _reference(fn: Any, logits: np.ndarray, labels: Any, **options: Any) -> tuple[Any, Any]:
    """Value and logits' gradient by torch autograd on the reference path (not fused)."""

    def tensor(a: Any) -> Any:
        return torch.from_numpy(np.array(a)) if isinstance(a, np.ndarray) else a

    x = torch.from_numpy(logits.copy()).requires_grad_()
    with logitloss.reference_path():
        value = fn(x, tensor(labels), **{k: tensor(v) for k, v in options.items()})
        value.backward()
    return value.detach().numpy(), x.grad.numpy()


def _ce_cases(d: dict[str, np.ndarray]) -> list[tuple[Any, dict[str, Any]]]:
    cases = []
    for target, options in itertools.product(
        ("index", "probs"),
        _combinations(
            weight=(None, d["class_weight"]),
            label_smoothing=(0.0, 0.1),
            z_loss=(0.0, 1e-3),
            where=(None, d["row_mask"]),
            reduction=("mean", "sum"),
        ),
    ):
        cases.append((d[target], options))
    return cases


def _bce_cases(d: dict[str, np.ndarray]) -> list[tuple[Any, dict[str, Any]]]:
    options = _combinations(
        pos_weight=(None, d["class_weight"]),
        weight=(None, d["element_weight"]),
        label_smoothing=(0.0, 0.1),
        where=(None, d["element_mask"]),
        reduction=("mean", "sum"),
    )
    return [(d["binary"], o) for o in options]


GRID = list(itertools.product(SIZES, ("float32", "float64")))


@pytest.mark.parametrize(("size", "dtype"), GRID)
def test_numpy_value_and_grad_every_option(size: str, dtype: str) -> None:
    d = _data(size, dtype)
    losses = (
        (logitloss.cross_entropy_value_and_grad, logitloss.cross_entropy, _ce_cases(d)),
        (
            logitloss.binary_cross_entropy_with_logits_value_and_grad,
            logitloss.binary_cross_entropy_with_logits,
            _bce_cases(d),
        ),
    )
    for both, fn, cases in losses:
        for labels, options in cases:
            logits = d["logits"].copy()
            value, grad = both(logits, labels, **options)
            assert isinstance(grad, np.ndarray) and grad.dtype == logits.dtype
            assert np.array_equal(logits, d["logits"]), "the caller's logits were changed"
            assert np.asarray(value).dtype == logits.dtype and np.ndim(value) == 0
            ref_value, ref_grad = _reference(fn, d["logits"], labels, **options)
            given = sorted(k for k, v in options.items() if v is not None)
            case = f"{fn.__name__} {size} {dtype} {given}"
            _close(value, ref_value, dtype, f"{case}: loss")
            _close(grad, ref_grad, dtype, f"{case}: grad")


@pytest.mark.parametrize(("size", "dtype"), GRID)
def test_torch_modules_take_the_fused_path(size: str, dtype: str) -> None:
    """The modules' backward is the fused ``_ReducedBackward`` and agrees with the reference,
    with the options of a real run (smoothing, ignore_index, class weights), under an upstream
    that is not 1."""
    from logitloss.torch import BCEWithLogitsLoss, CrossEntropyLoss

    d = _data(size, dtype)
    w = torch.from_numpy(d["class_weight"])
    modules = [
        (CrossEntropyLoss(), d["index"]),
        (CrossEntropyLoss(weight=w, label_smoothing=0.1, z_loss=1e-3), d["index"]),
        (CrossEntropyLoss(weight=w, label_smoothing=0.1, reduction="sum"), d["probs"]),
        (
            BCEWithLogitsLoss(pos_weight=w, weight=torch.from_numpy(d["element_weight"])),
            d["binary"],
        ),
    ]
    for module, labels in modules:
        x = torch.from_numpy(d["logits"].copy()).requires_grad_()
        loss = module(x, torch.from_numpy(labels))
        assert type(loss.grad_fn).__name__ == "_ReducedBackward"
        (loss * 0.75).backward()
        with logitloss.reference_path():
            xr = torch.from_numpy(d["logits"].copy()).requires_grad_()
            reference = module(xr, torch.from_numpy(labels))
            assert type(reference.grad_fn).__name__ != "_ReducedBackward"
            (reference * 0.75).backward()
        _close(loss.detach().numpy(), reference.detach().numpy(), dtype, f"{module}: loss")
        _close(x.grad.numpy(), xr.grad.numpy(), dtype, f"{module}: grad")


def _exact_softmax_grad(x: np.ndarray, t: list, r: float, z_loss: float) -> list[mpmath.mpf]:
    """``S_t p - t + 2 z_loss r lse p`` for one row, at 60 digits."""
    xs = [mpmath.mpf(float(v)) for v in x]
    lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
    p = [mpmath.exp(v - lse) for v in xs]
    total = mpmath.fsum(t)
    return [total * p[j] - t[j] + 2 * z_loss * r * lse * p[j] for j in range(len(xs))]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_cross_entropy_gradient_against_mpmath(dtype: str) -> None:
    """Smoothing, class weights and z-loss together: the effective-label gradient, within
    1 ULP for float32 (the composed reference's sum of separately rounded terms measured 28
    ULP here) and 8 scale-ULP for float64 (ULPs of the larger cancelling term: 2.6 in one
    build, 4.5 in a fresh clone's, the vectorised sums' order depending on the compiled code)."""
    mpmath.mp.dps = 60
    rng = np.random.default_rng(3)
    rows, classes, eps, z_loss = 6, 40, 0.1, 0.01
    x = (rng.standard_normal((rows, classes)) * 3).astype(dtype)
    y = rng.integers(0, classes, rows)
    w = rng.uniform(0.2, 2.0, classes).astype(dtype)
    _, grad = logitloss.cross_entropy_value_and_grad(
        x, y, weight=w, label_smoothing=eps, z_loss=z_loss, reduction="sum"
    )
    worst = 0.0
    for i in range(rows):
        ws = [mpmath.mpf(float(v)) for v in w]
        t = [
            eps / classes * ws[j] + ((1 - eps) * ws[y[i]] if j == y[i] else 0)
            for j in range(classes)
        ]
        exact = _exact_softmax_grad(x[i], t, ws[y[i]], z_loss)
        for j, g in enumerate(exact):
            if dtype == "float32":
                unit = np.spacing(np.abs(np.float32(float(g))))
            else:
                unit = np.spacing(float(max(abs(g + t[j]), t[j])))
            worst = max(worst, float(abs(mpmath.mpf(float(grad[i, j])) - g)) / float(unit))
    assert worst <= (1.0 if dtype == "float32" else 8.0), worst


def test_fused_bce_gradient_against_mpmath() -> None:
    """Smoothed labels (formed in float64, not rounded to float32 first), pos_weight and
    weights: each float32 gradient within 1 ULP of ``w (((1 - z') sigma(x) - q z' sigma(-x))``
    / sum w."""
    mpmath.mp.dps = 60
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((8, 16)) * 4).astype(np.float32)
    z = rng.random((8, 16)).astype(np.float32)
    q = rng.uniform(0.5, 3.0, 16).astype(np.float32)
    w = rng.uniform(0.0, 2.0, (8, 16)).astype(np.float32)
    eps = 0.1
    _, grad = logitloss.binary_cross_entropy_with_logits_value_and_grad(
        x, z, pos_weight=q, weight=w, label_smoothing=eps
    )
    total = mpmath.fsum(mpmath.mpf(float(v)) for v in w.ravel())
    worst = 0.0
    for (i, j), xv in np.ndenumerate(x):
        a = mpmath.mpf(float(xv))
        zs = mpmath.mpf(float(z[i, j])) * (1 - mpmath.mpf(eps)) + mpmath.mpf(eps) / 2
        sig = 1 / (1 + mpmath.exp(-a))
        g = ((1 - zs) * sig - mpmath.mpf(float(q[j])) * zs * (1 - sig)) * float(w[i, j]) / total
        unit = np.spacing(np.abs(np.float32(float(g))))
        worst = max(worst, float(abs(mpmath.mpf(float(grad[i, j])) - g)) / float(unit))
    assert worst <= 1.0, worst


def test_label_out_of_range_raises_from_the_kernel() -> None:
    from logitloss.torch import CrossEntropyLoss

    x = torch.zeros(4, 3, requires_grad=True)
    with pytest.raises(ValueError, match=r"cross_entropy: `labels` must lie in \[0, 3\)"):
        CrossEntropyLoss()(x, torch.tensor([0, 1, 3, -100]))
    with pytest.raises(ValueError, match="from -1 to 2"):
        logitloss.cross_entropy_value_and_grad(np.zeros((3, 3)), np.array([-1, 2, 0]))
    # Ignored and masked rows are not classes and need not be.
    loss, grad = logitloss.cross_entropy_value_and_grad(
        np.zeros((3, 3)), np.array([7, 2, -100]), where=np.array([False, True, True])
    )
    assert float(loss) == pytest.approx(np.log(3)) and not grad[0].any() and not grad[2].any()


def test_second_derivatives_and_second_backward() -> None:
    """``create_graph=True`` differentiates the reference path; ``retain_graph`` backward twice
    accumulates the same gradient twice."""
    from logitloss.torch import CrossEntropyLoss

    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((5, 4))).requires_grad_()
    y = torch.tensor([0, 3, 1, -100, 2])
    module = CrossEntropyLoss(label_smoothing=0.2, weight=torch.tensor([1.0, 2.0, 0.5, 1.0]))
    (g,) = torch.autograd.grad(module(x, y), x, create_graph=True)
    (hvp,) = torch.autograd.grad((g * g).sum(), x)
    with logitloss.reference_path():
        (gr,) = torch.autograd.grad(module(x, y), x, create_graph=True)
        (hvp_ref,) = torch.autograd.grad((gr * gr).sum(), x)
    torch.testing.assert_close(g, gr, rtol=1e-14, atol=1e-15)
    torch.testing.assert_close(hvp, hvp_ref, rtol=1e-12, atol=1e-15)
    loss = module(x, y)
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)
    # Logits changed in place after the loss: the recomputed gradient would be another's.
    logits = x * 1.0
    loss = module(logits, y)
    with torch.no_grad():
        logits.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        torch.autograd.grad(loss, x, create_graph=True)


@pytest.mark.parametrize("size", ["small", "parallel"])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_and_narrow_logits(dtype: str, size: str) -> None:
    """Under ``torch.autocast`` the losses return float32, as torch's own; narrow logits outside
    autocast keep their dtype, the gradient too, equal to the reference's."""
    from logitloss.torch import BCEWithLogitsLoss, CrossEntropyLoss

    narrow = getattr(torch, dtype)
    rng = np.random.default_rng(6)
    rows, classes = SIZES[size]
    x = torch.from_numpy(rng.standard_normal((rows, classes)).astype(np.float32)).to(narrow)
    y = torch.from_numpy(rng.integers(0, classes, rows))
    z = torch.rand(rows, classes)
    pairs = (
        (CrossEntropyLoss, torch.nn.CrossEntropyLoss, y),
        (BCEWithLogitsLoss, torch.nn.BCEWithLogitsLoss, z),
    )
    for ours, theirs, labels in pairs:
        with torch.autocast("cpu", dtype=narrow):
            xa = x.clone().requires_grad_()
            loss = ours()(xa, labels)
            assert loss.dtype == theirs()(xa, labels).dtype == torch.float32
            loss.backward()
            assert xa.grad.dtype == narrow
        xn = x.clone().requires_grad_()
        loss = ours()(xn, labels)
        assert loss.dtype == narrow
        loss.backward()
        with logitloss.reference_path():
            xr = x.clone().requires_grad_()
            ours()(xr, labels).backward()
        torch.testing.assert_close(xn.grad.float(), xr.grad.float(), rtol=2**-7, atol=1e-6)


@pytest.mark.parametrize("size", list(SIZES))
def test_bfloat16_cross_entropy_every_option(size: str) -> None:
    """bfloat16 logits, which the fused kernel reads as bits a row at a time (classes last, or
    moved there): every option against the reference path, the value and the gradient within
    one bfloat16 ULP (of the gradient's largest entry: the two paths round its cancelling terms
    differently)."""
    d = _data(size, "float32", seed=3)
    bf16 = torch.bfloat16
    logits = torch.from_numpy(d["logits"]).to(bf16)
    cases = _ce_cases(d)
    for (labels, options), class_axis_first in itertools.product(cases[::3], (False, True)):

        def tensor(a: Any) -> Any:
            if isinstance(a, np.ndarray) and a.dtype.kind == "f":
                return torch.from_numpy(a).to(bf16)
            return torch.from_numpy(a) if isinstance(a, np.ndarray) else a

        args = {k: tensor(v) for k, v in options.items()}
        target = tensor(labels)
        x0, axis = logits, -1
        if class_axis_first:
            x0, axis = logits.T.contiguous(), 0
            if target.is_floating_point():
                target = target.T.contiguous()
        results = []
        for reference in (False, True):
            x = x0.clone().requires_grad_()
            with logitloss.reference_path() if reference else contextlib.nullcontext():
                value = logitloss.cross_entropy(x, target, axis=axis, **args)
                value.backward()
            assert value.dtype == x.grad.dtype == bf16
            results.append((value.detach().float().numpy(), x.grad.float().numpy()))
        (value, grad), (want_value, want_grad) = results
        case = f"{size} axis={axis} {sorted(k for k, v in options.items() if v is not None)}"
        np.testing.assert_allclose(value, want_value, rtol=2**-7, atol=0, err_msg=case)
        np.testing.assert_allclose(grad, want_grad, rtol=0,
                                   atol=2**-7 * np.abs(want_grad).max(), err_msg=case)  # fmt: skip


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_narrow_binary_cross_entropy_every_option(dtype: str, size: str) -> None:
    """float16 and bfloat16 logits, which the fused entry takes as float32 copies: every option
    against the reference path, within one ULP of the dtype (of the gradient's largest entry)."""
    d = _data(size, "float32", seed=4)
    narrow = getattr(torch, dtype)
    ulp = 2.0**-7 if dtype == "bfloat16" else 2.0**-10
    logits = torch.from_numpy(d["logits"]).to(narrow)

    def tensor(a: Any) -> Any:
        if isinstance(a, np.ndarray) and a.dtype.kind == "f":
            return torch.from_numpy(a).to(narrow)
        return torch.from_numpy(a) if isinstance(a, np.ndarray) else a

    for labels, options in _bce_cases(d):
        args = {k: tensor(v) for k, v in options.items()}
        results = []
        for reference in (False, True):
            x = logits.clone().requires_grad_()
            with logitloss.reference_path() if reference else contextlib.nullcontext():
                value = logitloss.binary_cross_entropy_with_logits(x, tensor(labels), **args)
                value.backward()
            assert value.dtype == x.grad.dtype == narrow
            results.append((value.detach().float().numpy(), x.grad.float().numpy()))
        (value, grad), (want_value, want_grad) = results
        case = f"{dtype} {size} {sorted(k for k, v in options.items() if v is not None)}"
        np.testing.assert_allclose(value, want_value, rtol=ulp, atol=0, err_msg=case)
        np.testing.assert_allclose(grad, want_grad, rtol=0,
                                   atol=ulp * np.abs(want_grad).max(), err_msg=case)  # fmt: skip


def test_torch_compile_fullgraph() -> None:
    """A model with both modules compiles with ``fullgraph=True`` (no graph break: the fused
    path is the ``logitloss::reduced_loss`` operator there), without a warning from Dynamo,
    and trains as eagerly."""
    from logitloss.torch import BCEWithLogitsLoss, CrossEntropyLoss

    class Model(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 5)
            self.ce = CrossEntropyLoss(label_smoothing=0.1, weight=torch.rand(5))
            self.bce = BCEWithLogitsLoss(pos_weight=torch.rand(5))

        def forward(self, a: Any, y: Any, z: Any) -> Any:
            out = self.linear(a)
            return self.ce(out, y) + self.bce(out, z)

    torch.manual_seed(0)
    model = Model()
    a, y, z = torch.randn(8, 4), torch.tensor([0, 1, 2, 3, 4, -100, 1, 2]), torch.rand(8, 5)
    eager = model(a, y, z)
    eager.backward()
    expected = model.linear.weight.grad.clone()
    model.zero_grad()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    with warnings.catch_warnings():
        # Dynamo warns about what it traces around (array-api-compat's cached helpers): none.
        warnings.simplefilter("error", UserWarning)
        loss = compiled(a, y, z)
    loss.backward()
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(model.linear.weight.grad, expected)


def test_kernel_threads_follow_torch() -> None:
    """A caller who limits torch's threads limits the kernels' too (no oversubscription)."""
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert runtime.threads_for(1 << 24) == 1
    finally:
        torch.set_num_threads(threads)
    assert runtime.threads_for(runtime.PARALLEL_MIN - 1) == 1


def test_value_and_grad_refuses_unreduced() -> None:
    with pytest.raises(ValueError, match=r"cross_entropy_value_and_grad: .*'none'"):
        logitloss.cross_entropy_value_and_grad(np.zeros((2, 3)), np.array([0, 1]), reduction="none")
