"""TensorFlow as a backend: eager, ``tf.function``, XLA, gradients, distribution, SavedModel.

Oracles: ``tf.nn`` evaluated in float64 where its formula is accurate (moderate logits) and
rounded to the tested dtype; mpmath (``_tools.oracle``) where ``tf.nn`` is not right (cancellation,
infinite logits); TF's own numerical differentiation (``tf.test.compute_gradient``) for the
gradients and Hessians.
"""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

import logitloss  # noqa: E402
from logitloss._tools import oracle  # noqa: E402

DTYPES = ("float16", "bfloat16", "float32", "float64")
TF_DTYPE = {name: getattr(tf, name) for name in DTYPES}
# ULP of 1 (the spacing at 1) per dtype, for tolerances counted in ULPs.
EPS = {"float16": 2.0**-10, "bfloat16": 2.0**-7, "float32": 2.0**-23, "float64": 2.0**-52}


def _ulps(computed: np.ndarray, exact: np.ndarray, dtype: str) -> np.ndarray:
    """``|computed - exact|`` in ULPs of ``exact`` in ``dtype`` (normal range)."""
    exact = np.asarray(exact, np.float64)
    scale = np.exp2(np.floor(np.log2(np.maximum(np.abs(exact), 1e-300)))) * EPS[dtype]
    return np.abs(np.asarray(computed, np.float64) - exact) / scale


def _rng_inputs(dtype: str, shape: tuple[int, ...] = (6, 5), seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=3.0, size=shape)
    z = rng.uniform(size=shape)
    x = tf.cast(tf.constant(x), TF_DTYPE[dtype])
    return x, tf.cast(tf.constant(z), TF_DTYPE[dtype])


# --- values: tf.nn where it is right, mpmath where it is not ----------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_losses_match_tf_nn_in_float64(dtype: str) -> None:
    """Each tf.nn loss: a tf.Tensor of the logits' dtype, within 1 ULP of tf.nn's float64 value
    (plus 2^-40 relative for tf.nn's own float64 error) on moderate inputs."""
    x, z = _rng_inputs(dtype)
    x64, z64 = tf.cast(x, tf.float64), tf.cast(z, tf.float64)
    labels = tf.constant([0, 4, 2, 1, 3, 0])
    soft = tf.nn.softmax(z64 * 4)
    cases = [
        (logitloss.sigmoid_cross_entropy_with_logits(z, x),
         tf.nn.sigmoid_cross_entropy_with_logits(z64, x64)),
        (logitloss.weighted_cross_entropy_with_logits(z, x, 2.5),
         tf.nn.weighted_cross_entropy_with_logits(z64, x64, 2.5)),
        (logitloss.softmax_cross_entropy_with_logits(tf.cast(soft, x.dtype), x),
         tf.nn.softmax_cross_entropy_with_logits(tf.cast(tf.cast(soft, x.dtype), tf.float64), x64)),
        (logitloss.sparse_softmax_cross_entropy_with_logits(labels, x),
         tf.nn.sparse_softmax_cross_entropy_with_logits(labels, x64)),
    ]  # fmt: skip
    for ours, ref in cases:
        assert isinstance(ours, tf.Tensor) and ours.dtype == x.dtype
        ref = ref.numpy()
        err = _ulps(ours.numpy(), ref, dtype) - np.abs(ref) * 2.0**-40 / (EPS[dtype] * ref)
        assert err.max() <= 1.0, (dtype, err.max())


def test_where_tf_nn_is_wrong_the_exact_values() -> None:
    """mpmath's values where tf.nn cancels or gives NaN (float32)."""
    z = 1 - 2.0**-23
    ours = logitloss.sigmoid_cross_entropy_with_logits(tf.constant([z]), tf.constant([24.0]))
    assert oracle.ulp_error(float(ours[0]), oracle.logistic(24.0, z), "float32") <= 1.0
    theirs = tf.nn.sigmoid_cross_entropy_with_logits(tf.constant([z]), tf.constant([24.0]))
    assert oracle.ulp_error(float(theirs[0]), oracle.logistic(24.0, z), "float32") > 1e5
    inf = logitloss.sigmoid_cross_entropy_with_logits(tf.constant([1.0]), tf.constant([np.inf]))
    assert float(inf[0]) == 0.0
    assert np.isnan(tf.nn.sigmoid_cross_entropy_with_logits([1.0], [np.inf]).numpy()[0])
    soft = logitloss.softmax_cross_entropy_with_logits(tf.constant([1.0, 0.0]), [20.0, 0.0])
    exact = oracle.softmax([20.0, 0.0], [1.0, 0.0])
    assert oracle.ulp_error(float(soft), exact, "float32") <= 1.0
    assert float(tf.nn.softmax_cross_entropy_with_logits([1.0, 0.0], [20.0, 0.0])) == 0.0


def test_numpy_arguments_join_the_tensor() -> None:
    """Lists and NumPy labels with a TF tensor: converted to TF, a tf.Tensor out."""
    x = tf.constant([[0.5, -1.0]], tf.float32)
    out = logitloss.weighted_cross_entropy_with_logits(np.array([[1.0, 0.0]]), x, [2.0, 1.0])
    assert isinstance(out, tf.Tensor) and out.dtype == tf.float32
    expected = [2 * math.log1p(math.exp(-0.5)), math.log1p(math.exp(-1.0))]
    np.testing.assert_allclose(out.numpy()[0], expected, rtol=2**-23)


# --- gradients --------------------------------------------------------------------------------


def test_tape_gives_the_exact_gradient() -> None:
    """2.5e-11 at x = 1e-10, z = 0.5 (sigma(x) - z is 0 in float32), as the *_grad function."""
    x = tf.Variable([1e-10, np.inf], dtype=tf.float32)
    z = tf.constant([0.5, 0.25])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(logitloss.sigmoid_cross_entropy_with_logits(z, x))
    g = tape.gradient(loss, x)
    assert isinstance(g, tf.Tensor)
    assert oracle.ulp_error(float(g[0]), oracle.logistic_grad(1e-10, 0.5), "float32") <= 1.0
    assert float(g[1]) == 0.75
    direct = logitloss.sigmoid_cross_entropy_with_logits_grad(z, x)
    np.testing.assert_array_equal(direct.numpy(), g.numpy())


def _losses_of_everything():
    """(name, f(x, z) -> scalar, float64 logits, labels) for every differentiable input."""
    rng = np.random.default_rng(1)
    x = tf.constant(rng.normal(size=(3, 4)), tf.float64)
    z = tf.constant(rng.uniform(size=(3, 4)), tf.float64)
    q = tf.constant([0.5, 1.0, 2.0, 3.0], tf.float64)
    return x, z, q


@pytest.mark.parametrize(
    "name", ["sigmoid", "weighted_logits", "weighted_labels", "weighted_pos_weight", "softmax",
             "softmax_labels", "sparse", "cross_entropy_options", "bce_options", "focal"],
)  # fmt: skip
def test_compute_gradient_matches_numerical(name: str) -> None:
    x, z, q = _losses_of_everything()
    labels = tf.constant([0, 3, 1])
    fns = {
        "sigmoid": (lambda a: logitloss.sigmoid_cross_entropy_with_logits(z, a), x),
        "weighted_logits": (lambda a: logitloss.weighted_cross_entropy_with_logits(z, a, q), x),
        "weighted_labels": (lambda a: logitloss.weighted_cross_entropy_with_logits(a, x, q), z),
        "weighted_pos_weight": (
            lambda a: logitloss.weighted_cross_entropy_with_logits(z, x, a), q),
        "softmax": (lambda a: logitloss.softmax_cross_entropy_with_logits(z, a), x),
        "softmax_labels": (lambda a: logitloss.softmax_cross_entropy_with_logits(a, x), z),
        "sparse": (lambda a: logitloss.sparse_softmax_cross_entropy_with_logits(labels, a), x),
        "cross_entropy_options": (lambda a: logitloss.cross_entropy(
            a, labels, weight=q, label_smoothing=0.1, z_loss=0.01), x),
        "bce_options": (lambda a: logitloss.binary_cross_entropy_with_logits(
            a, z, pos_weight=q, weight=z, label_smoothing=0.2), x),
        "focal": (lambda a: logitloss.sigmoid_focal_loss(a, z), x),
    }  # fmt: skip
    f, at = fns[name]
    theoretical, numerical = tf.test.compute_gradient(f, [at])
    np.testing.assert_allclose(theoretical[0], numerical[0], rtol=1e-6, atol=1e-7)


def test_nested_tapes_give_the_hessian() -> None:
    """Second order through the custom gradient: the Hessian of the softmax loss is
    diag(p) - p p^T (labels summing to 1), and the logistic loss's is sigma (1 - sigma)."""
    x = tf.Variable([[0.3, -1.2, 2.0]], dtype=tf.float64)
    z = tf.constant([[0.2, 0.3, 0.5]], tf.float64)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_sum(logitloss.softmax_cross_entropy_with_logits(z, x))
        g = inner.gradient(loss, x)
    hessian = outer.jacobian(g, x).numpy().reshape(3, 3)
    p = tf.nn.softmax(x).numpy()[0]
    np.testing.assert_allclose(hessian, np.diag(p) - np.outer(p, p), rtol=1e-12, atol=1e-15)
    with tf.GradientTape() as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_sum(logitloss.sigmoid_cross_entropy_with_logits(z, x))
        g = inner.gradient(loss, x)
    second = outer.gradient(g, x).numpy()
    s = 1 / (1 + np.exp(-x.numpy()))
    np.testing.assert_allclose(second, s * (1 - s), rtol=1e-12)


# --- every public function, eager, tf.function, XLA -------------------------------------------


def _public_calls():
    rng = np.random.default_rng(2)
    x = tf.constant(rng.normal(size=(4, 5)), tf.float32)
    z = tf.constant(rng.uniform(size=(4, 5)), tf.float32)
    y = tf.constant([0, 4, 2, 1])
    h = tf.constant(rng.normal(size=(4, 3)), tf.float32)
    w = tf.constant(rng.normal(size=(5, 3)), tf.float32)
    calls = {
        "sigmoid": lambda: logitloss.sigmoid_cross_entropy_with_logits(z, x),
        "weighted": lambda: logitloss.weighted_cross_entropy_with_logits(z, x, 2.0),
        "softmax": lambda: logitloss.softmax_cross_entropy_with_logits(z, x, axis=0),
        "sparse": lambda: logitloss.sparse_softmax_cross_entropy_with_logits(y, x),
        "sigmoid_grad": lambda: logitloss.sigmoid_cross_entropy_with_logits_grad(
            z, x, wrt="labels"),
        "weighted_grad": lambda: logitloss.weighted_cross_entropy_with_logits_grad(
            z, x, [1.0, 2, 3, 4, 5], wrt="pos_weight"),
        "softmax_grad": lambda: logitloss.softmax_cross_entropy_with_logits_grad(z, x),
        "sparse_grad": lambda: logitloss.sparse_softmax_cross_entropy_with_logits_grad(y, x),
        "bce": lambda: logitloss.binary_cross_entropy_with_logits(
            x, z, pos_weight=[1.0, 2, 3, 4, 5], label_smoothing=0.1, where=z > 0.2),
        "cross_entropy": lambda: logitloss.cross_entropy(
            x, tf.constant([0, 4, -100, 1]), weight=[1.0, 2, 3, 4, 5], label_smoothing=0.1,
            z_loss=1e-3, reduction="sum"),
        "cross_entropy_probs": lambda: logitloss.cross_entropy(x, z, axis=0, reduction="none"),
        "focal": lambda: logitloss.sigmoid_focal_loss(x, z, reduction="mean"),
        "linear": lambda: logitloss.linear_cross_entropy(h, w, y, label_smoothing=0.1),
    }  # fmt: skip
    return calls, {"x": x, "z": z, "y": y, "h": h, "w": w}


@pytest.mark.parametrize("name", list(_public_calls()[0]))
def test_every_public_function_eager_graph_and_xla(name: str) -> None:
    """A tf.Tensor of the logits' dtype, equal (1 ULP) to the NumPy path's value, eagerly, in
    tf.function and under jit_compile=True (XLA)."""
    call = _public_calls()[0][name]
    eager = call()
    assert isinstance(eager, tf.Tensor) and eager.dtype == tf.float32
    graph = tf.function(call)()
    xla = tf.function(call, jit_compile=True)()
    for other in (graph, xla):
        assert other.dtype == tf.float32 and other.shape == eager.shape
        np.testing.assert_allclose(other.numpy(), eager.numpy(), rtol=2**-22, atol=1e-30)


def test_public_functions_agree_with_the_numpy_path() -> None:
    """Same values as the same call on NumPy arrays (the paths the other tests hold to mpmath)."""
    calls, arrays = _public_calls()
    eager = {name: call().numpy() for name, call in calls.items()}
    import logitloss as ll

    a = {k: v.numpy() for k, v in arrays.items()}
    np_values = {
        "sigmoid": ll.sigmoid_cross_entropy_with_logits(a["z"], a["x"]),
        "sparse": ll.sparse_softmax_cross_entropy_with_logits(a["y"], a["x"]),
        "softmax": ll.softmax_cross_entropy_with_logits(a["z"], a["x"], axis=0),
        "focal": ll.sigmoid_focal_loss(a["x"], a["z"], reduction="mean"),
        "linear": ll.linear_cross_entropy(a["h"], a["w"], a["y"], label_smoothing=0.1),
    }
    with logitloss.reference_path():
        for name, value in np_values.items():
            np.testing.assert_allclose(eager[name], value, rtol=2**-22, err_msg=name)


def test_unknown_batch_dimension() -> None:
    """Shapes with None (a tf.data batch): traced once, run at two batch sizes."""
    spec = [tf.TensorSpec([None, 3]), tf.TensorSpec([None], tf.int32), tf.TensorSpec([None, 3])]

    @tf.function(input_signature=spec)
    def step(x, y, z):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = (
                logitloss.cross_entropy(x, y, weight=[1.0, 2.0, 3.0], label_smoothing=0.1)
                + logitloss.binary_cross_entropy_with_logits(x, z, pos_weight=[1.0, 2.0, 3.0])
                + tf.reduce_mean(logitloss.softmax_cross_entropy_with_logits(z, x))
            )
        return loss, tape.gradient(loss, x)

    for n in (2, 5):
        x = tf.random.stateless_normal((n, 3), seed=(1, n))
        y = tf.constant([i % 3 for i in range(n)])
        z = tf.nn.softmax(x)
        loss, grad = step(x, y, z)
        eager_x = tf.Variable(x)
        with tf.GradientTape() as tape:
            expected = (
                logitloss.cross_entropy(eager_x, y, weight=[1.0, 2.0, 3.0], label_smoothing=0.1)
                + logitloss.binary_cross_entropy_with_logits(eager_x, z, pos_weight=[1.0, 2, 3])
                + tf.reduce_mean(logitloss.softmax_cross_entropy_with_logits(z, eager_x))
            )
        np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=2**-22)
        np.testing.assert_allclose(grad.numpy(), tape.gradient(expected, eager_x), rtol=2**-21)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dtypes_in_equal_out_and_gradients(dtype: str) -> None:
    x, z = _rng_inputs(dtype, (2, 3))
    v = tf.Variable(x)
    with tf.GradientTape() as tape:
        loss = logitloss.cross_entropy(v, z) + logitloss.binary_cross_entropy_with_logits(v, z)
    assert loss.dtype == TF_DTYPE[dtype]
    assert tape.gradient(loss, v).dtype == TF_DTYPE[dtype]


# --- errors -----------------------------------------------------------------------------------


def test_errors_at_trace_time_with_the_library_messages() -> None:
    x = tf.zeros((2, 3))

    @tf.function
    def shapes(x):
        return logitloss.sigmoid_cross_entropy_with_logits(tf.zeros((2, 2)), x)

    with pytest.raises(ValueError, match="sigmoid_cross_entropy_with_logits: `labels` and"):
        shapes(x)
    with pytest.raises(TypeError, match=r"`logits` must have a real floating dtype.*int32"):
        ints = tf.zeros(3, tf.int32)
        tf.function(lambda: logitloss.softmax_cross_entropy_with_logits(x, ints))()
    with pytest.raises(TypeError, match="`labels` must have an integer dtype"):
        logitloss.sparse_softmax_cross_entropy_with_logits(x[:, 0], x)


def test_labels_out_of_range_eager_graph_and_xla() -> None:
    x = tf.zeros((2, 3))
    y = tf.constant([0, 3])
    with pytest.raises(ValueError, match=r"lie in \[0, 3\).*from 0 to 3"):
        logitloss.sparse_softmax_cross_entropy_with_logits(y, x)
    with pytest.raises(ValueError, match=r"lie in \[0, 3\)"):
        logitloss.cross_entropy(x, y)

    def loss(y, x):
        return logitloss.sparse_softmax_cross_entropy_with_logits(y, x)

    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`labels` must lie in \[0, 3\)"):
        tf.function(loss)(y, x)
    ignored = tf.function(lambda y, x: logitloss.cross_entropy(x, y, ignore_index=-1))
    assert float(ignored(tf.constant([0, -1]), x)) == pytest.approx(math.log(3))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"cross_entropy: `labels` must lie"):
        ignored(tf.constant([0, 5]), x)
    xla = tf.function(loss, jit_compile=True)(y, x).numpy()
    assert xla[0] == pytest.approx(math.log(3)) and np.isnan(xla[1])


# --- float32 internals ------------------------------------------------------------------------


def test_float32_internals_bound_and_scope() -> None:
    """float32 internals on a grid of logits: a few ULP (mpmath), and only inside the block."""
    xs = np.concatenate([np.linspace(-80, 80, 161), [1e-7, -1e-7, 0.5, 3.0]]).astype(np.float32)
    zs = np.array([0.0, 0.3, 1.0], np.float32)
    x = tf.constant(np.repeat(xs, 3))
    z = tf.constant(np.tile(zs, len(xs)))
    with logitloss.float32_internals():
        fast = logitloss.sigmoid_cross_entropy_with_logits(z, x).numpy()
        traced = tf.function(logitloss.sigmoid_cross_entropy_with_logits)(z, x).numpy()
    exact = logitloss.sigmoid_cross_entropy_with_logits(z, x).numpy()
    worst = worst_exact = 0.0
    for xi, zi, a, b in zip(x.numpy(), z.numpy(), fast, exact, strict=True):
        want = oracle.logistic(float(xi), float(zi))
        if want > 1.2e-38:  # normal results (TF's CPU flushes subnormal ones to zero)
            worst = max(worst, oracle.ulp_error(float(a), want, "float32"))
            worst_exact = max(worst_exact, oracle.ulp_error(float(b), want, "float32"))
    assert worst_exact <= 1.0
    assert 0 < worst <= 4.0
    np.testing.assert_array_equal(traced, fast)


# --- distribution, SavedModel -----------------------------------------------------------------

_MIRRORED = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import logitloss

    x = np.random.default_rng(3).normal(size=(8, 5)).astype(np.float32)
    y = np.arange(8) % 5
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert strategy.num_replicas_in_sync == 2
    with strategy.scope():
        w = tf.Variable(tf.ones((5,)))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)

    @tf.function
    def step(batch):
        def replica(xb, yb):
            with tf.GradientTape() as tape:
                loss = logitloss.cross_entropy(xb * w, yb, reduction="sum") / 8.0
            return loss, tape.gradient(loss, w)
        loss, grad = strategy.run(replica, args=batch)
        return (strategy.reduce("SUM", loss, axis=None), strategy.reduce("SUM", grad, axis=None))

    loss, grad = step(next(iter(strategy.experimental_distribute_dataset(data))))
    one = tf.Variable(tf.ones((5,)))
    with tf.GradientTape() as tape:
        ref = logitloss.cross_entropy(x * one, y)
    np.testing.assert_allclose(loss.numpy(), ref.numpy(), rtol=2e-7)
    np.testing.assert_allclose(grad.numpy(), tape.gradient(ref, one).numpy(), rtol=1e-6)
    print("ok")
    """
)


def test_mirrored_strategy_on_two_logical_cpus() -> None:
    """Per-replica losses (a subprocess: logical devices are set before TF initialises) summed
    across two replicas equal the one-device loss and gradient."""
    done = subprocess.run(
        [sys.executable, "-c", _MIRRORED], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


class _Model(tf.Module):
    def __init__(self) -> None:
        self.w = tf.Variable([[1.0, -2.0, 0.5]])

    @tf.function(input_signature=[tf.TensorSpec([None, 3]), tf.TensorSpec([None], tf.int32)])
    def loss(self, x, y):
        return logitloss.cross_entropy(x * self.w, y, label_smoothing=0.1)

    @tf.function(input_signature=[tf.TensorSpec([None, 3]), tf.TensorSpec([None], tf.int32)])
    def grad(self, x, y):
        with tf.GradientTape() as tape:
            loss = logitloss.cross_entropy(x * self.w, y, label_smoothing=0.1)
        return tape.gradient(loss, self.w)


def test_saved_model_round_trip(tmp_path) -> None:
    model = _Model()
    x = tf.constant([[0.1, 2.0, -3.0], [1.0, 1.0, 40.0]])
    y = tf.constant([1, 2])
    before, grad_before = model.loss(x, y), model.grad(x, y)
    tf.saved_model.save(model, str(tmp_path / "m"))
    loaded = tf.saved_model.load(str(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.loss(x, y).numpy(), before.numpy())
    np.testing.assert_array_equal(loaded.grad(x, y).numpy(), grad_before.numpy())
    with tf.GradientTape() as tape:  # through the restored function's saved custom gradient
        loss = loaded.loss(x, y)
    np.testing.assert_allclose(tape.gradient(loss, loaded.w).numpy(), grad_before, rtol=2e-7)


def test_readme_example_runs() -> None:
    """The README's TensorFlow example (a GradientTape loop, a jit-compiled step) as it is."""
    from pathlib import Path

    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index("## TensorFlow\n") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", 12)]
    namespace: dict = {}
    exec(compile(code, "README.md (TensorFlow)", "exec"), namespace)
    assert float(namespace["loss"]) > 0


def test_large_tensors_keep_off_the_kernels_and_fused_path() -> None:
    """Past the kernels' size threshold a TF tensor still takes the TF path (a tf.Tensor and a
    tape gradient), never the numba kernels or the fused training path (NumPy views)."""
    from logitloss._core import route

    x = tf.Variable(tf.random.stateless_normal((200, 100), seed=(4, 5)))
    y = tf.constant(np.arange(200) % 100)
    assert 200 * 100 >= route.KERNEL_MIN and not route.kernels_take(x)
    with tf.GradientTape() as tape:
        loss = logitloss.cross_entropy(x, y) + logitloss.binary_cross_entropy_with_logits(
            x, tf.nn.sigmoid(x)
        )
    assert isinstance(loss, tf.Tensor)
    grad = tape.gradient(loss, x)
    assert isinstance(grad, tf.Tensor) and grad.shape == (200, 100)
