"""Reference sigmoid, log_sigmoid and binary cross-entropy with logits, in float64.

Elementwise, for logit x, target y, weight w and positive weight pw:
``loss = -(a log sigmoid(x) + b log sigmoid(-x))`` with a = w pw y and b = w (1 - y) (a term
with a zero coefficient counts 0), ``dloss/dx = (a + b) sigmoid(x) - a``; "mean" divides by the
number of elements (NaN for none).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _checks as c
from ._exact import deliver, log_sigmoid64, sigmoid64


def _elementwise(formula, x: Any, out: Any) -> Any:
    x, dtype = c.as_array(x, "x")
    c.check_out(out, x.shape, dtype)
    return deliver(formula(x.astype(np.float64)), dtype, out)


def sigmoid(x: ArrayLike, *, out=None) -> np.ndarray:
    """Reference: ``1 / (1 + exp(-x))``, written so that neither branch overflows."""
    return _elementwise(sigmoid64, x, out)


def log_sigmoid(x: ArrayLike, *, out=None) -> np.ndarray:
    """Reference: ``min(x, 0) - log1p(exp(-|x|))``."""
    return _elementwise(log_sigmoid64, x, out)


def _elementwise_weight(weight: Any, name: str, z: np.ndarray) -> np.ndarray:
    """float64 weights of z's shape (ones for None): broadcastable to it, rounded to its dtype,
    finite and >= 0."""
    if weight is None:
        return np.ones(z.shape)
    w, _ = c.as_array(weight, name)
    if not c.broadcasts_to(w.shape, z.shape):
        raise ValueError(f"{name} has shape {w.shape}, which does not broadcast to {z.shape}")
    return np.broadcast_to(c.finite_in(w, z.dtype, name, nonneg=True), z.shape)


def _loss_and_grad(
    logits, target, *, weight, pos_weight, reduction, grad_output=1.0, out=None
) -> tuple[Any, Any]:
    """(loss, gradient) in the logits' result dtype."""
    z, dtype = c.as_array(logits, "logits")
    c.check_reduction(reduction)
    y, _ = c.as_array(target, "target")
    if y.shape != z.shape:
        raise ValueError(f"target has shape {y.shape}, not the logits' {z.shape}")
    y = c.finite_in(y, z.dtype, "target")
    w = _elementwise_weight(weight, "weight", z)
    pw = _elementwise_weight(pos_weight, "pos_weight", z)
    gout = c.upstream(grad_output, reduction, z.shape)
    c.check_out(out, z.shape, dtype)
    x = z.astype(np.float64)
    a, b = w * pw * y, w * (1.0 - y)
    with np.errstate(invalid="ignore"):
        elem = -(
            np.where(a != 0, a * log_sigmoid64(x), 0.0)
            + np.where(b != 0, b * log_sigmoid64(-x), 0.0)
        )
    elem = np.where(np.isnan(x), np.nan, elem)
    n = x.size
    per_loss = (1.0 / n if n else np.nan) if reduction == "mean" else 1.0
    grad = (sigmoid64(x) * (a + b) - a) * (gout * per_loss)
    loss = elem if reduction == "none" else np.sum(elem)
    if reduction == "mean":
        loss = loss / n if n else np.nan
    return deliver(loss, dtype, None), deliver(grad, dtype, out)


def binary_cross_entropy_with_logits(
    logits: ArrayLike, target: ArrayLike, *, weight=None, pos_weight=None, reduction: str = "mean"
):
    """Reference: ``-w (pw y log sigmoid(x) + (1 - y) log(1 - sigmoid(x)))``, reduced like
    PyTorch."""
    return _loss_and_grad(**locals())[0]


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
    return _loss_and_grad(**locals())[1]


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
    return _loss_and_grad(**locals())
