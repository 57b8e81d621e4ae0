"""The reduced training losses on JAX, lean under ``jax.jit(jax.value_and_grad(...))``.

``cross_entropy`` and ``binary_cross_entropy`` (the validated arguments of
``_api.training``'s public functions) are ``jax.custom_vjp`` functions whose forward pass
computes the reduced loss **and** the logits' gradient, already divided by the mean's
denominator, from the exact formulas (``_losses.softmax.formula``,
``_losses.logistic.formula``) called once each, and saves that gradient; the backward pass only
scales it by the upstream cotangent. The composition of the custom_jvp rules (``jax_rules``),
which is what the public functions build otherwise, evaluates the formulas twice (the primal
inside the JVP rule, then its transpose) and, for index labels with smoothing or class weights,
twice more (the sparse loss, the smoothing term's softmax loss): that is where its time goes.

Index labels with smoothing and class weights are one softmax loss with the row's effective
labels ``t = (1 - eps) w_y onehot(y) + (eps / C) w`` (PyTorch's convention, term by term the
same sum), whose logits' gradient is the soft gradient with ``t``; the z-loss adds
``lambda r lse^2`` with gradient ``2 lambda r lse softmax(x)``.

Gradients with respect to probability labels, class or element weights and ``pos_weight`` are
formed in the backward pass by ``jax.vjp`` of the same composition with the per-row loss taken
from ``jax_rules`` (exact in every operand); under ``jit`` they are dead code unless asked for.

Everything is computed in the compute dtype (float64 under x64, float32 without: no float64
work then) and rounded once to the logits' dtype. ``custom_vjp`` has no forward mode: the
caller keeps the ``jax_rules`` path where forward mode or higher orders are needed (``None``
is returned for what this module does not handle: ``reduction="none"``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .._core import arrays, reductions
from .._core.arrays import Array
from .._losses.logistic import formula as logistic_formula
from .._losses.logistic.formula import LOGISTIC
from .._losses.softmax import formula as softmax_formula
from .._losses.softmax.formula import SOFTMAX
from . import jax_rules

# A row loss from (logits, labels), classes last: the formula (forward) or the custom_jvp rule
# that is exact in the labels too (backward, for the operands' cotangents).
RowLoss = Callable[[Array, Array], Array]


def _formula_rows(wx: Array, t: Array) -> Array:
    return softmax_formula.softmax_loss(wx, t, axis=-1, xp=jnp)


def _exact_rows(wx: Array, t: Array) -> Array:
    return jax_rules.loss(SOFTMAX, wx, (t,), {"axis": -1})


def _times(weight: Array, value: Array, loss: Array) -> Array:
    """``weight * value`` (a loss or its derivative), 0 where the weight is 0 and the loss
    infinite: a zero weight drops an infinite loss (``0 * inf`` is NaN), and its derivative."""
    zero = arrays.scalar(0.0, value, xp=jnp)
    return weight * jnp.where((weight == 0) & jnp.isinf(loss), zero, value)


def _counted(
    loss: Array, weight: Array | None, counted: Array | None
) -> tuple[Array, Array | None]:
    """The loss, zero where not counted, and each element's weight in the mean's denominator
    (as ``_api.training``: None counts every element once)."""
    if counted is None:
        return loss, weight
    zero = arrays.scalar(0.0, loss, xp=jnp)
    loss = jnp.where(counted, loss, zero)
    if weight is None:
        return loss, counted.astype(loss.dtype)
    return loss, jnp.where(counted, weight, zero)


def _scale(loss: Array, denominator_weight: Array | None, mean: bool) -> Array | float:
    """What each counted element's gradient is multiplied by: 1 for "sum", ``1 / sum(weights)``
    for "mean" (0 when nothing is counted, as ``reductions.counted_mean``)."""
    if not mean:
        return 1.0
    if denominator_weight is None:
        return reductions.counted_mean(1.0, math.prod(loss.shape))
    count = jnp.sum(jnp.broadcast_to(denominator_weight, loss.shape))
    return reductions.counted_mean(arrays.scalar(1.0, loss, xp=jnp), count, xp=jnp)


def _reduce(loss: Array, denominator_weight: Array | None, mean: bool, dtype: Any) -> Array:
    return reductions.reduce(
        loss, denominator_weight, "mean" if mean else "sum", dtype=dtype, xp=jnp
    )


# --- cross_entropy ---------------------------------------------------------------------------


class _Softmax(NamedTuple):
    index: bool  # integer labels (else probabilities)
    axis: int  # the class axis, non-negative
    ignore_index: int
    smoothing: float
    z_scale: float
    mean: bool


class _Rows(NamedTuple):
    loss: Array  # per row, compute dtype, z-loss included, not yet masked
    weight: Array | None  # r: the row's weight (w_y, or sum_c w_c z_c); None: 1
    counted: Array | None  # which rows count; None: all
    labels: Array  # t, the effective soft labels (classes last), or the safe indices
    safe: Array | None  # the index labels with uncounted rows set to 0 (index labels only)
    sparse: bool  # the plain index case: ``labels`` are the safe indices
    lse: Array | None  # logsumexp per row, where there is a z-loss


def _softmax_rows(
    wx: Array, labels: Array, ww: Array | None, mask: Array | None, o: _Softmax, rows: RowLoss
) -> _Rows:
    """The per-row loss of ``wx`` (compute dtype, classes last) and what the reduction needs.

    ``rows`` computes the softmax loss of soft labels; the plain index case (no smoothing, no
    class weights) uses the sparse formula directly (no one-hot labels times weights)."""
    num_classes = wx.shape[-1]
    safe = None
    sparse = o.index and ww is None and not o.smoothing
    if o.index:
        counted = labels != o.ignore_index
        if mask is not None:
            counted = counted & mask
        # Ignored and masked rows take class 0: only real labels can be out of range (NaN).
        safe = jnp.where(counted, labels, jnp.zeros_like(labels))
        weight = None if ww is None else jnp.take(ww, safe, axis=0)
        if sparse:
            loss = softmax_formula.sparse_softmax_loss(wx, safe, xp=jnp)
            t = safe
        else:
            t = _index_targets(safe, weight, ww, o.smoothing, num_classes, wx.dtype)
            loss = softmax_formula.nan_out_of_range(rows(wx, t), safe, num_classes, xp=jnp)
    else:
        counted = mask
        z = jnp.broadcast_to(labels, wx.shape)
        t = z
        if o.smoothing:
            t = (1 - o.smoothing) * z + o.smoothing / num_classes
        weight = None
        if ww is not None:
            t = t * ww
            weight = jnp.sum(z * ww, axis=-1)
        loss = rows(wx, t)
    lse = None
    if o.z_scale:
        lse = _lse(wx)
        term = o.z_scale * jnp.square(lse)
        loss = loss + (term if weight is None else _times(weight, term, term))
    return _Rows(loss, weight, counted, t, safe, sparse, lse)


def _index_targets(
    safe: Array, weight: Array | None, ww: Array | None, smoothing: float, c: int, dtype: Any
) -> Array:
    """``(1 - eps) w_y onehot(y) + (eps / C) w``: the soft labels whose softmax loss is
    PyTorch's smoothed, class-weighted index loss (``w`` ones when None)."""
    t = softmax_formula.one_hot(safe, c, dtype, xp=jnp)
    if weight is not None:
        t = t * weight[..., None]
    if smoothing:
        spread = jnp.ones((c,), dtype) if ww is None else ww
        t = (1 - smoothing) * t + (smoothing / c) * spread
    return t


def _lse(wx: Array) -> Array:
    """``logsumexp`` of each row, ``m + log1p(T)`` from the softmax formula's parts (the sparse
    loss of the first maximum's class plus the maximum: ``_api.training``'s z-term)."""
    parts = softmax_formula.softmax_parts(wx, axis=-1, xp=jnp)
    lse = softmax_formula.nan_without_limit(jnp.log1p(parts.tail) + parts.m, parts, xp=jnp)
    return jnp.squeeze(lse, axis=-1)


def _softmax_grad(wx: Array, r: _Rows, o: _Softmax) -> Array:
    """The logits' gradient of each row's loss (classes last, compute dtype, not scaled)."""
    if r.sparse:
        grad = softmax_formula.sparse_softmax_grad_logits(wx, r.safe, xp=jnp)
    else:
        grad = softmax_formula.softmax_grad_logits(wx, r.labels, axis=-1, xp=jnp)
        if o.index:
            grad = softmax_formula.nan_out_of_range(grad, r.safe, wx.shape[-1], xp=jnp)
    if o.z_scale:
        # d lse / dx = softmax: the first maximum's one-hot plus the sparse gradient there (as
        # the derivative of _api.training's z-term, m + sparse loss at the first maximum).
        top = jnp.argmax(wx, axis=-1)
        softmax = softmax_formula.sparse_softmax_grad_logits(wx, top, xp=jnp)
        softmax = softmax + softmax_formula.one_hot(top, wx.shape[-1], wx.dtype, xp=jnp)
        coefficient = (2 * o.z_scale) * r.lse
        if r.weight is not None:
            coefficient = _times(r.weight, coefficient, o.z_scale * jnp.square(r.lse))
        grad = grad + coefficient[..., None] * softmax
    return grad


def _classes_last(x: Array, axis: int) -> Array:
    return x if axis == x.ndim - 1 else jnp.moveaxis(x, axis, -1)


def _softmax_value(
    x: Array, labels: Array, w: Array | None, mask: Array | None, o: _Softmax, rows: RowLoss
) -> tuple[Array, _Rows, Array]:
    """The reduced loss (logits' dtype), the rows it came from, and the widened logits."""
    wx, wz, ww = arrays.widen(jnp, x, None if o.index else labels, w)
    wx = _classes_last(wx, o.axis)
    if not o.index:
        labels = _classes_last(jnp.broadcast_to(wz, x.shape), o.axis)
    r = _softmax_rows(wx, labels, ww, mask, o, rows)
    loss, denominator = _counted(r.loss, r.weight, r.counted)
    return _reduce(loss, denominator, o.mean, x.dtype), r, wx


@functools.cache
def _softmax_rule(o: _Softmax) -> Callable[..., Array]:
    """The reduced cross-entropy with these options as a ``jax.custom_vjp`` of
    ``(x, labels, w, mask)``."""

    @jax.custom_vjp
    def loss(x: Array, labels: Array, w: Array | None, mask: Array | None) -> Array:
        return _softmax_value(x, labels, w, mask, o, _formula_rows)[0]

    def forward(x: Array, labels: Array, w: Array | None, mask: Array | None) -> tuple:
        value, r, wx = _softmax_value(x, labels, w, mask, o, _formula_rows)
        grad = _softmax_grad(wx, r, o)
        _, denominator = _counted(r.loss, r.weight, r.counted)
        scale = _scale(r.loss, denominator, o.mean)
        grad = grad * scale
        if r.counted is not None:
            # Uncounted rows get 0, also where their (unused) gradient is not finite.
            grad = jnp.where(r.counted[..., None], grad, arrays.scalar(0.0, grad, xp=jnp))
        grad = jnp.moveaxis(grad, -1, o.axis) if o.axis != x.ndim - 1 else grad
        return value, (grad, x, labels, w, mask)

    def backward(saved: tuple, g: Array) -> tuple:
        grad, x, labels, w, mask = saved
        gx = (grad * g.astype(grad.dtype)).astype(x.dtype)
        glabels = gw = None
        if not o.index or w is not None:
            # The operands' cotangents: vjp of the same composition, the rows exact in t.
            def value(lab: Array, ww: Array | None) -> Array:
                return _softmax_value(x, lab, ww, mask, o, _exact_rows)[0]

            if o.index:
                _, pullback = jax.vjp(lambda ww: value(labels, ww), w)
                (gw,) = pullback(g)
            else:
                _, pullback = jax.vjp(value, labels, w)
                glabels, gw = pullback(g)
        return gx, glabels, gw, None

    loss.defvjp(forward, backward)
    return loss


def cross_entropy(
    x: Array,
    labels: Array,
    w: Array | None,
    mask: Array | None,
    *,
    axis: int,
    ignore_index: int,
    smoothing: float,
    z_scale: float,
    reduction: str,
) -> Array | None:
    """``_api.training.cross_entropy`` for validated JAX arguments, reduced: the lean
    ``custom_vjp`` (None for ``reduction="none"``, which the caller keeps).

    ``labels`` are integer indices (the logits' shape without ``axis``; out of range under
    ``jit``: NaN rows) or probabilities in ``x``'s dtype broadcasting to ``x.shape``; ``w``
    class weights ``(C,)`` in ``x``'s dtype; ``mask`` booleans per row; either may be None.
    """
    if reduction not in ("mean", "sum"):
        return None
    index = arrays.is_integer_dtype(jnp, labels.dtype)
    o = _Softmax(
        index=index,
        axis=axis % x.ndim,
        ignore_index=int(ignore_index) if index else 0,
        smoothing=float(smoothing),
        z_scale=float(z_scale),
        mean=reduction == "mean",
    )
    return _softmax_rule(o)(x, labels, w, mask)


# --- binary_cross_entropy --------------------------------------------------------------------


def _formula_elements(wx: Array, wz: Array, wq: Array | None) -> Array:
    return logistic_formula.logistic_loss(wx, wz, wq, xp=jnp)


def _exact_elements(wx: Array, wz: Array, wq: Array | None) -> Array:
    return jax_rules.loss(LOGISTIC, wx, (wz, wq), {})


def _logistic_value(
    x: Array,
    z: Array,
    q: Array | None,
    w: Array | None,
    mask: Array | None,
    smoothing: float,
    mean: bool,
    elements: Callable[..., Array],
) -> tuple[Array, tuple]:
    """The reduced sigmoid cross-entropy (logits' dtype) and the pieces of its gradient."""
    wx, wz, wq, ww = arrays.widen(jnp, x, z, q, w)
    if smoothing:
        wz = wz * (1 - smoothing) + smoothing / 2
    raw = elements(wx, wz, wq)
    loss = raw if ww is None else _times(ww, raw, raw)
    loss, denominator = _counted(loss, ww, mask)
    return _reduce(loss, denominator, mean, x.dtype), (wx, wz, wq, ww, raw, loss, denominator)


@functools.cache
def _logistic_rule(smoothing: float, mean: bool) -> Callable[..., Array]:
    """The reduced sigmoid cross-entropy as a ``jax.custom_vjp`` of ``(x, z, q, w, mask)``."""

    @jax.custom_vjp
    def loss(x: Array, z: Array, q: Any, w: Any, mask: Any) -> Array:
        return _logistic_value(x, z, q, w, mask, smoothing, mean, _formula_elements)[0]

    def forward(x: Array, z: Array, q: Any, w: Any, mask: Any) -> tuple:
        value, pieces = _logistic_value(x, z, q, w, mask, smoothing, mean, _formula_elements)
        wx, wz, wq, ww, raw, loss, denominator = pieces
        grad = logistic_formula.logistic_grad_logits(wx, wz, wq, xp=jnp)
        if ww is not None:
            grad = _times(ww, grad, raw)
        grad = grad * _scale(loss, denominator, mean)
        if mask is not None:
            grad = jnp.where(mask, grad, arrays.scalar(0.0, grad, xp=jnp))
        grad = jnp.broadcast_to(grad, x.shape)
        return value, (grad, x, z, q, w, mask)

    def backward(saved: tuple, g: Array) -> tuple:
        grad, x, z, q, w, mask = saved
        gx = (grad * g.astype(grad.dtype)).astype(x.dtype)

        def value(z_: Array, q_: Any, w_: Any) -> Array:
            return _logistic_value(x, z_, q_, w_, mask, smoothing, mean, _exact_elements)[0]

        _, pullback = jax.vjp(value, z, q, w)
        gz, gq, gw = pullback(g)
        return gx, gz, gq, gw, None

    loss.defvjp(forward, backward)
    return loss


def binary_cross_entropy(
    x: Array,
    z: Array,
    q: Array | None,
    w: Array | None,
    mask: Array | None,
    *,
    smoothing: float,
    reduction: str,
) -> Array | None:
    """``_api.training.binary_cross_entropy_with_logits`` for validated JAX arguments, reduced:
    the lean ``custom_vjp`` (None for ``reduction="none"``, which the caller keeps).

    ``z`` the labels (``x``'s shape and dtype); ``q`` (``pos_weight``) and ``w`` (element
    weights) in ``x``'s dtype and ``mask`` booleans, broadcasting to ``x.shape``, or None.
    """
    if reduction not in ("mean", "sum"):
        return None
    return _logistic_rule(float(smoothing), reduction == "mean")(x, z, q, w, mask)


def reduced(loss: str, x: Array, operands: tuple, options: dict[str, Any]) -> Array | None:
    """The fused path's entry for JAX arrays (``_api.training._fused``); None: not taken (the
    composed path computes the call)."""
    return None
