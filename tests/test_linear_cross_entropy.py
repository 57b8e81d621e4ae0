"""``linear_cross_entropy``: the chunked loss of ``hidden @ weight.T + bias`` and its gradients.

Oracles are independent of ``_linear``: the logits materialised in float64 with
``scipy.special.logsumexp``, mpmath at 50 digits for a tiny case, and PyTorch's own
``F.cross_entropy`` differentiated by autograd in float64.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import logitloss

scipy_special = pytest.importorskip("scipy.special")
torch = pytest.importorskip("torch")
F = torch.nn.functional

LCE = logitloss.linear_cross_entropy
VG = logitloss.linear_cross_entropy_value_and_grad
EPS32 = float(np.finfo(np.float32).eps)


def _problem(n: int = 37, h: int = 8, v: int = 53, seed: int = 0, dtype=np.float64, ignored=(3,)):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, h)).astype(dtype)
    weight = (rng.standard_normal((v, h)) * 0.8).astype(dtype)
    bias = rng.standard_normal(v).astype(dtype)
    labels = rng.integers(0, v, n)
    labels[list(ignored)] = -100
    return hidden, weight, bias, labels


def _oracle_rows(hidden, weight, bias, labels, *, eps=0.0, z=0.0, ignore_index=-100):
    """Per-row loss from the float64 logits: scipy's logsumexp, the smoothing and z-loss spelled
    out from their definitions (a one-hot mixture, not the closed form under test)."""
    x = hidden.astype(np.float64) @ weight.astype(np.float64).T
    if bias is not None:
        x = x + bias
    v = x.shape[1]
    lse = scipy_special.logsumexp(x, axis=1)
    logp = x - lse[:, None]
    counted = labels != ignore_index
    target = np.zeros_like(x)
    target[np.arange(len(labels))[counted], labels[counted]] = 1.0
    target = (1 - eps) * target + eps / v  # PyTorch's convention: eps / C on every class
    rows = -(target * logp).sum(1) + z * lse**2
    return np.where(counted, rows, 0.0), counted


def _oracle(hidden, weight, bias, labels, reduction="mean", **kw):
    rows, counted = _oracle_rows(hidden, weight, bias, labels, **kw)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / counted.sum() if counted.any() else 0.0


def _torch_oracle_grads(hidden, weight, bias, labels, *, eps=0.0, z=0.0, reduction="mean",
                        upstream=None):  # fmt: skip
    """Gradients by autograd through PyTorch's materialised float64 cross-entropy."""
    th = torch.tensor(hidden, dtype=torch.float64, requires_grad=True)
    tw = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    tb = None if bias is None else torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    y = torch.tensor(labels)
    x = F.linear(th, tw, tb)
    rows = F.cross_entropy(x, y, label_smoothing=eps, reduction="none")
    counted = y != -100
    rows = rows + z * torch.where(counted, torch.logsumexp(x, 1), 0.0) ** 2
    if reduction == "none":
        total = (rows * torch.as_tensor(upstream)).sum() if upstream is not None else rows.sum()
    else:
        total = rows.sum() / (max(int(counted.sum()), 1) if reduction == "mean" else 1)
        total = total * (1.0 if upstream is None else upstream)
    total.backward()
    return th.grad.numpy(), tw.grad.numpy(), None if tb is None else tb.grad.numpy()


# --- values ------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("eps", "z"), [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-2), (0.3, 1e-3)])
@pytest.mark.parametrize("chunk_size", [None, 1, 5, 36, 100])
def test_float64_values_match_the_materialised_oracle(reduction, eps, z, chunk_size):
    hidden, weight, bias, labels = _problem()
    got = LCE(hidden, weight, labels, bias=bias, label_smoothing=eps, z_loss=z,
              reduction=reduction, chunk_size=chunk_size)  # fmt: skip
    want = _oracle(hidden, weight, bias, labels, reduction, eps=eps, z=z)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)
    assert np.asarray(got).dtype == np.float64
    assert np.shape(got) == ((37,) if reduction == "none" else ())


def test_tiny_case_against_mpmath():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 50
    hidden = np.array([[0.5, -1.25], [2.0, 0.75]])
    weight = np.array([[1.0, 2.0], [-0.5, 0.25], [3.0, -1.0]])
    labels = np.array([2, 0])
    got = LCE(hidden, weight, labels, reduction="none")
    for i in range(2):
        xs = [sum(mpmath.mpf(hidden[i, k]) * mpmath.mpf(weight[j, k]) for k in range(2))
              for j in range(3)]  # fmt: skip
        exact = mpmath.log(sum(mpmath.exp(x) for x in xs)) - xs[labels[i]]
        assert abs(got[i] - exact) <= 2 * np.finfo(np.float64).eps * abs(exact)


def test_small_loss_keeps_its_digits_in_float32():
    # logits [30, 0, 0, 0] exactly; loss = log1p(3 e^-30) = 2.8e-13, which log(sum exp) rounds
    # to 0 in float32 (and float32 softmax - 1 to 0 in the gradient).
    hidden = np.array([[1.0]], dtype=np.float32)
    weight = np.array([[30.0], [0.0], [0.0], [0.0]], dtype=np.float32)
    labels = np.array([0])
    exact = np.log1p(3 * np.exp(-30.0))  # float64: exact to a few 1e-16 relative
    got = LCE(hidden, weight, labels)
    assert got.dtype == np.float32
    assert abs(float(got) - exact) <= EPS32 * exact
    _, (dh, dw, _) = VG(hidden, weight, labels)
    p = np.exp(-30.0) / (1 + 3 * np.exp(-30.0))  # softmax of a zero logit
    # d loss / d logit_0 = p_0 - 1 = -3p: kept to float32 rounding, not 0
    assert abs(float(dw[0, 0]) - (-3 * p)) <= 2 * EPS32 * 3 * p
    assert abs(float(dh[0, 0]) - (-3 * p * 30)) <= 4 * EPS32 * 3 * p * 30


def test_float32_values_within_rounding_of_the_logits():
    hidden, weight, bias, labels = _problem(n=64, h=32, v=500, dtype=np.float32, ignored=())
    got = LCE(hidden, weight, labels, bias=bias, reduction="none", chunk_size=24)
    want = _oracle(hidden, weight, bias, labels, "none")
    # The float32 logits carry the matmul's rounding: |dx| <~ H eps sum_k |h_k w_k|.
    scale = (np.abs(hidden).astype(np.float64) @ np.abs(weight).T.astype(np.float64)).max(1)
    assert got.dtype == np.float32
    assert np.all(np.abs(got - want) <= 4 * EPS32 * (np.abs(want) + scale))


# --- gradients ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize(("eps", "z"), [(0.0, 0.0), (0.2, 0.0), (0.1, 1e-2)])
def test_float64_gradients_match_torch_autograd(reduction, eps, z):
    hidden, weight, bias, labels = _problem(n=29, v=41)
    up = np.linspace(-1, 2, 29) if reduction == "none" else 1.7
    loss, grads = VG(hidden, weight, labels, bias=bias, label_smoothing=eps, z_loss=z,
                     reduction=reduction, chunk_size=6, upstream=up)  # fmt: skip
    want = _torch_oracle_grads(hidden, weight, bias, labels, eps=eps, z=z, reduction=reduction,
                               upstream=up)  # fmt: skip
    for g, w in zip(grads, want, strict=True):
        np.testing.assert_allclose(g, w, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(loss, _oracle(hidden, weight, bias, labels, reduction, eps=eps, z=z),
                               rtol=1e-13)  # fmt: skip
    assert np.all(grads[0][3] == 0)  # the ignored row


def test_float32_gradients_as_close_as_the_materialised_float32_path():
    hidden, weight, bias, labels = _problem(n=300, h=64, v=2000, dtype=np.float32)
    _, (dh, dw, db) = VG(hidden, weight, labels, bias=bias, chunk_size=77)
    exact = _torch_oracle_grads(hidden, weight, bias, labels)
    th = torch.tensor(hidden, requires_grad=True)
    tw = torch.tensor(weight, requires_grad=True)
    tb = torch.tensor(bias, requires_grad=True)
    F.cross_entropy(F.linear(th, tw, tb), torch.tensor(labels)).backward()
    materialised = (th.grad.numpy(), tw.grad.numpy(), tb.grad.numpy())
    for ours, mat, e in zip((dh, dw, db), materialised, exact, strict=True):
        assert ours.dtype == np.float32
        top = np.max(np.abs(e))
        err, mat_err = np.max(np.abs(ours - e)) / top, np.max(np.abs(mat - e)) / top
        assert err <= 2 * mat_err + 8 * EPS32, (err, mat_err)


def test_torch_gradcheck_float64():
    hidden, weight, bias, labels = _problem(n=7, h=3, v=5, ignored=(2,))
    y = torch.tensor(labels)
    args = [torch.tensor(a, requires_grad=True) for a in (hidden, weight, bias)]
    for reduction in ("mean", "sum", "none"):

        def f(h, w, b, reduction=reduction):
            return LCE(h, w, y, bias=b, label_smoothing=0.15, z_loss=0.05, reduction=reduction,
                       chunk_size=3)  # fmt: skip

        assert torch.autograd.gradcheck(f, args)


def test_torch_autograd_matches_oracle_and_numpy():
    hidden, weight, bias, labels = _problem(n=40, h=6, v=33)
    th, tw, tb = (torch.tensor(a, requires_grad=True) for a in (hidden, weight, bias))
    loss = LCE(th, tw, torch.tensor(labels), bias=tb, label_smoothing=0.1, chunk_size=9)
    (3.0 * loss).backward()
    want = _torch_oracle_grads(hidden, weight, bias, labels, eps=0.1, upstream=3.0)
    for g, w in zip((th.grad, tw.grad, tb.grad), want, strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-11, atol=1e-13)
    np_loss, np_grads = VG(hidden, weight, labels, bias=bias, label_smoothing=0.1, upstream=3.0)
    assert abs(loss.item() - np_loss) <= 1e-14 * np_loss
    for g, w in zip((th.grad, tw.grad, tb.grad), np_grads, strict=True):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-11, atol=1e-14)


def test_torch_float32_agrees_with_numpy_float32():
    hidden, weight, bias, labels = _problem(n=50, h=16, v=300, dtype=np.float32)
    t_loss, t_grads = VG(*(torch.tensor(a) for a in (hidden, weight)), torch.tensor(labels),
                         bias=torch.tensor(bias), reduction="none")  # fmt: skip
    n_loss, n_grads = VG(hidden, weight, labels, bias=bias, reduction="none")
    np.testing.assert_allclose(t_loss.numpy(), n_loss, rtol=8 * EPS32, atol=8 * EPS32)
    for t, n in zip(t_grads, n_grads, strict=True):
        np.testing.assert_allclose(t.numpy(), n, rtol=0, atol=64 * EPS32 * np.abs(n).max())


def test_torch_none_backward_with_vector_upstream_and_retained_graph():
    hidden, weight, _, labels = _problem(n=20, h=5, v=17)
    th, tw = (torch.tensor(a, requires_grad=True) for a in (hidden, weight))
    up = torch.linspace(-2, 1, 20, dtype=torch.float64)
    rows = LCE(th, tw, torch.tensor(labels), reduction="none", chunk_size=6)
    assert rows.shape == (20,)
    (rows * up).sum().backward()
    want = _torch_oracle_grads(hidden, weight, None, labels, reduction="none", upstream=up.numpy())
    np.testing.assert_allclose(th.grad.numpy(), want[0], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(tw.grad.numpy(), want[1], rtol=1e-11, atol=1e-13)
    # mean: gradients precomputed in forward; a second backward (retain_graph) recomputes them
    th.grad = tw.grad = None
    loss = LCE(th, tw, torch.tensor(labels), chunk_size=6)
    loss.backward(retain_graph=True)
    first = th.grad.clone(), tw.grad.clone()
    th.grad = tw.grad = None
    (loss * 2).backward()
    torch.testing.assert_close(th.grad, 2 * first[0], rtol=1e-13, atol=0)
    torch.testing.assert_close(tw.grad, 2 * first[1], rtol=1e-13, atol=0)


def test_only_hidden_requires_grad():
    hidden, weight, _, labels = _problem(n=10, h=4, v=9)
    th = torch.tensor(hidden, requires_grad=True)
    LCE(th, torch.tensor(weight), torch.tensor(labels), reduction="sum").backward()
    np.testing.assert_allclose(th.grad.numpy(), _torch_oracle_grads(hidden, weight, None, labels,
                               reduction="sum")[0], rtol=1e-11, atol=1e-13)  # fmt: skip


def test_torch_linear_cross_entropy_parity():
    if not hasattr(F, "linear_cross_entropy"):
        pytest.skip("torch has no F.linear_cross_entropy")
    hidden, weight, bias, labels = _problem(n=64, h=16, v=100, dtype=np.float32)
    th, tw, tb, y = (torch.tensor(a) for a in (hidden, weight, bias, labels))
    for kw in ({}, {"label_smoothing": 0.1}, {"reduction": "none"}, {"reduction": "sum"}):
        ref = F.linear_cross_entropy(th, tw, y, linear_bias=tb, ignore_index=-100, **kw)
        got = LCE(th, tw, y, bias=tb, chunk_size=10, **kw)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


# --- semantics ---------------------------------------------------------------------------------


def test_ignore_index_rows_contribute_nothing():
    hidden, weight, bias, labels = _problem(n=12, h=4, v=7, ignored=())
    labels[[1, 5]] = 3
    rows = LCE(hidden, weight, labels, bias=bias, ignore_index=3, reduction="none")
    assert rows[1] == 0 and rows[5] == 0
    keep = labels != 3
    mean = LCE(hidden, weight, labels, bias=bias, ignore_index=3)
    want = _oracle(hidden[keep], weight, bias, labels[keep])
    np.testing.assert_allclose(mean, want, rtol=1e-13)
    _, (dh, dw, _) = VG(hidden, weight, labels, bias=bias, ignore_index=3)
    assert np.all(dh[[1, 5]] == 0)
    _, (_, dw_k, _) = VG(hidden[keep], weight, labels[keep], bias=bias, ignore_index=3)
    np.testing.assert_allclose(dw, dw_k, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_all_ignored_gives_zero_and_zero_gradients(reduction):
    hidden, weight, bias, labels = _problem(n=6, h=3, v=4)
    labels[:] = -100
    loss, (dh, dw, db) = VG(hidden, weight, labels, bias=bias, reduction=reduction)
    assert loss == 0 and not np.isnan(loss)
    assert not dh.any() and not dw.any() and not db.any()
    th, tw, tb = (torch.tensor(a, requires_grad=True) for a in (hidden, weight, bias))
    t_loss = LCE(th, tw, torch.tensor(labels), bias=tb, reduction=reduction)
    t_loss.backward()
    assert t_loss.item() == 0
    assert not th.grad.any() and not tw.grad.any() and not tb.grad.any()


def test_batch_shape_and_empty_batch():
    rng = np.random.default_rng(3)
    hidden = rng.standard_normal((2, 3, 4))
    weight = rng.standard_normal((6, 4))
    labels = rng.integers(0, 6, (2, 3))
    rows = LCE(hidden, weight, labels, reduction="none")
    assert rows.shape == (2, 3)
    np.testing.assert_allclose(rows.reshape(-1), _oracle(hidden.reshape(6, 4), weight, None,
                               labels.reshape(-1), "none"), rtol=1e-13)  # fmt: skip
    _, (dh, dw, db) = VG(hidden, weight, labels)
    assert dh.shape == hidden.shape and dw.shape == weight.shape and db is None
    empty = LCE(np.zeros((0, 4)), weight, np.zeros(0, int))
    assert empty == 0
    assert LCE(np.zeros((0, 4)), weight, np.zeros(0, int), reduction="none").shape == (0,)


def test_half_precision_runs_and_is_close():
    hidden, weight, bias, labels = _problem(n=16, h=8, v=40, dtype=np.float32)
    want = _oracle(hidden, weight, bias, labels)
    got16 = LCE(hidden.astype(np.float16), weight.astype(np.float16), labels,
                bias=bias.astype(np.float16))  # fmt: skip
    assert got16.dtype == np.float16 and abs(float(got16) - want) < 2e-2 * want
    tb16 = LCE(*(torch.tensor(a).bfloat16() for a in (hidden, weight)), torch.tensor(labels),
               bias=torch.tensor(bias).bfloat16())  # fmt: skip
    assert tb16.dtype == torch.bfloat16 and abs(tb16.item() - want) < 3e-2 * want


def test_inputs_not_mutated():
    hidden, weight, bias, labels = _problem(n=20, h=5, v=9, dtype=np.float32)
    copies = [a.copy() for a in (hidden, weight, bias, labels)]
    VG(hidden, weight, labels, bias=bias, label_smoothing=0.1, z_loss=0.1, chunk_size=7)
    for a, c in zip((hidden, weight, bias, labels), copies, strict=True):
        np.testing.assert_array_equal(a, c)
    tensors = [torch.tensor(a) for a in (hidden, weight, bias)]
    for t in tensors:
        t.requires_grad_(True)
    LCE(tensors[0], tensors[1], torch.tensor(labels), bias=tensors[2], chunk_size=7).backward()
    for t, c in zip(tensors, copies[:3], strict=True):
        np.testing.assert_array_equal(t.detach().numpy(), c)


def test_peak_memory_has_no_n_by_v_allocation():
    # Full logits: 4096 x 8192 float32 = 128 MiB. Chunked (256 rows): 8 MiB chunk, 2 MiB d_weight.
    n, h, v = 4096, 32, 8192
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((n, h), dtype=np.float32)
    weight = rng.standard_normal((v, h), dtype=np.float32)
    labels = rng.integers(0, v, n)
    VG(hidden[:8], weight, labels[:8], chunk_size=256)  # imports (scipy) outside the trace
    tracemalloc.start()
    try:
        VG(hidden, weight, labels, chunk_size=256)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    logits = n * v * 4
    assert peak < logits / 8, f"peak {peak / 2**20:.1f} MiB"


# --- errors ------------------------------------------------------------------------------------


def _args():
    hidden, weight, bias, labels = _problem(n=5, h=3, v=4, dtype=np.float32, ignored=())
    return {"hidden": hidden, "weight": weight, "labels": labels, "bias": bias}


@pytest.mark.parametrize(
    ("change", "kw", "error", "pattern"),
    [
        ({"hidden": np.zeros((5, 3), int)}, {}, TypeError, "`hidden`.*int64"),
        ({"weight": np.zeros((4, 3))}, {}, TypeError, "`weight`.*float32.*float64"),
        ({"bias": np.zeros(4)}, {}, TypeError, "`bias`.*float64"),
        ({"labels": np.zeros(5)}, {}, TypeError, "`labels`.*integer.*float64"),
        ({"weight": np.zeros((4, 2), np.float32)}, {}, ValueError, r"`weight`.*\(4, 2\)"),
        ({"weight": np.zeros(3, np.float32)}, {}, ValueError, r"`weight`.*\(V, H\).*\(3,\)"),
        ({"bias": np.zeros(5, np.float32)}, {}, ValueError, r"`bias`.*\(4,\).*\(5,\)"),
        ({"labels": np.zeros(4, int)}, {}, ValueError, r"`labels`.*\(5,\).*\(4,\)"),
        ({"labels": np.array([0, 1, 4, 0, 0])}, {}, ValueError, r"`labels`.*\[0, 4\).*got 4"),
        ({"labels": np.array([0, -1, 2, 0, 0])}, {}, ValueError, "`labels`.*got -1"),
        ({}, {"reduction": "avg"}, ValueError, "`reduction`.*'avg'"),
        ({}, {"label_smoothing": 1.5}, ValueError, "`label_smoothing`.*1.5"),
        ({}, {"z_loss": -1.0}, ValueError, "`z_loss`.*-1.0"),
        ({}, {"chunk_size": 0}, ValueError, "`chunk_size`.*0"),
        ({}, {"chunk_size": 2.5}, TypeError, "`chunk_size`.*2.5"),
        ({}, {"ignore_index": 1.0}, TypeError, "`ignore_index`.*1.0"),
    ],
)
def test_errors_name_function_argument_and_value(change, kw, error, pattern):
    args = {**_args(), **change}
    with pytest.raises(error, match="linear_cross_entropy: " + pattern):
        LCE(args["hidden"], args["weight"], args["labels"], bias=args["bias"], **kw)


def test_torch_errors_and_ignore_index_may_be_in_range():
    args = _args()
    with pytest.raises(ValueError, match=r"linear_cross_entropy: `labels`.*got 7"):
        LCE(
            torch.tensor(args["hidden"]),
            torch.tensor(args["weight"]),
            torch.tensor([0, 7, 0, 0, 0]),
        )
    with pytest.raises(TypeError, match=r"linear_cross_entropy: `weight`.*float64"):
        LCE(torch.tensor(args["hidden"]), torch.tensor(args["weight"]).double(),
            torch.tensor(args["labels"]))  # fmt: skip
    with pytest.raises(ValueError, match=r"upstream.*shape"):
        VG(args["hidden"], args["weight"], args["labels"], reduction="none", upstream=np.ones(3))
