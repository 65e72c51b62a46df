"""Row kernels for the softmax Jacobian, its products with vectors, and the log_softmax VJP.

With p = softmax(z / T), dp_i/dz_j = p_i (delta_ij - p_j) / T, so J v = p * (v - <p, v>) / T:
one dot product and one elementwise pass per row, never the C x C matrix.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._compile import row_kernel
from ._math import FASTMATH, row_dot, row_sum, same_memory, vexp
from ._rows import row_of

# Rows shorter than SHORT_ROW take no per-row calls: each row's sum and elementwise pass are
# compiled inline in the row loop, on borrowed row views indexed with range(C) (indices LLVM knows
# are >= 0: no negative-index wraparound per entry). Calls cost more than a row of 10 entries.
SHORT_ROW = 64


@njit(fastmath=FASTMATH, error_model="numpy", cache=True, inline="always")
def _short_row_total(a, b):
    """sum_j a[j] (``b`` None) or sum_j a[j] b[j] of 1-D rows, in float64 (products exact for
    float32), in two partial sums (even and odd j) added at the end."""
    C = a.shape[0]
    s0 = 0.0
    s1 = 0.0
    for j in range(0, C - 1, 2):
        if b is None:
            s0 += np.float64(a[j])
            s1 += np.float64(a[j + 1])
        else:
            s0 += np.float64(a[j]) * np.float64(b[j])
            s1 += np.float64(a[j + 1]) * np.float64(b[j + 1])
    if C % 2:
        s0 += np.float64(a[C - 1]) * (1.0 if b is None else np.float64(b[C - 1]))
    return s0 + s1


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
    n, C = p.shape
    if C < SHORT_ROW:  # out may be p or v: each entry is read before it is written
        for i in prange(n):
            pi, vi, oi = row_of(p, i), row_of(v, i), row_of(out, i)
            dot = p.dtype.type(_short_row_total(pi, vi))
            for j in range(C):
                oi[j] = pi[j] * (vi[j] - dot) * scale
        return
    for i in prange(n):
        dot = p.dtype.type(row_dot(row_of(p, i), row_of(v, i)))
        if same_memory(row_of(p, i), row_of(out, i)):
            _jvp_row_inplace(row_of(out, i), row_of(v, i), dot, scale, True)
        elif same_memory(row_of(v, i), row_of(out, i)):
            _jvp_row_inplace(row_of(out, i), row_of(p, i), dot, scale, False)
        else:
            _jvp_row(row_of(p, i), row_of(v, i), dot, scale, row_of(out, i))


def _log_softmax_vjp(logp, g, scale, out):
    n, C = logp.shape
    if C < SHORT_ROW:  # out may be logp or g: each entry is read before it is written
        for i in prange(n):
            li, gi, oi = row_of(logp, i), row_of(g, i), row_of(out, i)
            total = logp.dtype.type(_short_row_total(gi, None))
            for j in range(C):
                oi[j] = (gi[j] - vexp(li[j]) * total) * scale
        return
    for i in prange(n):
        total = logp.dtype.type(row_sum(row_of(g, i)))
        if same_memory(row_of(logp, i), row_of(out, i)):
            _log_softmax_vjp_row_inplace(row_of(out, i), row_of(g, i), total, scale, True)
        elif same_memory(row_of(g, i), row_of(out, i)):
            _log_softmax_vjp_row_inplace(row_of(out, i), row_of(logp, i), total, scale, False)
        else:
            _log_softmax_vjp_row(row_of(logp, i), row_of(g, i), total, scale, row_of(out, i))


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
