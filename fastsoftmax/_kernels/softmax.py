"""Row kernels for softmax, log_softmax and logsumexp on C-contiguous (rows, classes) arrays.

Each row: one pass for the maximum, one pass for sum(exp((x - max) * scale)) (softmax stores the
terms as it goes), one pass to normalize; the row is re-read while still in cache. The sums come
as ``rest`` = sum - 1 (the maximum's own term is exactly 1), and logs are taken as ``log1p(rest)``:
logsumexp([0, -40]) is log1p(exp(-40)) = 4.25e-18, not the 0 that log(1 + rest) would give.
Special rows: any NaN gives NaN; +inf entries share the probability equally; an all -inf row gives
softmax 0, log_softmax -inf, logsumexp -inf. An optional boolean ``mask`` (rows, classes) leaves
entries out: they get probability 0 / log-probability -inf and take no part in max and sum.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._compile import row_kernel
from ._math import (
    FASTMATH,
    exp_shifted,
    row_count_posinf,
    row_exp_sum,
    row_exp_total_into,
    row_has_nan,
    row_max,
    same_memory,
)
from ._rows import row_of


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def softmax_row(x, scale, out, mask):
    """out = softmax(x * scale) for one row over the entries where ``mask`` is True (all when
    None; the others get 0); ``out`` may be ``x``."""
    T = x.dtype.type
    m = row_max(x, mask)
    if m == np.inf or m == -np.inf:
        if row_has_nan(x, mask):
            out[:] = np.nan
        elif m == -np.inf:
            out[:] = 0.0
        else:
            share = T(1.0 / row_count_posinf(x, mask))
            for j in range(x.shape[0]):
                out[j] = share if x[j] == np.inf and (mask is None or mask[j]) else T(0.0)
        return
    rest = row_exp_total_into(x, m, scale, out, mask)
    if rest != rest:
        out[:] = np.nan
        return
    inv = T(1.0 / (1.0 + rest))
    for j in range(x.shape[0]):
        out[j] *= inv


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def log_softmax_row(x, scale, out, mask):
    """out = log_softmax(x * scale) for one row over the entries where ``mask`` is True (the
    others get -inf; all NaN in a row holding NaN); ``out`` may be ``x``."""
    T = x.dtype.type
    m = row_max(x, mask)
    if m == np.inf or m == -np.inf:
        if row_has_nan(x, mask):
            out[:] = np.nan
        elif m == -np.inf:
            out[:] = -np.inf
        else:
            share = T(-np.log(row_count_posinf(x, mask)))
            for j in range(x.shape[0]):
                out[j] = share if x[j] == np.inf and (mask is None or mask[j]) else T(-np.inf)
        return
    lse = T(np.log1p(row_exp_sum(x, m, scale, mask)))
    if lse != lse:  # a NaN in the row: NaN throughout, left-out entries too (as softmax)
        out[:] = np.nan
        return
    if same_memory(x, out):
        _shifted_store_inplace(out, m, scale, lse, mask)
    else:
        _shifted_store(x, m, scale, lse, out, mask)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _shifted_store(x, m, scale, lse, out, mask):
    """out = (x - m) * scale - lse (-inf where masked); ``out`` is not ``x``."""
    T = x.dtype.type
    for j in range(x.shape[0]):
        v = (x[j] - m) * scale - lse
        if mask is not None:
            v = v if mask[j] else T(-np.inf)
        out[j] = v


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _shifted_store_inplace(x, m, scale, lse, mask):
    """:func:`_shifted_store` with ``out`` = ``x``: read and written through ``x`` alone (given
    the same array twice, LLVM leaves the loop scalar)."""
    T = x.dtype.type
    for j in range(x.shape[0]):
        v = (x[j] - m) * scale - lse
        if mask is not None:
            v = v if mask[j] else T(-np.inf)
        x[j] = v


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def logsumexp_row(x):
    """log(sum(exp(x))) of one row, as float64 (NaN if the row holds NaN)."""
    m = row_max(x, None)
    if m == np.inf or m == -np.inf:
        return np.nan if row_has_nan(x, None) else np.float64(m)
    rest = row_exp_sum(x, m, x.dtype.type(1.0), None)
    return np.float64(m) + np.log1p(rest)


# Rows shorter than SHORT_ROW are processed a chunk of rows at a time: the exps of the whole chunk
# run as one long vectorized loop over a scratch buffer of CHUNK entries, instead of a short loop
# per row that runs mostly in the scalar remainder. Measured with benchmarks/thresholds.py on the
# 2-core development machine (float32, serial, two runs): 1.6x faster at 4 classes, 1.5x at 8,
# 1.2x at 12, about even at 16-20, 0.7-0.8x at 24 and 0.4-0.5x from 32 on.
SHORT_ROW = 20
CHUNK = 1024


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def short_rows_exp(x, r0, r1, scale, e, m, rest):
    """For rows r0..r1 of x, into chunk row i = row - r0: m[i] = the row max, e[i] (``e`` is
    (r1 - r0, C)) = exp((x - row max) * scale) and rest[i] = the row's sum of exps minus 1 in
    float64, NaN for a row that is not finite (max +-inf, or a NaN in the row): such rows take
    the general row code.

    The terms equal to 1 (the maximum's own, and any other that rounds to 1) are counted apart,
    as in ``row_exp_sum``. The sums run over all rows of the chunk in one loop with no calls:
    per row, a call and its tuple return cost more than the ten-odd additions. The row loops go
    through row views and ``range(C)``: indices LLVM knows are >= 0, so no negative-index
    wraparound per entry (1.2-1.35x faster than indexing the flat scratch).
    """
    C = x.shape[1]
    for i in range(r1 - r0):
        mi = row_max(row_of(x, r0 + i), None)
        m[i] = mi
        ei = row_of(e, i)
        for j in range(C):
            ei[j] = mi
    xf = x.reshape(-1)
    ef = e.reshape(-1)
    off = r0 * C
    for k in range((r1 - r0) * C):
        ef[k] = exp_shifted(xf[off + k], ef[k], scale)
    for i in range(r1 - r0):
        ei = row_of(e, i)
        total = np.float64(0.0)
        ties = 0
        for j in range(C):
            tie = ei[j] == 1.0
            total += np.float64(ei[j]) - np.float64(tie)
            ties += tie
        finite = m[i] != np.inf and m[i] != -np.inf
        rest[i] = total + np.float64(ties - 1) if finite else np.nan


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def softmax_or_log_row(x, scale, out, mask, log):
    """:func:`softmax_row` (``log`` False) or :func:`log_softmax_row` (True)."""
    if log:
        log_softmax_row(x, scale, out, mask)
    else:
        softmax_row(x, scale, out, mask)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def short_rows(x, r0, r1, scale, out, log):
    """softmax (``log`` False) or log_softmax (True) of rows r0..r1 of a short-row array."""
    C = x.shape[1]
    e = np.empty((r1 - r0, C), dtype=x.dtype)
    m = np.empty(r1 - r0, dtype=x.dtype)
    rests = np.empty(r1 - r0, dtype=np.float64)
    short_rows_exp(x, r0, r1, scale, e, m, rests)
    for i in range(r1 - r0):
        rest = rests[i]
        xi, oi = row_of(x, r0 + i), row_of(out, r0 + i)
        if rest != rest:
            softmax_or_log_row(xi, scale, oi, None, log)
        elif log:
            lse = x.dtype.type(np.log1p(rest))
            mi = m[i]
            for j in range(C):
                oi[j] = (xi[j] - mi) * scale - lse
        else:
            inv = x.dtype.type(1.0 / (1.0 + rest))
            ei = row_of(e, i)
            for j in range(C):
                oi[j] = ei[j] * inv


def _softmax_family(log: bool):
    """The row loop ``(x, scale, out, mask)`` of softmax (``log`` False) or log_softmax (True);
    ``log`` is a constant of the compiled code, so each has only its own branches."""

    def kernel(x, scale, out, mask):
        n, C = x.shape
        if mask is not None:
            for i in prange(n):
                softmax_or_log_row(row_of(x, i), scale, row_of(out, i), row_of(mask, i), log)
        elif C >= SHORT_ROW:
            for i in prange(n):
                softmax_or_log_row(row_of(x, i), scale, row_of(out, i), None, log)
        else:
            R = max(1, CHUNK // C)
            for c in prange((n + R - 1) // R):
                short_rows(x, c * R, min(n, c * R + R), scale, out, log)

    kernel.__name__ = kernel.__qualname__ = "_log_softmax" if log else "_softmax"
    return kernel


def _logsumexp(x, out):
    n, C = x.shape
    if C >= SHORT_ROW:
        for i in prange(n):
            out[i] = logsumexp_row(row_of(x, i))
        return
    R = max(1, CHUNK // C)
    one = x.dtype.type(1.0)
    for c in prange((n + R - 1) // R):
        r0 = c * R
        r1 = min(n, r0 + R)
        e = np.empty((r1 - r0, C), dtype=x.dtype)
        m = np.empty(r1 - r0, dtype=x.dtype)
        rests = np.empty(r1 - r0, dtype=np.float64)
        short_rows_exp(x, r0, r1, one, e, m, rests)
        for i in range(r0, r1):
            rest = rests[i - r0]
            if rest == rest:
                out[i] = np.float64(m[i - r0]) + np.log1p(rest)
            else:
                out[i] = logsumexp_row(row_of(x, i))


softmax_kernel = row_kernel(_softmax_family(log=False))
log_softmax_kernel = row_kernel(_softmax_family(log=True))
logsumexp_kernel = row_kernel(_logsumexp)
