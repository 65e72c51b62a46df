"""The binary (two-class) case the softmax generalizes: sigmoid, log_sigmoid and binary
cross-entropy with logits, with PyTorch's ``F.binary_cross_entropy_with_logits`` semantics.

``sigmoid(z) == softmax([z, 0])[0]`` and ``log_sigmoid(z) == log_softmax([z, 0])[0]``. For a
logit x, target y, weight w and positive-class weight pw, elementwise:

    loss = -w (pw y log sigmoid(x) + (1 - y) log sigmoid(-x))
         =  w (pw y softplus(-x) + (1 - y) softplus(x))
    d loss / dx = w ((1 - y + pw y) sigmoid(x) - pw y)        (sigmoid(x) - y when w = pw = 1)

computed as ``softplus(x) = max(x, 0) + log1p(exp(-|x|))``, so any finite logit gives a finite
loss and gradient (x = +-1000 gives the exact limits 0 or |x|).

Special values: a NaN logit gives NaN (loss and gradient) at that element only. Infinite logits
give the limits: sigmoid(+-inf) = 1 / 0, log_sigmoid(-inf) = -inf, and a loss term whose
coefficient (w pw y or w (1 - y)) is 0 counts 0 even where its softplus is +inf, so x = +inf with
y = 1 gives loss 0 and x = -inf with y = 1 gives +inf (PyTorch gives NaN for some of these).
Targets, weights and pos_weight must be finite, and weights >= 0 (as for ``cross_entropy``).
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v
from ._kernels.binary import SPAN, bce_kernel, log_sigmoid_kernel, sigmoid_kernel
from ._lazy import dask_call, dask_in
from ._runtime import launch

# --------------------------------------------------------------------------- sigmoid


def _elementwise(kernel, x: ArrayLike, out: np.ndarray | None) -> np.ndarray | np.floating:
    x_in = x
    x = v.as_float_array(x, "x")
    dtype = v.result_dtype(x_in, x)
    v.check_out(out, x.shape, dtype)
    flat = v.to_flat(x)
    dest = v.RowsOut(out, x.shape, x.dtype, None, (flat,))
    launch(kernel, flat.size, flat, dest.rows, SPAN)
    return v.deliver(dest.result(), dtype, out)


def sigmoid(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray | np.floating:
    """The logistic function ``1 / (1 + exp(-x))``, elementwise, without overflow.

    Computed as ``1 / (1 + e)`` for x >= 0 and ``e / (1 + e)`` for x < 0, with e = exp(-|x|).

    Parameters
    ----------
    x : array_like
        Any shape; float32/float64 computed natively, float16 in float32 (the result is
        float16), ints and bools in float64.
    out : ndarray, optional
        Writable array of x's shape and result dtype; may be ``x`` itself.

    Returns
    -------
    ndarray or NumPy scalar
        Values in [0, 1]: exactly 1 at +inf (and for x above ~37 in float64, ~17 in float32),
        exactly 0 at -inf, NaN for NaN. A NumPy scalar for 0-d ``x`` (unless ``out`` is given),
        as NumPy's ufuncs return.
    """
    if "dask" in sys.modules and dask_in(x):
        return dask_call("sigmoid", x, out=out)
    return _elementwise(sigmoid_kernel, x, out)


def log_sigmoid(x: ArrayLike, *, out: np.ndarray | None = None) -> np.ndarray | np.floating:
    """``log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))``, elementwise, stable for any x.

    Parameters and dtype rules as in :func:`sigmoid`. Returns values <= 0: -inf at -inf, 0 at
    +inf, ``x`` itself for x << 0 (e.g. -1000), NaN for NaN.
    """
    if "dask" in sys.modules and dask_in(x):
        return dask_call("log_sigmoid", x, out=out)
    return _elementwise(log_sigmoid_kernel, x, out)


# --------------------------------------------------------------------------- binary cross-entropy


_ONES: dict[str, np.ndarray] = {}


def _ones(length: int, dtype: np.dtype) -> np.ndarray:
    """A private cached array of at least ``length`` ones (the kernels never write weights)."""
    ones = _ONES.get(dtype.char)
    if ones is None or ones.shape[0] < length:
        ones = np.ones(max(length, SPAN), dtype=dtype)
        _ONES[dtype.char] = ones
    return ones


def _weight_operand(w: np.ndarray | None, shape: tuple[int, ...]) -> tuple[np.ndarray | None, int]:
    """A weight as the kernel wants it: a full flat array (period 0), or a vector along the last
    axis of length 1 or C (returned with that period, tiled later); None stays None (period 1)."""
    if w is None:
        return None, 1
    if w.ndim == 0 or all(d == 1 for d in w.shape[:-1]):
        vec = v.kernel_input(np.ascontiguousarray(w).reshape(-1))
        return vec, vec.shape[0]
    return v.to_flat(np.broadcast_to(w, shape)), 0


def _tiled(vec: np.ndarray | None, period: int, span: int, dtype: np.dtype) -> np.ndarray:
    """The kernel operand for a weight: full arrays as they are, vectors repeated to ``span``."""
    if vec is None:
        return _ones(span, dtype)
    if period == 0:
        return vec
    if period == 1:
        return np.full(span, vec[0], dtype=dtype)
    return np.tile(vec, span // period)


def _run(
    logits: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None,
    pos_weight: ArrayLike | None,
    reduction: str,
    grad_output: Any,
    want_loss: bool,
    want_grad: bool,
    out: np.ndarray | None,
):
    """Validate and run the fused kernel once; return (loss or None, gradient or None)."""
    z, y, w, pw, reduction, g = v.binary_args(
        logits, target, weight, pos_weight, reduction, grad_output
    )
    dtype = z.dtype
    res_dtype = v.result_dtype(logits, z)
    shape = z.shape
    if want_grad:
        v.check_out(out, shape, res_dtype)

    n = math.prod(shape)
    classes = shape[-1] if shape else 1
    coef = 1.0 / n if reduction == "mean" and n else (math.nan if reduction == "mean" else 1.0)
    if isinstance(g, float):
        coef *= g
    else:  # reduction "none" with one upstream gradient per element: fold it into the weight
        w = (w if w is not None else np.ones((), dtype)) * g.astype(dtype)

    wv, w_period = _weight_operand(w, shape)
    pv, p_period = _weight_operand(pw, shape)
    period = classes if classes > 1 and classes in (w_period, p_period) else 1
    span = period * max(1, SPAN // period)
    span = min(span, n) if n else 1  # n is a multiple of period
    wv = _tiled(wv, w_period, span, dtype)
    pv = _tiled(pv, p_period, span, dtype)

    x = v.to_flat(z)
    t = v.to_flat(y)
    nblocks = -(-n // span)
    store_loss = want_loss and reduction == "none"
    loss = np.empty(n if store_loss else 0, dtype=dtype)
    sums = np.empty(nblocks if want_loss and not store_loss else 0, dtype=np.float64)
    dest = v.RowsOut(out, shape, dtype, None, (x, t)) if want_grad else None
    grad = dest.rows if want_grad else np.empty(0, dtype=dtype)
    total = launch(
        bce_kernel,
        n,
        x,
        t,
        wv,
        pv,
        coef,
        loss,
        sums,
        grad,
        span,
        w_period == 0,
        p_period == 0,
        store_loss,
        want_loss and not store_loss,
        want_grad,
    )

    result = None
    if want_loss:
        if store_loss:
            result = v.deliver(loss.reshape(shape), res_dtype, None)
        else:
            mean = total / n if n else math.nan
            result = v.result_scalar(mean if reduction == "mean" else total, res_dtype)
    return result, v.deliver(dest.result(), res_dtype, out) if want_grad else None


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
) -> np.floating | np.ndarray:
    """Binary cross-entropy of ``sigmoid(logits)`` against ``target`` (PyTorch semantics).

    ``loss = w * (pw * y * softplus(-x) + (1 - y) * softplus(x))`` elementwise, which is
    ``-w * (pw * y * log(sigmoid(x)) + (1 - y) * log(1 - sigmoid(x)))`` computed stably.

    Parameters
    ----------
    logits : array_like
        x, any shape (dtype rules as in :func:`sigmoid`).
    target : array_like
        y, same shape as ``logits``, finite (usually in [0, 1]; soft labels allowed); cast to the
        logits' dtype.
    weight : array_like, optional
        w, finite and >= 0, broadcastable to the logits' shape (e.g. a mask, or one per class).
    pos_weight : array_like, optional
        pw, weight of the positive term, finite and >= 0, broadcastable to the logits' shape
        (usually one per class, along the last axis).
    reduction : {"mean", "sum", "none"}
        "mean" divides the sum by the number of elements (not by the weights; NaN when empty).

    Returns
    -------
    NumPy scalar of the result dtype, or an array of the logits' shape for reduction="none" (a
    scalar for 0-d logits). The result dtype is the logits' compute dtype, float16 for float16
    logits (computed in float32); the gradients have it too.
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, pos_weight):
        return dask_call(
            "binary_cross_entropy_with_logits",
            logits,
            target,
            weight=weight,
            pos_weight=pos_weight,
            reduction=reduction,
        )
    return _run(logits, target, weight, pos_weight, reduction, 1.0, True, False, None)[0]


def binary_cross_entropy_with_logits_backward(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
    grad_output: ArrayLike = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gradient of :func:`binary_cross_entropy_with_logits` with respect to ``logits``.

    ``grad = grad_output * w * ((1 - y + pw * y) * sigmoid(x) - pw * y) / denominator``, where the
    denominator is the number of elements for "mean" and 1 otherwise; ``sigmoid(x) - y`` (over n
    for "mean") without weights.

    Parameters
    ----------
    logits, target, weight, pos_weight, reduction
        As in :func:`binary_cross_entropy_with_logits`.
    grad_output : float or array_like
        Upstream gradient: a scalar for "mean"/"sum"; a scalar or an array of the logits' shape
        for "none".
    out : ndarray, optional
        Writable array of the logits' shape and the result dtype; may be ``logits`` itself.

    Returns
    -------
    ndarray or NumPy scalar
        Of the logits' shape and the result dtype (see
        :func:`binary_cross_entropy_with_logits`); a NumPy scalar for 0-d logits without ``out``.
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, pos_weight, grad_output):
        return dask_call(
            "binary_cross_entropy_with_logits_backward",
            logits,
            target,
            weight=weight,
            pos_weight=pos_weight,
            reduction=reduction,
            grad_output=grad_output,
            out=out,
        )
    return _run(logits, target, weight, pos_weight, reduction, grad_output, False, True, out)[1]


def binary_cross_entropy_with_logits_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: str = "mean",
    out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    """Loss and gradient in one pass: ``(binary_cross_entropy_with_logits(...), d loss/d logits)``.

    Arguments as in :func:`binary_cross_entropy_with_logits`; ``out=logits`` writes the gradient
    over the logits.
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, pos_weight):
        return dask_call(
            "binary_cross_entropy_with_logits_with_grad",
            logits,
            target,
            weight=weight,
            pos_weight=pos_weight,
            reduction=reduction,
            out=out,
        )
    return _run(logits, target, weight, pos_weight, reduction, 1.0, True, True, out)
