"""Fused softmax + cross-entropy row kernels: per-row loss and gradient in the softmax's passes.

Notation for one row, with u = z * s (s = 1 / temperature), L = logsumexp(u), p = softmax(u),
weights w, smoothing eps over C classes:

- class-index target y: a = (1 - eps) w_y, b = eps / C, A = a + b sum(w)
  loss = a (L - u_y) + b sum_c w_c (L - u_c),   dloss/du_j = A p_j - b w_j - a [j == y]
  (terms with w_c == 0 count as 0 even where u_c = -inf)
- probability target t: q_c = w_c ((1 - eps) t_c + eps / C), A = sum(q)
  loss = sum_c q_c (L - u_c),                    dloss/du_j = A p_j - q_j
  (terms with q_c == 0 count as 0 even where u_c = -inf)

With M = max(u), L - u_c = log1p(rest) + (M - u_c), rest = sum_c exp(u_c - M) - 1: the loss of a
well-classified row is log1p(rest) (e.g. 4.25e-18 for logits [0, -40]), not 0 from log(1 + rest).

A z-loss ``zl`` (PaLM's auxiliary loss) adds zl L^2 to the loss of every row that is not ignored
and 2 zl L p_j to dloss/du_j, i.e. A becomes A + 2 zl L in the gradient (unweighted by the class
weights; rows without a finite maximum get loss +inf from it).

dloss/dz = s * coef * dloss/du, where coef is grad_output (per row for reduction "none") divided
by the "mean" denominator. An optional boolean ``mask`` (rows, classes) leaves classes out of a
row: p = 0 there, smoothing spreads eps over the kept classes only, the gradient there is 0.
Everything that reads z is read before the gradient pass, so the
gradient may overwrite z in place. The kernels return the reduced loss (sum, or sum / denominator
for "mean"); per-row losses land in ``loss`` (float64).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._compile import row_kernel
from ._math import (
    FASTMATH,
    row_count,
    row_count_posinf,
    row_exp_into,
    row_exp_sum,
    row_has_nan,
    row_max,
    row_sum,
)
from ._rows import row_of
from .softmax import CHUNK, SHORT_ROW, short_rows_exp


@njit(error_model="numpy", cache=True)
def _limit_probs(z, j, k, mask):
    """(p_j, -log p_j) in the limit, for a NaN-free row with k >= 0 entries at +inf and no finite
    maximum: p is 1/k on the +inf entries, 0 elsewhere (all 0 when k == 0: "safe" softmax)."""
    if k == 0 or z[j] != np.inf or (mask is not None and not mask[j]):
        return 0.0, np.inf
    return 1.0 / k, np.log(k)


@njit(error_model="numpy", cache=True)
def _limit_z_loss_grad(zl, p):
    """The z-loss term 2 zl L p_j of dloss/du_j in such a row: L = +inf where p_j > 0 (a +inf
    entry), and 0 where p_j = 0 (p_j vanishes faster than L grows)."""
    return np.inf if zl != 0.0 and p != 0.0 else 0.0


@njit(error_model="numpy", cache=True)
def _nan_row(grad, want_grad):
    """The loss (NaN) of a row holding NaN; its gradient, if asked, is NaN too."""
    if want_grad:
        grad[:] = np.nan
    return np.nan


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _scaled(share, w, x):
    """share * (w * x), in that order: share * w may underflow to 0 for a subnormal class weight
    where w * inf (a -log p of +inf) is still inf."""
    return share * (w * x)


@njit(error_model="numpy", cache=True)
def _kept_weight(weight, wsum, mask):
    """(sum of the weights, number of classes) over the classes the row mask keeps."""
    if mask is None:
        return wsum, weight.shape[0]
    total = np.float64(0.0)
    count = 0
    for c in range(weight.shape[0]):
        if mask[c]:
            total += weight[c]
            count += 1
    return total, count


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _weighted_gap(weight, z, m, mask):
    """sum_c w_c (m - z_c) in float64 over the kept classes, terms with w_c == 0 counted as 0
    (also where z_c = -inf); summed as differences, so a large m does not cancel."""
    mf = np.float64(m)
    total = np.float64(0.0)
    for c in range(z.shape[0]):
        w = np.float64(weight[c])
        if mask is not None:
            w = w if mask[c] else 0.0
        total += w * (mf - np.float64(z[c])) if w != 0.0 else 0.0
    return total


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _index_coefs(weight, y, wsum, eps, kept):
    """(a, b, A) of a class-index row: a = (1 - eps) w_y, b = eps / kept, A = a + b sum(w)."""
    a = (1.0 - eps) * weight[y]
    b = eps / kept
    return a, b, a + b * wsum


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _index_loss(rest, m, zy, gap, a, b, A, s, zl):
    """A row's class-index loss and its logsumexp L = s m + log1p(rest), from ``rest`` = (sum of
    its exps taken at the row max ``m``) - 1, ``zy`` = z_y and ``gap`` = sum_c w_c (m - z_c):
    ``A log1p(rest) + s (a (m - z_y) + b gap) + zl L^2``."""
    log1p_rest = np.log1p(rest)
    lse = s * np.float64(m) + log1p_rest
    own = a * (np.float64(m) - zy) if a != 0.0 else 0.0  # 0, not NaN, at z_y = -inf
    return A * log1p_rest + s * (own + b * gap) + zl * lse * lse, lse


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _index_grad_coefs(rest, lse, a, b, A, s, zl, coef, T):
    """(c1, c2, c3) in the row's dtype ``T``: dloss/dz_j = c1 exp(u_j - M) - c2 w_j - c3 [j == y]
    (c1 = coef s (A + 2 zl L) / (1 + rest), c2 = coef s b, c3 = coef s a)."""
    return T(coef * s * (A + 2.0 * zl * lse) / (1.0 + rest)), T(coef * s * b), T(coef * s * a)


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _index_row(z, y, weight, wsum, ignore_index, eps, zl, s, coef, grad, want_grad, mask):
    """Loss of one row with class index y; writes the gradient into ``grad`` if asked.

    A row with ``y == ignore_index`` has loss 0 and gradient 0. Classes where ``mask`` is False
    (mask None keeps all) take no part: p = 0, no smoothing mass, zero gradient; ``y`` must be a
    kept class.
    """
    T = z.dtype.type
    C = z.shape[0]
    if y == ignore_index:
        if want_grad:
            grad[:] = 0.0
        return 0.0
    wsum, kept = _kept_weight(weight, wsum, mask)
    a, b, A = _index_coefs(weight, y, wsum, eps, kept)
    m = row_max(z, mask)
    if m == m and m != np.inf and m != -np.inf:
        # everything that reads z comes before the exp pass, which may overwrite z
        zy = np.float64(z[y])
        gap = _weighted_gap(weight, z, m, mask) if b != 0.0 else 0.0
        if want_grad:
            rest = row_exp_into(z, m, s, grad, mask)
        else:
            rest = row_exp_sum(z, m, s, mask)
        if rest == rest:
            loss, lse = _index_loss(rest, m, zy, gap, a, b, A, s, zl)
            if want_grad:
                c1, c2, c3 = _index_grad_coefs(rest, lse, a, b, A, s, zl, coef, T)
                # the exps are in grad: read and written through grad alone (the loops
                # vectorize; the short-row path in ``_index`` has the twin reading scratch)
                if b != 0.0:
                    zero = T(0.0)
                    for j in range(C):
                        g = c1 * grad[j] - c2 * weight[j]
                        if mask is not None:
                            g = g if mask[j] else zero
                        grad[j] = g
                elif mask is None:
                    for j in range(C):
                        grad[j] *= c1
                else:  # left-out classes stay 0 also when c1 is NaN (a 0/0 "mean")
                    zero = T(0.0)
                    for j in range(C):
                        grad[j] = c1 * grad[j] if mask[j] else zero
                grad[y] -= c3
            return loss
    if row_has_nan(z, mask):
        return _nan_row(grad, want_grad)
    # a row with +inf or only -inf logits: the limits of p and -log p, term by term
    k = row_count_posinf(z, mask)
    loss = a * _limit_probs(z, y, k, mask)[1] if a != 0.0 else 0.0
    loss += np.inf if zl != 0.0 else 0.0  # L = +inf or -inf
    if b != 0.0:
        for c in range(C):
            if weight[c] != 0.0 and (mask is None or mask[c]):
                # w_c * inf first: b * w_c may underflow to 0 for a subnormal weight
                loss += _scaled(b, weight[c], _limit_probs(z, c, k, mask)[1])
    if want_grad:
        for j in range(C):
            kept_j = mask is None or mask[j]
            p = _limit_probs(z, j, k, mask)[0]
            d = A * p + _limit_z_loss_grad(zl, p) - b * weight[j]
            grad[j] = T(coef * s * d) if kept_j else T(0.0)
        grad[y] -= T(coef * s * a)
    return loss


def _index(z, target, weight, ignore_index, eps, zl, s, gout, mean, loss, grad, want_grad, mask):
    n, C = z.shape
    wsum = row_sum(weight)
    inv_denom = np.float64(1.0)
    denom = np.float64(0.0)
    if mean:
        for i in range(n):
            if target[i] != ignore_index:
                denom += weight[target[i]]
        inv_denom = 1.0 / denom if denom != 0.0 else np.nan
    if mask is None and C < SHORT_ROW:
        # short rows, a chunk at a time: the exps of all its rows in one vectorized loop into
        # scratch (as ``softmax.short_rows``), then each row's loss and gradient from them.
        # Everything reads z before row i's gradient is written, so grad may be z.
        R = max(1, CHUNK // C)
        for c in prange((n + R - 1) // R):
            r0, r1 = c * R, min(n, c * R + R)
            e = np.empty((r1 - r0, C), dtype=z.dtype)
            m = np.empty(r1 - r0, dtype=z.dtype)
            rests = np.empty(r1 - r0, dtype=np.float64)
            short_rows_exp(z, r0, r1, s, e, m, rests)
            for i in range(r0, r1):
                y, coef = target[i], gout[i] * inv_denom
                g = row_of(grad, i * want_grad)  # row 0 of a (1, C) dummy without want_grad
                zi = row_of(z, i)
                rest = rests[i - r0]
                if y == ignore_index or rest != rest:  # ignored, or not finite: the row code
                    loss[i] = _index_row(
                        zi, y, weight, wsum, ignore_index, eps, zl, s, coef, g, want_grad, None
                    )
                    continue
                a, b, A = _index_coefs(weight, y, wsum, eps, C)
                mi = m[i - r0]
                gap = _weighted_gap(weight, zi, mi, None) if b != 0.0 else 0.0
                zy = np.float64(z[i, y])
                loss[i], lse = _index_loss(rest, mi, zy, gap, a, b, A, s, zl)
                if want_grad:
                    c1, c2, c3 = _index_grad_coefs(rest, lse, a, b, A, s, zl, coef, z.dtype.type)
                    ei = row_of(e, i - r0)  # the row's exps
                    for j in range(C):
                        g[j] = c1 * ei[j] - c2 * weight[j]
                    g[y] -= c3
    else:
        for i in prange(n):
            y, coef = target[i], gout[i] * inv_denom
            g = row_of(grad, i * want_grad)  # row 0 of a (1, C) dummy without want_grad
            zi = row_of(z, i)
            if mask is None:
                loss[i] = _index_row(
                    zi, y, weight, wsum, ignore_index, eps, zl, s, coef, g, want_grad, None
                )
            else:
                mask_i = row_of(mask, i)
                loss[i] = _index_row(
                    zi, y, weight, wsum, ignore_index, eps, zl, s, coef, g, want_grad, mask_i
                )
    total = np.float64(0.0)
    for i in range(n):
        total += loss[i]
    if not mean:
        return total
    return total / denom if denom != 0.0 else np.nan  # divided: 1 / a subnormal denom is inf


@njit(fastmath=FASTMATH, error_model="numpy", cache=True)
def _prob_row(z, t, weight, eps, zl, s, coef, grad, want_grad, mask):
    """Loss of one row with probability target t; writes the gradient into ``grad`` if asked.

    Classes where ``mask`` is False take no part (their target mass is dropped); a fully masked
    row has loss 0 and gradient 0.
    """
    T = z.dtype.type
    C = z.shape[0]
    kept = row_count(mask, C)
    if kept == 0:
        if want_grad:
            grad[:] = 0.0
        return 0.0
    keep = 1.0 - eps
    add = eps / kept
    m = row_max(z, mask)
    mf = np.float64(m)
    finite_max = not (m == np.inf or m == -np.inf or m != m)
    # A = sum(q) and B = sum(q_c (m - z_c)), terms with q_c == 0 skipped; read before the exp pass
    A = np.float64(0.0)
    B = np.float64(0.0)
    for c in range(C):
        w = np.float64(weight[c])
        share = keep * t[c] + add
        if mask is not None:
            share = share if mask[c] else 0.0
        A += w * share
        if finite_max and w != 0.0 and share != 0.0:
            B += _scaled(share, w, mf - z[c])
    if finite_max:
        if want_grad:
            rest = row_exp_into(z, m, s, grad, mask)
        else:
            rest = row_exp_sum(z, m, s, mask)
        if rest == rest:
            log1p_rest = np.log1p(rest)
            lse = s * mf + log1p_rest
            loss = A * log1p_rest + s * B + zl * lse * lse
            if want_grad:
                c1 = T(coef * s * (A + 2.0 * zl * lse) / (1.0 + rest))
                c2 = coef * s
                zero = T(0.0)
                for j in range(C):
                    g = c1 * grad[j] - T(c2 * weight[j] * (keep * t[j] + add))
                    if mask is not None:
                        g = g if mask[j] else zero
                    grad[j] = g
            return loss
    if row_has_nan(z, mask):
        return _nan_row(grad, want_grad)
    k = row_count_posinf(z, mask)
    loss = np.inf if zl != 0.0 else np.float64(0.0)  # L = +inf or -inf
    for c in range(C):
        w = np.float64(weight[c])
        share = keep * t[c] + add
        if w != 0.0 and share != 0.0 and (mask is None or mask[c]):
            loss += _scaled(share, w, _limit_probs(z, c, k, mask)[1])
    if want_grad:
        for j in range(C):
            q = weight[j] * (keep * t[j] + add)
            kept_j = mask is None or mask[j]
            p = _limit_probs(z, j, k, mask)[0]
            d = A * p + _limit_z_loss_grad(zl, p) - q
            grad[j] = T(coef * s * d) if kept_j else T(0.0)
    return loss


def _prob(z, target, weight, eps, zl, s, gout, mean, loss, grad, want_grad, mask):
    n = z.shape[0]
    inv_denom = (1.0 / n if n else np.nan) if mean else 1.0
    for i in prange(n):
        g = row_of(grad, i * want_grad)  # row 0 of a (1, C) dummy without want_grad
        coef = gout[i] * inv_denom
        zi, ti = row_of(z, i), row_of(target, i)
        if mask is None:
            loss[i] = _prob_row(zi, ti, weight, eps, zl, s, coef, g, want_grad, None)
        else:
            loss[i] = _prob_row(zi, ti, weight, eps, zl, s, coef, g, want_grad, row_of(mask, i))
    total = np.float64(0.0)
    for i in range(n):
        total += loss[i]
    if not mean:
        return total
    return total / n if n else np.nan


index_target_rows = row_kernel(_index)
prob_target_rows = row_kernel(_prob)
