"""Pure-NumPy twins of every public function: same signatures, same checks, textbook formulas.

Slow and obviously right: softmax = exp(x - max) / sum, the Jacobian diag(p) - p p^T, products
by ``np.einsum`` over that Jacobian, cross-entropy as -sum(q * log_softmax) with PyTorch's
weights, ignore_index, label smoothing and "mean" denominators, and its gradient as
softmax * sum(q) - q. Tests compare the kernels against these; benchmarks time both.
Computes in the same dtype as the fast functions (float32 stays float32, float16 is computed in
float32 and the result rounded to float16; the losses in float64); a class axis of length 0 gives
empty results (logsumexp -inf) by the same formulas, and 0-d results are NumPy scalars.

Logs of sums are exact where the math allows: with m = max(u), logsumexp(u) = m + log1p(d), d
the sum of exp(u - m) over every entry but one maximum (whose own term is exactly 1), so a term
like exp(-40) is kept instead of rounded away by 1 + d; log_softmax = (u - m) - log1p(d).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v


def _result(value: Any, dtype: np.dtype) -> Any:
    """``value`` in the result dtype (+-inf beyond its range): an array, or a NumPy scalar when
    0-d."""
    with np.errstate(over="ignore"):
        value = np.asarray(value).astype(dtype)
    return value if value.ndim else dtype.type(value)


def _finish(result: np.ndarray, out: np.ndarray | None, dtype: np.dtype) -> Any:
    if out is None:
        return _result(result, dtype)
    with np.errstate(over="ignore"):
        np.copyto(out, result.astype(dtype))
    return out


def _prepare(x: ArrayLike, axis: int, temperature: float, out, where):
    """x / T with entries left out by ``where`` set to -inf (they then get probability 0), the
    axis and the result dtype."""
    x_in = x
    x = v.as_float_array(x, "x")
    dtype = v.result_dtype(x_in, x)
    axis = v.normalize_axis(axis, x.ndim)
    inv_t = v.inverse_temperature(temperature)
    v.check_out(out, x.shape, dtype)
    u = x * x.dtype.type(inv_t)
    if where is not None:
        v.check_where(where, x.shape, axis)
        u = np.where(where, u, x.dtype.type(-np.inf))
    return u, axis, dtype


def _safe_softmax(u: np.ndarray, axis: int) -> np.ndarray:
    """exp(u - max) / sum with the limits the package documents for inf rows."""
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        m = np.max(u, axis=axis, keepdims=True, initial=-np.inf)  # -inf: the max of no classes
        posinf = np.isposinf(m)
        # +inf entries share the probability: softmax of the indicator of u == +inf
        shifted = np.where(
            posinf, np.where(np.isposinf(u), 0.0, -np.inf), u - np.where(np.isfinite(m), m, 0)
        )
        e = np.exp(shifted.astype(u.dtype))
        s = np.sum(e, axis=axis, keepdims=True)
        p = np.where(s == 0, 0, e / np.where(s == 0, 1, s)).astype(u.dtype)  # NaN stays NaN
    return p


def softmax(
    x: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None, where=None
) -> np.ndarray:
    """Reference: ``exp(u - max(u)) / sum(exp(u - max(u)))``, u = x / T (-inf where masked)."""
    u, axis, dtype = _prepare(x, axis, temperature, out, where)
    return _finish(_safe_softmax(u, axis), out, dtype)


def _shift_and_log1p(u: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """(m, log1p(d)) with m = max(u) and d = sum(exp(u - m)) - 1 along ``axis`` (keepdims), the
    -1 taken by leaving out the term of one maximum (exactly 1), not by a subtraction.

    Where the maximum is not finite (also for no classes: m = -inf), m is returned as is and the
    log as 0 (callers take limits).
    """
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(u, axis=axis, keepdims=True, initial=-np.inf)  # -inf: the max of no classes
        finite = np.isfinite(m)
        e = np.exp(u - np.where(finite, m, 0))
        if u.shape[axis]:  # no maximum to leave out of an empty sum
            np.put_along_axis(e, np.argmax(u, axis=axis, keepdims=True), 0, axis=axis)
        return m, np.where(finite, np.log1p(np.sum(e, axis=axis, keepdims=True)), 0)


def log_softmax(
    x: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None, where=None
) -> np.ndarray:
    """Reference: ``(u - m) - log1p(d)``, u = x / T (-inf where masked), m = max(u), d as in
    :func:`logsumexp`; for rows without a finite maximum ``log(softmax(u))``'s limits."""
    u, axis, dtype = _prepare(x, axis, temperature, out, where)
    return _finish(_log_softmax(u, axis).astype(u.dtype), out, dtype)


def _log_softmax(u: np.ndarray, axis: int) -> np.ndarray:
    m, log1p_d = _shift_and_log1p(u, axis)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isfinite(m), (u - m) - log1p_d, np.log(_safe_softmax(u, axis)))


def logsumexp(x: ArrayLike, axis: int = -1, *, keepdims: bool = False, out=None) -> np.ndarray:
    """Reference: ``m + log1p(d)``, m = max(x), d = sum over all entries but one maximum of
    ``exp(x - m)``; NaN, +inf and -inf rows give NaN, +inf and -inf (no classes: -inf)."""
    x_in = x
    x = v.as_float_array(x, "x")
    dtype = v.result_dtype(x_in, x)
    axis = v.normalize_axis(axis, x.ndim)
    shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1 :]
    v.check_out(out, shape, dtype)
    m, log1p_d = _shift_and_log1p(x, axis)
    with np.errstate(invalid="ignore"):
        res = np.where(np.isnan(x).any(axis=axis, keepdims=True), np.nan, m + log1p_d)
    if not keepdims:
        res = np.squeeze(res, axis=axis)
    return _finish(np.asarray(res, dtype=x.dtype), out, dtype)


def softmax_jacobian(probs: ArrayLike, axis: int = -1) -> np.ndarray:
    """Reference: ``J = diag(p) - p p^T`` per row, shape batch + (C, C)."""
    p = v.as_float_array(probs, "probs")
    dtype = v.result_dtype(probs, p)
    axis = v.normalize_axis(axis, p.ndim)
    p = np.moveaxis(p, axis, -1)
    eye = np.eye(p.shape[-1], dtype=p.dtype)
    return _result(p[..., :, None] * eye - p[..., :, None] * p[..., None, :], dtype)


def softmax_jvp(
    probs: ArrayLike, tangent: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None
) -> np.ndarray:
    """Reference: ``np.einsum('...ij,...j->...i', J, v) / T`` with the full Jacobian J."""
    p, t, axis, inv_t, dtype = v.product_args(
        probs, tangent, ("probs", "tangent"), axis, temperature, out
    )
    jac = softmax_jacobian(p, axis)
    res = np.einsum("...ij,...j->...i", jac, np.moveaxis(t, axis, -1)) * inv_t
    return _finish(np.moveaxis(res, -1, axis), out, dtype)


def softmax_vjp(
    probs: ArrayLike, cotangent: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None
) -> np.ndarray:
    """Reference: ``np.einsum('...j,...ji->...i', g, J) / T`` with the full Jacobian J."""
    p, g, axis, inv_t, dtype = v.product_args(
        probs, cotangent, ("probs", "cotangent"), axis, temperature, out
    )
    jac = softmax_jacobian(p, axis)
    res = np.einsum("...j,...ji->...i", np.moveaxis(g, axis, -1), jac) * inv_t
    return _finish(np.moveaxis(res, -1, axis), out, dtype)


def log_softmax_vjp(
    log_probs: ArrayLike,
    cotangent: ArrayLike,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    out=None,
) -> np.ndarray:
    """Reference: ``g^T (I - 1 p^T) / T`` with p = exp(logp): the log_softmax Jacobian is I - 1 p^T."""
    lp, g, axis, inv_t, dtype = v.product_args(
        log_probs, cotangent, ("log_probs", "cotangent"), axis, temperature, out
    )
    p = np.exp(np.moveaxis(lp, axis, -1))
    c = p.shape[-1]
    jac = np.eye(c, dtype=p.dtype) - np.ones((c, 1), dtype=p.dtype) * p[..., None, :]
    res = np.einsum("...j,...ji->...i", np.moveaxis(g, axis, -1), jac) * inv_t
    return _finish(np.moveaxis(res, -1, axis), out, dtype)


def _ce_terms(
    logits,
    target,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    temperature,
    z_loss,
    softcap,
    grad_output,
    where,
):
    """Per-row target shares of the -log p terms (q = share * weight), the class weights, the
    mean denominator, u, du/dz and the upstream grads."""
    z, t, is_index, w, eps, ignore_index, reduction, scale, gout, mask = v.cross_entropy_args(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        grad_output,
        where,
    )
    v.check_z_loss(z_loss)
    v.check_softcap(softcap, scale, z.dtype)
    inv_t = v.inverse_temperature(temperature)
    classes = z.shape[-1]
    w = w.astype(np.float64)
    z64 = z.reshape(-1, classes).astype(np.float64)
    if softcap is None:
        u = z64 * inv_t
        du_dz = np.full_like(z64, inv_t)
    else:  # u = c tanh(z / c) / T, du/dz = sech^2(z / c) / T
        u = softcap * np.tanh(z64 / softcap) * inv_t
        with np.errstate(over="ignore"):
            du_dz = inv_t / np.cosh(z64 / softcap) ** 2
    n = u.shape[0]
    kept = np.ones((n, classes), dtype=bool) if mask is None else mask
    u = np.where(kept, u, -np.inf)
    n_kept = np.maximum(kept.sum(axis=1, keepdims=True), 1)  # smoothing over the kept classes
    if is_index:
        live = t != ignore_index
        onehot = np.zeros((n, classes))
        onehot[np.arange(n)[live], t[live]] = 1.0
        share = (1 - eps) * onehot + live[:, None] * kept * (eps / n_kept)
        denom = np.sum(w[t[live]])
    else:
        live = kept.any(axis=1)  # a row masked entirely has no loss (and no z-loss)
        share = kept * ((1 - eps) * t.astype(np.float64) + eps / n_kept)
        denom = np.float64(n)
    return z, u, du_dz, share, w, denom, gout, reduction, live, kept


def _ce_loss_grad(
    logits,
    target,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    temperature,
    z_loss,
    softcap,
    grad_output,
    where,
    loss_dtype=None,
):
    """(loss rounded from float64 to ``loss_dtype`` (default: the logits' compute dtype), the
    gradient in the compute dtype, the logits in it)."""
    z, u, du_dz, share, w, denom, gout, reduction, live, kept = _ce_terms(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        grad_output,
        where,
    )
    p = _safe_softmax(u, -1)
    logp = _log_softmax(u, -1)  # not log(p): p underflows to 0 where log p is still finite
    m, log1p_d = _shift_and_log1p(u, -1)
    lse = (m + log1p_d)[:, 0]
    q = share * w
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        # a term counts 0 where share or weight is 0 (also at log p = -inf); w * -log p first, as
        # share * w may underflow to 0 for a subnormal weight where w * inf is still inf
        wl = np.where(w != 0, w * -logp, 0.0)
        rows = np.sum(np.where(share != 0, share * wl, 0.0), axis=-1)
        q_total = q.sum(-1)
        if z_loss:  # z_loss * lse^2 on the rows that count, d/du = 2 z_loss lse p
            rows = rows + np.where(live, z_loss * lse**2, 0.0)
            q_total = q_total + np.where(live, 2.0 * z_loss * lse, 0.0)
        scale = (1.0 / denom if denom != 0 else np.nan) if reduction == "mean" else 1.0  # 0/0
        grad = (p * q_total[:, None] - q) * du_dz * (gout * scale)[:, None]
        grad = np.where(live[:, None] & kept, grad, 0.0)  # ignored rows, left-out classes: 0
        nan_rows = np.isnan(u).any(-1) & live  # ignored rows stay 0 whatever they hold
        grad = np.where(nan_rows[:, None], np.nan, grad)
        rows = np.where(nan_rows, np.nan, np.where(live, rows, 0.0))
        ldt = z.dtype if loss_dtype is None else loss_dtype
        if reduction == "none":
            loss = rows.astype(ldt).reshape(z.shape[:-1])
        elif reduction == "sum":
            loss = ldt.type(np.sum(rows))
        else:
            loss = ldt.type(np.sum(rows) / denom) if denom != 0 else ldt.type(np.nan)
    return loss, grad.astype(z.dtype).reshape(z.shape), z


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
    """Reference: ``sum_c -q_c log_softmax(u)_c + zl logsumexp(u)^2`` per row, u = z / T (or
    ``c tanh(z / c) / T``), reduced like PyTorch."""
    loss, _, z = _ce_loss_grad(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        1.0,
        where,
    )
    return _result(loss, v.result_dtype(logits, z))


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
    """Reference: ``(softmax(u) * (sum(q) + 2 zl L) - q) * du/dz * grad_output / denominator``."""
    _, grad, z = _ce_loss_grad(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        grad_output,
        where,
    )
    dtype = v.result_dtype(logits, z)
    v.check_out(out, z.shape, dtype)
    return _finish(grad, out, dtype)


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
    loss, grad, z = _ce_loss_grad(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        1.0,
        where,
    )
    dtype = v.result_dtype(logits, z)
    v.check_out(out, z.shape, dtype)
    return _result(loss, dtype), _finish(grad, out, dtype)


def _linear_loss_grads(
    x,
    linear_weight,
    target,
    linear_bias,
    weight,
    ignore_index,
    reduction,
    label_smoothing,
    temperature,
    z_loss,
    softcap,
    chunk_size,
):
    """The full logits ``x @ W.T + b`` in the compute dtype, the cross-entropy twin on them (loss
    in float64 rounded once to the result dtype), the chain rule in the compute dtype; every
    result rounded once to the result dtype (float16 for float16 x, W and b)."""
    x, w, b, dtype = v.check_linear(x, linear_weight, linear_bias)
    v.check_chunk_size(chunk_size)
    logits = x @ w.T if b is None else x @ w.T + b
    loss, g, _ = _ce_loss_grad(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        1.0,
        None,
        loss_dtype=dtype,
    )
    g2 = g.reshape(-1, w.shape[0])
    x2 = x.reshape(-1, w.shape[1])
    dx = (g2 @ w).reshape(x.shape)
    return (
        _result(loss, dtype),
        _result(dx, dtype),
        _result(g2.T @ x2, dtype),
        None if b is None else _result(g2.sum(axis=0), dtype),
    )


def linear_cross_entropy(
    x: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias=None,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap=None,
    chunk_size=None,
):
    """Reference: ``cross_entropy(x @ linear_weight.T + linear_bias, target, ...)``, logits in full."""
    return _linear_loss_grads(
        x,
        linear_weight,
        target,
        linear_bias,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        chunk_size,
    )[0]


def linear_cross_entropy_with_grad(
    x: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias=None,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap=None,
    chunk_size=None,
):
    """Reference: loss and ``(g @ W, g.T @ x, sum(g))`` with g = cross_entropy_backward(logits)."""
    return _linear_loss_grads(
        x,
        linear_weight,
        target,
        linear_bias,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        chunk_size,
    )


def _selected(logits, index, temperature):
    """(log_softmax(z / T) as (rows, C) in the compute dtype, (rows, K) indices, the result's
    shape, z in the compute dtype, the result dtype)."""
    z = v.as_float_array(logits, "logits")
    if z.ndim == 0:
        raise ValueError("logits must have at least 1 dimension (the class axis, last)")
    dtype = v.result_dtype(logits, z)
    v.check_classes(z.shape, z.ndim - 1)
    v.inverse_temperature(temperature)
    idx, shape = v.check_class_index(index, z.shape)
    logp = log_softmax(z, temperature=temperature).reshape(-1, z.shape[-1])
    return logp, idx, shape, z, dtype


def selective_log_softmax(logits: ArrayLike, index: ArrayLike, *, temperature: float = 1.0):
    """Reference: the full ``log_softmax(logits / T)``, then ``take_along_axis`` at ``index``
    (rounded to the result dtype; a 0-d result is a NumPy scalar)."""
    logp, idx, shape, _, dtype = _selected(logits, index, temperature)
    return _result(np.take_along_axis(logp, idx, axis=1).reshape(shape), dtype)


def selective_log_softmax_vjp(
    logits: ArrayLike, index: ArrayLike, cotangent: ArrayLike, *, temperature: float = 1.0, out=None
) -> np.ndarray:
    """Reference: the cotangent scattered (added) into a full (rows, C) array, then
    :func:`log_softmax_vjp` (``g^T (I - 1 p^T) / T``)."""
    logp, idx, shape, z, dtype = _selected(logits, index, temperature)
    g = v.as_float_array(cotangent, "cotangent")
    if g.shape != shape:
        raise ValueError(f"cotangent has shape {g.shape}; it must match index's shape {shape}")
    v.check_out(out, z.shape, dtype)
    full = np.zeros(logp.shape, dtype=np.float64)
    np.add.at(full, (np.arange(idx.shape[0])[:, None], idx), g.reshape(idx.shape))
    res = log_softmax_vjp(logp, full.astype(z.dtype), temperature=temperature)
    return _finish(res.reshape(z.shape), out, dtype)


# --------------------------------------------------------------------------- the binary case
# sigmoid, log_sigmoid and binary cross-entropy with logits (fastsoftmax.binary). These twins
# compute in float64 and round once to the result dtype; the checks are fastsoftmax.binary's.


def _sigmoid64(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) for x >= 0 and exp(x) / (1 + exp(x)) for x < 0 (float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def _log_sigmoid64(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)) (float64)."""
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))


def sigmoid(x: ArrayLike, *, out=None) -> np.ndarray:
    """Reference: ``1 / (1 + exp(-x))``, written so that neither branch overflows."""
    x_in = x
    x = v.as_float_array(x, "x")
    dtype = v.result_dtype(x_in, x)
    v.check_out(out, x.shape, dtype)
    return _finish(_sigmoid64(x.astype(np.float64)), out, dtype)


def log_sigmoid(x: ArrayLike, *, out=None) -> np.ndarray:
    """Reference: ``min(x, 0) - log1p(exp(-|x|))``."""
    x_in = x
    x = v.as_float_array(x, "x")
    dtype = v.result_dtype(x_in, x)
    v.check_out(out, x.shape, dtype)
    return _finish(_log_sigmoid64(x.astype(np.float64)), out, dtype)


def _bce_loss_grad(logits, target, weight, pos_weight, reduction, grad_output):
    """Elementwise -w (pw y log sigmoid(x) + (1 - y) log sigmoid(-x)) and its gradient."""
    from .binary import check_binary_target, check_broadcast_weight

    z = v.as_float_array(logits, "logits")
    reduction = v.check_reduction(reduction)
    y = check_binary_target(target, z.shape, z.dtype).astype(np.float64)
    w = check_broadcast_weight(weight, "weight", z.shape, z.dtype)
    pw = check_broadcast_weight(pos_weight, "pos_weight", z.shape, z.dtype)
    g = np.asarray(grad_output)
    gout = v.check_grad_output(g, reduction, () if g.ndim == 0 else z.shape)
    gout = gout[0] if g.ndim == 0 else gout.reshape(z.shape)
    w = np.ones(z.shape) if w is None else np.broadcast_to(w.astype(np.float64), z.shape)
    pw = np.ones(z.shape) if pw is None else np.broadcast_to(pw.astype(np.float64), z.shape)
    x = z.astype(np.float64)
    a = w * pw * y  # coefficient of -log sigmoid(x)
    b = w * (1.0 - y)  # coefficient of -log(1 - sigmoid(x)) = -log sigmoid(-x)
    with np.errstate(invalid="ignore"):
        elem = -(
            np.where(a != 0, a * _log_sigmoid64(x), 0.0)
            + np.where(b != 0, b * _log_sigmoid64(-x), 0.0)
        )
    elem = np.where(np.isnan(x), np.nan, elem)
    n = x.size
    scale = (1.0 / n if n else np.nan) if reduction == "mean" else 1.0
    grad = (_sigmoid64(x) * (a + b) - a) * (gout * scale)
    if reduction == "none":
        loss = elem
    elif reduction == "sum":
        loss = np.sum(elem)
    else:
        loss = np.sum(elem) / n if n else np.nan
    dtype = v.result_dtype(logits, z)
    return _result(loss, dtype), grad.astype(dtype)


def binary_cross_entropy_with_logits(
    logits: ArrayLike, target: ArrayLike, *, weight=None, pos_weight=None, reduction: str = "mean"
):
    """Reference: ``-w (pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x)))``, reduced like PyTorch."""
    return _bce_loss_grad(logits, target, weight, pos_weight, reduction, 1.0)[0]


def binary_cross_entropy_with_logits_backward(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight=None,
    pos_weight=None,
    reduction: str = "mean",
    grad_output: Any = 1.0,
    out=None,
) -> np.ndarray:
    """Reference: ``w ((1 - y + pw y) sigmoid(x) - pw y) * grad_output / denominator``."""
    _, grad = _bce_loss_grad(logits, target, weight, pos_weight, reduction, grad_output)
    v.check_out(out, grad.shape, grad.dtype)
    return _finish(grad, out, grad.dtype)


def binary_cross_entropy_with_logits_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight=None,
    pos_weight=None,
    reduction: str = "mean",
    out=None,
):
    """Reference: ``(binary_cross_entropy_with_logits(...), ..._backward(...))``."""
    loss, grad = _bce_loss_grad(logits, target, weight, pos_weight, reduction, 1.0)
    v.check_out(out, grad.shape, grad.dtype)
    return loss, _finish(grad, out, grad.dtype)
