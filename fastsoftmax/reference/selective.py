"""Reference selective log-softmax: the full log_softmax, then the selected classes."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _checks as c
from ._exact import deliver, log_softmax_last, log_softmax_vjp_last


def _selected(logits: Any, index: Any, temperature: Any):
    """(z in its compute dtype, the result dtype, 1/T, log_softmax(z / T) as (rows, C), the
    index as (rows, K), the index's shape)."""
    z, dtype = c.as_array(logits, "logits")
    if z.ndim == 0:
        raise ValueError("logits must have at least 1 dimension (the class axis, last)")
    if z.shape[-1] == 0:
        raise ValueError("the class axis has length 0: no class to select")
    inv_t = c.inverse_temperature(temperature, z.dtype)
    idx = c.index_array(index, "index")
    batch = z.shape[:-1]
    if idx.shape != batch and (idx.ndim != len(batch) + 1 or idx.shape[:-1] != batch):
        raise ValueError(f"index has shape {idx.shape}, neither {batch} nor {batch} + (K,)")
    c.check_in_range(idx, z.shape[-1], "index")
    k = 1 if idx.shape == batch else idx.shape[-1]
    rows = idx.reshape(int(np.prod(batch)), k)
    logp = log_softmax_last(z * z.dtype.type(inv_t)).reshape(rows.shape[0], z.shape[-1])
    return z, dtype, inv_t, logp, rows, idx.shape


def selective_log_softmax(logits: ArrayLike, index: ArrayLike, *, temperature: float = 1.0):
    """Reference: the full ``log_softmax(logits / T)``, then ``take_along_axis`` at ``index``."""
    _, dtype, _, logp, rows, shape = _selected(logits, index, temperature)
    return deliver(np.take_along_axis(logp, rows, axis=1).reshape(shape), dtype, None)


def selective_log_softmax_vjp(
    logits: ArrayLike, index: ArrayLike, cotangent: ArrayLike, *, temperature: float = 1.0, out=None
) -> np.ndarray:
    """Reference: the cotangent scattered (added) into a full (rows, C) array, then the
    log_softmax VJP ``g^T (I - 1 p^T) / T``."""
    z, dtype, inv_t, logp, rows, shape = _selected(logits, index, temperature)
    g, _ = c.as_array(cotangent, "cotangent")
    if g.shape != shape:
        raise ValueError(f"cotangent has shape {g.shape}, not index's {shape}")
    c.check_out(out, z.shape, dtype)
    full = np.zeros(logp.shape)
    np.add.at(full, (np.arange(rows.shape[0])[:, None], rows), g.reshape(rows.shape))
    res = log_softmax_vjp_last(logp, full.astype(z.dtype), inv_t)
    return deliver(res.reshape(z.shape), dtype, out)
