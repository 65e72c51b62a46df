"""Softmax cross-entropy with PyTorch's ``F.cross_entropy`` semantics, class axis last.

For one row with logits z, u = z / T (``c * tanh(z / c) / T`` with a softcap c),
L = logsumexp(u), log p = u - L, class weights w and label smoothing eps over C classes:

- class-index target y: ``loss = (1 - eps) w_y (-log p_y) + eps / C * sum_c w_c (-log p_c)``;
  rows whose target is ``ignore_index`` give 0; "mean" divides by ``sum(w[y])`` over the other rows.
- probability target t: ``loss = -sum_c w_c ((1 - eps) t_c + eps / C) log p_c``; "mean" divides
  by the number of rows.

A z-loss zl adds ``zl * L**2`` to each row's loss (not ignored rows only).

The gradient with respect to u is ``softmax(u) * (sum(q) + 2 zl L) - q`` (per row, q the weights
of the -log p terms above), times grad_output / T and the "mean" denominator, and times
``1 - tanh(z / c)**2`` with a softcap; for one-hot t without weights: ``softmax - t``.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v
from ._kernels.checks import first_bad_target
from ._kernels.cross_entropy import index_target_rows, prob_target_rows
from ._lazy import dask_call, dask_in
from ._runtime import launch


def fused_rows(
    z: np.ndarray,
    target: np.ndarray,
    is_index: bool,
    weight: np.ndarray,
    ignore_index: int,
    eps: float,
    z_loss: float,
    softcap: float | None,
    scale: Any,
    coef: np.ndarray,
    mean: bool,
    losses: np.ndarray,
    grad: np.ndarray | None,
    scratch: np.ndarray | None,
    mask: np.ndarray | None,
) -> float:
    """Run the fused kernel on C-contiguous (rows, C) logits ``z``; return the reduced loss.

    Per-row losses land in ``losses``; with ``grad`` (may be ``z``) the gradient, scaled by the
    per-row ``coef`` (and by the kernel's own "mean" denominator when ``mean``). With a softcap c
    the kernel runs on t = tanh(z / c) (held in ``scratch``, shaped like ``z``) with ``scale``
    the checked c / T, so that u = c tanh(z / c) / T; the chain factor dt/dz = 1 / (c cosh^2(z / c))
    is then taken from z itself, exact where 1 - t^2 would cancel. The tanh stays out of the kernel:
    NumPy's is vectorized while numba's is a scalar libm call, and the factor needs z after the
    kernel has overwritten its input with the gradient.
    """
    want_grad = grad is not None
    src = z
    if softcap is not None:
        with np.errstate(over="ignore"):  # z / c beyond the dtype's range: inf, tanh 1
            src = np.tanh(np.divide(z, z.dtype.type(softcap), out=scratch), out=scratch)
    dest = (
        (src if softcap is not None else grad) if want_grad else np.empty((1, z.shape[1]), z.dtype)
    )
    if is_index:
        total = launch(
            index_target_rows,
            z.size,
            src,
            target,
            weight,
            ignore_index,
            eps,
            z_loss,
            scale,
            coef,
            mean,
            losses,
            dest,
            want_grad,
            mask,
        )
    else:
        total = launch(
            prob_target_rows,
            z.size,
            src,
            target,
            weight,
            eps,
            z_loss,
            scale,
            coef,
            mean,
            losses,
            dest,
            want_grad,
            mask,
        )
    if softcap is not None and want_grad:
        with np.errstate(over="ignore"):  # cosh -> inf: factor 0
            factor = np.cosh(np.divide(z, z.dtype.type(softcap), out=grad), out=grad)
            np.multiply(factor, factor, out=factor)
            np.multiply(factor, z.dtype.type(softcap), out=factor)
        np.divide(src, factor, out=grad)
        # a gradient the kernel made 0 (ignored rows, left-out classes) stays 0 even where z is
        # NaN (0 / cosh(NaN)^2 is NaN); a row NaN on a kept class stays NaN throughout, as
        # without a softcap
        if mask is not None:
            np.copyto(grad, 0, where=src == 0)
        elif is_index:
            grad[target == ignore_index] = 0
    return total


def _run(
    logits: ArrayLike,
    target: ArrayLike,
    weight: ArrayLike | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    temperature: float,
    z_loss: float,
    softcap: float | None,
    grad_output: Any,
    want_grad: bool,
    out: np.ndarray | None,
    where: ArrayLike | None,
):
    """Validate, run the fused kernel once; return (loss, gradient or None)."""
    if (
        weight is None
        and where is None
        and softcap is None
        and v.plain_rows(logits)
        and (out is None or not want_grad or v.plain_out(out, logits))
    ):
        plain = _run_plain(
            logits,
            target,
            ignore_index,
            reduction,
            label_smoothing,
            temperature,
            z_loss,
            grad_output,
            want_grad,
            out,
        )
        if plain is not None:
            return plain
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
    dtype = v.result_dtype(logits, z)
    z_loss = v.check_z_loss(z_loss)
    softcap, scale = v.check_softcap(softcap, scale, z.dtype)
    if want_grad:
        v.check_out(out, z.shape, dtype)
    batch = z.shape[:-1]
    rows = v.to_rows(z, z.ndim - 1)
    read_late = () if is_index else (t,)  # the gradient pass reads the target after the exp pass
    # a float16 gradient is rounded from a float32 buffer, never written into `out` directly
    direct = out if dtype is z.dtype or dtype == z.dtype else None
    dest = (
        v.RowsOut(direct, z.shape, z.dtype, z.ndim - 1, (rows,), read_late) if want_grad else None
    )
    losses = np.empty(rows.shape[0])  # float64
    scratch = None if softcap is None else np.empty_like(rows)
    total = fused_rows(
        rows,
        t,
        is_index,
        w,
        ignore_index,
        eps,
        z_loss,
        softcap,
        scale,
        gout,
        reduction == "mean",
        losses,
        dest.rows if want_grad else None,
        scratch,
        mask,
    )
    if reduction == "none":
        loss = v.deliver(losses.reshape(batch), dtype, None)
    else:
        loss = v.result_scalar(total, dtype)
    return loss, v.deliver(dest.result(), dtype, out) if want_grad else None


def _run_plain(
    z: np.ndarray,
    target: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
    grad_output: Any,
    want_grad: bool,
    out: np.ndarray | None,
) -> tuple[Any, np.ndarray | None] | None:
    """:func:`_run` for plain (rows, C) logits (``v.plain_rows``) with a plain int64 (rows,)
    target (``v.plain_index_target``) and no weight, mask or softcap, the usual call of a
    training loop, without the general path's conversions; None when an argument is not of that
    kind or is invalid, so that the general path checks it and raises. Checks that can raise
    here run in the general path's order, after every earlier argument is known to be valid, so
    they raise what it would."""
    n, classes = z.shape
    if not (
        classes
        and v.plain_index_target(target, n)
        and type(ignore_index) is int
        and -(2**63) <= ignore_index < 2**63
        and reduction in v.REDUCTIONS
        and type(label_smoothing) is float
        and 0.0 <= label_smoothing <= 1.0
    ):
        return None
    scale = v.scale_for(temperature, z.dtype)
    if first_bad_target(target, classes, ignore_index) >= 0:
        return None
    gout = v.check_grad_output(grad_output, reduction, (n,))
    z_loss = v.check_z_loss(z_loss)
    grad = (out if out is not None else np.empty(z.shape, z.dtype)) if want_grad else None
    losses = np.empty(n)  # float64
    total = fused_rows(
        z,
        target,
        True,
        v.kernel_ones(classes, z.dtype),
        ignore_index,
        label_smoothing,
        z_loss,
        None,
        scale,
        gout,
        reduction == "mean",
        losses,
        grad,
        None,
        None,
    )
    loss = (
        v.deliver(losses, z.dtype, None) if reduction == "none" else v.result_scalar(total, z.dtype)
    )
    return loss, grad


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    where: ArrayLike | None = None,
) -> np.floating | np.ndarray:
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
    z_loss : float
        zl >= 0: PaLM's auxiliary loss ``zl * L**2``, L = logsumexp(u), added to every row that is
        not ignored (not weighted by ``weight``; "mean" divides it by the same denominator).
    softcap : float, optional
        c > 0: Gemma 2's logit soft-capping, ``u = c * tanh(logits / c) / T`` in place of
        ``logits / T`` (a -inf logit becomes -c: use ``where`` to leave classes out).
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
        # locals() is the parameters and nothing else at this point: they go on by name
        return dask_call("cross_entropy", **locals())
    # by name, not **locals(): building that dict costs ~2 us, a tenth of a small call
    return _run(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
        softcap=softcap,
        where=where,
        grad_output=1.0,
        want_grad=False,
        out=None,
    )[0]


def cross_entropy_backward(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    grad_output: ArrayLike = 1.0,
    out: np.ndarray | None = None,
    where: ArrayLike | None = None,
) -> np.ndarray:
    """Gradient of :func:`cross_entropy` with respect to ``logits``, times ``grad_output``.

    ``grad = grad_output * (softmax(u) * (sum(q) + 2 zl L) - q) / T / denominator`` per row (see the
    module doc), times ``1 - tanh(logits / c)**2`` with a softcap; 0 on ignored rows.

    Parameters
    ----------
    logits, target, weight, ignore_index, reduction
        As in :func:`cross_entropy`.
    label_smoothing, temperature, z_loss, softcap, where
        As in :func:`cross_entropy`.
    grad_output : float or array_like
        Upstream gradient: a scalar for "mean"/"sum"; a scalar or an array of shape ``batch``
        for "none".
    out : ndarray, optional
        Writable array of the logits' shape and the result dtype; may be ``logits`` itself.
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, grad_output, where):
        return dask_call("cross_entropy_backward", **locals())
    return _run(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
        softcap=softcap,
        where=where,
        grad_output=grad_output,
        want_grad=True,
        out=out,
    )[1]


def cross_entropy_with_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    out: np.ndarray | None = None,
    where: ArrayLike | None = None,
) -> tuple[Any, np.ndarray]:
    """Loss and gradient in one fused pass over each row: ``(cross_entropy(...), d loss/d logits)``.

    Arguments as in :func:`cross_entropy`; ``out=logits`` writes the gradient over the logits
    (no extra memory beyond O(rows)).
    """
    if "dask" in sys.modules and dask_in(logits, target, weight, where):
        return dask_call("cross_entropy_with_grad", **locals())
    return _run(
        logits,
        target,
        weight=weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
        softcap=softcap,
        where=where,
        grad_output=1.0,
        want_grad=True,
        out=out,
    )
