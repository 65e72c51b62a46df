"""Fused linear + cross-entropy that never holds the N x C logits: a loop over chunks of rows.

``linear_cross_entropy(x, W, target, linear_bias=b, ...)`` equals
``cross_entropy(x @ W.T + b, target, ...)`` (x: (..., H), W: (C, H) as in ``torch.nn.Linear``).
Each chunk of rows does, in one reused (rows, C) buffer:

1. ``z = x_chunk @ W.T (+ b)``: one BLAS matmul (NumPy's), in the inputs' common compute dtype
   (float32 for float16 inputs);
2. the fused cross-entropy row kernel, writing dloss/dz over z, already scaled by the global
   "mean" denominator (computed first from the targets and class weights);
3. ``dx_chunk = g @ W``, ``dW += g.T @ x_chunk``, ``db += sum(g, axis=0)``.

Per-row losses and the bias gradient accumulate in float64. Results have the promoted dtype
of x, W and b: float16 when all of them are float16 (computed in float32, each result rounded
once at the end), else their compute dtype (float32 with float64: float64).

Chunking changes the order in which ``dW`` sums over the N rows: two chunk sizes give dW at most
``2 N u sum_i |g_ic| |x_ih|`` apart (u the unit roundoff), the bound for a sum of N products in
any order. The logits and dx are row-wise, but the BLAS may round them differently (a few ulps)
for another number of rows.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v
from ._lazy import dask_call, dask_in
from .losses import fused_rows

# Default memory budget of the chunk's logits (both buffers with a softcap). Measured at
# N x H x C = 2048 x 256 x 16000 (float32, 2 threads, min of 3, machine shared): 8 MB 2.2 s,
# 16 MB 1.4 s, 32 MB 1.09 s, 64 MB 1.02 s per forward + backward (unfused 0.99 s). Fewer,
# taller matmuls win: NumPy's OpenBLAS is slow on short ones (dx = g @ W has K = C), more so
# on a loaded machine. Smaller chunks trade time for memory (``chunk_size=``).
CHUNK_BYTES = 64 * 2**20
# Budget of the scratch block through which later chunks add into dW (at most one chunk's size).
_DW_BLOCK_BYTES = 4 * 2**20


def _chunk_rows(chunk_size: int | None, classes: int, itemsize: int, buffers: int) -> int:
    if chunk_size is not None:
        return chunk_size
    return max(1, CHUNK_BYTES // (classes * itemsize * buffers))


def _add_weight_grad(dw: np.ndarray, g: np.ndarray, xc: np.ndarray, block: np.ndarray) -> None:
    """``dw += g.T @ xc``, a block of classes at a time through ``block`` (no (C, H) temporary)."""
    rows = block.shape[0]
    for c0 in range(0, dw.shape[0], rows):
        c1 = min(dw.shape[0], c0 + rows)
        part = np.matmul(g[:, c0:c1].T, xc, out=block[: c1 - c0])
        dw[c0:c1] += part


def _run(
    x: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    linear_bias: ArrayLike | None,
    weight: ArrayLike | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    temperature: float,
    z_loss: float,
    softcap: float | None,
    chunk_size: int | None,
    want_grad: bool,
):
    """Validate, loop over the chunks; return (loss, dx, dW, db) (gradients None unless asked)."""
    x, w_lin, b, res_dtype = v.check_linear(x, linear_weight, linear_bias)
    chunk_size = v.check_chunk_size(chunk_size)
    dtype = x.dtype  # the compute dtype (float32 for float16 inputs, whose results are rounded)
    classes, features = w_lin.shape
    batch = x.shape[:-1]
    reduction = v.check_reduction(reduction)
    eps = v.check_label_smoothing(label_smoothing)
    ignore_index = v.check_ignore_index(ignore_index)
    scale = v.scale_for(temperature, dtype)
    t, is_index = v.check_target(target, batch + (classes,), ignore_index, dtype)
    w = v.check_weight(weight, classes, dtype)
    z_loss = v.check_z_loss(z_loss)
    softcap, scale = v.check_softcap(softcap, scale, dtype)

    w_lin = np.ascontiguousarray(w_lin)
    x2 = x.reshape(-1, features)
    n = x2.shape[0]
    inv_denom = 1.0
    if reduction == "mean":
        denom = np.sum(w[t[t != ignore_index]], dtype=np.float64) if is_index else float(n)
        inv_denom = 1.0 / denom if denom != 0 else np.nan  # 0 / 0, as torch
    coef = np.full(n, inv_denom)
    losses = np.empty(n, dtype=np.float64)

    buffers = 1 if softcap is None else 2  # with a softcap: tanh(z / c) beside z
    rows = min(max(n, 1), _chunk_rows(chunk_size, classes, dtype.itemsize, buffers))
    buf = np.empty((rows, classes), dtype)
    scratch = None if softcap is None else np.empty_like(buf)
    if want_grad:
        dx = np.empty((n, features), dtype)
        dw = np.zeros((classes, features), dtype)
        db = np.zeros(classes, dtype=np.float64)
        if n > rows:  # later chunks add into dW through a block of classes
            block_bytes = min(_DW_BLOCK_BYTES, buf.nbytes)
            block_rows = max(1, min(classes, block_bytes // max(1, features * dtype.itemsize)))
            block = np.empty((block_rows, features), dtype)
    for r0 in range(0, n, rows):
        r1 = min(n, r0 + rows)
        z = buf[: r1 - r0]
        xc = x2[r0:r1]
        np.matmul(xc, w_lin.T, out=z)
        if b is not None:
            z += b
        fused_rows(
            z,
            t[r0:r1],
            is_index,
            w,
            ignore_index,
            eps,
            z_loss,
            softcap,
            scale,
            coef[r0:r1],
            False,
            losses[r0:r1],
            z if want_grad else None,
            None if scratch is None else scratch[: r1 - r0],
            None,
        )
        if want_grad:
            np.matmul(z, w_lin, out=dx[r0:r1])
            if r0 == 0:
                np.matmul(z.T, xc, out=dw)
            else:
                _add_weight_grad(dw, z, xc, block)
            if b is not None:
                db += np.sum(z, axis=0, dtype=np.float64)

    if reduction == "none":
        loss = v.deliver(losses.reshape(batch), res_dtype, None)  # 0-d (1-D x): a scalar
    else:
        total = np.sum(losses)
        loss = v.result_scalar(total * inv_denom if reduction == "mean" else total, res_dtype)
    if not want_grad:
        return loss, None, None, None
    return (
        loss,
        v.deliver(dx.reshape(x.shape), res_dtype, None),
        v.deliver(dw, res_dtype, None),
        None if b is None else db.astype(res_dtype),
    )


def linear_cross_entropy(
    x: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> np.floating | np.ndarray:
    """``cross_entropy(x @ linear_weight.T + linear_bias, target, ...)`` without the full logits.

    Parameters
    ----------
    x : array_like
        Shape ``batch + (H,)``.
    linear_weight : array_like
        (C, H), as ``torch.nn.Linear.weight``.
    target : array_like
        Class indices of shape ``batch`` or probabilities of shape ``batch + (C,)``.
    linear_bias : array_like, optional
        (C,).
    weight, ignore_index, reduction, label_smoothing, temperature, z_loss, softcap
        As in :func:`fastsoftmax.cross_entropy`; ``ignore_index=None`` means -100, as in
        ``torch.nn.functional.linear_cross_entropy``.
    chunk_size : int, optional
        Rows of x per chunk; by default as many as fit ``CHUNK_BYTES`` (64 MiB) of logits.

    Returns
    -------
    NumPy scalar of the result dtype, or an array of shape ``batch`` for reduction="none" (the
    per-token negative log-probabilities when nothing else is set; a scalar for 1-D x). The
    result dtype is the promoted dtype of x, linear_weight and linear_bias, as for two inputs in
    :func:`fastsoftmax.softmax_jvp`: float16 when all of them are float16 (computed in float32
    and rounded once, as PyTorch returns float16), else their common compute dtype (float16 with
    float32: float32; integers: float64). Class weights and probability targets do not change it.
    """
    if ignore_index is None:  # torch's F.linear_cross_entropy default, which it maps to -100
        ignore_index = -100
    if "dask" in sys.modules and dask_in(x, linear_weight, target, linear_bias, weight):
        # locals() is the parameters and nothing else at this point: they go on by name
        return dask_call("linear_cross_entropy", **locals())
    return _run(**locals(), want_grad=False)[0]


def linear_cross_entropy_with_grad(
    x: ArrayLike,
    linear_weight: ArrayLike,
    target: ArrayLike,
    *,
    linear_bias: ArrayLike | None = None,
    weight: ArrayLike | None = None,
    ignore_index: int | None = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    chunk_size: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
    """Loss and gradients: ``(linear_cross_entropy(...), dx, dlinear_weight, dlinear_bias)``.

    With g = d loss / d logits (see :func:`fastsoftmax.cross_entropy_backward`), per chunk:
    ``dx = g @ W``, ``dW = sum over chunks of g.T @ x``, ``db = sum of g over rows``;
    ``dlinear_bias`` is None without a bias. For reduction="none" the gradients are those of the
    sum of the per-row losses. All results have the result dtype of :func:`linear_cross_entropy`
    (float16 for float16 x, linear_weight and linear_bias: computed in float32, rounded once).

    Extra memory: dW (C x H), one chunk of logits (two with a softcap), O(rows + C) and a block
    of at most 4 MiB (and one chunk) for adding into dW; for float16 inputs also their float32
    copies, and dx and dW in float32 before rounding.
    """
    if ignore_index is None:  # as in linear_cross_entropy
        ignore_index = -100
    if "dask" in sys.modules and dask_in(x, linear_weight, target, linear_bias, weight):
        return dask_call("linear_cross_entropy_with_grad", **locals())
    return _run(**locals(), want_grad=True)
