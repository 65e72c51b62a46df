"""Row kernels for softmax, log_softmax and logsumexp on C-contiguous (rows, classes) arrays.

Each row: one pass for the maximum, one pass for sum(exp((x - max) * scale)) (softmax stores the
terms as it goes), one pass to normalize; the row is re-read while still in cache.
Special rows: any NaN gives NaN; +inf entries share the probability equally; an all -inf row gives
softmax 0, log_softmax -inf, logsumexp -inf.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._compile import row_kernel
from ._math import FASTMATH, row_count_posinf, row_exp_sum, row_has_nan, row_max


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def softmax_row(x, scale, out):
    """out = softmax(x * scale) for one row; ``out`` may be ``x``."""
    T = x.dtype.type
    m = row_max(x)
    if m == np.inf or m == -np.inf:
        if row_has_nan(x):
            out[:] = np.nan
        elif m == -np.inf:
            out[:] = 0.0
        else:
            share = T(1.0 / row_count_posinf(x))
            for j in range(x.shape[0]):
                out[j] = share if x[j] == np.inf else T(0.0)
        return
    total = row_exp_sum(x, m, scale, out, True)
    if total != total:
        out[:] = np.nan
        return
    inv = T(1.0 / total)
    for j in range(x.shape[0]):
        out[j] *= inv


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def log_softmax_row(x, scale, out):
    """out = log_softmax(x * scale) for one row; ``out`` may be ``x``."""
    T = x.dtype.type
    m = row_max(x)
    if m == np.inf or m == -np.inf:
        if row_has_nan(x):
            out[:] = np.nan
        elif m == -np.inf:
            out[:] = -np.inf
        else:
            share = T(-np.log(row_count_posinf(x)))
            for j in range(x.shape[0]):
                out[j] = share if x[j] == np.inf else T(-np.inf)
        return
    total = row_exp_sum(x, m, scale, out, False)
    lse = T(np.log(total))
    for j in range(x.shape[0]):
        out[j] = (x[j] - m) * scale - lse


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def logsumexp_row(x):
    """log(sum(exp(x))) of one row, as float64 (NaN if the row holds NaN)."""
    m = row_max(x)
    if m == np.inf or m == -np.inf:
        return np.nan if row_has_nan(x) else np.float64(m)
    total = row_exp_sum(x, m, x.dtype.type(1.0), x, False)
    return np.float64(m) + np.log(total)


def _softmax(x, scale, out):
    for i in prange(x.shape[0]):
        softmax_row(x[i], scale, out[i])


def _log_softmax(x, scale, out):
    for i in prange(x.shape[0]):
        log_softmax_row(x[i], scale, out[i])


def _logsumexp(x, out):
    for i in prange(x.shape[0]):
        out[i] = logsumexp_row(x[i])


softmax_rows = row_kernel(_softmax)
log_softmax_rows = row_kernel(_log_softmax)
logsumexp_rows = row_kernel(_logsumexp)
