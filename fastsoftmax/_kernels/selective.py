"""Row kernels for the log-probabilities of selected classes only, and their VJP.

For a row z with u = z * s, m = max(z), rest = sum_j exp((z_j - m) s) - 1:
``log p_k = (z_k - m) s - log1p(rest)`` for each selected class k (one max pass, one exp-sum pass,
K lookups: the row's log_softmax is never stored). The VJP of ``sum_k g_k log p_{idx_k}`` is
``s (scatter_add(g, idx) - p sum_k g_k)``, p written by the exp pass.

Rows without a finite maximum take softmax's limits: NaN rows give NaN; +inf entries share the
probability (log p = -log(count) there, -inf elsewhere); an all -inf row gives -inf and p = 0.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._compile import row_kernel
from ._math import (
    FASTMATH,
    row_count_posinf,
    row_exp_sum,
    row_exp_total_into,
    row_has_nan,
    row_max,
)
from ._rows import row_of


@njit(error_model="numpy", cache=True)
def _limit_log_prob(z, j, k):
    """log p_j in the limit, for a NaN-free row with k >= 0 entries at +inf and no finite max."""
    if k == 0 or z[j] != np.inf:
        return -np.inf
    return -np.log(k)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _selective_row(row, index, s, out):
    """out[k] = log softmax(row * s)[index[k]] for one row."""
    T = row.dtype.type
    m = row_max(row, None)
    if m != np.inf and m != -np.inf and m == m:
        lse = np.log1p(row_exp_sum(row, m, s, None))
        for k in range(index.shape[0]):
            out[k] = T((np.float64(row[index[k]]) - m) * s - lse)
    elif row_has_nan(row, None):
        out[:] = np.nan
    else:
        count = row_count_posinf(row, None)
        for k in range(index.shape[0]):
            out[k] = T(_limit_log_prob(row, index[k], count))


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _selective_vjp_row(row, index, g, s, out):
    """out = s (scatter_add(g, index) - softmax(row * s) sum(g)) for one row.

    ``out`` may be ``row``.
    """
    T = row.dtype.type
    gsum = np.float64(0.0)
    for k in range(index.shape[0]):
        gsum += g[k]
    m = row_max(row, None)
    if m != np.inf and m != -np.inf and m == m:
        rest = row_exp_total_into(row, m, s, out, None)
        c = T(-s * gsum / (1.0 + rest))
        for j in range(row.shape[0]):
            out[j] *= c
    elif row_has_nan(row, None):
        out[:] = np.nan
        return
    else:
        count = row_count_posinf(row, None)
        for j in range(row.shape[0]):
            p = 1.0 / count if count > 0 and row[j] == np.inf else 0.0
            out[j] = T(-s * gsum * p)
    for k in range(index.shape[0]):
        out[index[k]] += T(s * g[k])


def _selective(z, index, s, out):
    for i in prange(z.shape[0]):
        _selective_row(row_of(z, i), row_of(index, i), s, row_of(out, i))


def _selective_vjp(z, index, g, s, out):
    for i in prange(z.shape[0]):
        _selective_vjp_row(row_of(z, i), row_of(index, i), row_of(g, i), s, row_of(out, i))


selective_log_softmax_rows = row_kernel(_selective)
selective_log_softmax_vjp_rows = row_kernel(_selective_vjp)
