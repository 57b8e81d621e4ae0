"""Autodiff through the losses uses the exact gradients, on PyTorch and JAX.

PyTorch: ``gradcheck`` and ``gradgradcheck`` (reverse and forward mode) in float64 for every
loss and every differentiable argument; ``x.grad`` equal to the ``*_grad`` functions' result
bit for bit and to the textbook derivatives; only the inputs saved for the backward.
JAX: ``check_grads`` to second order in both modes, ``jit``, ``vmap``, ``hessian``, the same
equalities. Both: the edge values where the exact gradient differs from differentiating the
forward formula, and Hessian-vector products against their closed forms.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import logitloss

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 5)) * 3
Z = RNG.uniform(0, 1, (4, 5))
P = RNG.dirichlet(np.ones(5), size=4)
K = RNG.integers(0, 5, size=4)
Q = RNG.uniform(0.1, 3, 5)
V = RNG.standard_normal((4, 5))  # the direction of the Hessian-vector products

# torch's first forward-mode AD loads its jvp decompositions with torch.jit.script, which torch
# itself deprecates: not ours, and not about this package.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

# The pos_weight gradient's double backward goes through ``_reference._sum_to_shape``, whose
# ``xp.asarray`` on a tensor with autograd history makes torch 2.13 warn (the result is right).


# --- Textbook derivatives in NumPy, independent of the formulas under test ----------------------


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0, x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis, keepdims=True))


def sum_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``a`` back to ``shape`` (the adjoint of broadcasting to ``a.shape``)."""
    while a.ndim > len(shape):
        a = a.sum(0)
    for i, n in enumerate(shape):
        if n == 1 and a.shape[i] != 1:
            a = a.sum(i, keepdims=True)
    return a


def logistic_expected(g: np.ndarray, x: np.ndarray, z: np.ndarray, q: Any = 1.0) -> tuple:
    """Gradients of sum(g * loss) w.r.t. logits, labels, pos_weight."""
    q = np.asarray(q)
    return (
        ((1 - z) * sigmoid(x) - q * z * sigmoid(-x)) * g,
        (q * softplus(-x) - softplus(x)) * g,
        sum_to(z * softplus(-x) * g, q.shape),
    )


def softmax_expected(axis: int) -> Callable[..., tuple]:
    def expected(g: np.ndarray, x: np.ndarray, z: np.ndarray) -> tuple:
        zb = np.broadcast_to(z, x.shape)
        ge = np.expand_dims(g, axis)
        dx = (softmax(x, axis) * zb.sum(axis, keepdims=True) - zb) * ge
        return dx, sum_to((logsumexp(x, axis) - x) * ge, z.shape)

    return expected


def sparse_expected(g: np.ndarray, x: np.ndarray) -> tuple:
    return ((softmax(x) - np.eye(x.shape[-1])[K]) * g[:, None],)


# --- Each loss as a function of all its differentiable arguments -------------------------------


@dataclass(frozen=True)
class Case:
    loss: Callable[..., Any]  # loss(x, *others) -> the unreduced loss
    grad: Callable[..., Any]  # grad(upstream, wrt, x, *others) -> the *_grad function's result
    values: tuple[np.ndarray, ...]  # x first, then the other differentiable arguments
    expected: Callable[..., tuple]  # expected(upstream, *values) -> textbook gradients


def _softmax_case(axis: int, z: np.ndarray) -> Case:
    return Case(
        lambda x, z: logitloss.softmax_cross_entropy_with_logits(z, x, axis=axis),
        lambda g, wrt, x, z: logitloss.softmax_cross_entropy_with_logits_grad(
            z, x, axis, upstream=g, wrt=wrt
        ),
        (X, z),
        softmax_expected(axis),
    )


def _weighted_case(q: np.ndarray) -> Case:
    return Case(
        lambda x, z, q: logitloss.weighted_cross_entropy_with_logits(z, x, q),
        lambda g, wrt, x, z, q: logitloss.weighted_cross_entropy_with_logits_grad(
            z, x, q, upstream=g, wrt=wrt
        ),
        (X, Z, q),
        logistic_expected,
    )


CASES = {
    "sigmoid": Case(
        lambda x, z: logitloss.sigmoid_cross_entropy_with_logits(z, x),
        lambda g, wrt, x, z: logitloss.sigmoid_cross_entropy_with_logits_grad(
            z, x, upstream=g, wrt=wrt
        ),
        (X, Z),
        lambda g, x, z: logistic_expected(g, x, z)[:2],
    ),
    "weighted": _weighted_case(Q),  # pos_weight per class
    "weighted-scalar": _weighted_case(np.array(1.7)),  # pos_weight a 0-d array
    "softmax": _softmax_case(-1, P),
    "softmax-axis0": _softmax_case(0, P),  # labels along axis 0 do not sum to 1
    "softmax-broadcast": _softmax_case(-1, P[0]),  # one label row for the whole batch
    "sparse": Case(
        lambda x: logitloss.sparse_softmax_cross_entropy_with_logits(K, x),
        lambda g, wrt, x: logitloss.sparse_softmax_cross_entropy_with_logits_grad(K, x, upstream=g),
        (X,),
        sparse_expected,
    ),
}
WRT = ("logits", "labels", "pos_weight")


def upstream_for(case: Case) -> np.ndarray:
    """A random cotangent of the loss's shape (not ones, to test its use)."""
    shape = np.shape(case.loss(*case.values))
    return np.random.default_rng(len(shape)).uniform(-2, 2, shape)


@pytest.fixture
def torch() -> Any:
    return pytest.importorskip("torch")


@pytest.fixture
def jax() -> Iterator[Any]:
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        yield jax


# --- PyTorch ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_torch_gradcheck_and_gradgradcheck(torch: Any, name: str) -> None:
    case = CASES[name]
    inputs = tuple(torch.tensor(v, requires_grad=True) for v in case.values)
    assert torch.autograd.gradcheck(case.loss, inputs, check_forward_ad=True)
    assert torch.autograd.gradgradcheck(case.loss, inputs, check_fwd_over_rev=True)


@pytest.mark.parametrize("name", list(CASES))
def test_torch_gradient_is_the_exact_one(torch: Any, name: str) -> None:
    """``.grad`` is what the ``*_grad`` functions return for the same tensors, bit for bit (the
    same formulas; NumPy's libm may differ in the last bit), and the textbook's."""
    case = CASES[name]
    g = upstream_for(case)
    inputs = [torch.tensor(v, requires_grad=True) for v in case.values]
    case.loss(*inputs).backward(torch.tensor(g))
    expected = case.expected(g, *case.values)
    for wrt, tensor, textbook in zip(WRT, inputs, expected, strict=False):
        exact = case.grad(torch.tensor(g), wrt, *(t.detach() for t in inputs))
        np.testing.assert_array_equal(tensor.grad.numpy(), exact.numpy(), err_msg=wrt)
        np.testing.assert_allclose(tensor.grad.numpy(), textbook, rtol=1e-12, atol=1e-14)


def test_torch_gradient_reaches_cast_labels(torch: Any) -> None:
    """Labels of another dtype are cast to the logits' by validation; autograd carries the
    gradient back through the cast, in the labels' own dtype."""
    x = torch.tensor(X, dtype=torch.float32)
    z = torch.tensor(Z, dtype=torch.float64, requires_grad=True)
    logitloss.sigmoid_cross_entropy_with_logits(z, x).sum().backward()
    assert z.grad.dtype == torch.float64
    np.testing.assert_allclose(z.grad.numpy(), -X, rtol=1e-6)


def test_torch_python_scalar_pos_weight(torch: Any) -> None:
    """A Python-scalar pos_weight becomes a constant: gradients go to the tensors only."""
    x = torch.tensor(X, requires_grad=True)
    logitloss.weighted_cross_entropy_with_logits(Z, x, 2.0).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), logistic_expected(1.0, X, Z, 2.0)[0], rtol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
def test_torch_saves_only_the_inputs(torch: Any, name: str) -> None:
    """The graph keeps the inputs alive and nothing else: no softmax, no N x C intermediate."""
    case = CASES[name]
    inputs = [torch.tensor(v, requires_grad=True) for v in case.values]
    packed = []

    def pack(t: Any) -> Any:
        packed.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = case.loss(*inputs)
    backward = {"_LogisticBackward", "_SoftmaxBackward", "_SparseSoftmaxBackward"}
    assert type(loss.grad_fn).__name__ in backward  # the exact-gradient Function
    if name == "sparse":
        inputs.append(torch.as_tensor(K))  # the integer labels are saved for the backward too
    assert len(packed) == len(inputs)
    for saved, tensor in zip(packed, inputs, strict=True):
        assert saved.shape == tensor.shape
        if saved.is_floating_point():
            assert saved.data_ptr() == tensor.data_ptr()  # the input itself, not a copy
    saved_shapes = [tuple(t.shape) for t in loss.grad_fn.saved_tensors if t is not None]
    assert saved_shapes == [tuple(t.shape) for t in inputs]


def test_torch_without_grad_returns_plain_tensors(torch: Any) -> None:
    x = torch.tensor(X)
    for name, case in CASES.items():
        args = [torch.tensor(v) for v in case.values[1:]]
        out = case.loss(x, *args)
        assert isinstance(out, torch.Tensor) and out.grad_fn is None, name
        assert not out.requires_grad, name
        with torch.no_grad():
            out = case.loss(x.clone().requires_grad_(), *args)
        assert out.grad_fn is None and not out.requires_grad, name


def test_torch_float32_gradient_keeps_float32(torch: Any) -> None:
    """``x.grad`` is float32 for float32 logits, and exact: 2.5e-11 at x = 1e-10, z = 0.5,
    which PyTorch's own ``sigmoid(x) - z`` rounds to 0."""
    x = torch.tensor([1e-10, 3.0], dtype=torch.float32, requires_grad=True)
    z = torch.tensor([0.5, 0.25], dtype=torch.float32)
    logitloss.sigmoid_cross_entropy_with_logits(z, x).sum().backward()
    assert x.grad.dtype == torch.float32 and x.grad.device.type == "cpu"
    expected = np.array([2.5e-11, sigmoid(3.0) - 0.25], dtype=np.float32)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=2e-7)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    y = x.detach().clone().requires_grad_()
    bce(y, z, reduction="sum").backward()
    assert y.grad[0] == 0  # what differentiating the usual formula gives


def test_torch_gradient_at_zero_logit(torch: Any) -> None:
    """The true derivative at x = 0 (differentiating |x| would give 0 there)."""
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    z = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    logitloss.sigmoid_cross_entropy_with_logits(z, x).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0.5, 0.0, -0.5])


def test_torch_func_transforms(torch: Any) -> None:
    """torch.func's grad, vmap, jacfwd and hessian, and forward-mode AD, take the exact path."""
    from torch.autograd import forward_ad

    tf = torch.func
    x, z = torch.tensor(X), torch.tensor(P)
    expected = softmax_expected(-1)(np.ones(4), X, P)[0]
    loss = logitloss.softmax_cross_entropy_with_logits
    np.testing.assert_allclose(tf.grad(lambda x: loss(z, x).sum())(x), expected, rtol=1e-12)
    np.testing.assert_allclose(tf.vmap(tf.grad(loss, argnums=1))(z, x), expected, rtol=1e-12)
    np.testing.assert_allclose(tf.jacfwd(loss, argnums=1)(z[0], x[0]), expected[0], rtol=1e-12)
    p, s = softmax(X[0]), P[0].sum()
    hessian = s * (np.diag(p) - np.outer(p, p))
    np.testing.assert_allclose(tf.hessian(loss, argnums=1)(z[0], x[0]), hessian, rtol=1e-12)
    x_small = torch.tensor([1e-10], dtype=torch.float64)
    half = torch.tensor([0.5], dtype=torch.float64)
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x_small, torch.ones(1, dtype=torch.float64))
        out = logitloss.sigmoid_cross_entropy_with_logits(half, dual)
        tangent = forward_ad.unpack_dual(out).tangent
    assert tangent.item() == pytest.approx(2.5e-11, rel=1e-15)


# --- JAX ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_jax_check_grads(jax: Any, name: str) -> None:
    from jax.test_util import check_grads

    case = CASES[name]
    values = tuple(jax.numpy.asarray(v) for v in case.values)
    check_grads(case.loss, values, order=2, modes=["fwd", "rev"])


@pytest.mark.parametrize("name", list(CASES))
def test_jax_gradient_is_the_exact_one(jax: Any, name: str) -> None:
    """The VJP (also under jit) is what the ``*_grad`` functions return for the same arrays, bit
    for bit, and the textbook's."""
    case = CASES[name]
    g = upstream_for(case)
    values = tuple(jax.numpy.asarray(v) for v in case.values)
    argnums = tuple(range(len(values)))

    def weighted_sum(*a: Any) -> Any:
        return (jax.numpy.asarray(g) * case.loss(*a)).sum()

    grads = jax.grad(weighted_sum, argnums)(*values)
    jitted = jax.jit(jax.grad(weighted_sum, argnums))(*values)
    expected = case.expected(g, *case.values)
    for wrt, grad, jit_grad, textbook in zip(WRT, grads, jitted, expected, strict=False):
        assert isinstance(grad, jax.Array)
        exact = case.grad(jax.numpy.asarray(g), wrt, *values)
        np.testing.assert_array_equal(np.asarray(grad), np.asarray(exact), err_msg=wrt)
        # XLA fuses a jitted computation differently from eager ops (a few ULP apart where the
        # gradient cancels): compare with the *_grad function jitted too.
        jit_exact = jax.jit(lambda *a, wrt=wrt: case.grad(jax.numpy.asarray(g), wrt, *a))
        np.testing.assert_array_equal(np.asarray(jit_grad), np.asarray(jit_exact(*values)))
        np.testing.assert_allclose(np.asarray(grad), textbook, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", list(CASES))
def test_jax_vmap_and_hessian(jax: Any, name: str) -> None:
    jnp = jax.numpy
    case = CASES[name]
    values = tuple(jnp.asarray(v) for v in case.values)
    batch = (jnp.stack([values[0], values[0] / 2, -values[0]]), *values[1:])
    in_axes = (0,) + (None,) * (len(values) - 1)
    losses = jax.vmap(case.loss, in_axes)(*batch)
    grads = jax.vmap(jax.grad(lambda *a: case.loss(*a).sum()), in_axes)(*batch)
    for i in range(3):
        one = (batch[0][i], *values[1:])
        np.testing.assert_allclose(losses[i], case.loss(*one), rtol=1e-15)
        np.testing.assert_allclose(grads[i], case.grad(None, "logits", *one), rtol=1e-15)
    hessian = jax.hessian(lambda *a: case.loss(*a).sum())(*values)
    flat = np.asarray(hessian).reshape(X.size, X.size)
    assert np.isfinite(flat).all()
    np.testing.assert_allclose(flat, flat.T, rtol=1e-12, atol=1e-15)


def test_jax_results_are_jax_arrays(jax: Any) -> None:
    x = jax.numpy.asarray(X)
    for name, case in CASES.items():
        assert isinstance(case.loss(x, *case.values[1:]), jax.Array), name


def test_jax_float32_without_x64() -> None:
    """Without x64 mode (no float64) the gradient is formed in float32, by the same formulas."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    with jax.enable_x64(False):
        x = jnp.asarray([1e-10, 3.0], dtype=jnp.float32)
        z = jnp.asarray([0.5, 0.25], dtype=jnp.float32)
        grad = jax.grad(lambda x: logitloss.sigmoid_cross_entropy_with_logits(z, x).sum())(x)
    assert grad.dtype == jnp.float32
    np.testing.assert_allclose(grad, [2.5e-11, sigmoid(3.0) - 0.25], rtol=1e-6)


# --- Both: the exact gradients through autodiff at the edges -------------------------------------


@pytest.fixture(params=["torch", "jax"])
def autodiff_grad(request: pytest.FixtureRequest) -> Iterator[Callable[..., np.ndarray]]:
    """``grad(loss, *values)``: the gradient of ``loss(*values).sum()`` w.r.t. the first
    value, through the library's autodiff, in float64."""
    if request.param == "torch":
        torch = pytest.importorskip("torch")

        def grad(loss: Callable[..., Any], x: Any, *others: Any) -> np.ndarray:
            t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
            loss(t, *(torch.tensor(o, dtype=torch.float64) for o in others)).sum().backward()
            return t.grad.numpy()

        yield grad
    else:
        jax = pytest.importorskip("jax")

        def grad(loss: Callable[..., Any], x: Any, *others: Any) -> np.ndarray:
            args = [jax.numpy.asarray(a, dtype=jax.numpy.float64) for a in (x, *others)]
            return np.asarray(jax.grad(lambda *a: loss(*a).sum())(*args))

        with jax.enable_x64(True):
            yield grad


def test_edge_gradients(autodiff_grad: Callable[..., np.ndarray]) -> None:
    sig = CASES["sigmoid"].loss
    # sigma(x) - z cancels to 4e-7 relative error here; the exact formula keeps every bit.
    assert autodiff_grad(sig, [1e-10], [0.5])[0] == pytest.approx(2.5e-11, rel=1e-15)
    np.testing.assert_array_equal(autodiff_grad(sig, [np.inf, np.inf], [1.0, 0.0]), [0.0, 1.0])
    np.testing.assert_array_equal(autodiff_grad(sig, [-np.inf, -np.inf], [1.0, 0.0]), [-1, 0])
    weighted = CASES["weighted"].loss
    assert autodiff_grad(weighted, [0.0], [0.0], 2.0)[0] == 0.5
    np.testing.assert_array_equal(autodiff_grad(weighted, [-np.inf], [0.5], 3.0), [-1.5])
    # Labels summing to 2: the true derivative softmax * 2 - z, not TF's softmax - z.
    x, z = np.array([0.3, -1.2, 2.0]), np.array([1.5, 0.25, 0.25])
    sm = CASES["softmax"].loss
    np.testing.assert_allclose(autodiff_grad(sm, x, z), softmax(x) * 2 - z, rtol=1e-15)
    # A confident prediction keeps its small gradient: -2.06e-9, not 1/(1 + T) - 1 = 0.
    assert autodiff_grad(sm, [20.0, 0.0], [1.0, 0.0])[0] == pytest.approx(
        -2.061153618190204e-9, 1e-15
    )


# --- Second derivatives against their closed forms ----------------------------------------------


def hvp_torch(loss: Callable[..., Any], values: tuple, v: np.ndarray) -> list[np.ndarray]:
    """d/d(each value) of <grad_x loss.sum(), v>, by double backward."""
    import torch

    inputs = [torch.tensor(a, requires_grad=True) for a in values]
    (gx,) = torch.autograd.grad(loss(*inputs).sum(), inputs[0], create_graph=True)
    return [g.numpy() for g in torch.autograd.grad((gx * torch.tensor(v)).sum(), inputs)]


def hvp_jax(loss: Callable[..., Any], values: tuple, v: np.ndarray) -> list[np.ndarray]:
    """The same by reverse over reverse, and for the logits also forward over reverse."""
    import jax

    args = tuple(jax.numpy.asarray(a) for a in values)

    def grad_x(*a: Any) -> Any:
        return jax.grad(lambda *b: loss(*b).sum())(*a)

    argnums = tuple(range(len(args)))
    mixed = jax.grad(lambda *a: (grad_x(*a) * v).sum(), argnums)(*args)
    _, forward = jax.jvp(lambda x: grad_x(x, *args[1:]), (args[0],), (jax.numpy.asarray(v),))
    np.testing.assert_allclose(forward, mixed[0], rtol=1e-13, atol=1e-16)
    return [np.asarray(m) for m in mixed]


def hvp_expected(name: str, values: tuple, v: np.ndarray) -> list[np.ndarray]:
    """Closed forms: the logistic d2/dx2 = l sigma(x) sigma(-x), l = (1 - z) + q z, with
    d2/dxdz = -sigma(x) - q sigma(-x) and d2/dxdq = -z sigma(-x); softmax's Hessian per row
    S (diag(p) - p p^T) for S = sum z, and d2/dx_j dz_k = p_j - [j = k]."""
    x = values[0]
    if name in ("sigmoid", "weighted", "weighted-scalar"):
        z = values[1]
        q = values[2] if len(values) == 3 else np.array(1.0)
        s, s_neg = sigmoid(x), sigmoid(-x)
        out = [((1 - z) + q * z) * s * s_neg * v, (-s - q * s_neg) * v]
        return [*out, sum_to(-z * s_neg * v, q.shape)] if len(values) == 3 else out
    axis = 0 if name == "softmax-axis0" else -1
    z = np.eye(x.shape[-1])[K] if name == "sparse" else np.broadcast_to(values[1], x.shape)
    p = softmax(x, axis)
    pv = (p * v).sum(axis, keepdims=True)
    hx = z.sum(axis, keepdims=True) * (p * v - p * pv)
    return (
        [hx]
        if name == "sparse"
        else [hx, sum_to(np.broadcast_to(pv, x.shape) - v, values[1].shape)]
    )


@pytest.mark.parametrize("library", ["torch", "jax"])
@pytest.mark.parametrize("name", list(CASES))
def test_hessian_vector_products(library: str, name: str) -> None:
    module = pytest.importorskip(library)
    case = CASES[name]
    values = case.values
    if name.startswith("softmax"):
        values = (values[0], values[1] * 2)  # labels summing to 2 (or 2 per column): S matters
    if library == "jax":
        with module.enable_x64(True):
            got = hvp_jax(case.loss, values, V)
    else:
        got = hvp_torch(case.loss, values, V)
    for i, (g, e) in enumerate(zip(got, hvp_expected(name, values, V), strict=True)):
        np.testing.assert_allclose(g, e, rtol=1e-12, atol=1e-14, err_msg=WRT[i])


def test_jax_jit_out_of_range_sparse_label_is_nan() -> None:
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    fn = jax.jit(logitloss.sparse_softmax_cross_entropy_with_logits)
    out = np.asarray(fn(jnp.asarray([0, 3, -1]), jnp.zeros((3, 3))))
    assert out[0] == pytest.approx(np.log(3), rel=1e-6)
    assert np.isnan(out[1:]).all()


def test_jax_jit_with_concrete_sparse_labels_closed_over() -> None:
    """Labels made outside jit and closed over are concrete: checked eagerly, not traced."""
    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    labels = jnp.asarray([0, 2])
    fn = jax.jit(lambda x: logitloss.sparse_softmax_cross_entropy_with_logits(labels, x))
    out = np.asarray(fn(jnp.zeros((2, 3))))
    np.testing.assert_allclose(out, [np.log(3)] * 2, rtol=1e-6)
    bad = jnp.asarray([0, 3])
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\)"):
        jax.jit(lambda x: logitloss.sparse_softmax_cross_entropy_with_logits(bad, x))(
            jnp.zeros((2, 3))
        )


def test_jax_jit_keeps_the_exact_gradient_next_to_its_zero() -> None:
    """Under ``jax.jit`` the double-float steps of the sigmoid gradient's fix near its zero
    survive XLA's algebraic simplifier, which rewrote ``(1 + u) - 1`` in ``exp_dd`` to ``u``
    and so dropped the low part of ``e^-|x|``: at x = 1e-10, z = 0.5 the float32 gradient
    came out one ULP above the correctly rounded 2.5e-11. With the fix intact (float64
    inside, rounded once) these points round correctly, as eagerly."""
    jax = pytest.importorskip("jax")
    mpmath = pytest.importorskip("mpmath")
    jnp = jax.numpy
    x = np.array([1e-10, 2.0, -3.0, 0.5], dtype=np.float32)
    # Labels next to sigmoid(x): the gradient sigmoid(x) - z cancels to a tiny value.
    z = np.float32([0.5, 0.8807970779778823, 0.04742587317756678, 0.6224593312018546])
    with mpmath.workdps(60):
        exact = np.array([
            float(1 / (1 + mpmath.exp(-mpmath.mpf(float(a)))) - mpmath.mpf(float(b)))
            for a, b in zip(x, z, strict=True)
        ])  # fmt: skip
    with jax.enable_x64(True):
        zj = jnp.asarray(z)

        def total(v: Any) -> Any:
            return logitloss.sigmoid_cross_entropy_with_logits(zj, v).sum()

        grad = np.asarray(jax.jit(jax.grad(total))(jnp.asarray(x)))
    assert grad.dtype == np.float32
    ulps = np.abs(grad.astype(np.float64) - exact) / np.spacing(np.abs(grad))
    assert np.all(ulps <= 0.5 + 2.0**-20), (grad, exact, ulps)
