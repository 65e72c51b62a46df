"""Row kernels for the softmax Jacobian, its products with vectors, and the log_softmax VJP.

With p = softmax(z / T), dp_i/dz_j = p_i (delta_ij - p_j) / T, so J v = p * (v - <p, v>) / T:
one dot product and one elementwise pass per row, never the C x C matrix.
"""

from __future__ import annotations

from numba import njit, prange

from ._compile import row_kernel
from ._math import FASTMATH, row_dot, row_sum, same_memory, vexp


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _jvp_row(p, v, dot, scale, out):
    """out = p * (v - dot) * scale; ``out`` is neither ``p`` nor ``v``."""
    for j in range(p.shape[0]):
        out[j] = p[j] * (v[j] - dot) * scale


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _jvp_row_inplace(out, other, dot, scale, out_is_p):
    """:func:`_jvp_row` with ``out`` = p (``out_is_p``) or ``out`` = v, ``other`` the other
    input: two arrays, not the same one twice, so the loop vectorizes."""
    for j in range(out.shape[0]):
        p, v = (out[j], other[j]) if out_is_p else (other[j], out[j])
        out[j] = p * (v - dot) * scale


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _log_softmax_vjp_row(logp, g, total, scale, out):
    """out = (g - exp(logp) * total) * scale; ``out`` is neither ``logp`` nor ``g``."""
    for j in range(logp.shape[0]):
        out[j] = (g[j] - vexp(logp[j]) * total) * scale


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _log_softmax_vjp_row_inplace(out, other, total, scale, out_is_logp):
    """:func:`_log_softmax_vjp_row` with ``out`` = logp (``out_is_logp``) or ``out`` = g,
    ``other`` the other input: two arrays, not the same one twice, so the loop vectorizes."""
    for j in range(out.shape[0]):
        logp, g = (out[j], other[j]) if out_is_logp else (other[j], out[j])
        out[j] = (g - vexp(logp) * total) * scale


def _jvp(p, v, scale, out):
    for i in prange(p.shape[0]):
        dot = p.dtype.type(row_dot(p[i], v[i]))
        if same_memory(p[i], out[i]):
            _jvp_row_inplace(out[i], v[i], dot, scale, True)
        elif same_memory(v[i], out[i]):
            _jvp_row_inplace(out[i], p[i], dot, scale, False)
        else:
            _jvp_row(p[i], v[i], dot, scale, out[i])


def _log_softmax_vjp(logp, g, scale, out):
    for i in prange(logp.shape[0]):
        total = logp.dtype.type(row_sum(g[i]))
        if same_memory(logp[i], out[i]):
            _log_softmax_vjp_row_inplace(out[i], g[i], total, scale, True)
        elif same_memory(g[i], out[i]):
            _log_softmax_vjp_row_inplace(out[i], logp[i], total, scale, False)
        else:
            _log_softmax_vjp_row(logp[i], g[i], total, scale, out[i])


def _jacobian(p, out):
    for i in prange(p.shape[0]):
        T = p.dtype.type
        for j in range(p.shape[1]):
            pj = p[i, j]
            for k in range(p.shape[1]):
                out[i, j, k] = -pj * p[i, k]
            out[i, j, j] = pj * (T(1.0) - pj)


jvp_kernel = row_kernel(_jvp)
log_softmax_vjp_kernel = row_kernel(_log_softmax_vjp)
jacobian_kernel = row_kernel(_jacobian)
