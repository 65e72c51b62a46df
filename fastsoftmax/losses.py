"""Softmax cross-entropy with PyTorch's ``F.cross_entropy`` semantics, class axis last.

For one row with logits z, u = z / T, L = logsumexp(u), log p = u - L, class weights w and
label smoothing eps over C classes:

- class-index target y: ``loss = (1 - eps) w_y (-log p_y) + eps / C * sum_c w_c (-log p_c)``;
  rows whose target is ``ignore_index`` give 0; "mean" divides by ``sum(w[y])`` over the other rows.
- probability target t: ``loss = -sum_c w_c ((1 - eps) t_c + eps / C) log p_c``; "mean" divides
  by the number of rows.

The gradient is ``softmax(u) * sum(q) - q`` (per row, q the weights of the -log p terms above),
times grad_output / T and the "mean" denominator; for one-hot t without weights: ``softmax - t``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v
from ._kernels.cross_entropy import index_target_rows, prob_target_rows
from ._lazy import dask_call, dask_in
from ._runtime import launch


def _run(logits: ArrayLike, target: ArrayLike, weight: ArrayLike | None, ignore_index: int,
         reduction: str, label_smoothing: float, temperature: float, grad_output: Any,
         want_grad: bool, out: np.ndarray | None, where: ArrayLike | None):
    """Validate, run the fused kernel once; return (loss, gradient or None)."""
    z, t, is_index, w, eps, ignore_index, reduction, scale, gout, mask = v.cross_entropy_args(
        logits, target, weight, ignore_index, reduction, label_smoothing, temperature,
        grad_output, where)
    dtype = v.result_dtype(logits, z)
    if want_grad:
        v.check_out(out, z.shape, dtype)
    classes = z.shape[-1]
    batch = z.shape[:-1]
    rows = v.to_rows(z, z.ndim - 1)
    n = rows.shape[0]
    read_late = () if is_index else (t,)  # the gradient pass reads the target after the exp pass
    # a float16 gradient is rounded from a float32 buffer, never written into `out` directly
    direct = out if dtype == z.dtype else None
    dest = v.RowsOut(direct, z.shape, z.dtype, z.ndim - 1, (rows,), read_late) if want_grad else None
    grad_rows = dest.rows if want_grad else np.empty((1, classes), z.dtype)
    losses = np.empty(n, dtype=np.float64)
    mean = reduction == "mean"
    if is_index:
        total = launch(index_target_rows, rows.size, rows, t, w, ignore_index, eps, scale, gout,
                       mean, losses, grad_rows, want_grad, mask)
    else:
        total = launch(prob_target_rows, rows.size, rows, t, w, eps, scale, gout, mean, losses,
                       grad_rows, want_grad, mask)
    if reduction == "none":
        loss = v.deliver(losses.reshape(batch), dtype, None)
    else:
        loss = dtype.type(total)
    return loss, v.deliver(dest.result(), dtype, out) if want_grad else None


def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0,
                  temperature: float = 1.0, where: ArrayLike | None = None) -> np.floating | np.ndarray:
    """Softmax cross-entropy of ``logits / temperature`` against ``target`` (PyTorch semantics).

    Parameters
    ----------
    logits : array_like
        Shape ``batch + (C,)``, class axis last.
    target : array_like
        Integer class indices of shape ``batch``, or float probabilities of shape ``batch + (C,)``.
    weight : array_like, optional
        (C,) finite, non-negative class weights.
    ignore_index : int
        Class-index targets equal to it contribute 0 and leave the "mean" denominator.
    reduction : {"mean", "sum", "none"}
        "mean" divides by the summed target weights (index targets; NaN if every row is ignored)
        or by the number of rows (probability targets).
    label_smoothing : float
        eps in [0, 1]: the target mixes with the uniform distribution, ``(1 - eps) t + eps / C``.
    temperature : float
        T > 0.
    where : array_like of bool, optional
        Broadcastable to ``logits``: classes where it is False are left out of a row's softmax
        (probability 0, zero gradient); label smoothing spreads eps over the kept classes only.
        A class-index target must be a kept class; a probability target's mass on left-out
        classes is dropped. A row masked entirely has loss 0 and gradient 0 (for index targets
        it also leaves the "mean" denominator, like an ignored row).

    Returns
    -------
    NumPy scalar of the result dtype, or an array of shape ``batch`` for reduction="none" (a
    scalar for 1-D logits). The result dtype is the logits' compute dtype, float16 for float16
    logits (computed in float32, as PyTorch does); the gradients have it too.

    Raises
    ------
    ValueError
        For logits with 0 classes (no target can be valid), among the other argument checks.
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, where):
        return dask_call("cross_entropy", logits, target, weight=weight, ignore_index=ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing,
                         temperature=temperature, where=where)
    return _run(logits, target, weight, ignore_index, reduction, label_smoothing, temperature,
                1.0, False, None, where)[0]


def cross_entropy_backward(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
                           ignore_index: int = -100, reduction: str = "mean",
                           label_smoothing: float = 0.0, temperature: float = 1.0,
                           grad_output: ArrayLike = 1.0, out: np.ndarray | None = None,
                           where: ArrayLike | None = None) -> np.ndarray:
    """Gradient of :func:`cross_entropy` with respect to ``logits``, times ``grad_output``.

    ``grad = grad_output * (softmax(logits / T) * sum(q) - q) / T / denominator`` per row (see the
    module doc); 0 on ignored rows.

    Parameters
    ----------
    logits, target, weight, ignore_index, reduction, label_smoothing, temperature, where
        As in :func:`cross_entropy`.
    grad_output : float or array_like
        Upstream gradient: a scalar for "mean"/"sum"; a scalar or an array of shape ``batch``
        for "none".
    out : ndarray, optional
        Writable array of the logits' shape and the result dtype; may be ``logits`` itself.
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, grad_output, where):
        return dask_call("cross_entropy_backward", logits, target, weight=weight,
                         ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, temperature=temperature,
                         grad_output=grad_output, out=out, where=where)
    return _run(logits, target, weight, ignore_index, reduction, label_smoothing, temperature,
                grad_output, True, out, where)[1]


def cross_entropy_with_grad(logits: ArrayLike, target: ArrayLike, *, weight: ArrayLike | None = None,
                            ignore_index: int = -100, reduction: str = "mean",
                            label_smoothing: float = 0.0, temperature: float = 1.0,
                            out: np.ndarray | None = None,
                            where: ArrayLike | None = None) -> tuple[Any, np.ndarray]:
    """Loss and its gradient in one fused pass over each row: ``(cross_entropy(...), d loss/d logits)``.

    Arguments as in :func:`cross_entropy`; ``out=logits`` writes the gradient over the logits
    (no extra memory beyond O(rows)).
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, where):
        return dask_call("cross_entropy_with_grad", logits, target, weight=weight,
                         ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, temperature=temperature, out=out,
                         where=where)
    return _run(logits, target, weight, ignore_index, reduction, label_smoothing, temperature,
                1.0, True, out, where)
