"""Log-probabilities of selected classes only (per-token log-probs for GRPO/PPO), and their VJP.

``selective_log_softmax(z, idx)[..., k] = log_softmax(z / T)[..., idx[..., k]]
= (z_idx - max(z)) / T - log1p(sum(exp((z - max(z)) / T)) - 1)``, computed row by row without
storing the row's log_softmax (O(K) output per row instead of O(C)).
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v
from ._kernels.selective import selective_log_softmax_rows, selective_log_softmax_vjp_rows
from ._lazy import dask_call, dask_in
from ._runtime import launch


def _checked(logits: ArrayLike, index: ArrayLike, temperature: float):
    """(logits, 1/T in their dtype, (rows, K) int64 indices, the index's shape)."""
    z = v.as_float_array(logits, "logits")
    if z.ndim == 0:
        raise ValueError("logits must have at least 1 dimension (the class axis, last)")
    v.check_classes(z.shape, z.ndim - 1)
    scale = v.scale_for(temperature, z.dtype)
    idx, shape = v.check_class_index(index, z.shape)
    return z, scale, idx, shape


def selective_log_softmax(logits: ArrayLike, index: ArrayLike, *,
                          temperature: float = 1.0) -> np.ndarray:
    """``log_softmax(logits / temperature)`` at the classes ``index`` (class axis last).

    Parameters
    ----------
    logits : array_like
        Shape ``batch + (C,)``.
    index : array_like of int
        Shape ``batch`` (one class per row) or ``batch + (K,)``; values in [0, C).
    temperature : float
        T > 0.

    Returns
    -------
    ndarray of ``index``'s shape and the logits' dtype.
    """
    if "dask" in sys.modules and dask_in(logits, index):
        return dask_call("selective_log_softmax", logits, index, temperature=temperature)
    z, scale, idx, shape = _checked(logits, index, temperature)
    out = np.empty(idx.shape, dtype=z.dtype)
    rows = v.to_rows(z, z.ndim - 1)
    launch(selective_log_softmax_rows, rows.size, rows, idx, scale, out)
    return out.reshape(shape)


def selective_log_softmax_vjp(logits: ArrayLike, index: ArrayLike, cotangent: ArrayLike, *,
                              temperature: float = 1.0, out: np.ndarray | None = None) -> np.ndarray:
    """Gradient of ``sum(cotangent * selective_log_softmax(logits, index))`` with respect to logits.

    ``(scatter_add(g, index) - softmax(logits / T) * sum_k g_k) / T`` per row, g = cotangent
    (a class selected twice receives both cotangents).

    Parameters
    ----------
    logits, index, temperature
        As in :func:`selective_log_softmax`.
    cotangent : array_like
        g, of ``index``'s shape.
    out : ndarray, optional
        Writable array of the logits' shape and dtype; may be ``logits`` itself.
    """
    if "dask" in sys.modules and dask_in(logits, index, cotangent):
        return dask_call("selective_log_softmax_vjp", logits, index, cotangent,
                         temperature=temperature, out=out)
    z, scale, idx, shape = _checked(logits, index, temperature)
    g = v.as_float_array(cotangent, "cotangent")
    if g.shape != shape:
        raise ValueError(f"cotangent has shape {g.shape}; it must match index's shape {shape}")
    g = v.kernel_input(np.ascontiguousarray(g, dtype=np.float64).reshape(idx.shape))
    v.check_out(out, z.shape, z.dtype)
    rows = v.to_rows(z, z.ndim - 1)
    dest = v.RowsOut(out, z.shape, z.dtype, z.ndim - 1, (rows,))
    launch(selective_log_softmax_vjp_rows, rows.size, rows, idx, g, scale, dest.rows)
    return dest.result()
