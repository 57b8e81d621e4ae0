"""The reduced JAX training losses on CPU by the fused kernel (``_autodiff.jax_training``: an
XLA FFI custom call, ``_autodiff.jax_ffi``, in a ``custom_jvp``) against the composed path they
replace, and bit for bit against the NumPy fused path.

The lean path is the public function (``_api.training`` hands JAX logits to
``jax_training.reduced``); the reference is the same call inside ``logitloss.reference_path()``
(the composition of the exact ``jax_rules``), traced in the same ``jax.jit``. Every option
combination, x64 on and off: the value and the gradients with respect to the logits,
probability labels, class or element weights and ``pos_weight``; forward mode, second order,
``vmap``, dtypes, label errors, and mpmath for the values.
"""

from __future__ import annotations

import itertools
from typing import Any

import mpmath as mp
import numpy as np
import pytest

import logitloss

jax = pytest.importorskip("jax")
pytest.importorskip("numba")
jnp = jax.numpy
jax_training = pytest.importorskip("logitloss._autodiff.jax_training")

mp.mp.dps = 50
N, C = 24, 16  # 384 logits


def _inputs(n: int = N, c: int = C, *, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, c, n)
    labels[1] = -100  # ignored
    return {
        "x": (rng.standard_normal((n, c)) * 3).astype(np.float32),
        "labels": labels,
        "probs": rng.dirichlet(np.ones(c), n).astype(np.float32),
        "w": rng.uniform(0.25, 2.0, c).astype(np.float32),
        "mask": rng.uniform(size=n) < 0.75,
        "z": rng.uniform(0, 1, (n, c)).astype(np.float32),
        "q": rng.uniform(0.5, 3.0, c).astype(np.float32),
        "ew": rng.uniform(0.0, 2.0, (n, c)).astype(np.float32),
        "emask": rng.uniform(size=(n, c)) < 0.8,
    }


def _ulps(got: Any, exact: Any, *, row: bool = False) -> float:
    """The largest error of ``got`` in float32 ULP of ``exact``, elementwise; with ``row``, in
    ULP of the largest entry of each row (XLA's float32 mode holds no per-element bound where a
    gradient entry cancels to nearly 0)."""
    got, exact = np.asarray(got, np.float64), np.asarray(exact, np.float64)
    scale = np.abs(exact)
    if row and exact.ndim >= 1:
        scale = np.maximum(scale, np.max(np.abs(exact), axis=-1, keepdims=True))
    ulp = np.spacing(np.maximum(scale, 1e-30).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(got - exact) / ulp, initial=0.0))


def _both(fn: Any, argnums: tuple[int, ...], *, truth: bool = False, jit: bool = True) -> Any:
    """A function giving ``value_and_grad`` of ``fn`` on the lean path and on the reference
    path, and with ``truth`` the reference on the float inputs cast to float64 (x64); jitted
    (one compilation for all) or eager (JAX caches each primitive's compilation: many option
    combinations cost less time so)."""
    vg = jax.value_and_grad(fn, argnums)

    def both(*args: Any) -> tuple:
        lean = vg(*args)
        with logitloss.reference_path():
            if not truth:
                return lean, vg(*args)
            wide = [a.astype(jnp.float64) if a.dtype.kind == "f" else a for a in args]
            return lean, vg(*args), vg(*wide)

    return jax.jit(both) if jit else both


def _flat(result: tuple) -> list[np.ndarray]:
    value, grads = result
    return [np.asarray(value), *(np.asarray(g) for g in grads)]


def _compare(fn: Any, args: tuple, argnums: tuple[int, ...], what: Any, *, jit: bool) -> None:
    """The lean path against the truth (the reference path on float64 inputs) and the
    reference. x64 (float32 inputs computed in float64): within 1 float32 ULP of the truth,
    elementwise, and never further from it than the reference + 1 ULP. Without x64 the value
    and the logits' gradient are the same kernel's, as close; the operands' gradients come
    from the composed float32 path, which rounds in another order (the mean's derivative
    cancels across the batch): within twice its error + 64 ULP of each row's largest entry."""
    with jax.enable_x64(True):
        lean, reference, truth = map(_flat, _both(fn, argnums, truth=True, jit=jit)(*args))
    for i, (g, e, t) in enumerate(zip(lean, reference, truth, strict=True)):
        assert g.dtype == e.dtype == np.float32 and g.shape == e.shape, (what, i)
        err, ref_err = _ulps(g, t), _ulps(e, t)
        assert err <= 1.0 or err <= ref_err + 1.0, (what, "x64", i, err, ref_err)
    with jax.enable_x64(False):
        lean, reference = map(_flat, _both(fn, argnums, jit=jit)(*args))
    for i, (g, e, t) in enumerate(zip(lean, reference, truth, strict=True)):
        assert g.dtype == e.dtype and g.shape == e.shape, (what, i)
        if i <= 1:  # the value, the logits' gradient
            err, ref_err = _ulps(g, t), _ulps(e, t)
            assert err <= 1.0 or err <= ref_err + 1.0, (what, "x32", i, err, ref_err)
        else:
            err, ref_err = _ulps(g, t, row=True), _ulps(e, t, row=True)
            assert err <= 2.0 * ref_err + 64.0, (what, "x32", i, err, ref_err)


def _uses_callback(fn: Any, *args: Any) -> bool:
    """Whether the traced ``fn`` calls the fused kernel (its XLA FFI custom call)."""
    return "target_name=logitloss_" in str(jax.make_jaxpr(fn)(*args))


# --- cross_entropy -----------------------------------------------------------------------------

CE_OPTIONS = list(itertools.product(
    ["index", "probs"], [False, True], [False, True], [0.0, 0.1], [0.0, 0.01], ["mean", "sum"]
))  # fmt: skip


def _ce(options: tuple, mask: Any, *, axis: int = -1, ignore_index: int = -100) -> Any:
    """The loss as a function of (x, labels, w) with these options."""
    _, weighted, masked, eps, zl, red = options

    def loss(x: Any, labels: Any, w: Any) -> Any:
        return logitloss.cross_entropy(
            x, labels, axis=axis, weight=w if weighted else None, ignore_index=ignore_index,
            label_smoothing=eps, z_loss=zl, where=mask if masked else None, reduction=red,
        )  # fmt: skip

    return loss


def _ce_args(d: dict, kind: str) -> tuple[tuple, tuple[int, ...]]:
    labels = jnp.asarray(d["labels"] if kind == "index" else d["probs"])
    args = (jnp.asarray(d["x"]), labels, jnp.asarray(d["w"]))
    return args, (0, 2) if kind == "index" else (0, 1, 2)


def test_cross_entropy_equals_reference() -> None:
    d = _inputs(seed=1)
    mask = d["mask"]
    for i, options in enumerate(CE_OPTIONS):
        args, argnums = _ce_args(d, options[0])
        _compare(_ce(options, mask), args, argnums, options, jit=i % 9 == 0)


def test_cross_entropy_class_axis_and_broadcast_labels() -> None:
    """Classes on axis 1 of a 3-d batch (PyTorch's layout), probabilities broadcast from a
    row shared by the batch, ``ignore_index=-1``."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 16, 8)) * 2).astype(np.float32)
    labels = rng.integers(0, 16, (3, 8))
    labels[0, 1] = -1
    shared = rng.dirichlet(np.ones(16)).astype(np.float32).reshape(1, 16, 1)
    w = rng.uniform(0.5, 2, 16).astype(np.float32)
    mask = rng.uniform(size=(3, 8)) < 0.8
    for lab, eps, zl in [(labels, 0.2, 0.05), (shared, 0.0, 0.0)]:
        kind = "index" if lab.dtype.kind == "i" else "probs"
        fn = _ce((kind, True, True, eps, zl, "mean"), mask, axis=1, ignore_index=-1)
        argnums = (0, 2) if kind == "index" else (0, 1, 2)
        args = (jnp.asarray(x), jnp.asarray(lab), jnp.asarray(w))
        _compare(fn, args, argnums, (kind, eps, zl), jit=True)


def test_the_callback_is_taken_where_it_applies() -> None:
    d = _inputs(seed=2)
    x, labels = jnp.asarray(d["x"]), jnp.asarray(d["labels"])
    z = jnp.asarray(d["z"])

    def ce(a: Any) -> Any:
        return logitloss.cross_entropy(a, labels)

    def bce(a: Any) -> Any:
        return logitloss.binary_cross_entropy_with_logits(a, z, reduction="sum")

    for fn in (ce, bce):
        assert _uses_callback(jax.grad(fn), x)
        with logitloss.reference_path():
            assert not _uses_callback(jax.grad(fn), x)
    # Small inputs take it too (the custom call costs less than XLA's composed computation);
    # empty ones and unreduced losses keep the composed path.
    small = x[:4, :4]
    assert _uses_callback(lambda a: logitloss.cross_entropy(a, labels[:4] % 4), small)
    assert x[:0].size < jax_training.CALLBACK_MIN
    assert not _uses_callback(lambda a: logitloss.cross_entropy(a, labels[:0]), x[:0])
    assert not _uses_callback(lambda a: logitloss.cross_entropy(a, labels, reduction="none"), x)


def _mp_index_loss(row: np.ndarray, label: int, w: np.ndarray, eps: float, zl: float) -> Any:
    """PyTorch's smoothed, class-weighted index loss plus ``zl w_y lse^2``, at 50 digits."""
    xs = [mp.mpf(float(v)) for v in row]
    ws = [mp.mpf(float(v)) for v in w]
    lse = mp.log(mp.fsum(mp.exp(v) for v in xs))
    eps, c = mp.mpf(eps), len(xs)
    spread = mp.fsum(wc * (lse - v) for wc, v in zip(ws, xs, strict=True))
    loss = (1 - eps) * ws[label] * (lse - xs[label]) + eps / c * spread
    return loss + mp.mpf(zl) * ws[label] * lse**2


def test_cross_entropy_against_mpmath() -> None:
    d = _inputs(seed=4)
    x, labels, w, mask = d["x"], d["labels"], d["w"], d["mask"]
    rows = [i for i in range(N) if labels[i] != -100 and mask[i]]
    for eps, zl, red in itertools.product([0.0, 0.3], [0.0, 0.02], ["mean", "sum"]):
        total = mp.fsum(_mp_index_loss(x[i], labels[i], w, eps, zl) for i in rows)
        if red == "mean":
            total /= mp.fsum(mp.mpf(float(w[labels[i]])) for i in rows)
        got = jax.jit(
            lambda a, eps=eps, zl=zl, red=red: logitloss.cross_entropy(
                a, jnp.asarray(labels), weight=jnp.asarray(w), label_smoothing=eps, z_loss=zl,
                where=jnp.asarray(mask), reduction=red)
        )(jnp.asarray(x))  # fmt: skip
        assert abs(float(got) - float(total)) <= np.spacing(np.float32(float(total))), (eps, zl)


def test_out_of_range_labels() -> None:
    """Eager: the composed path's ValueError for counted labels (not for ignored or masked
    ones). Under jit: a NaN loss and an all-NaN gradient."""
    d = _inputs(seed=5)
    x = jnp.asarray(d["x"])
    bad = d["labels"].copy()
    bad[3] = C
    with pytest.raises(ValueError, match=r"`labels` must lie in \[0, 16\).*from 0 to 16"):
        logitloss.cross_entropy(x, jnp.asarray(bad))
    with pytest.raises(ValueError, match=r"must lie in \[0, 16\)"):
        jax.value_and_grad(logitloss.cross_entropy)(x, jnp.asarray(bad))
    mask = np.ones(N, bool)
    mask[3] = False
    logitloss.cross_entropy(x, jnp.asarray(bad), where=jnp.asarray(mask))
    logitloss.cross_entropy(x, jnp.asarray(np.where(bad == -100, 0, bad)), ignore_index=C)
    for weighted, eps, red in itertools.product([False, True], [0.0, 0.1], ["mean", "sum"]):
        value, grad = jax.jit(jax.value_and_grad(
            lambda a, y, weighted=weighted, eps=eps, red=red: logitloss.cross_entropy(
                a, y, weight=jnp.asarray(d["w"]) if weighted else None, label_smoothing=eps,
                reduction=red)))(x, jnp.asarray(bad))  # fmt: skip
        assert np.isnan(value) and np.isnan(np.asarray(grad)).all()


def test_nothing_counted_is_zero_with_zero_gradient() -> None:
    x = jnp.asarray(_inputs(seed=6)["x"])
    labels = jnp.full((N,), -100)
    for red in ("mean", "sum"):
        value, grad = jax.jit(jax.value_and_grad(lambda a, red=red: logitloss.cross_entropy(
            a, labels, label_smoothing=0.1, z_loss=0.1, reduction=red)))(x)  # fmt: skip
        assert float(value) == 0.0 and not np.asarray(grad).any()


# --- forward mode, second order, vmap, dtypes --------------------------------------------------


def _losses(d: dict) -> dict[str, Any]:
    labels, mask, emask = jnp.asarray(d["labels"]), jnp.asarray(d["mask"]), jnp.asarray(d["emask"])
    return {
        "index": lambda x, w, p: logitloss.cross_entropy(
            x, labels, weight=w, label_smoothing=0.1, z_loss=0.01, where=mask),
        "probs": lambda x, w, p: logitloss.cross_entropy(
            x, p, weight=w, label_smoothing=0.1, z_loss=0.01, reduction="sum"),
        "bce": lambda x, w, p: logitloss.binary_cross_entropy_with_logits(
            x, p, pos_weight=w, weight=p, label_smoothing=0.1, where=emask),
    }  # fmt: skip


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
def test_forward_mode_agrees(x64: bool) -> None:
    """``jax.jvp`` (tangents in the logits and every float operand at once, and in the logits
    alone) is the reference's."""
    d = _inputs(seed=7)
    rng = np.random.default_rng(0)
    with jax.enable_x64(x64):
        primals = tuple(jnp.asarray(d[k]) for k in ("x", "w", "probs"))
        tangents = tuple(jnp.asarray(rng.standard_normal(p.shape), p.dtype) for p in primals)
        only_x = (tangents[0], jnp.zeros_like(primals[1]), jnp.zeros_like(primals[2]))
        for name, fn in _losses(d).items():
            for t in (tangents, only_x):

                def both(p: tuple, t: tuple = t, fn: Any = fn) -> tuple:
                    lean = jax.jvp(fn, p, t)
                    with logitloss.reference_path():
                        return lean, jax.jvp(fn, p, t)

                lean, reference = jax.jit(both)(primals)
                assert _uses_callback(lambda p, t=t, fn=fn: jax.jvp(fn, p, t), primals)
                for g, e in zip(lean, reference, strict=True):
                    scale = float(np.max(np.abs(np.asarray(e))))
                    assert abs(float(g) - float(e)) <= 16 * np.spacing(np.float32(scale)), name


def test_second_order_is_the_reference() -> None:
    """Hessians (through the ``(value, grad)`` rule) and mixed second derivatives."""
    d = _inputs(seed=8)
    with jax.enable_x64(True):
        primals = tuple(jnp.asarray(d[k]) for k in ("x", "w", "probs"))
        for name, fn in _losses(d).items():
            h = jax.jit(jax.hessian(fn, (0, 1)))(*primals)
            with logitloss.reference_path():
                expected = jax.jit(jax.hessian(fn, (0, 1)))(*primals)
            for got, want in zip(jax.tree.leaves(h), jax.tree.leaves(expected), strict=True):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7, err_msg=name)


def test_vmap_is_the_loop_and_cotangents_scale() -> None:
    d = _inputs(seed=9)
    labels, z = jnp.asarray(d["labels"]), jnp.asarray(d["z"])
    batch = jnp.stack([jnp.asarray(d["x"]), jnp.asarray(d["x"]) / 2, -jnp.asarray(d["x"])])
    for fn in (lambda a: logitloss.cross_entropy(a, labels, label_smoothing=0.1),
               lambda a: logitloss.binary_cross_entropy_with_logits(a, z)):  # fmt: skip
        values, grads = jax.jit(jax.vmap(jax.value_and_grad(fn)))(batch)
        for i in range(3):
            value, grad = jax.value_and_grad(fn)(batch[i])
            assert values[i] == value
            np.testing.assert_array_equal(grads[i], grad)
        np.testing.assert_allclose(jax.grad(lambda a, fn=fn: 3 * fn(a))(batch[0]),
                                   3 * jax.grad(fn)(batch[0]), rtol=1e-6)  # fmt: skip
    # vmap over the labels too, and a batch of probability targets.
    ys = jnp.stack([labels, jnp.roll(labels, 1)])
    values = jax.vmap(lambda a, y: logitloss.cross_entropy(a, y))(batch[:2], ys)
    for i in range(2):
        assert values[i] == logitloss.cross_entropy(batch[i], ys[i])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32", "float64"])
def test_dtypes(dtype: str) -> None:
    """The logits' dtype in, the same dtype out (float64 with x64), equal to the reference."""
    d = _inputs(seed=10)
    with jax.enable_x64(dtype == "float64"):
        x = jnp.asarray(d["x"]).astype(dtype)
        p = jnp.asarray(d["z"]).astype(dtype)
        labels = jnp.asarray(d["labels"])
        for fn in (lambda a: logitloss.cross_entropy(a, labels, label_smoothing=0.1),
                   lambda a: logitloss.binary_cross_entropy_with_logits(a, p)):  # fmt: skip
            lean, reference = _both(fn, (0,))(x)
            for g, e in zip(jax.tree.leaves(lean), jax.tree.leaves(reference), strict=True):
                assert g.dtype == e.dtype == x.dtype
                tol = 1e-12 if dtype == "float64" else 2 * float(jnp.finfo(x.dtype).eps)
                np.testing.assert_allclose(np.asarray(g, np.float64), np.asarray(e, np.float64),
                                           rtol=tol, atol=tol * 1e-3)  # fmt: skip


# --- binary_cross_entropy ----------------------------------------------------------------------

BCE_OPTIONS = list(itertools.product(
    [False, True], [False, True], [False, True], [0.0, 0.2], ["mean", "sum"]
))  # fmt: skip


def test_binary_cross_entropy_equals_reference() -> None:
    d = _inputs(seed=11)
    args = tuple(jnp.asarray(d[k]) for k in ("x", "z", "q", "ew"))
    emask = d["emask"]
    for i, options in enumerate(BCE_OPTIONS):
        has_q, has_w = options[:2]

        def fn(x: Any, z: Any, q: Any, w: Any, options: tuple = options) -> Any:
            has_q, has_w, masked, eps, red = options
            return logitloss.binary_cross_entropy_with_logits(
                x, z, pos_weight=q if has_q else None, weight=w if has_w else None,
                label_smoothing=eps, where=emask if masked else None, reduction=red)  # fmt: skip

        argnums = (0, 1) + ((2,) if has_q else ()) + ((3,) if has_w else ())
        _compare(fn, args, argnums, options, jit=i % 7 == 0)


def test_binary_cross_entropy_against_mpmath() -> None:
    d = _inputs(seed=12)
    x, z, q, w = d["x"], d["z"], d["q"], d["ew"]
    eps = 0.2
    total, count = mp.mpf(0), mp.mpf(0)
    for i, j in itertools.product(range(N), range(C)):
        xi, zi = mp.mpf(float(x[i, j])), mp.mpf(float(z[i, j])) * (1 - mp.mpf(eps)) + eps / 2
        qi, wi = mp.mpf(float(q[j])), mp.mpf(float(w[i, j]))
        total += wi * (qi * zi * mp.log1p(mp.exp(-xi)) + (1 - zi) * mp.log1p(mp.exp(xi)))
        count += wi
    for red in ("mean", "sum"):
        expected = total / count if red == "mean" else total
        got = jax.jit(lambda a, red=red: logitloss.binary_cross_entropy_with_logits(
            a, jnp.asarray(z), pos_weight=jnp.asarray(q), weight=jnp.asarray(w),
            label_smoothing=eps, reduction=red))(jnp.asarray(x))  # fmt: skip
        assert abs(float(got) - float(expected)) <= np.spacing(np.float32(float(expected))), red


# --- the XLA FFI handlers against the NumPy fused path, bit for bit ---------------------------

jax_ffi = pytest.importorskip("logitloss._autodiff.jax_ffi")
from logitloss._losses import training as fused  # noqa: E402

# Each (dtype, x64) case; index labels are int64 with x64, int32 without.
FFI_DTYPES = [("float32", False), ("float32", True), ("float64", True), ("float16", False),
              ("bfloat16", False)]  # fmt: skip
# Below and above runtime.PARALLEL_MIN (65536) logits; (8192, 10) also groups short rows.
FFI_SIZES = [(24, 16), (8192, 10)]


def _numpy(a: Any) -> Any:
    """The JAX array's NumPy view (read-only): the NumPy path's kernels for read-only arrays,
    where the handlers link the writeable variant; ``runtime`` compiles both with the same
    LLVM options, so they round alike."""
    return None if a is None else np.asarray(a)


def _same(got: tuple, want: Any, dtype: Any, what: Any) -> None:
    value, grad = (np.asarray(a) for a in got)
    assert value.dtype == grad.dtype == dtype, what
    expected = np.asarray(want.value, dtype)
    assert value.tobytes() == expected.tobytes(), (what, value, expected)
    assert grad.tobytes() == np.asarray(want.grad, dtype).tobytes(), what


def _ffi_cases(n_all: int, seed: int) -> list:
    """The full product for the first case, a sample of the options for the others."""
    rng = np.random.default_rng(seed)
    cases = []
    for i, ((dtype, x64), size) in enumerate(itertools.product(FFI_DTYPES, FFI_SIZES)):
        picks = range(n_all) if i == 0 else rng.choice(n_all, 6, replace=False)
        cases += [(dtype, x64, size, int(k)) for k in picks]
    return cases


def test_ffi_cross_entropy_is_the_numpy_path_bit_for_bit() -> None:
    for dtype, x64, (n, c), k in _ffi_cases(len(CE_OPTIONS), seed=20):
        kind, weighted, masked, eps, zl, red = CE_OPTIONS[k]
        d = _inputs(n, c, seed=k)
        with jax.enable_x64(x64):
            x = jnp.asarray(d["x"]).astype(dtype)
            labels = jnp.asarray(d["labels"], jnp.int64 if x64 else jnp.int32)
            probs = jnp.asarray(d["probs"]).astype(dtype)
            w = jnp.asarray(d["w"]).astype(dtype) if weighted else None
            mask = jnp.asarray(d["mask"]) if masked else None
            operands = (labels, None, w, mask) if kind == "index" else (None, probs, w, mask)
            options = {"axis": -1, "ignore_index": -100, "smoothing": eps, "z_scale": zl,
                       "reduction": red}  # fmt: skip
            got = jax_ffi.cross_entropy(x, *operands, **options)
            want = fused.reduced("cross_entropy", _numpy(x), tuple(map(_numpy, operands)), options)
            _same(got, want, x.dtype, (dtype, x64, n, CE_OPTIONS[k]))


BCE_FFI_OPTIONS = list(itertools.product(
    [None, "class", "single", "full"], [False, True], [False, True], [0.0, 0.2], ["mean", "sum"]
))  # fmt: skip


def test_ffi_binary_cross_entropy_is_the_numpy_path_bit_for_bit() -> None:
    for dtype, x64, (n, c), k in _ffi_cases(len(BCE_FFI_OPTIONS), seed=21):
        q_kind, weighted, masked, eps, red = BCE_FFI_OPTIONS[k]
        d = _inputs(n, c, seed=k)
        with jax.enable_x64(x64):
            x = jnp.asarray(d["x"]).astype(dtype)
            z = jnp.asarray(d["z"]).astype(dtype)
            q = {None: None, "class": d["q"], "single": d["q"][:1], "full": d["ew"] + 0.5}[q_kind]
            q = None if q is None else jnp.asarray(q).astype(dtype)
            w = jnp.asarray(d["ew"]).astype(dtype) if weighted else None
            if masked:
                emask = jnp.asarray(d["emask"])
                w = emask.astype(dtype) if w is None else jnp.where(emask, w, 0).astype(dtype)
            options = {"smoothing": eps, "reduction": red}
            got = jax_ffi.binary_cross_entropy(x, z, q, w, **options)
            operands = tuple(map(_numpy, (z, q, w)))
            want = fused.reduced("binary_cross_entropy", _numpy(x), operands, options)
            _same(got, want, x.dtype, (dtype, x64, n, BCE_FFI_OPTIONS[k]))


def test_ffi_class_axis_not_last_and_bad_labels() -> None:
    """Classes on axis 1, index and probability targets, bit for bit; labels out of range:
    the NumPy path's ValueError, the handler's NaN value and gradient."""
    rng = np.random.default_rng(22)
    x = jnp.asarray((rng.standard_normal((3, 16, 8)) * 2).astype(np.float32))
    labels = jnp.asarray(rng.integers(0, 16, (3, 8)), jnp.int32)
    probs = jnp.asarray(rng.dirichlet(np.ones(16), (3, 8)).transpose(0, 2, 1), jnp.float32)
    w = jnp.asarray(rng.uniform(0.5, 2, 16), jnp.float32)
    options = {"axis": 1, "ignore_index": -1, "smoothing": 0.1, "z_scale": 0.01,
               "reduction": "mean"}  # fmt: skip
    for operands in ((labels, None, w, None), (None, probs, w, None)):
        got = jax.jit(lambda a, o=operands: jax_ffi.cross_entropy(a, *o, **options))(x)
        want = fused.reduced("cross_entropy", _numpy(x), tuple(map(_numpy, operands)), options)
        _same(got, want, np.float32, "axis 1")
    bad = labels.at[1, 2].set(16)
    with pytest.raises(ValueError, match="must lie in"):
        fused.reduced("cross_entropy", np.asarray(x), (np.asarray(bad), None, None, None), options)
    value, grad = jax_ffi.cross_entropy(x, bad, None, None, None, **options)
    assert np.isnan(value) and np.isnan(np.asarray(grad)).all()


def test_ffi_reads_the_call_frame_where_xla_writes_it() -> None:
    """The probe handler writes back the counts, each argument's dtype, rank and dims, and an
    array attribute: a wrong offset in ``_kernels.xla_ffi`` reads something else. A handler
    given an operand of the wrong dtype answers with XLA's error and its message (the error's
    constructor found in the API struct)."""
    from logitloss._kernels import xla_ffi

    with jax.enable_x64(True):
        out = jax.ShapeDtypeStruct((64,), jnp.int64)
        a = jnp.zeros((3, 5, 7), jnp.float32)
        b = jnp.zeros((11,), jnp.bool_)
        c = jnp.zeros((), jnp.float64)
        d = jnp.zeros((2, 13), jnp.int32)
        attribute = np.array([42, -5, 1 << 40], np.int64)
        call = jax.ffi.ffi_call(jax_ffi.probe_target(), out)
        got = np.asarray(call(a, b, c, d, values=attribute))
    expected = [4, 1, 1, xla_ffi.F32, 3, 3, 5, 7, xla_ffi.PRED, 1, 11, xla_ffi.F64, 0,
                xla_ffi.S32, 2, 2, 13, 42, -5, 1 << 40]  # fmt: skip
    assert got[: len(expected)].tolist() == expected
    assert (got[len(expected) :] == -7).all()
    name = jax_ffi.target("cross_entropy", np.float32, np.int32)
    shapes = (jax.ShapeDtypeStruct((), jnp.float32), jax.ShapeDtypeStruct((4, 3), jnp.float32))
    wrong = jax.ffi.ffi_call(name, shapes)
    with pytest.raises(Exception, match="unexpected dtype"):
        jax.block_until_ready(wrong(
            jnp.zeros((4, 3), jnp.float32), jnp.zeros((4,), jnp.float32),
            jnp.zeros((0,), jnp.float32), jnp.zeros((0,), bool),
            ints=np.array([-100, 1, 1, 0], np.int64), reals=np.array([0.0, 0.0])))  # fmt: skip


def test_host_sums_are_numpys_and_fsum() -> None:
    import math

    from logitloss._kernels import host_sums

    rng = np.random.default_rng(23)
    for n in [0, 1, 7, 8, 9, 127, 128, 129, 1000, 8191, 8193, 20000]:
        a = rng.standard_normal(n) * np.exp(rng.standard_normal(n) * 5)
        assert host_sums.numpy_sum(a) == float(np.sum(a)), n
        f = a.astype(np.float32)
        assert host_sums.numpy_cast_sum(f) == float(np.sum(f, dtype=np.float64)), n
        c = np.concatenate([a, -a[::-1] * (1 + 1e-16), [1e300, -1e300, 1e-300]])
        assert host_sums.fsum(c) == math.fsum(c.tolist()), n
