"""The lean JAX training losses (``_autodiff.jax_training``) against the path they replace.

``jax_training.cross_entropy`` and ``jax_training.binary_cross_entropy`` are called directly
with the arguments ``_api.training`` passes them after validation; the reference is the public
function (the composition of the exact ``jax_rules``), and the oracles are that exact path on
float64 inputs (x64) and mpmath. Every option combination, under ``jax.jit``, x64 on and off:
the values, and the gradients with respect to the logits, probability labels, class or element
weights and ``pos_weight``.
"""

from __future__ import annotations

import itertools
from typing import Any

import mpmath as mp
import numpy as np
import pytest

import logitloss

jax = pytest.importorskip("jax")
jnp = jax.numpy
jax_training = pytest.importorskip("logitloss._autodiff.jax_training")

mp.mp.dps = 50
EPS32 = float(np.finfo(np.float32).eps)
RNG = np.random.default_rng(12)


def _inputs(n: int, c: int, *, seed: int) -> dict[str, np.ndarray]:
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


SHAPES = {"small": (6, 5), "larger": (48, 300)}


def _ulp_error(got: Any, exact: Any, *, row: bool = False) -> float:
    """The largest error of ``got`` in float32 ULP of ``exact`` (float64 truth), elementwise;
    with ``row``, in ULP of the largest entry of each row (XLA's float32 mode, x64 off, holds no
    per-element bound where a gradient entry cancels to nearly 0)."""
    got, exact = np.asarray(got, np.float64), np.asarray(exact, np.float64)
    if got.size == 0:
        return 0.0
    scale = np.abs(exact)
    if row and exact.ndim >= 1:
        scale = np.maximum(scale, np.max(np.abs(exact), axis=-1, keepdims=True))
    ulp = np.spacing(np.maximum(scale, 1e-30).astype(np.float32)).astype(np.float64)
    return float(np.max(np.abs(got - exact) / ulp))


def _grads(fn: Any, args: tuple, argnums: tuple[int, ...]) -> list[np.ndarray]:
    value, grads = jax.jit(jax.value_and_grad(fn, argnums))(*args)
    return [np.asarray(value), *(np.asarray(g) for g in grads)]


# --- cross_entropy -----------------------------------------------------------------------------

CE_OPTIONS = list(itertools.product(
    ["index", "probs"], [False, True], [False, True], [0.0, 0.1], [0.0, 0.01], ["mean", "sum"]
))  # fmt: skip


def _ce_pair(kind: str, weighted: bool, masked: bool, eps: float, zl: float, red: str,
             mask: Any, axis: int = -1) -> tuple[Any, Any]:  # fmt: skip
    """The reference and the lean loss as functions of (x, labels, w)."""

    def reference(x: Any, labels: Any, w: Any) -> Any:
        return logitloss.cross_entropy(x, labels, axis=axis, weight=w if weighted else None,
                                       label_smoothing=eps, z_loss=zl,
                                       where=mask if masked else None, reduction=red)  # fmt: skip

    def lean(x: Any, labels: Any, w: Any) -> Any:
        return jax_training.cross_entropy(
            x, labels, w if weighted else None, mask if masked else None, axis=axis,
            ignore_index=-100, smoothing=eps, z_scale=zl, reduction=red,
        )  # fmt: skip

    return reference, lean


def _ce_args(d: dict, kind: str, *, wide: bool = False) -> tuple[tuple, tuple[int, ...]]:
    dtype = jnp.float64 if wide else jnp.float32
    labels = jnp.asarray(d["labels"]) if kind == "index" else jnp.asarray(d["probs"], dtype)
    args = (jnp.asarray(d["x"], dtype), labels, jnp.asarray(d["w"], dtype))
    return args, (0, 2) if kind == "index" else (0, 1, 2)


def _options_for(shape: str, options: list[tuple]) -> list[tuple]:
    """Every combination on the small shape; on the larger one every combination of the
    first four options, the last two (z-loss, reduction) varied along (compiling is the cost)."""
    if shape == "small":
        return options
    seen = {}
    for i, o in enumerate(options):
        seen.setdefault(o[:-2], o[:-2] + options[(i * 3) % len(options)][-2:])
    return list(seen.values())


def _check(got: list, expected: list, truth: list, x64: bool, what: Any, axis: int = -1) -> None:
    """Each result of the lean path within 1 float32 ULP of the truth under x64, and never
    further from it than the reference path + 1 ULP; without x64 (both float32 computations,
    reassociated otherwise by XLA) within the reference's error + 4 ULP of each row's largest
    entry (rows along ``axis`` for the logits' gradient). Dtypes and shapes the reference's."""
    for i, (g, e, t) in enumerate(zip(got, expected, truth, strict=True)):
        assert g.dtype == e.dtype and g.shape == e.shape, what
        if g.ndim > 2:
            g, e, t = (np.moveaxis(a, axis, -1) for a in (g, e, t))
        if x64:
            err, ref_err = _ulp_error(g, t), _ulp_error(e, t)
            assert err <= 1.0, (what, i, err)
            assert err <= ref_err + 1.0, (what, i, err, ref_err)
        else:
            err, ref_err = _ulp_error(g, t, row=True), _ulp_error(e, t, row=True)
            assert err <= ref_err + 4.0, (what, i, err, ref_err)


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_cross_entropy_equals_reference(x64: bool, shape: str) -> None:
    d = _inputs(*SHAPES[shape], seed=1)
    for options in _options_for(shape, CE_OPTIONS):
        kind = options[0]
        with jax.enable_x64(True):
            reference, _ = _ce_pair(*options, mask=jnp.asarray(d["mask"]))
            wide, argnums = _ce_args(d, kind, wide=True)
            truth = _grads(reference, wide, argnums)
        with jax.enable_x64(x64):
            reference, lean = _ce_pair(*options, mask=jnp.asarray(d["mask"]))
            args, argnums = _ce_args(d, kind)
            _check(_grads(lean, args, argnums), _grads(reference, args, argnums), truth, x64,
                   options)  # fmt: skip


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
def test_cross_entropy_class_axis_and_broadcast_labels(x64: bool) -> None:
    """Classes on axis 1 of a 3-d batch (PyTorch's layout), probabilities broadcast from a
    row shared by the batch."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((3, 7, 4)) * 2).astype(np.float32)
    labels = rng.integers(0, 7, (3, 4))
    labels[0, 1] = -1
    shared = rng.dirichlet(np.ones(7)).astype(np.float32).reshape(1, 7, 1)
    w = rng.uniform(0.5, 2, 7).astype(np.float32)
    with jax.enable_x64(x64):
        mask = jnp.asarray(rng.uniform(size=(3, 4)) < 0.8)
        for lab, eps, zl in itertools.product([labels, shared], [0.0, 0.2], [0.0, 0.05]):
            lab = jnp.asarray(lab)
            argnums = (0, 2) if lab.dtype.kind == "i" else (0, 1, 2)

            def reference(x: Any, lab: Any, w: Any, eps: float = eps, zl: float = zl) -> Any:
                return logitloss.cross_entropy(
                    x, lab, axis=1, weight=w, ignore_index=-1, label_smoothing=eps, z_loss=zl,
                    where=mask)  # fmt: skip

            def lean(x: Any, lab: Any, w: Any, eps: float = eps, zl: float = zl) -> Any:
                return jax_training.cross_entropy(
                    x, lab, w, mask, axis=1, ignore_index=-1, smoothing=eps, z_scale=zl,
                    reduction="mean")  # fmt: skip

            args = (jnp.asarray(x), lab, jnp.asarray(w))
            got, expected = _grads(lean, args, argnums), _grads(reference, args, argnums)
            with jax.enable_x64(True):
                wide = tuple(a if a.dtype.kind == "i" else a.astype(jnp.float64) for a in args)
                truth = _grads(reference, wide, argnums)
            _check(got, expected, truth, x64, (lab.dtype, eps, zl), axis=1)


def mp_index_loss(row: np.ndarray, label: int, w: np.ndarray, eps: float, zl: float) -> Any:
    """PyTorch's smoothed, class-weighted index loss plus ``zl w_y lse^2``, at 50 digits."""
    xs = [mp.mpf(float(v)) for v in row]
    ws = [mp.mpf(float(v)) for v in w]
    lse = mp.log(mp.fsum(mp.exp(v) for v in xs))
    eps, c = mp.mpf(eps), len(xs)
    spread = mp.fsum(wc * (lse - v) for wc, v in zip(ws, xs, strict=True))
    loss = (1 - eps) * ws[label] * (lse - xs[label]) + eps / c * spread
    return loss + mp.mpf(zl) * ws[label] * lse**2


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
def test_cross_entropy_against_mpmath(x64: bool) -> None:
    d = _inputs(5, 4, seed=4)
    x, labels, w, mask = d["x"], d["labels"], d["w"], d["mask"]
    for eps, zl, red in itertools.product([0.0, 0.3], [0.0, 0.02], ["mean", "sum"]):
        rows = [i for i in range(len(x)) if labels[i] != -100 and mask[i]]
        total = mp.fsum(mp_index_loss(x[i], labels[i], w, eps, zl) for i in rows)
        if red == "mean":
            total /= mp.fsum(mp.mpf(float(w[labels[i]])) for i in rows)
        with jax.enable_x64(x64):
            got = jax.jit(
                lambda a, eps=eps, zl=zl, red=red: jax_training.cross_entropy(
                    a, jnp.asarray(labels), jnp.asarray(w), jnp.asarray(mask), axis=-1,
                    ignore_index=-100, smoothing=eps, z_scale=zl, reduction=red)
            )(jnp.asarray(x))  # fmt: skip
        ulp = np.spacing(np.float32(float(total)))
        assert abs(float(got) - float(total)) <= (1.0 if x64 else 4.0) * ulp, (eps, zl, red)


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
def test_out_of_range_labels_give_nan_rows_under_jit(x64: bool) -> None:
    d = _inputs(4, 3, seed=5)
    labels = jnp.asarray([0, 3, -100, -1])
    with jax.enable_x64(x64):
        x, w = jnp.asarray(d["x"]), jnp.asarray(d["w"])
        for weighted, eps, red in itertools.product([False, True], [0.0, 0.1], ["mean", "sum"]):

            def lean(a: Any, weighted: bool = weighted, eps: float = eps, red: str = red) -> Any:
                return jax_training.cross_entropy(
                    a, labels, w if weighted else None, None, axis=-1, ignore_index=-100,
                    smoothing=eps, z_scale=0.0, reduction=red)  # fmt: skip

            def reference(a: Any, weighted: bool = weighted, eps: float = eps,
                          red: str = red) -> Any:  # fmt: skip
                return logitloss.cross_entropy(a, labels, weight=w if weighted else None,
                                               label_smoothing=eps, reduction=red)  # fmt: skip

            value, grad = jax.jit(jax.value_and_grad(lean))(x)
            _, expected = jax.jit(jax.value_and_grad(reference))(x)
            assert np.isnan(value)
            grad = np.asarray(grad)
            assert np.isnan(grad[[1, 3]]).all()
            # The weighted mean's denominator holds w[label] of the bad rows: NaN throughout,
            # as the reference path; otherwise only those rows are NaN.
            np.testing.assert_array_equal(np.isnan(grad), np.isnan(np.asarray(expected)))
            if not (weighted and red == "mean"):
                assert np.isfinite(grad[0]).all() and (grad[2] == 0).all()


def test_nothing_counted_is_zero_with_zero_gradient() -> None:
    d = _inputs(4, 3, seed=6)
    x = jnp.asarray(d["x"])
    labels = jnp.full((4,), -100)
    for red in ("mean", "sum"):
        value, grad = jax.jit(jax.value_and_grad(lambda a, red=red: jax_training.cross_entropy(
            a, labels, None, None, axis=-1, ignore_index=-100, smoothing=0.1, z_scale=0.1,
            reduction=red)))(x)  # fmt: skip
        assert float(value) == 0.0 and not np.asarray(grad).any()


def test_upstream_cotangent_scales_the_saved_gradient() -> None:
    """The backward pass multiplies the saved gradient by the upstream cotangent (here 3 and a
    vmap of cotangents), and vmap over a batch of logits is the loop over it."""
    d = _inputs(6, 5, seed=7)
    x, labels = jnp.asarray(d["x"]), jnp.asarray(d["labels"])

    def lean(a: Any) -> Any:
        return jax_training.cross_entropy(a, labels, None, None, axis=-1, ignore_index=-100,
                                          smoothing=0.0, z_scale=0.0, reduction="mean")  # fmt: skip

    np.testing.assert_allclose(jax.grad(lambda a: 3 * lean(a))(x), 3 * jax.grad(lean)(x),
                               rtol=2 * EPS32)  # fmt: skip
    batch = jnp.stack([x, x / 2, -x])
    grads = jax.vmap(jax.grad(lean))(batch)
    for i in range(3):
        np.testing.assert_array_equal(grads[i], jax.grad(lean)(batch[i]))


def test_reduction_none_is_left_to_the_caller() -> None:
    x = jnp.zeros((2, 3))
    assert jax_training.cross_entropy(x, jnp.asarray([0, 1]), None, None, axis=-1,
                                      ignore_index=-100, smoothing=0.0, z_scale=0.0,
                                      reduction="none") is None  # fmt: skip
    assert jax_training.binary_cross_entropy(x, x, None, None, None, smoothing=0.0,
                                             reduction="none") is None  # fmt: skip


# --- binary_cross_entropy ----------------------------------------------------------------------

BCE_OPTIONS = list(itertools.product(
    [False, True], [False, True], [False, True], [0.0, 0.2], ["mean", "sum"]
))  # fmt: skip


@pytest.mark.parametrize("x64", [True, False], ids=["x64", "x32"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_binary_cross_entropy_equals_reference(x64: bool, shape: str) -> None:
    d = _inputs(*SHAPES[shape], seed=2)
    names = ("x", "z", "q", "ew")
    for options in _options_for(shape, BCE_OPTIONS):
        has_q, has_w, masked = options[:3]

        def reference(x: Any, z: Any, q: Any, w: Any, mask: Any, options: tuple = options) -> Any:
            has_q, has_w, _, eps, red = options
            return logitloss.binary_cross_entropy_with_logits(
                x, z, pos_weight=q if has_q else None, weight=w if has_w else None,
                label_smoothing=eps, where=mask, reduction=red)  # fmt: skip

        def lean(x: Any, z: Any, q: Any, w: Any, mask: Any, options: tuple = options) -> Any:
            has_q, has_w, _, eps, red = options
            return jax_training.binary_cross_entropy(
                x, z, q if has_q else None, w if has_w else None, mask, smoothing=eps,
                reduction=red)  # fmt: skip

        argnums = (0, 1) + ((2,) if has_q else ()) + ((3,) if has_w else ())
        with jax.enable_x64(True):
            wide = tuple(jnp.asarray(d[k], jnp.float64) for k in names)
            mask = jnp.asarray(d["emask"]) if masked else None
            truth = _grads(reference, (*wide, mask), argnums)
        with jax.enable_x64(x64):
            args = (
                *(jnp.asarray(d[k]) for k in names),
                jnp.asarray(d["emask"]) if masked else None,
            )
            _check(_grads(lean, args, argnums), _grads(reference, args, argnums), truth, x64,
                   options)  # fmt: skip


def test_binary_cross_entropy_against_mpmath() -> None:
    d = _inputs(3, 4, seed=8)
    x, z, q, w = d["x"], d["z"], d["q"], d["ew"]
    eps = 0.2
    total, count = mp.mpf(0), mp.mpf(0)
    for i, j in itertools.product(range(3), range(4)):
        xi, zi = mp.mpf(float(x[i, j])), mp.mpf(float(z[i, j])) * (1 - mp.mpf(eps)) + eps / 2
        qi, wi = mp.mpf(float(q[j])), mp.mpf(float(w[i, j]))
        total += wi * (qi * zi * mp.log1p(mp.exp(-xi)) + (1 - zi) * mp.log1p(mp.exp(xi)))
        count += wi
    for x64, red in itertools.product([True, False], ["mean", "sum"]):
        expected = total / count if red == "mean" else total
        with jax.enable_x64(x64):
            got = jax.jit(lambda a, red=red: jax_training.binary_cross_entropy(
                a, jnp.asarray(z), jnp.asarray(q), jnp.asarray(w), None, smoothing=eps,
                reduction=red))(jnp.asarray(x))  # fmt: skip
        ulp = np.spacing(np.float32(float(expected)))
        assert abs(float(got) - float(expected)) <= (1.0 if x64 else 4.0) * ulp, (x64, red)
