"""The numba kernels (``logitloss._kernels``) against mpmath and against the reference path.

The same ULP bounds as the reference on the whole-range grid (float16, bfloat16, float32 within
1 ULP, float64 within 4 ULP), the exact limits at infinite logits, NaN propagation, every layout
(transposed, strided, broadcast, grouped short rows), ``out=``, threads, and inputs left alone.
"""

from __future__ import annotations

import math
import subprocess
import sys
import threading

import numpy as np
import pytest
from conftest import BOUND, LOGISTIC_LIMITS, np_dtype

pytest.importorskip("numba")
mp = pytest.importorskip("mpmath")

from logitloss._kernels import fit, vector_math  # noqa: E402
from logitloss._losses import reference  # noqa: E402
from logitloss._losses.logistic import kernel as logistic_kernels  # noqa: E402
from logitloss._tools import oracle  # noqa: E402

INF = math.inf
NAN = math.nan
DTYPES = ["float16", "bfloat16", "float32", "float64"]


def logits_grid(dtype: str) -> list[float]:
    info = np.finfo(np_dtype(dtype)) if dtype != "bfloat16" else None
    big = float(info.max) if info is not None else 3.3895313892515355e38
    tiny = float(info.smallest_normal) if info is not None else 1.1754943508222875e-38
    sub = float(info.smallest_subnormal) if info is not None else 9.183549615799121e-41
    magnitudes = [
        tiny,
        sub,
        1e-10,
        0.2,
        0.5,
        1.0,
        1.0986,
        1.5,
        3.0,
        8.0,
        17.0,
        24.0,
        40.0,
        88.0,
        100.0,
        700.0,
        745.0,
        big,
        INF,
    ]
    return [0.0, -0.0, NAN] + magnitudes + [-v for v in magnitudes]


def labels_grid(dtype: str) -> list[float]:
    eps = float(np.finfo(np_dtype(dtype)).eps) if dtype != "bfloat16" else 2.0**-7
    return [0.0, 1.0, 0.5, 0.25, 1e-3, 0.999, eps, 1e-30, 1 - eps / 2, 1 - eps]


POS_WEIGHTS = [None, 0.0, 1e-3, 2.0, 30.0, 1e4]


def grid(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Every logit against every label, as a 2-D (logits x labels) array in ``dtype``."""
    dt = np_dtype(dtype)
    xs, zs = logits_grid(dtype), labels_grid(dtype)
    x = np.array([[a] * len(zs) for a in xs], dtype=np.float64).astype(dt)
    z = np.array([zs] * len(xs), dtype=np.float64).astype(dt)
    return x, z


def exact_grad(x: float, z: float, q: float) -> tuple[object, float]:
    """The exact ``(1 - z) sigma(x) - q z sigma(-x)`` and the size of its two terms."""
    if math.isnan(x) or math.isnan(z) or math.isnan(q):
        return mp.nan, NAN
    with mp.workdps(60):
        x_, z_, q_ = mp.mpf(x), mp.mpf(z), mp.mpf(q)
        if x == INF:
            return 1 - z_, float(abs(1 - z_))
        if x == -INF:
            return -q_ * z_, float(abs(q_ * z_))
        pos = (1 - z_) / (1 + mp.exp(-x_))
        neg = q_ * z_ / (1 + mp.exp(x_))
        return pos - neg, float(abs(pos) + abs(neg))


def as_float(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def ulp_errors(computed: np.ndarray, exact: list, dtype: str) -> np.ndarray:
    values = as_float(computed).ravel()
    return np.array(
        [oracle.ulp_error(float(c), e, dtype) for c, e in zip(values, exact, strict=True)]
    )


def normal_or_zero(exact: list, dtype: str) -> np.ndarray:
    """Mask of exact values that are zero, infinite or in ``dtype``'s normal range."""
    _, emin = oracle.FORMATS[dtype]
    smallest = 2.0**emin
    return np.array([mp.isnan(e) or mp.isinf(e) or e == 0 or abs(e) >= smallest for e in exact])


# --- The loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos_weight", POS_WEIGHTS)
def test_loss_grid_against_mpmath_and_reference(dtype: str, pos_weight: float | None) -> None:
    x, z = grid(dtype)
    dt = np_dtype(dtype)
    q = None if pos_weight is None else np.asarray(pos_weight, dtype=dt)
    out = logistic_kernels.logistic_loss(x, z, q)
    assert out.dtype == dt and out.shape == x.shape
    qf = 1.0 if q is None else float(q)
    exact = [
        oracle.logistic(float(a), float(b), qf)
        for a, b in zip(as_float(x).ravel(), as_float(z).ravel(), strict=True)
    ]
    errors = ulp_errors(out, exact, dtype)
    if dtype == "float64":  # the bound holds for results in the normal range
        normal = normal_or_zero(exact, dtype)
        assert errors[normal].max() <= BOUND[dtype]
        assert errors[~normal].max(initial=0) <= 8  # subnormal float64: a few smallest units
    else:
        assert errors.max() <= BOUND[dtype]
    # Against the reference path: the same NaNs and infinities, and within the same bound.
    ref = reference.logistic(x, z, q, xp=np)
    np.testing.assert_array_equal(np.isnan(as_float(out)), np.isnan(as_float(ref)))
    np.testing.assert_array_equal(np.isinf(as_float(out)), np.isinf(as_float(ref)))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("x", "z", "q", "limit"), LOGISTIC_LIMITS)
def test_loss_limits(dtype: str, x: float, z: float, q: float, limit: float) -> None:
    dt = np_dtype(dtype)
    xs, zs = np.array([x], dt), np.array([z], dt)
    assert as_float(logistic_kernels.logistic_loss(xs, zs, q))[0] == limit
    if q == 1.0:
        assert as_float(logistic_kernels.logistic_loss(xs, zs))[0] == limit


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_in_nan_out(dtype: str) -> None:
    dt = np_dtype(dtype)
    x = np.array([NAN, 1.0, 1.0, NAN, INF, -INF, 0.0], dt)
    z = np.array([0.5, NAN, 0.5, 0.0, NAN, NAN, 1.0], dt)
    q = np.array([2.0, 2.0, NAN, 0.0, 1.0, 1.0, NAN], dt)
    assert np.isnan(as_float(logistic_kernels.logistic_loss(x, z, q))).all()
    assert np.isnan(as_float(logistic_kernels.logistic_grad_logits(x, z, q))).all()
    up = np.array([NAN] * 7, dt)
    assert np.isnan(
        as_float(logistic_kernels.logistic_grad_logits(np.ones(7, dt), z * 0, None, up))
    ).all()


# --- The gradient ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pos_weight", POS_WEIGHTS)
def test_grad_grid_against_mpmath_and_reference(dtype: str, pos_weight: float | None) -> None:
    x, z = grid(dtype)
    dt = np_dtype(dtype)
    q = None if pos_weight is None else np.asarray(pos_weight, dtype=dt)
    out = logistic_kernels.logistic_grad_logits(x, z, q)
    assert out.dtype == dt and out.shape == x.shape
    qf = 1.0 if q is None else float(q)
    pairs = [
        exact_grad(float(a), float(b), qf)
        for a, b in zip(as_float(x).ravel(), as_float(z).ravel(), strict=True)
    ]
    exact = [e for e, _ in pairs]
    terms = np.array([t for _, t in pairs])
    errors = ulp_errors(out, exact, dtype)
    if dtype == "float64":
        # Near the gradient's zero its two terms cancel, in the reference too: the bound is
        # 4 ULP of the result, or 4 float64 epsilons of the terms, whichever is larger.
        computed = as_float(out).ravel()
        absolute = np.array(
            [
                float(abs(mp.mpf(c) - e)) if np.isfinite(c) and mp.isfinite(e) else 0.0
                for c, e in zip(computed, exact, strict=True)
            ]
        )
        ok = (errors <= 4) | (absolute <= 4 * np.finfo(np.float64).eps * terms)
        # A subnormal gradient (e^-|x| subnormal, times q z) is off by the subnormal rounding
        # of e^-|x|, scaled by q z, in the reference too: a few smallest subnormals times q.
        subnormal = ~normal_or_zero(exact, dtype)
        ok |= subnormal & (absolute <= 4 * 2.0**-1074 * max(1.0, qf))
        assert ok.all(), (x.ravel()[~ok], z.ravel()[~ok])
    else:
        assert errors.max() <= BOUND[dtype]
    ref = reference.logistic_grad(x, z, q, np.ones_like(x), wrt="logits", xp=np)
    np.testing.assert_array_equal(np.isnan(as_float(out)), np.isnan(as_float(ref)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_grad_limits(dtype: str) -> None:
    """``1 - z`` at ``x = +inf``, ``-q z`` at ``x = -inf``, rounded to the dtype."""
    dt = np_dtype(dtype)
    z = np.array([0.0, 0.25, 0.5, 1.0, 1e-3], dt)
    for q in (None, 0.0, 2.0, 30.0):
        qf = 1.0 if q is None else q
        up = logistic_kernels.logistic_grad_logits(np.full(5, INF, dt), z, q)
        down = logistic_kernels.logistic_grad_logits(np.full(5, -INF, dt), z, q)
        zf = as_float(z)
        np.testing.assert_array_equal(as_float(up), as_float((1 - zf).astype(dt)))
        np.testing.assert_array_equal(as_float(down), as_float((-qf * zf).astype(dt)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_grad_times_upstream(dtype: str) -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(0, 6, (64, 33)).astype(dtype)
    z = rng.random((64, 33)).astype(dtype)
    q = rng.random(33).astype(dtype) * 4
    for up in (
        rng.normal(size=(64, 33)).astype(dtype),
        np.asarray(2.5, dtype),
        rng.normal(size=(64, 1)).astype(dtype),
        rng.normal(size=33).astype(dtype),
    ):
        got = logistic_kernels.logistic_grad_logits(x, z, q, up)
        ref = reference.logistic_grad(x, z, q, np.broadcast_to(up, x.shape), wrt="logits", xp=np)
        scale = np.abs(as_float(ref)) + np.abs(as_float(np.broadcast_to(up, x.shape)))
        np.testing.assert_allclose(
            got,
            ref,
            rtol=4 * np.finfo(dtype).eps,
            atol=0 if dtype == "float32" else 1e-15 * scale.max(),
        )


# --- Layouts and arguments ---------------------------------------------------------------------


def reference_loss(x: np.ndarray, z: np.ndarray, q: object = None) -> np.ndarray:
    qa = None if q is None else np.asarray(q, x.dtype)
    return reference.logistic(x, z, qa, xp=np)


def close(a: np.ndarray, b: np.ndarray) -> None:
    """Within 1 ULP of each other (float32: both within 1 ULP of exact, nearly always equal)."""
    np.testing.assert_array_max_ulp(a, b, maxulp=1 if a.dtype != np.float64 else 4)


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(0, 8, (37, 41, 6)).astype(np.float32)
    z = rng.random((37, 41, 6)).astype(np.float32)
    return x, z


def test_non_contiguous_inputs(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    cases = [
        (x.transpose(2, 0, 1), z.transpose(2, 0, 1)),
        (x.T, z.T),
        (x[::2, 3:, ::-1], z[::2, 3:, ::-1]),
        (x[:, ::3, 1], z[:, ::3, 1]),
        (x.transpose(1, 0, 2), np.ascontiguousarray(z.transpose(1, 0, 2))),  # mixed layouts
        (np.asfortranarray(x[5]), z[5]),
        (x.reshape(-1)[::5], z.reshape(-1)[1::5]),
    ]
    for a, b in cases:
        close(logistic_kernels.logistic_loss(a, b), reference_loss(a, b))
        close(logistic_kernels.logistic_loss(a, b, 3.0), reference_loss(a, b, 3.0))
        ref = reference.logistic_grad(a, b, None, np.ones_like(a), wrt="logits", xp=np)
        close(logistic_kernels.logistic_grad_logits(a, b), ref)


def test_pos_weight_shapes(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    rng = np.random.default_rng(8)
    for shape in [(), (6,), (1, 6), (41, 1), (37, 1, 1), (37, 1, 6), (41, 6), x.shape]:
        q = (rng.random(shape) * 5).astype(np.float32)
        close(logistic_kernels.logistic_loss(x, z, q), reference_loss(x, z, q))
        q_t = np.broadcast_to(q, x.shape).T  # zero strides, transposed
        close(logistic_kernels.logistic_loss(x.T, z.T, q_t), reference_loss(x.T, z.T, q_t))
        g = logistic_kernels.logistic_grad_logits(x, z, q)
        ref = reference.logistic_grad(x, z, q, np.ones_like(x), wrt="logits", xp=np)
        close(g, ref)


def test_short_rows_are_grouped() -> None:
    """Many rows of 10 classes with per-class pos_weight: the grouped path and its remainder."""
    rng = np.random.default_rng(9)
    x = rng.normal(0, 5, (200_000, 10)).astype(np.float32)
    z = rng.random((200_000, 10)).astype(np.float32)
    q = (rng.random(10) * 3).astype(np.float32)
    close(logistic_kernels.logistic_loss(x, z, q), reference_loss(x, z, q))
    ref = reference.logistic_grad(x, z, q, np.ones_like(x), wrt="logits", xp=np)
    close(logistic_kernels.logistic_grad_logits(x, z, q), ref)


def test_unowned_is_a_view_of_the_callers_array() -> None:
    """``loops.unowned``: reads and writes go to the caller's memory; other types pass."""
    from numba import njit

    from logitloss._kernels.loops import unowned

    @njit
    def write_through(a, b):
        view = unowned(a[1:])
        view[0] = 7.0
        return view.sum() + unowned(b)

    a = np.arange(4.0)
    assert write_through(a, 0.5) == 7.0 + 2.0 + 3.0 + 0.5
    assert a.tolist() == [0.0, 7.0, 2.0, 3.0]


def test_as_input_compiles_the_callee_once_for_any_flags_and_literals() -> None:
    """``loops.as_input``: writeable and read-only arrays, a constant and a variable flag reach
    the callee as one argument type (one compilation), with their values; the caller's arrays
    keep their flags."""
    from numba import njit

    from logitloss._kernels.loops import as_input

    @njit
    def callee(a, flag, start):
        return a[start:].sum() + flag

    @njit
    def caller(a, flag):
        return (callee(as_input(a), as_input(flag), as_input(1)),
                callee(as_input(a), as_input(True), as_input(0)))  # fmt: skip

    writeable = np.arange(4.0)
    read_only = np.arange(4.0) * 2
    read_only.flags.writeable = False
    assert caller(writeable, False) == (6.0, 7.0)
    assert caller(read_only, True) == (13.0, 13.0)
    assert writeable.flags.writeable and not read_only.flags.writeable
    assert len(caller.signatures) == 2
    assert len(callee.signatures) == 1
    (types,) = callee.signatures
    assert not types[0].mutable and str(types[1]) == "bool" and str(types[2]) == "int64"


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_empty_scalar_and_one_element(dtype: str) -> None:
    for shape in [(0,), (3, 0), (0, 5), (), (1,), (1, 1)]:
        x = np.full(shape, 0.75, dtype)
        z = np.full(shape, 0.25, dtype)
        out = logistic_kernels.logistic_loss(x, z, 2.0)
        assert out.shape == shape and out.dtype == dtype
        close(np.asarray(out), reference_loss(x, z, 2.0))
        g = logistic_kernels.logistic_grad_logits(x, z, 2.0)
        assert g.shape == shape and g.dtype == dtype


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_input_spot_checked(dtype: str) -> None:
    rng = np.random.default_rng(11)
    n = 3_000_000
    x = (rng.standard_normal(n) * 10).astype(dtype)
    z = rng.random(n).astype(dtype)
    q = np.asarray(2.5, dtype)
    out = logistic_kernels.logistic_loss(x, z, q)
    grad = logistic_kernels.logistic_grad_logits(x, z, q)
    picks = np.concatenate([rng.integers(0, n, 3000), [0, n - 1, 16383, 16384]])
    close(out[picks], reference_loss(x[picks], z[picks], q))
    ref = reference.logistic_grad(
        x[picks], z[picks], q, np.ones(picks.size, dtype), wrt="logits", xp=np
    )
    np.testing.assert_allclose(grad[picks], ref, rtol=4 * np.finfo(dtype).eps, atol=1e-12)


def test_out_argument(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    expected = logistic_kernels.logistic_loss(x, z)
    out = np.empty_like(x)
    assert logistic_kernels.logistic_loss(x, z, out=out) is out
    np.testing.assert_array_equal(out, expected)
    fortran = np.empty(x.shape, np.float32, order="F")
    assert logistic_kernels.logistic_loss(x, z, out=fortran) is fortran
    np.testing.assert_array_equal(fortran, expected)
    strided = np.empty((x.shape[0] * 2, *x.shape[1:]), np.float32)[::2]
    logistic_kernels.logistic_grad_logits(x, z, out=strided)
    np.testing.assert_array_equal(strided, logistic_kernels.logistic_grad_logits(x, z))
    in_place = x.copy()
    assert logistic_kernels.logistic_loss(in_place, z, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, expected)
    shifted = np.concatenate([x.ravel(), [0.5]]).astype(np.float32)  # out overlaps x, shifted
    expected = logistic_kernels.logistic_loss(shifted[1:].copy(), z.ravel())
    logistic_kernels.logistic_loss(shifted[1:], z.ravel(), out=shifted[:-1])
    np.testing.assert_array_equal(shifted[:-1], expected)
    with pytest.raises(TypeError, match="out must have the logits' dtype float32, got float64"):
        logistic_kernels.logistic_loss(x, z, out=np.empty(x.shape))
    with pytest.raises(ValueError, match=r"out must have the logits' shape \(37, 41, 6\)"):
        logistic_kernels.logistic_loss(x, z, out=np.empty((37, 41), np.float32))
    readonly = np.empty_like(x)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out is read-only"):
        logistic_kernels.logistic_grad_logits(x, z, out=readonly)


def test_argument_errors(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    with pytest.raises(TypeError, match="logits must be float16, bfloat16, float32 or float64"):
        logistic_kernels.logistic_loss(x.astype(np.int32), z)
    with pytest.raises(TypeError, match="logits must be a NumPy array"):
        logistic_kernels.logistic_loss([1.0], [0.0])
    with pytest.raises(ValueError, match="labels must have the logits' shape"):
        logistic_kernels.logistic_loss(x, z[0])
    with pytest.raises(ValueError, match=r"pos_weight of shape .* must broadcast"):
        logistic_kernels.logistic_loss(x, z, np.ones((2, 1, 1, 6), np.float32))
    with pytest.raises(ValueError, match=r"upstream of shape .* must broadcast"):
        logistic_kernels.logistic_grad_logits(x, z, None, np.ones(5, np.float32))


def test_inputs_not_modified(data: tuple[np.ndarray, np.ndarray]) -> None:
    x, z = data
    q = np.linspace(0, 3, 6).astype(np.float32)
    up = np.ones_like(x)
    copies = [a.copy() for a in (x, z, q, up)]
    logistic_kernels.logistic_loss(x, z, q)
    logistic_kernels.logistic_grad_logits(x, z, q, up)
    logistic_kernels.logistic_loss(x.T, z.T, q[:, None, None])
    for a, b in zip((x, z, q, up), copies, strict=True):
        np.testing.assert_array_equal(a, b)


def test_threads_get_correct_results() -> None:
    rng = np.random.default_rng(12)
    jobs = []
    for i in range(6):
        n = 300_000 if i % 2 else 5_000  # parallel and serial kernels at once
        dtype = np.float32 if i % 3 else np.float64
        x = (rng.standard_normal(n) * 6).astype(dtype)
        z = rng.random(n).astype(dtype)
        jobs.append(
            (
                x,
                z,
                logistic_kernels.logistic_loss(x, z, 2.0),
                logistic_kernels.logistic_grad_logits(x, z),
            )
        )
    failures: list[str] = []

    def work(k: int) -> None:
        x, z, loss, grad = jobs[k]
        for _ in range(20):
            if not np.array_equal(logistic_kernels.logistic_loss(x, z, 2.0), loss):
                failures.append(f"loss {k}")
            if not np.array_equal(logistic_kernels.logistic_grad_logits(x, z), grad):
                failures.append(f"grad {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_import_has_no_side_effects() -> None:
    """Importing the kernels starts no threads and changes no numba setting."""
    code = (
        "import numba\n"
        "from numba.np.ufunc import parallel\n"
        "before = numba.config.THREADING_LAYER\n"
        "import logitloss._losses.logistic.kernel, logitloss._losses.softmax.kernel\n"
        "print(parallel._is_initialized, numba.config.THREADING_LAYER == before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


# --- The polynomials ---------------------------------------------------------------------------


def test_coefficients_are_the_documented_fits() -> None:
    fits = fit.fit_all()
    assert fits["exp_fast"] == vector_math._EXP_FAST
    assert fits["exp_precise"] == vector_math._EXP_PRECISE
    assert fits["log_fast"] == vector_math._LOG_FAST
    assert fits["log_precise"] == vector_math._LOG_PRECISE
    # float32 results need about 2^-28; float64 needs the approximation well below 2^-53.
    assert fit.relative_error("exp_fast", vector_math._EXP_FAST) < 2.0**-28
    assert fit.relative_error("log_fast", vector_math._LOG_FAST) < 2.0**-31
    assert fit.relative_error("exp_precise", vector_math._EXP_PRECISE) < 2.0**-55
    assert fit.relative_error("log_precise", vector_math._LOG_PRECISE) < 2.0**-56
