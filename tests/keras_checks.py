"""Every check of ``logitloss.keras`` on one Keras backend, run by ``tests/test_keras.py`` in a
subprocess with ``KERAS_BACKEND`` set (Keras picks its backend once per process).

Prints one JSON object: check name -> {"ok": bool, "detail": str}. Each check compares with
an independent oracle: Keras' own loss (``from_logits=True``) where Keras is exact, mpmath
where it is not.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import tempfile
import traceback
from collections.abc import Callable
from typing import Any

import keras
import mpmath as mp
import numpy as np
from keras.src.backend import set_keras_mask

import logitloss.keras as lk

BACKEND = keras.backend.backend()
RESULTS: dict[str, dict[str, Any]] = {}
CHECKS: list[Callable[[], str | None]] = []
RNG = np.random.default_rng(7)
EPS32 = float(np.finfo(np.float32).eps)


def check(fn: Callable[[], str | None]) -> Callable[[], str | None]:
    """A check, run by :func:`main` in the order of definition (not at import: pytest's
    doctest collection imports this module)."""
    CHECKS.append(fn)
    return fn


def main() -> None:
    """Run every check, recording its outcome under its name: ok, or the failure's traceback."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        # Two logical CPUs for MirroredStrategy, before TensorFlow initialises its devices.
        cpu = tf.config.list_physical_devices("CPU")[0]
        logical = [tf.config.LogicalDeviceConfiguration()] * 2
        tf.config.set_logical_device_configuration(cpu, logical)
    for fn in CHECKS:
        try:
            detail = fn() or ""
            RESULTS[fn.__name__] = {"ok": True, "detail": detail}
        except Exception:  # every failure is reported to the test, whatever it is
            RESULTS[fn.__name__] = {"ok": False, "detail": traceback.format_exc()[-3000:]}
    print("KERAS_CHECKS " + json.dumps(RESULTS))
    sys.stdout.flush()


def numpy(value: Any) -> np.ndarray:
    return np.asarray(keras.ops.convert_to_numpy(value), dtype=np.float64)


def close(ours: Any, theirs: Any, rtol: float, what: str, atol: float = 1e-30) -> None:
    a, b = numpy(ours), numpy(theirs)
    assert a.shape == b.shape, (what, a.shape, b.shape)
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


# --- Inputs: moderate logits (Keras exact within float32 rounding) ---------------------------

B, C = 6, 4
X = (RNG.standard_normal((B, C)) * 2).astype(np.float32)
# Focal losses: Keras forms 1 - p from a rounded p (relative error eps / (1 - p)), so its value
# is float32-exact only for p away from 1.
XF = (RNG.standard_normal((B, C)) * 1.0).astype(np.float32)
ONE_HOT = np.eye(C, dtype=np.float32)[RNG.integers(0, C, B)]
SOFT = RNG.dirichlet(np.ones(C), B).astype(np.float32)
BINARY = RNG.integers(0, 2, (B, C)).astype(np.float32)
BINARY_SOFT = RNG.uniform(0, 1, (B, C)).astype(np.float32)
INDICES = RNG.integers(0, C, B)
INDICES_IGNORED = INDICES.copy()
INDICES_IGNORED[[1, 4]] = -1
SAMPLE_WEIGHT = RNG.uniform(0.2, 2.0, B).astype(np.float32)
MASK = np.array([True, False, True, True, False, True])
REDUCTIONS = ["sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none"]


def masked(x: np.ndarray, mask: np.ndarray | None) -> Any:
    """``x`` as a backend tensor carrying a Keras mask (as a masking layer's output does)."""
    tensor = keras.ops.convert_to_tensor(x)
    if mask is not None:
        set_keras_mask(tensor, keras.ops.convert_to_tensor(mask))
    return tensor


def parity(
    ours_cls: type,
    keras_cls: type,
    variants: list[dict[str, Any]],
    inputs: list[tuple[np.ndarray, np.ndarray]],
    rtol: float,
    atol: float = 1e-30,
) -> str:
    """Every combination of reduction x sample_weight x mask x variant x inputs."""
    count = 0
    grid = itertools.product(REDUCTIONS, [None, SAMPLE_WEIGHT], [None, MASK], variants, inputs)
    for reduction, weight, mask, options, (labels, logits) in grid:
        ours = ours_cls(from_logits=True, reduction=reduction, **options)
        theirs = keras_cls(from_logits=True, reduction=reduction, **options)
        a = ours(labels, masked(logits, mask), sample_weight=weight)
        b = theirs(labels, masked(logits, mask), sample_weight=weight)
        what = f"{reduction} weight={weight is not None} mask={mask is not None} {options}"
        close(a, b, rtol, what, atol=atol)
        count += 1
    return f"{count} combinations"


@check
def parity_binary() -> str:
    variants = [{"label_smoothing": 0.0}, {"label_smoothing": 0.1}]
    inputs = [(BINARY, X), (BINARY_SOFT, X), (BINARY[:, :1], X[:, :1]), (BINARY[:, 0], X[:, :1])]
    # Keras' torch and JAX backends form log(1 + e^-|x|) with log, not log1p: an absolute error
    # of about eps (9 ULP of 0.0658 at x = -2.69, where logitloss's value is the exact one).
    return parity(lk.BinaryCrossentropy, keras.losses.BinaryCrossentropy, variants, inputs,
                  8 * EPS32, atol=16 * EPS32)  # fmt: skip


@check
def parity_categorical() -> str:
    variants = [{"label_smoothing": 0.0}, {"label_smoothing": 0.1}]
    inputs = [(ONE_HOT, X), (SOFT, X)]
    return parity(lk.CategoricalCrossentropy, keras.losses.CategoricalCrossentropy, variants,
                  inputs, 8 * EPS32)  # fmt: skip


@check
def parity_categorical_axis() -> str:
    """Classes on axis 1 of a 3-D batch (no smoothing: Keras counts the last axis for it)."""
    x = (RNG.standard_normal((B, C, 3)) * 2).astype(np.float32)
    z = np.moveaxis(np.eye(C, dtype=np.float32)[RNG.integers(0, C, (B, 3))], -1, 1)
    for reduction in REDUCTIONS:
        ours = lk.CategoricalCrossentropy(from_logits=True, axis=1, reduction=reduction)
        theirs = keras.losses.CategoricalCrossentropy(from_logits=True, axis=1,
                                                      reduction=reduction)  # fmt: skip
        close(ours(z, x), theirs(z, x), 8 * EPS32, reduction)
    return "5 reductions"


@check
def parity_sparse() -> str:
    variants = [{"ignore_class": None}, {"ignore_class": -1}]
    inputs = [(INDICES, X), (INDICES[:, None], X)]
    done = parity(lk.SparseCategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy,
                  variants, inputs, 8 * EPS32)  # fmt: skip
    more = parity(lk.SparseCategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy,
                  [{"ignore_class": -1}], [(INDICES_IGNORED, X)], 8 * EPS32)  # fmt: skip
    return f"{done}, {more} with ignored labels"


@check
def parity_binary_focal() -> str:
    variants = [
        {"gamma": g, "apply_class_balancing": b, "alpha": 0.7, "label_smoothing": s}
        for g, b, s in itertools.product([0.0, 2.0], [False, True], [0.0, 0.1])
    ]
    # Keras' 1 - p_t from a rounded p: eps / (1 - p) relative, gamma times, for p <= 0.97.
    return parity(lk.BinaryFocalCrossentropy, keras.losses.BinaryFocalCrossentropy, variants,
                  [(BINARY_SOFT, XF)], 2e-5)  # fmt: skip


@check
def parity_categorical_focal() -> str:
    variants = [
        {"gamma": g, "alpha": a, "label_smoothing": s}
        for g, a, s in itertools.product([0.0, 1.5], [0.25, [0.5, 1.0, 2.0, 0.25]], [0.0, 0.1])
    ]
    return parity(lk.CategoricalFocalCrossentropy, keras.losses.CategoricalFocalCrossentropy,
                  variants, [(SOFT, XF)], 2e-5)  # fmt: skip


# --- Where Keras is not exact -----------------------------------------------------------------


def mp_softplus(t: float) -> Any:
    with mp.workdps(50):
        return mp.log1p(mp.exp(mp.mpf(t)))


@check
def extremes() -> str:
    """Exact values where Keras' are NaN (infinite logits) or clipped (focal losses); Keras'
    values pinned as the README states them."""
    f32 = np.float32
    cases = [
        # (ours, keras, labels, logits, exact, keras's value or None for NaN)
        (lk.BinaryCrossentropy, keras.losses.BinaryCrossentropy, {}, [[1.0]], [[np.inf]], 0.0,
         None),
        (lk.CategoricalCrossentropy, keras.losses.CategoricalCrossentropy, {}, [[1.0, 0.0]],
         [[np.inf, 0.0]], 0.0, None),
        (lk.SparseCategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy, {},
         np.array([1]), [[np.inf, 0.0]], np.inf, None),
        (lk.CategoricalFocalCrossentropy, keras.losses.CategoricalFocalCrossentropy,
         {"gamma": 0.0, "alpha": 1.0}, [[1.0, 0.0]], [[0.0, 40.0]], 40.0, 16.118095),
        # Keras forms sigma(20) = 1 in float32: the factor (1 - p_t)^2 is 0.
        (lk.BinaryFocalCrossentropy, keras.losses.BinaryFocalCrossentropy, {"gamma": 2.0},
         [[1.0]], [[20.0]], float(mp_softplus(-20) * (1 / (1 + mp.exp(20))) ** 2), 0.0),
    ]  # fmt: skip
    for ours_cls, keras_cls, options, labels, logits, exact, keras_value in cases:
        labels = labels if isinstance(labels, np.ndarray) else np.array(labels, f32)
        logits = np.array(logits, f32)
        got = float(numpy(ours_cls(from_logits=True, **options)(labels, logits)))
        assert got == float(f32(exact)), (ours_cls.__name__, got, exact)
        theirs = float(numpy(keras_cls(from_logits=True, **options)(labels, logits)))
        if keras_value is None:
            assert np.isnan(theirs), (keras_cls.__name__, theirs)
        else:
            assert abs(theirs - keras_value) <= 1e-5 * max(1.0, keras_value), (theirs, keras_value)
    return "limits and clipping pinned"


@check
def binary_focal_by_backend() -> str:
    """Keras' binary focal loss at logit 40, label 0, differs by backend (TF recovers the logit
    behind its sigmoid; JAX and torch clip the probability): the exact 40 here on every one."""
    labels, logits = np.array([[0.0]], np.float32), np.array([[40.0]], np.float32)
    ours = float(numpy(lk.BinaryFocalCrossentropy(from_logits=True)(labels, logits)))
    theirs = float(numpy(keras.losses.BinaryFocalCrossentropy(from_logits=True)(labels, logits)))
    exact = float(np.float32(mp_softplus(40) * (1 / (1 + mp.exp(-40))) ** 2))
    assert ours == exact == 40.0, ours
    expected = 40.0 if BACKEND == "tensorflow" else 15.942385
    assert abs(theirs - expected) <= 1e-5 * expected, theirs
    return f"keras {theirs}"


def gradient(loss: Any, labels: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """d loss / d logits on this backend, by its own autodiff."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        x = tf.Variable(logits)
        with tf.GradientTape() as tape:
            value = loss(labels, x)
        return tape.gradient(value, x).numpy()
    if BACKEND == "jax":
        import jax

        return np.asarray(jax.grad(lambda x: loss(labels, x))(logits))
    import torch

    x = torch.tensor(logits, requires_grad=True)
    loss(labels, x).backward()
    return x.grad.numpy()


@check
def extreme_gradients() -> str:
    """The exact gradient at a confident wrong prediction: d/dx of CategoricalFocal(gamma=0,
    alpha=1) at logits [0, 40], label 0, is [-1, 1] (Keras' clip gives 0)."""
    loss = lk.CategoricalFocalCrossentropy(from_logits=True, gamma=0.0, alpha=1.0)
    grad = gradient(loss, np.array([[1.0, 0.0]], np.float32), np.array([[0.0, 40.0]], np.float32))
    np.testing.assert_allclose(grad, [[-1.0, 1.0]], rtol=1e-6)
    return str(grad.tolist())


@check
def gradients_match_keras() -> str:
    """Moderate logits: the gradient of every loss is Keras' own."""
    pairs = [
        (lk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1),
         keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=0.1), BINARY_SOFT, X),
        (lk.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
         keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1), SOFT, X),
        (lk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1),
         keras.losses.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1),
         INDICES_IGNORED, X),
        (lk.BinaryFocalCrossentropy(from_logits=True, apply_class_balancing=True),
         keras.losses.BinaryFocalCrossentropy(from_logits=True, apply_class_balancing=True),
         BINARY, XF),
        (lk.CategoricalFocalCrossentropy(from_logits=True, gamma=1.5),
         keras.losses.CategoricalFocalCrossentropy(from_logits=True, gamma=1.5), ONE_HOT, XF),
    ]  # fmt: skip
    for ours, theirs, labels, logits in pairs:
        np.testing.assert_allclose(gradient(ours, labels, logits), gradient(theirs, labels, logits),
                                   rtol=5e-5, atol=1e-7, err_msg=type(ours).__name__)  # fmt: skip
    return "5 losses"


# --- Labels -----------------------------------------------------------------------------------


@check
def float16_labels_exact() -> str:
    """A float16 loss: label 2049 stays 2049 here; Keras reads it as 2048."""
    x = np.zeros((1, 2050), np.float32)
    x[0, 2049], x[0, 2048] = 3.0, -3.0
    labels = np.array([2049])
    exact = float(np.float16(mp.log(2049 - 2 + mp.exp(3) + mp.exp(-3)) - 3))
    ours = float(numpy(lk.SparseCategoricalCrossentropy(from_logits=True, dtype="float16")(
        labels, x)))  # fmt: skip
    theirs = float(numpy(keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, dtype="float16")(labels, x)))  # fmt: skip
    assert ours == exact, (ours, exact)
    wrong = float(np.float16(mp.log(2049 - 2 + mp.exp(3) + mp.exp(-3)) + 3))
    assert abs(theirs - wrong) <= 0.01 * wrong, (theirs, wrong)  # Keras: label 2048's loss
    return f"ours {ours}, keras {theirs}"


@check
def float_sparse_labels() -> str:
    """Float labels (Keras' JAX and torch data paths) are cast to integers; non-whole ones are
    a ValueError where values can be read."""
    loss = lk.SparseCategoricalCrossentropy(from_logits=True)
    a = loss(INDICES.astype(np.float32), X)
    close(a, keras.losses.SparseCategoricalCrossentropy(from_logits=True)(INDICES, X), 8 * EPS32,
          "float labels")  # fmt: skip
    try:
        loss(np.array([0.5, 1, 2, 3, 0, 1], np.float32), X)
    except ValueError as err:
        assert "SparseCategoricalCrossentropy: float labels must be whole numbers" in str(err)
        return str(err)
    raise AssertionError("no ValueError for label 0.5")


@check
def errors() -> str:
    cases = [
        (lambda: lk.BinaryCrossentropy(), ValueError,
         "BinaryCrossentropy: `from_logits` must be True, got False: logitloss computes"),
        (lambda: lk.SparseCategoricalCrossentropy(from_logits=1), ValueError,
         "SparseCategoricalCrossentropy: `from_logits` must be True, got 1"),
        (lambda: lk.CategoricalCrossentropy(from_logits=True, label_smoothing=2.0), ValueError,
         "CategoricalCrossentropy: `label_smoothing` must be in [0, 1], got 2.0"),
        (lambda: lk.BinaryFocalCrossentropy(from_logits=True, gamma=-1.0), ValueError,
         "BinaryFocalCrossentropy: `gamma` must be >= 0, got -1.0"),
        (lambda: lk.BinaryFocalCrossentropy(from_logits=True, alpha=1.5), ValueError,
         "BinaryFocalCrossentropy: `alpha` must be in [0, 1], got 1.5"),
        (lambda: lk.CategoricalFocalCrossentropy(from_logits=True, alpha=[1.0, -1.0]),
         ValueError, "CategoricalFocalCrossentropy: `alpha` must be >= 0, got -1.0"),
        (lambda: lk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=1.5),
         TypeError, "SparseCategoricalCrossentropy: `ignore_class` must be an int or None"),
        (lambda: lk.CategoricalCrossentropy(from_logits=True, axis="a"), TypeError,
         "CategoricalCrossentropy: `axis` must be an int, got builtins.str"),
        (lambda: lk.SparseCategoricalCrossentropy(from_logits=True)(np.array([0, 9]), X[:2]),
         ValueError, "`labels` must lie in [0, 4)"),
    ]  # fmt: skip
    for call, error, message in cases:
        try:
            call()
        except error as err:
            assert message in str(err), (message, str(err))
        else:
            raise AssertionError(f"no {error.__name__}: {message}")
    return f"{len(cases)} errors"


# --- Config, serialization ----------------------------------------------------------------------

CONFIGURED = [
    lk.BinaryCrossentropy(from_logits=True, label_smoothing=0.1, axis=-1, reduction="sum",
                          name="b", dtype="float64"),
    lk.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2, axis=1, reduction=None),
    lk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1, axis=-1, name="s"),
    lk.BinaryFocalCrossentropy(from_logits=True, apply_class_balancing=True, alpha=0.3,
                               gamma=1.5, label_smoothing=0.05, reduction="mean"),
    lk.CategoricalFocalCrossentropy(from_logits=True, alpha=[0.5, 1.0, 2.0, 0.25], gamma=0.5),
]  # fmt: skip


@check
def config_round_trip() -> str:
    for loss in CONFIGURED:
        config = loss.get_config()
        again = type(loss).from_config(config)
        assert again.get_config() == config, (config, again.get_config())
        assert config["from_logits"] is True
        restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
        assert type(restored) is type(loss) and restored.get_config() == config
    return "5 losses"


def small_model(outputs: int, *, seed: int = 1) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(outputs)(keras.layers.Dense(5)(inputs)))


DATA_X = RNG.standard_normal((32, 3)).astype(np.float32)
FIT_CASES = {
    "BinaryCrossentropy": (lambda: lk.BinaryCrossentropy(from_logits=True),
                           lambda: keras.losses.BinaryCrossentropy(from_logits=True), 1,
                           RNG.integers(0, 2, (32, 1)).astype(np.float32)),
    "CategoricalCrossentropy": (lambda: lk.CategoricalCrossentropy(from_logits=True,
                                                                  label_smoothing=0.1),
                                lambda: keras.losses.CategoricalCrossentropy(
                                    from_logits=True, label_smoothing=0.1), C,
                                np.eye(C, dtype=np.float32)[RNG.integers(0, C, 32)]),
    "SparseCategoricalCrossentropy": (lambda: lk.SparseCategoricalCrossentropy(
                                          from_logits=True, ignore_class=-1),
                                      lambda: keras.losses.SparseCategoricalCrossentropy(
                                          from_logits=True, ignore_class=-1), C,
                                      np.where(RNG.uniform(size=32) < 0.2, -1,
                                               RNG.integers(0, C, 32))),
    "BinaryFocalCrossentropy": (lambda: lk.BinaryFocalCrossentropy(from_logits=True,
                                                                  apply_class_balancing=True),
                                lambda: keras.losses.BinaryFocalCrossentropy(
                                    from_logits=True, apply_class_balancing=True), 1,
                                RNG.integers(0, 2, (32, 1)).astype(np.float32)),
    "CategoricalFocalCrossentropy": (lambda: lk.CategoricalFocalCrossentropy(from_logits=True),
                                     lambda: keras.losses.CategoricalFocalCrossentropy(
                                         from_logits=True), C,
                                     np.eye(C, dtype=np.float32)[RNG.integers(0, C, 32)]),
}  # fmt: skip
FIT_WEIGHTS = RNG.uniform(0.5, 2.0, 32).astype(np.float32)


def fit_steps(make_loss: Callable[[], Any], outputs: int, y: np.ndarray, steps: int) -> Any:
    model = small_model(outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=make_loss())
    history = model.fit(DATA_X, y, sample_weight=FIT_WEIGHTS, batch_size=32, epochs=steps,
                        shuffle=False, verbose=0)  # fmt: skip
    return model, history.history["loss"]


@check
def fit() -> str:
    """model.fit with sample_weight: the same losses and weights, step by step, as Keras' own
    loss from the same initial weights, and a decreasing loss."""
    out = []
    for name, (ours, theirs, outputs, y) in FIT_CASES.items():
        model, losses = fit_steps(ours, outputs, y, 3)
        reference, reference_losses = fit_steps(theirs, outputs, y, 3)
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (name, losses)
        np.testing.assert_allclose(losses, reference_losses, rtol=2e-5, err_msg=name)
        for w, r in zip(model.get_weights(), reference.get_weights(), strict=True):
            np.testing.assert_allclose(w, r, rtol=1e-4, atol=1e-6, err_msg=name)
        out.append(f"{name} {losses[0]:.4f}->{losses[-1]:.4f}")
    return "; ".join(out)


@check
def fit_masked_sequence() -> str:
    """A masked sequence (Embedding(mask_zero=True)): the mask reaches the loss as Keras'."""
    tokens = RNG.integers(1, 9, (16, 5))
    tokens[:, 3:] = 0
    targets = RNG.integers(0, C, (16, 5))

    def run(make_loss: Callable[[], Any]) -> list[float]:
        keras.utils.set_random_seed(3)
        inputs = keras.Input((5,), dtype="int32")
        hidden = keras.layers.Embedding(9, 4, mask_zero=True)(inputs)
        model = keras.Model(inputs, keras.layers.Dense(C)(hidden))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss=make_loss())
        history = model.fit(tokens, targets, batch_size=16, epochs=2, shuffle=False, verbose=0)
        return history.history["loss"]

    ours = run(lambda: lk.SparseCategoricalCrossentropy(from_logits=True))
    theirs = run(lambda: keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    np.testing.assert_allclose(ours, theirs, rtol=2e-5)
    return str(ours)


@check
def mixed_float16() -> str:
    """mixed_float16: float16 logits, label 2049 of 2050 classes; the loss (float32 by default)
    and one step are Keras' own, and a float16 loss dtype keeps the label."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        y = np.array([2049, 3, 2048, 0])
        x = RNG.standard_normal((4, 3)).astype(np.float32)

        def run(loss: Any) -> tuple[list[float], np.ndarray]:
            keras.utils.set_random_seed(5)
            inputs = keras.Input((3,))
            model = keras.Model(inputs, keras.layers.Dense(2050)(inputs))
            model.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
            history = model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0)
            return history.history["loss"], model.get_weights()[1]

        ours, bias = run(lk.SparseCategoricalCrossentropy(from_logits=True, dtype="float16"))
        assert np.all(np.isfinite(ours)), ours
        # Each label's bias is pushed up by its own example: 2049 and 2048 apart.
        assert bias[2049] > 0 and bias[2048] > 0 and bias[2047] < 0, bias[2046:]
        theirs, _ = run(keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        ours32, _ = run(lk.SparseCategoricalCrossentropy(from_logits=True))
        np.testing.assert_allclose(ours32, theirs, rtol=1e-3)
        return f"float16 loss {ours}, float32 loss {ours32}, keras {theirs}"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@check
def save_load() -> str:
    """.keras save and load without custom_objects: the loss's class and config come back, and
    the loaded model evaluates to the same loss."""
    with tempfile.TemporaryDirectory() as folder:
        for name, (ours, _, outputs, y) in FIT_CASES.items():
            model = small_model(outputs)
            model.compile(optimizer="sgd", loss=ours())
            before = model.evaluate(DATA_X, y, verbose=0)
            path = os.path.join(folder, f"{name}.keras")
            model.save(path)
            loaded = keras.saving.load_model(path)
            kind = type(loaded.loss)
            assert (kind.__module__, kind.__name__) == ("logitloss.keras", name), kind
            assert loaded.loss.get_config() == model.loss.get_config()
            after = loaded.evaluate(DATA_X, y, verbose=0)
            assert after == before, (name, before, after)
    return "5 losses"


@check
def distributed() -> str:
    """MirroredStrategy on 2 logical CPUs: each replica's loss scaled by 1/2 as Keras' own."""
    if BACKEND != "tensorflow":
        return "TensorFlow only"
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    ours = lk.CategoricalCrossentropy(from_logits=True)
    theirs = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(loss: Any) -> Any:
        return strategy.run(lambda: loss(ONE_HOT, tf.constant(X)))

    a = strategy.experimental_local_results(step(ours))
    b = strategy.experimental_local_results(step(theirs))
    single = float(ours(ONE_HOT, X))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_allclose(float(x), float(y), rtol=8 * EPS32)
        np.testing.assert_allclose(float(x), single / 2, rtol=8 * EPS32)
    return f"{[float(v) for v in a]} vs unscaled {single}"


@check
def readme_example() -> str:
    """The README's Keras example, as written there."""
    readme = os.path.join(os.path.dirname(__file__), "..", "README.md")
    text = open(readme, encoding="utf-8").read()
    start = text.index("<!-- keras-example -->")
    code = text[text.index("```python", start) + len("```python") : text.index("```", text.index(
        "```python", start) + 9)]  # fmt: skip
    scope: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), scope)
    return "ran"


if __name__ == "__main__":
    main()
