"""Row kernels for the softmax Jacobian, its products with vectors, and the log_softmax VJP.

With p = softmax(z / T), dp_i/dz_j = p_i (delta_ij - p_j) / T, so J v = p * (v - <p, v>) / T:
one dot product and one elementwise pass per row, never the C x C matrix.
"""

from __future__ import annotations

from numba import prange

from ._compile import row_kernel
from ._math import row_dot, row_sum, vexp


def _jvp(p, v, scale, out):
    for i in prange(p.shape[0]):
        T = p.dtype.type
        dot = T(row_dot(p[i], v[i], None))
        for j in range(p.shape[1]):
            out[i, j] = p[i, j] * (v[i, j] - dot) * scale


def _log_softmax_vjp(logp, g, scale, out):
    for i in prange(logp.shape[0]):
        T = logp.dtype.type
        total = T(row_sum(g[i]))
        for j in range(logp.shape[1]):
            out[i, j] = (g[i, j] - vexp(logp[i, j]) * total) * scale


def _jacobian(p, out):
    for i in prange(p.shape[0]):
        T = p.dtype.type
        for j in range(p.shape[1]):
            pj = p[i, j]
            for k in range(p.shape[1]):
                out[i, j, k] = -pj * p[i, k]
            out[i, j, j] = pj * (T(1.0) - pj)


jvp_rows = row_kernel(_jvp)
log_softmax_vjp_rows = row_kernel(_log_softmax_vjp)
jacobian_rows = row_kernel(_jacobian)
