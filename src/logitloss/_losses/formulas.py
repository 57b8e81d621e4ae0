"""The stable math, written once.

Every function here takes arrays that are already validated, broadcast and converted to the
*compute* dtype (float64 for every input dtype where the library has it, see ``_arrays``), and
the array namespace ``xp`` as a keyword. Nothing here validates, converts or picks a backend.

The forms are chosen so that every term added is non-negative for labels in [0, 1] and
``pos_weight >= 0``: a sum of non-negative terms has no cancellation, so each loss is computed to
a few float64 rounding errors, and rounds once to the caller's dtype. Limits at infinite logits
come from guards that give a term with a zero coefficient the value zero (``0 * inf`` would be
NaN), which is the true limit of every such term.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

Array = Any


def _scalar(value: float, like: Array, *, xp: Any) -> Array:
    """A 0-d array of ``like``'s dtype and device (strict namespaces refuse Python scalars)."""
    return xp.asarray(value, dtype=like.dtype, device=_device(like))


def _device(x: Array) -> Any:
    from array_api_compat import device

    return device(x)


def logistic_loss(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    r"""Elementwise weighted logistic loss ``q z softplus(-x) + (1 - z) softplus(x)``.

    With :math:`l = (1 - z) + q z` (the weight of the log term, never ``1 + (q - 1) z``, which
    cancels) the loss is computed as

    .. math::

        x \ge 0:\quad (1 - z)\,x + l \log(1 + e^{-x}) \qquad
        x < 0:\quad q z\,(-x) + l \log(1 + e^{x})

    Both terms are non-negative, so nothing cancels (TensorFlow's ``x - x z`` loses every bit
    at ``x = 24, z = 1 - 2^{-23}``; its ``log(1 + exp(-|x|)) + max(-x, 0)`` loses the small
    log term next to ``-x``). ``q = None`` is the unweighted loss (``q = 1``, ``l = 1``).

    The branch is chosen by the sign of ``x`` rather than written with ``|x|`` so that automatic
    differentiation sees the true derivative at ``x = 0``.
    """
    zero = _scalar(0.0, x, xp=xp)
    nonneg = x >= 0
    # |x| with the derivative of the chosen branch (1 or -1 at x = 0, never abs's 0).
    magnitude = xp.where(nonneg, x, -x)
    one_minus_z = 1 - z
    # A zero coefficient contributes exactly zero, also at x = +-inf where 0 * inf is NaN.
    linear_pos = one_minus_z * xp.where(one_minus_z == 0, zero, magnitude)
    if q is None:
        linear_neg = z * xp.where(z == 0, zero, magnitude)
        log_weight = None
    else:
        masked = xp.where((z == 0) | (q == 0), zero, magnitude)
        # q z |x| as (q |x|) z: z |x| can be subnormal (z tiny) and lose the bits q would
        # scale back up; q |x| can only overflow, and then q (z |x|) has no subnormal step.
        q_x = q * masked
        linear_neg = xp.where(xp.isfinite(q_x), q_x * z, q * (z * masked))
        log_weight = one_minus_z + q * z
    linear = xp.where(nonneg, linear_pos, linear_neg)
    return linear + _weighted_log1p_exp_neg(magnitude, log_weight, xp=xp)


# Beyond this, e^-m < 2^-738: log1p(e^-m) == e^-m, which may be subnormal in float64.
_FAR = 512.0
_EXP_NEG_FAR = math.exp(-_FAR)


def _weighted_log1p_exp_neg(m: Array, weight: Array | None, *, xp: Any) -> Array:
    """``weight * log(1 + e^-m)`` for ``m >= 0``, also where ``e^-m`` is subnormal.

    Past ``m = 512`` the value is ``(weight * e^(512 - m)) * e^-512``: the weight scales a
    normal number before the result is rounded to the subnormal range, once (``512 - m`` is
    exact by Sterbenz's lemma up to ``m = 1024``, beyond which the result is 0 anyway).
    """
    far = m > _FAR
    e = xp.exp(xp.where(far, _FAR - m, -m))
    near = xp.log1p(e)
    if weight is not None:
        e, near = weight * e, weight * near
    return xp.where(far, e * _EXP_NEG_FAR, near)


def _two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """Knuth's error-free sum: ``a + b == hi + lo`` exactly (for finite a, b)."""
    hi = a + b
    b_virtual = hi - a
    lo = (a - (hi - b_virtual)) + (b - b_virtual)
    return hi, lo


# Up to this many terms a plain sum is kept: its error, at most (n - 1) roundings of
# non-negative terms, stays within the bounds, and small rows pay no extra array operations.
_PLAIN_SUM_MAX = 32


def class_sum(v: Array, *, axis: int, xp: Any) -> Array:
    """``sum(v, axis, keepdims=True)`` with about one rounding error whatever the length.

    Pairwise: each level adds the two halves of the axis with :func:`_two_sum` and collects
    the rounding errors, whose own sum needs no care (they are 2^-53 of the terms). A plain
    running sum gathers one error per term (951 float64 ULP at 20 000 classes of smoothed
    labels), and how a backend orders its sum is its own; this order is the library's. Infinite
    and NaN sums pass through (their error terms, NaN, are dropped).
    """
    if v.shape[axis] <= _PLAIN_SUM_MAX:
        return xp.sum(v, axis=axis, keepdims=True)
    axis %= v.ndim
    zero = _scalar(0.0, v, xp=xp)
    errors = None
    while v.shape[axis] > 1:
        n = v.shape[axis]
        half = n // 2
        head = tuple(slice(None) if d != axis else slice(0, half) for d in range(v.ndim))
        tail = tuple(slice(None) if d != axis else slice(half, 2 * half) for d in range(v.ndim))
        hi, lo = _two_sum(v[head], v[tail])
        lo = xp.sum(xp.where(xp.isfinite(hi), lo, zero), axis=axis, keepdims=True)
        errors = lo if errors is None else errors + lo
        if n % 2:
            odd = tuple(slice(None) if d != axis else slice(n - 1, n) for d in range(v.ndim))
            hi = xp.concat([hi, v[odd]], axis=axis)
        v = hi
    return v + xp.where(xp.isfinite(v), errors, zero)


def softmax_loss(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    r"""Softmax cross-entropy ``sum_j z_j (logsumexp(x) - x_j)`` along ``axis``.

    With :math:`m = \max_j x_j`, :math:`d_j = x_j - m \le 0` and
    :math:`T = \sum_{j \ne \arg\max} e^{d_j}` (ties with the maximum count 1 each),

    .. math::

        \mathrm{loss} = \sum_j z_j \bigl(\log(1 + T) + (-d_j)\bigr)

    Every term is non-negative, and ``log1p(T)`` keeps the small ``T`` that ``log(1 + T)`` (TF,
    PyTorch, optax) rounds away: logits ``[20, 0]`` with labels ``[1, 0]`` give ``2.06e-9``, not
    ``0``. ``d_j`` is formed error-free (:func:`_two_sum`) and ``e^{d_j}`` corrected by the
    rounding error ``lo``: ``e^{hi + lo} ~ e^{hi} (1 + lo)``.

    Limits: a row with a single ``+inf`` logit is one-hot on it; a label of zero contributes zero
    even where its logit is ``-inf``; a row whose maximum is ``-inf`` (all ``-inf``), or holds
    more than one ``+inf``, has no limit and gives NaN, as does any NaN in the row.
    """
    zero = _scalar(0.0, x, xp=xp)
    parts = _softmax_parts(x, axis=axis, xp=xp)
    log_sum = xp.log1p(parts.tail)
    # x_j - m overflows only for float64 logits further apart than the float64 range; there
    # the term is formed from halves, 2 z (log_sum / 2 + (m / 2 - x_j / 2)).
    overflow = xp.isinf(parts.hi) & xp.isfinite(x) & xp.isfinite(parts.m)
    halves = 2 * (z * (log_sum / 2 + (parts.m / 2 - x / 2)))
    terms = xp.where(z == 0, zero, xp.where(overflow, halves, z * (log_sum - parts.hi)))
    loss = class_sum(terms, axis=axis, xp=xp)
    return xp.squeeze(_nan_without_limit(loss, parts, xp=xp), axis=axis)


class _SoftmaxParts(NamedTuple):
    m: Array  # the row maximum (keepdims)
    is_max: Array  # where x equals the maximum
    hi: Array  # x - m, error-free up to lo; 0 at the maxima
    e: Array  # e^(x - m), corrected by the rounding error of hi; 1 at the maxima
    ties: Array  # how many entries equal the maximum (keepdims)
    small_tail: Array  # the sum of e over the entries below the maximum (keepdims)
    tail: Array  # T = (ties - 1) + small_tail: the sum of e but for one maximum (keepdims)


def _softmax_parts(x: Array, *, axis: int, xp: Any) -> _SoftmaxParts:
    zero = _scalar(0.0, x, xp=xp)
    m = xp.max(x, axis=axis, keepdims=True)
    is_max = x == m
    hi, lo = _two_sum(x, -m)
    hi = xp.where(is_max, zero, hi)
    # lo is NaN where hi is infinite (x = -inf); e^{-inf} = 0 needs no correction there.
    lo = xp.where(is_max | ~xp.isfinite(lo), zero, lo)
    e = xp.exp(hi)
    e = e + e * lo
    ties = xp.sum(xp.astype(is_max, x.dtype), axis=axis, keepdims=True)
    small_tail = class_sum(xp.where(is_max, zero, e), axis=axis, xp=xp)
    return _SoftmaxParts(m, is_max, hi, e, ties, small_tail, small_tail + (ties - 1))


def _nan_without_limit(value: Array, parts: _SoftmaxParts, *, xp: Any) -> Array:
    """NaN for rows with a NaN, all ``-inf`` or more than one ``+inf``: no limit exists."""
    m = parts.m
    no_limit = xp.isnan(parts.tail) | (m == -xp.inf) | ((m == xp.inf) & (parts.ties > 1))
    return xp.where(no_limit, _scalar(float("nan"), value, xp=xp), value)


def one_hot(labels: Array, num_classes: int, dtype: Any, *, xp: Any) -> Array:
    """``labels[..., None] == arange(num_classes)`` as ``dtype``, on ``labels``' device."""
    classes = xp.arange(num_classes, dtype=labels.dtype, device=_device(labels))
    return xp.astype(xp.expand_dims(labels, axis=-1) == classes, dtype)


def sparse_softmax_loss(x: Array, labels: Array, *, xp: Any) -> Array:
    """Softmax cross-entropy against integer ``labels`` over the last axis of ``x``.

    The same formula as :func:`softmax_loss` with one-hot labels; a label outside
    ``[0, num_classes)`` gives NaN for its row (eager backends raise before getting here).
    """
    z = one_hot(labels, x.shape[-1], x.dtype, xp=xp)
    return _nan_out_of_range(softmax_loss(x, z, axis=-1, xp=xp), labels, x.shape[-1], xp=xp)


def _nan_out_of_range(value: Array, labels: Array, num_classes: int, *, xp: Any) -> Array:
    """NaN for the rows (of the loss, or of a gradient) whose label is not a class."""
    out_of_range = (labels < 0) | (labels >= num_classes)
    if value.ndim > labels.ndim:
        out_of_range = xp.expand_dims(out_of_range, axis=-1)
    return xp.where(out_of_range, _scalar(float("nan"), value, xp=xp), value)


# --- Gradients ---------------------------------------------------------------------------------

_LN3 = math.log(3.0)
# The float64 gradient is trusted where it is at least this fraction of its terms; closer to
# the gradient's zero a double-float step forms it (its error, ~2^-53 of the terms, would
# otherwise exceed a float32 ULP of the result below about 2^-28 of them).
_DEEP = 2.0**-22


def logistic_grad_logits(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    r"""``d/dx`` of :func:`logistic_loss`: :math:`(1 - z)\,\sigma(x) - q z\,\sigma(-x)`.

    Written three ways, each free of cancellation that the exact value does not have, with
    :math:`l = (1 - z) + q z` and :math:`s = \sigma(-|x|) = e/(1 + e)`, :math:`e = e^{-|x|}`:

    - :math:`|x| < \ln 3`: :math:`\tfrac{l}{2}\tanh(x/2) + \tfrac{(1 - z) - q z}{2}` (keeps
      ``2.5e-11`` at ``x = 1e-10, z = 0.5``, where ``sigma(x) - z`` rounds to 0);
    - :math:`x \ge \ln 3`: :math:`(1 - z) - l s`;
    - :math:`x \le -\ln 3`: :math:`l s - q z`.

    Past ``|x| = 512`` the term ``l s`` is ``(l e^{512 - |x|}) e^{-512}``, rounded once into the
    subnormal range (as :func:`_weighted_log1p_exp_neg`).

    What cancels in these is the gradient's own zero (where :math:`(1 - z)\sigma(x) = q z
    \sigma(-x)`): there, below ``2^-22`` of the terms, the numerator of
    :math:`\pm(R - P e)/(1 + e)` (``R, P`` = ``1 - z, q z`` for ``x >= 0``, swapped for
    ``x < 0``) is formed in double-float arithmetic with a double-float ``e``
    (:func:`_near_zero_logistic_grad`), so that float32 results keep 1 ULP there too. Limits:
    ``1 - z`` at ``x = +inf``, ``-q z`` at ``x = -inf``.
    """
    qz = z if q is None else q * z
    one_minus_z = 1 - z
    weight = one_minus_z + qz
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    far = magnitude > _FAR
    e = xp.exp(xp.where(far, _FAR - magnitude, -magnitude))
    s = e / (1 + e)
    weighted_s = xp.where(far, (weight * e) * _EXP_NEG_FAR, weight * s)
    near_zero = (weight / 2) * xp.tanh(x / 2) + (one_minus_z - qz) / 2
    outer = xp.where(nonneg, one_minus_z - weighted_s, weighted_s - qz)
    grad = xp.where(magnitude < _LN3, near_zero, outer)
    # Deep cancellation: |grad| below 2^-22 of l sigma(-|x|) (at most twice the larger term
    # where the terms cancel). Never past |x| = 512 (no such zero there).
    deep = (xp.abs(grad) < _DEEP * (weight * s)) & ~far
    return _fix_where(grad, deep, _near_zero_logistic_grad, (x, one_minus_z, z, q), xp=xp)


def _fix_where(value: Array, mask: Array, fix: Any, args: tuple, *, xp: Any) -> Array:
    """``value`` with ``fix(*args)`` where ``mask``: on NumPy, PyTorch and CuPy arrays computed
    for the masked elements only (rare: a cheap common path), elsewhere (JAX, Dask, ...) for
    every element and selected, so that tracing and lazy evaluation still work."""
    import array_api_compat as compat

    if compat.is_numpy_array(value) or compat.is_torch_array(value) or compat.is_cupy_array(value):
        if not bool(xp.any(mask)):
            return value
        shape = value.shape
        picked = tuple(None if a is None else xp.broadcast_to(a, shape)[mask] for a in args)
        out = xp.asarray(value, copy=True)
        out[mask] = fix(*picked, xp=xp)
        return out
    return xp.where(mask, fix(*args, xp=xp), value)


# --- Double-float arithmetic (array API: no FMA, Dekker's products) -----------------------------

_SPLITTER = 134217729.0  # 2^27 + 1


def _split(a: Array) -> tuple[Array, Array]:
    c = _SPLITTER * a
    hi = c - (c - a)
    return hi, a - hi


def _two_prod(a: Array, b: Array) -> tuple[Array, Array]:
    """Dekker's error-free product: ``a b == p + e`` exactly (no overflow, no underflow)."""
    p = a * b
    ah, al = _split(a)
    bh, bl = _split(b)
    return p, ((ah * bh - p) + ah * bl + al * bh) + al * bl


def _fast_two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``a + b == s + e`` exactly for ``|a| >= |b|``."""
    s = a + b
    return s, b - (s - a)


def _dd_mul(a: tuple, b: tuple) -> tuple[Array, Array]:
    p, e = _two_prod(a[0], b[0])
    return _fast_two_sum(p, e + (a[0] * b[1] + a[1] * b[0]))


def _dd_add(a: tuple, b: tuple) -> tuple[Array, Array]:
    s, e = _two_sum(a[0], b[0])
    return _fast_two_sum(s, e + (a[1] + b[1]))


def _dd_const(value: str) -> tuple[float, float]:
    """A decimal constant as a double-float (hi, lo)."""
    from fractions import Fraction

    exact = Fraction(value)
    hi = float(exact)
    return hi, float(exact - Fraction(hi))


# ln 2 = DD_LN2[0] + DD_LN2[1] + DD_LN2[2]; the first with 32 bits, so that k * it is exact.
_LN2_EXACT = "0.69314718055994530941723212145817656807550013436025525412068000949339362196969"


def _ln2_parts() -> tuple[float, float, float]:
    from fractions import Fraction

    exact = Fraction(_LN2_EXACT)
    first = float(Fraction(math.floor(exact * 2**32), 2**32))
    rest = exact - Fraction(first)
    second = float(Fraction(math.floor(rest * 2**84), 2**84))
    return first, second, float(rest - Fraction(second))


DD_LN2 = _ln2_parts()
# 1/2, 1/6, 1/24, 1/120 as double-floats; 1/720 ... 1/10! in float64 (their terms are below
# 2^-51 of e^s - 1 for |s| <= 2^-9.5, where float64 is enough).
DD_TAYLOR = tuple(_dd_const(f"1/{math.factorial(k)}") for k in (2, 3, 4, 5))
TAYLOR_TAIL = tuple(1.0 / math.factorial(k) for k in (6, 7, 8, 9, 10))
_SQUARINGS = 8


def _exp_dd(a: Array, *, xp: Any) -> tuple[Array, Array]:
    """``e^a`` as a double-float ``(hi, lo)``, relative error about 2^-100, for float64 ``a``
    in ``[-745, 0]`` with ``e^a`` normal (the caller keeps to that).

    ``a = k ln 2 + r`` (ln 2 in three parts: ``k ln2_1`` and ``a - k ln2_1`` exact), ``r`` a
    double-float with ``|r| <= 0.35``; ``e^(r/256) - 1`` by its Taylor series (terms above
    2^-51 of it in double-float), squared back 8 times as ``u (2 + u)``, ``e^a = 2^k (1 + u)``.
    """
    k = xp.round(a * (1.0 / math.log(2.0)))
    reduced = a - k * DD_LN2[0]
    p, p_err = _two_prod(k, xp.full_like(k, DD_LN2[1]))
    r_hi, r_lo = _two_sum(reduced, -p)
    r_hi, r_lo = _fast_two_sum(r_hi, r_lo - p_err - k * DD_LN2[2])
    s = (r_hi / 256.0, r_lo / 256.0)
    tail = TAYLOR_TAIL[-1]
    for c in reversed(TAYLOR_TAIL[:-1]):
        tail = c + s[0] * tail
    poly: tuple = (tail, xp.zeros_like(tail))
    for c in reversed(DD_TAYLOR):
        poly = _dd_add(_dd_mul(s, poly), c)
    poly = _dd_add(_dd_mul(s, poly), (1.0, 0.0))
    u = _dd_mul(s, poly)
    for _ in range(_SQUARINGS):
        u = _dd_mul(u, _dd_add(u, (2.0, 0.0)))
    one_hi, one_lo = _fast_two_sum(xp.ones_like(u[0]), u[0])
    scale = xp.pow(xp.full_like(k, 2.0), k)
    return one_hi * scale, (one_lo + u[1]) * scale


def _near_zero_logistic_grad(
    x: Array, one_minus_z: Array, z: Array, q: Array | None, *, xp: Any
) -> Array:
    """:func:`logistic_grad_logits` next to its zero: ``+-(R - P e) / (1 + e)``, ``e = e^-|x|``,
    ``(R, P) = (1 - z, q z)`` for ``x >= 0`` and ``(q z, 1 - z)`` (negated) for ``x < 0``, the
    numerator in double-float arithmetic (``1 - z`` and ``q z`` error-free)."""
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    e = _exp_dd(-xp.where(magnitude < 745.0, magnitude, 745.0), xp=xp)
    a = _two_sum(xp.ones_like(z), -z)
    b = (z, xp.zeros_like(z)) if q is None else _two_prod(q, z)
    r = tuple(xp.where(nonneg, u, v) for u, v in zip(a, b, strict=True))
    p = tuple(xp.where(nonneg, v, u) for u, v in zip(a, b, strict=True))
    pe = _dd_mul(p, e)
    numerator = _dd_add(r, (-pe[0], -pe[1]))[0]
    grad = numerator / (1 + e[0])
    return xp.where(nonneg, grad, -grad)


def logistic_grad_labels(x: Array, z: Array, q: Array | None, *, xp: Any) -> Array:
    r"""``d/dz`` of :func:`logistic_loss`: :math:`q\,\mathrm{softplus}(-x) - \mathrm{softplus}(x)`.

    ``-x`` exactly for the unweighted loss; with ``q``, :math:`(q - 1)\log(1 + e^{-x}) - x` for
    :math:`x \ge 0` and :math:`q(-x) + (q - 1)\log(1 + e^{x})` for :math:`x < 0`. Does not
    depend on ``z``; ``z`` sets the shape only.
    """
    if q is None:
        return xp.broadcast_to(-x, _broadcast_shape(x, z))
    zero = _scalar(0.0, x, xp=xp)
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    q_minus_one = q - 1
    log_term = q_minus_one * _weighted_log1p_exp_neg(magnitude, None, xp=xp)
    # q (-x) with q = 0 is 0 also at x = -inf.
    linear = xp.where(nonneg, -x, q * xp.where(q == 0, zero, magnitude))
    return xp.broadcast_to(linear + log_term, _broadcast_shape(x, z, q))


def logistic_grad_pos_weight(x: Array, z: Array, *, xp: Any) -> Array:
    r"""``d/dq`` of :func:`logistic_loss`, elementwise: :math:`z\,\mathrm{softplus}(-x)`."""
    zero = _scalar(0.0, x, xp=xp)
    nonneg = x >= 0
    magnitude = xp.where(nonneg, x, -x)
    linear = xp.where(nonneg, zero, z * xp.where(z == 0, zero, magnitude))
    return linear + z * _weighted_log1p_exp_neg(magnitude, None, xp=xp)


def _broadcast_shape(*arrays: Array) -> tuple[int, ...]:
    import numpy as np

    return tuple(np.broadcast_shapes(*(tuple(a.shape) for a in arrays)))


def _first_max(x: Array, *, axis: int, xp: Any) -> Array:
    """A mask of the first maximum of each row along ``axis``."""
    axis %= x.ndim
    index = xp.argmax(x, axis=axis, keepdims=True)
    positions = xp.arange(x.shape[axis], device=_device(x))
    positions = xp.reshape(positions, tuple(-1 if d == axis else 1 for d in range(x.ndim)))
    return positions == index


def softmax_grad_logits(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    r"""``d/dx_j`` of :func:`softmax_loss`: :math:`\mathrm{softmax}(x)_j \sum_k z_k - z_j`.

    The true derivative for labels of any sum (TF's kernel returns ``softmax - z``, which is
    this only when the labels sum to 1). With ``e_j = e^{x_j - m}``, :math:`S = \sum_k z_k`
    and :math:`D = \sum_k e_k`, the derivative is :math:`(S e_j - z_j D) / D`.

    The entries below the maximum are split: "near" ones (``x_j - m > -ln 3``), whose ``e_j``
    is kept as ``1 + u_j``, ``u_j = expm1(x_j - m)`` (which keeps a difference of logits that
    float64 cannot resolve next to 1: ``[0, 1e-30]``), and "far" ones. With ``C`` the number
    of maxima and near entries, ``U`` the sum of their ``u`` and ``t`` the sum of the far
    ``e``, ``D = C + t + U`` and the numerator is

    - at a maximum: :math:`(S_j - z_j (C - 1)) - z_j (t + U)`, ``S_j`` the sum of the other
      labels (for the first maximum summed without ``z_j``; ``S - z_j`` at the other maxima),
      so that a softmax near one does not round ``1 / (1 + T) - 1`` to 0;
    - near: :math:`((S - z_j C) + S u_j) - z_j (t + U)`;
    - far: ``S e_j / D - z_j`` as it is.
    """
    zero = _scalar(0.0, x, xp=xp)
    z = xp.broadcast_to(z, x.shape)
    parts = _softmax_parts(x, axis=axis, xp=xp)
    first_max = _first_max(x, axis=axis, xp=xp)
    total = xp.sum(z, axis=axis, keepdims=True)
    # S - z_j at the maxima: for the first one summed without it (no cancellation).
    others = xp.where(first_max, xp.sum(xp.where(first_max, zero, z), axis=axis, keepdims=True),
                      total - z)  # fmt: skip
    # e^(x - m) - 1 for the near entries, from the error-free x - m = hi + lo.
    _, lo = _two_sum(x, -parts.m)
    near = ~parts.is_max & (parts.hi > -_LN3)
    lo = xp.where(near & xp.isfinite(lo), lo, zero)
    u = xp.expm1(xp.where(near, parts.hi, zero))
    u = u + (1 + u) * lo
    count = parts.ties + xp.sum(xp.astype(near, x.dtype), axis=axis, keepdims=True)
    far_tail = xp.sum(xp.where(near | parts.is_max, zero, parts.e), axis=axis, keepdims=True)
    near_tail = xp.sum(u, axis=axis, keepdims=True)
    rest = far_tail + near_tail  # t + U
    # 1 + T = ties + small_tail, kept apart so that a tie's 1 does not absorb the small tail.
    denominator = parts.ties + parts.small_tail
    at_max = ((others - z * (count - 1)) - z * rest) / denominator
    near_value = (((total - z * count) + total * u) - z * rest) / denominator
    far_value = (total * parts.e) / denominator - z
    grad = xp.where(parts.is_max, at_max, xp.where(near, near_value, far_value))
    return _nan_without_limit(grad, parts, xp=xp)


def softmax_grad_labels(x: Array, z: Array, *, axis: int, xp: Any) -> Array:
    r"""``d/dz_j`` of :func:`softmax_loss`: :math:`\operatorname{logsumexp}(x) - x_j \ge 0`
    (``+inf`` where that exceeds the float range)."""
    parts = _softmax_parts(x, axis=axis, xp=xp)
    gap = _nan_without_limit(xp.log1p(parts.tail) - parts.hi, parts, xp=xp)
    return xp.broadcast_to(gap, _broadcast_shape(x, z))


def sparse_softmax_grad_logits(x: Array, labels: Array, *, xp: Any) -> Array:
    """``d/dx`` of :func:`sparse_softmax_loss`: ``softmax(x) - one_hot(labels)``."""
    z = one_hot(labels, x.shape[-1], x.dtype, xp=xp)
    grad = softmax_grad_logits(x, z, axis=-1, xp=xp)
    return _nan_out_of_range(grad, labels, x.shape[-1], xp=xp)
