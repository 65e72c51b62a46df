"""Reference cross-entropy (PyTorch's semantics, plus temperature, z-loss, softcap and ``where``)
and linear cross-entropy on the full logits, computed in float64.

Per row, with u = z / T (``c tanh(z / c) / T`` with a softcap c; -inf where ``where`` is False),
class weights w and the shares s_c of the -log p_c terms (label smoothing eps spread over the
K kept classes of the row):

- class index y: ``s = (1 - eps) onehot(y) + eps / K`` on kept classes; rows with
  ``y == ignore_index`` (or masked entirely) count 0; "mean" divides by ``sum(w[y])`` over the
  rows that count (NaN when that is 0).
- probabilities t: ``s = (1 - eps) t + eps / K`` on kept classes; "mean" divides by the row
  count.

``loss = sum_c s_c w_c (-log_softmax(u)_c) + zl logsumexp(u)^2`` (z-loss on rows that count),
``dloss/dz = (softmax(u) (sum(q) + 2 zl logsumexp(u)) - q) du/dz`` with q = s w, times
grad_output / denominator; 0 on rows that do not count and on left-out classes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from . import _checks as c
from ._exact import deliver, log_softmax_last, logsumexp_last, softmax_last


def _targets(target: Any, z: np.ndarray, ignore_index: int) -> tuple[np.ndarray, bool]:
    """(class indices of shape batch, True) or (probabilities of z's shape in float64, False)."""
    if target is None:
        raise TypeError("target must be an array, not None")
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != z.shape[:-1]:
            raise ValueError(f"class-index target has shape {t.shape}, not {z.shape[:-1]}")
        c.check_in_range(t, z.shape[-1], "target", allowed=ignore_index)
        return t, True
    if t.dtype.kind == "f":
        if t.shape != z.shape:
            raise ValueError(f"probability target has shape {t.shape}, not {z.shape}")
        return c.finite_in(t, z.dtype, "probability target"), False
    raise TypeError(f"target has dtype {t.dtype}; class indices or probabilities expected")


def _class_weights(weight: Any, z: np.ndarray) -> np.ndarray:
    """(C,) float64 class weights rounded to z's dtype (ones when None)."""
    if weight is None:
        return np.ones(z.shape[-1])
    w, _ = c.as_array(weight, "weight")
    if w.shape != z.shape[-1:]:
        raise ValueError(f"weight has shape {w.shape}, not ({z.shape[-1]},)")
    return c.finite_in(w, z.dtype, "weight", nonneg=True)


class _Problem(NamedTuple):
    """A checked cross-entropy call in float64: rows on the leading axes, classes last."""

    u: np.ndarray  # the scaled (and capped) logits, -inf on left-out classes
    du_dz: np.ndarray  # du / dz
    share: np.ndarray  # s: the share of each -log p_c term (0 on rows that do not count)
    weight: np.ndarray  # w: (C,) class weights
    counts: np.ndarray  # bool, batch: rows that count (not ignored, not masked entirely)
    kept: np.ndarray  # bool, z's shape: classes ``where`` keeps
    denom: float  # the "mean" denominator
    z_loss: float
    grad_output: np.ndarray  # batch
    reduction: str


def _problem(
    z: np.ndarray,
    target: Any,
    *,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
    softcap: Any,
    where: Any,
    grad_output: Any = 1.0,
) -> _Problem:
    """Check the arguments of a cross-entropy call on logits ``z`` (in their compute dtype)."""
    if z.ndim == 0:
        raise ValueError("logits must have at least 1 dimension (the class axis, last)")
    n_classes = z.shape[-1]
    if n_classes == 0:
        raise ValueError("the class axis has length 0; cross-entropy needs at least 1 class")
    batch = z.shape[:-1]
    c.check_reduction(reduction)
    eps = c.nonnegative(label_smoothing, "label_smoothing", upper=1.0)
    ignore_index = c.check_ignore_index(ignore_index)
    inv_t = c.inverse_temperature(temperature, z.dtype)
    t, is_index = _targets(target, z, ignore_index)
    w = _class_weights(weight, z)
    gout = c.upstream(grad_output, reduction, batch)
    mask = c.class_mask(where, z.shape)
    kept = np.ones(z.shape, dtype=bool) if mask is None else mask
    counts = kept.any(axis=-1)  # a row masked entirely has no loss
    if is_index:
        counts &= t != ignore_index
        y = np.where(counts, t, 0).astype(np.int64)
        on_left_out = counts & ~np.take_along_axis(kept, y[..., None], axis=-1)[..., 0]
        if np.any(on_left_out):
            at = tuple(int(i) for i in np.argwhere(on_left_out)[0])
            raise ValueError(f"target value {t[at]} at index {at} is a class `where` leaves out")
    zl = c.nonnegative(z_loss, "z_loss")
    cap = c.softcap_value(softcap, inv_t, z.dtype)

    z64 = z.astype(np.float64)
    if cap is None:
        u, du_dz = z64 * inv_t, np.full(z.shape, inv_t)
    else:  # u = c tanh(z / c) / T, du/dz = sech^2(z / c) / T
        u = cap * np.tanh(z64 / cap) * inv_t
        with np.errstate(over="ignore"):
            du_dz = inv_t / np.cosh(z64 / cap) ** 2
    smooth = eps / np.maximum(kept.sum(axis=-1, keepdims=True), 1)
    if is_index:
        onehot = np.arange(n_classes) == y[..., None]
        share = np.where(counts[..., None] & kept, (1 - eps) * onehot + smooth, 0.0)
        denom = float(np.sum(np.where(counts, w[y], 0.0)))
    else:
        share = np.where(kept, (1 - eps) * t + smooth, 0.0)
        denom = float(np.prod(batch))
    u = np.where(kept, u, -np.inf)
    return _Problem(u, du_dz, share, w, counts, kept, denom, zl, gout, reduction)


def _cross_entropy(z: np.ndarray, target: Any, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """(the float64 loss: per row, of shape batch, for "none", else 0-d; the float64 gradient
    of z's shape) for logits ``z`` in their compute dtype (options as :func:`_problem`'s)."""
    u, du_dz, share, w, counts, kept, denom, zl, gout, reduction = _problem(z, target, **options)
    p, logp, lse = softmax_last(u), log_softmax_last(u), logsumexp_last(u)[..., 0]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # a term counts 0 where its share or weight is 0, even at log p = -inf; w * -log p
        # first: share * w may underflow to 0 where w * inf is still inf
        terms = np.where(share != 0, share * np.where(w != 0, w * -logp, 0.0), 0.0)
        rows = np.sum(terms, axis=-1)
        dlse = np.sum(share * w, axis=-1)  # the factor of softmax(u) in the gradient
        if zl:  # zl * lse^2 on the rows that count (0 * inf is not a term), d/du = 2 zl lse p
            rows = rows + np.where(counts, zl * lse**2, 0.0)
            dlse = dlse + np.where(counts, 2 * zl * lse, 0.0)
        per_loss = 1.0
        if reduction == "mean":
            per_loss = 1.0 / denom if denom else np.nan  # 0 / 0 when no row counts, as PyTorch
        # p * dlse counts 0 where p is 0, even where a row without a finite maximum makes the
        # z-loss factor 2 zl L infinite (the limit: p decays faster than L grows)
        dl_du = np.where(p != 0, p * dlse[..., None], 0.0) - share * w
        grad = dl_du * du_dz * (gout * per_loss)[..., None]
        grad = np.where(counts[..., None] & kept, grad, 0.0)  # left-out classes: 0
        # a row that counts and holds NaN on a kept class is NaN throughout (rows that do not
        # count stay 0 whatever they hold)
        nan_rows = counts & np.isnan(u).any(axis=-1)
        grad = np.where(nan_rows[..., None], np.nan, grad)
        rows = np.where(nan_rows, np.nan, np.where(counts, rows, 0.0))
        if reduction == "none":
            return rows, grad
        total = np.sum(rows)
        if reduction == "mean":
            total = total / denom if denom else np.nan
        return total, grad


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap=None,
    where=None,
):
    """Reference: ``sum_c -s_c w_c log_softmax(u)_c + zl logsumexp(u)^2`` per row, reduced like
    PyTorch (see the module docstring)."""
    return _loss_and_grad(**locals())[0]


def cross_entropy_backward(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap=None,
    grad_output: Any = 1.0,
    out=None,
    where=None,
) -> np.ndarray:
    """Reference: ``(softmax(u) (sum(q) + 2 zl L) - q) du/dz grad_output / denominator``."""
    return _loss_and_grad(**locals())[1]


def cross_entropy_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap=None,
    out=None,
    where=None,
):
    """Reference: ``(cross_entropy(...), cross_entropy_backward(...))``."""
    return _loss_and_grad(**locals())


def _loss_and_grad(logits, target, *, out=None, **options: Any) -> tuple[Any, Any]:
    """(loss, gradient) of :func:`_cross_entropy` in the logits' result dtype."""
    z, dtype = c.as_array(logits, "logits")
    loss, grad = _cross_entropy(z, target, **options)
    c.check_out(out, z.shape, dtype)
    return deliver(loss, dtype, None), deliver(grad, dtype, out)


def _linear(
    x, linear_weight, target, *, linear_bias, chunk_size, **options: Any
) -> tuple[Any, Any, Any, Any]:
    """(loss, dx, dW, db) from the full logits ``x @ W.T + b`` in the common compute dtype: the
    cross-entropy twin's float64 loss and gradient g, then ``(g @ W, g.T @ x, sum(g))`` in the
    compute dtype; each rounded once to the promoted result dtype of x, W and b.
    ``ignore_index=None`` is -100 (torch's ``F.linear_cross_entropy``)."""
    if options["ignore_index"] is None:
        options["ignore_index"] = -100
    for name, a in (("x", x), ("linear_weight", linear_weight)):
        if a is None:
            raise TypeError(f"{name} must be an array, not None")
    named = {"x": x, "linear_weight": linear_weight}
    if linear_bias is not None:
        named["linear_bias"] = linear_bias
    arrays, dtype = c.as_arrays(named)
    x, w, b = arrays[0], arrays[1], (arrays[2] if linear_bias is not None else None)
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (the features, last)")
    if w.ndim != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(f"linear_weight has shape {w.shape}, not (C, {x.shape[-1]})")
    if w.shape[0] == 0:
        raise ValueError("linear_weight has length 0 along its class axis: no classes")
    if b is not None and b.shape != w.shape[:1]:
        raise ValueError(f"linear_bias has shape {b.shape}, not ({w.shape[0]},)")
    c.check_chunk_size(chunk_size)
    logits = x @ w.T if b is None else x @ w.T + b
    loss, g = _cross_entropy(logits, target, where=None, **options)
    g = g.astype(x.dtype).reshape(-1, w.shape[0])
    x2 = x.reshape(-1, w.shape[1])
    grads = (g @ w).reshape(x.shape), g.T @ x2, None if b is None else g.sum(axis=0)
    return tuple(None if r is None else deliver(r, dtype, None) for r in (loss, *grads))


def linear_cross_entropy(
    x: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias=None,
    weight=None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap=None,
    chunk_size=None,
):
    """Reference: ``cross_entropy(x @ linear_weight.T + linear_bias, target, ...)``, logits in
    full."""
    return _linear(**locals())[0]


def linear_cross_entropy_with_grad(
    x: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias=None,
    weight=None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap=None,
    chunk_size=None,
):
    """Reference: the loss and ``(g @ W, g.T @ x, sum(g))`` with g the cross-entropy gradient
    of the full logits."""
    return _linear(**locals())
