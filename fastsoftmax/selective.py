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
    """(logits in their compute dtype, the result dtype, 1/T in the compute dtype, (rows, K) int64
    indices, the index's shape)."""
    z = v.as_float_array(logits, "logits")
    if z.ndim == 0:
        raise ValueError("logits must have at least 1 dimension (the class axis, last)")
    dtype = v.result_dtype(logits, z)
    v.check_classes(z.shape, z.ndim - 1)
    scale = v.scale_for(temperature, z.dtype)
    idx, shape = v.check_class_index(index, z.shape)
    return z, dtype, scale, idx, shape


def selective_log_softmax(
    logits: ArrayLike, index: ArrayLike, *, temperature: float = 1.0
) -> np.ndarray | np.floating:
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
    ndarray or NumPy scalar
        Of ``index``'s shape, in the result dtype: the logits' compute dtype, float16 for float16
        logits (computed in float32, rounded once). A 0-d result (1-D logits, scalar index) is a
        NumPy scalar of that dtype.
    """
    if "dask" in sys.modules and dask_in(logits, index):
        return dask_call("selective_log_softmax", logits, index, temperature=temperature)
    z, dtype, scale, idx, shape = _checked(logits, index, temperature)
    out = np.empty(idx.shape, dtype=z.dtype)
    rows = v.to_rows(z, z.ndim - 1)
    launch(selective_log_softmax_rows, rows.size, rows, idx, scale, out)
    return v.deliver(out.reshape(shape), dtype, None)


def selective_log_softmax_vjp(
    logits: ArrayLike,
    index: ArrayLike,
    cotangent: ArrayLike,
    *,
    temperature: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Gradient of ``sum(cotangent * selective_log_softmax(logits, index))`` with respect to logits.

    ``(scatter_add(g, index) - softmax(logits / T) * sum_k g_k) / T`` per row, g = cotangent
    (a class selected twice receives both cotangents).

    Parameters
    ----------
    logits, index, temperature
        As in :func:`selective_log_softmax`.
    cotangent : array_like
        g, of ``index``'s shape (read as float64; its dtype does not change the result's).
    out : ndarray, optional
        Writable array of the logits' shape and the result dtype; may be ``logits`` itself.

    Returns
    -------
    ndarray
        Of the logits' shape and the result dtype of :func:`selective_log_softmax` (float16 for
        float16 logits: computed in float32, rounded once).
    """
    if "dask" in sys.modules and dask_in(logits, index, cotangent):
        return dask_call(
            "selective_log_softmax_vjp", logits, index, cotangent, temperature=temperature, out=out
        )
    z, dtype, scale, idx, shape = _checked(logits, index, temperature)
    g = v.as_float_array(cotangent, "cotangent")
    if g.shape != shape:
        raise ValueError(f"cotangent has shape {g.shape}; it must match index's shape {shape}")
    g = v.kernel_input(np.ascontiguousarray(g, dtype=np.float64).reshape(idx.shape))
    v.check_out(out, z.shape, dtype)
    rows = v.to_rows(z, z.ndim - 1)
    # a float16 result is rounded from a float32 buffer, never written into `out` directly
    direct = out if dtype == z.dtype else None
    dest = v.RowsOut(direct, z.shape, z.dtype, z.ndim - 1, (rows,))
    launch(selective_log_softmax_vjp_rows, rows.size, rows, idx, g, scale, dest.rows)
    return v.deliver(dest.result(), dtype, out)
