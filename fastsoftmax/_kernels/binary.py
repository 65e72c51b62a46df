"""Elementwise kernels for the binary (two-class) case: sigmoid, log_sigmoid and the fused
binary cross-entropy with logits, on flat C-contiguous arrays.

An elementwise op has no rows, so the flat array is cut into blocks of ``span`` entries and the
blocks run in a prange. Per-element weights come either as a full array (one entry per element)
or as a vector of exactly ``span`` entries repeated in every block: the wrapper tiles a weight
along the last axis (length C) to ``span``, a multiple of C, so entry k of a block is column
``k % C`` without a modulo in the loop.

The stable forms, with e = exp(-|x|) in (0, 1] and l = log1p(e):

- sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0: exactly 0 and 1 at -inf and +inf
- log_sigmoid(x) = min(x, 0) - l;  softplus(x) = -log_sigmoid(-x) = max(x, 0) + l
- loss = a softplus(-x) + b softplus(x), a = w pw y, b = w (1 - y)  (a term with a zero
  coefficient counts 0, also where its softplus is +inf);  d loss / dx = sigmoid(x) (a + b) - a

log1p has no vectorized libm call here: ``log1p(e) = log(u) * e / (u - 1)`` with u = 1 + e (exact
to a few ulp; e itself when u rounds to 1), compiled without ``reassoc`` so that ``(1 + e) - 1``
is not folded to ``e``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ._compile import row_kernel
from ._math import BLOCK, FASTMATH, row_sum, vexp, vlog

# Elements per block of the flat elementwise kernels (the unit of their prange).
SPAN = 4096

# No reassociation: the log1p trick needs (1 + e) - 1 computed as written.
_EXACT_FLAGS = {"nsz", "contract"}
# No FMA contraction in the elementwise formulas: LLVM contracted the vector body and the scalar
# remainder of the same loop differently, so an element's loss moved by an ulp with its position
# (and with the placement of ``out``, which can send a whole loop to the scalar path). The exp
# keeps its own flags (``vexp``).
_FLAGS = FASTMATH - {"contract"}


@njit(fastmath=_EXACT_FLAGS, error_model="numpy", cache=True)
def log1p_small(e):
    """log1p(e) for e in [0, 1] (and NaN), a few ulp: log(u) * e / (u - 1) with u = 1 + e."""
    u = e + type(e)(1.0)
    d = u - type(e)(1.0)
    r = vlog(u) * (e / d)
    return e if d == type(e)(0.0) else r


# The helpers below take e = exp(-|x|) from the caller: an exp and a log inside one helper make
# it too big for LLVM to inline, and the loop calling it does not vectorize (checked with
# inspect_asm); with vexp called in the loop itself, everything inlines into ymm code.


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def sigmoid_from(x, e):
    """sigmoid(x) given e = exp(-|x|): 1 / (1 + e) for x >= 0, e / (1 + e) otherwise."""
    s = type(x)(1.0) / (type(x)(1.0) + e)
    return s if x >= type(x)(0.0) else e * s


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def log_sigmoid_from(x, e):
    """log(sigmoid(x)) = min(x, 0) - log1p(e) given e = exp(-|x|)."""
    m = x if x < type(x)(0.0) else type(x)(0.0)
    return m - log1p_small(e)


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def bce_from(x, e, y, w, pw):
    """(loss, d loss / dx) of one element given e = exp(-|x|):
    loss = w (pw y softplus(-x) + (1 - y) softplus(x)), softplus(x) = max(x, 0) + log1p(e)."""
    T = type(x)
    zero = T(0.0)
    lp = log1p_small(e)
    sig = sigmoid_from(x, e)
    sp_pos = (x if x > zero else zero) + lp
    sp_neg = (-x if x < zero else zero) + lp
    a = w * pw * y
    b = w * (T(1.0) - y)
    loss = (a * sp_neg if a != zero else zero) + (b * sp_pos if b != zero else zero)
    loss = x if x != x else loss  # NaN logit: NaN loss, whatever the weights
    return loss, sig * (a + b) - a


# Loops here run over 0-based slices: with ``for k in range(start, stop)`` numba keeps the
# negative-index wraparound on x[k], and an in-place loop (x[k] read and written) then does not
# vectorize (measured 10x slower). In place (out is x), a loop reading x and writing a second
# view of the same memory fails LLVM's runtime overlap check and runs its scalar fallback, so
# the kernels compare data pointers and then run an in-place twin that reads and writes through
# the output alone (x may be a read-only array: it is never written).


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def sigmoid_into(x, out, log):
    """out = log_sigmoid(x) (``log``) or sigmoid(x), elementwise; ``out`` is not ``x``."""
    for k in range(x.shape[0]):
        e = vexp(-np.abs(x[k]))
        out[k] = log_sigmoid_from(x[k], e) if log else sigmoid_from(x[k], e)


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def sigmoid_inplace(x, log):
    """:func:`sigmoid_into` with ``out`` = ``x``: read and written through ``x`` alone."""
    for k in range(x.shape[0]):
        e = vexp(-np.abs(x[k]))
        x[k] = log_sigmoid_from(x[k], e) if log else sigmoid_from(x[k], e)


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def bce_grad_into(x, t, w, pw, c, loss, grad):
    """loss = the elementwise BCE loss, grad = c * d loss / dx; ``grad`` is not ``x``."""
    for k in range(x.shape[0]):
        lk, gk = bce_from(x[k], vexp(-np.abs(x[k])), t[k], w[k], pw[k])
        loss[k] = lk
        grad[k] = c * gk


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def bce_grad_inplace(x, t, w, pw, c, loss):
    """:func:`bce_grad_into` with ``grad`` = ``x``: read and written through ``x`` alone."""
    for k in range(x.shape[0]):
        lk, gk = bce_from(x[k], vexp(-np.abs(x[k])), t[k], w[k], pw[k])
        loss[k] = lk
        x[k] = c * gk


@njit(fastmath=_FLAGS, error_model="numpy", cache=True)
def _bce_block(x, t, w, pw, coef, loss, grad, store_loss, want_sum, want_grad, inplace):
    """Losses (stored and/or summed) and scaled gradients of one block; returns the float64 sum.

    The losses go to ``loss`` (or a scratch buffer) first and are summed by ``row_sum`` in a
    separate loop, so the sum is bit-identical whether or not the gradient is computed too.
    ``inplace``: ``grad`` is ``x``.
    """
    n = x.shape[0]
    c = x.dtype.type(coef)
    scratch = np.empty(0 if store_loss else min(n, BLOCK), dtype=x.dtype)
    total = np.float64(0.0)
    for start in range(0, n, BLOCK):
        stop = min(start + BLOCK, n)
        xs, ts, ws, ps = x[start:stop], t[start:stop], w[start:stop], pw[start:stop]
        dest = loss[start:stop] if store_loss else scratch[: stop - start]
        if want_grad and inplace:
            bce_grad_inplace(grad[start:stop], ts, ws, ps, c, dest)
        elif want_grad:
            bce_grad_into(xs, ts, ws, ps, c, dest, grad[start:stop])
        else:
            for k in range(stop - start):
                dest[k] = bce_from(xs[k], vexp(-np.abs(xs[k])), ts[k], ws[k], ps[k])[0]
        if want_sum:
            total += row_sum(dest)
    return total


def _sigmoid_family(log: bool):
    """The flat kernel ``(x, out, span)`` of sigmoid (``log`` False) or log_sigmoid (True);
    ``log`` is a constant of the compiled code, so each has only its own branches."""

    def kernel(x, out, span):
        n = x.shape[0]
        inplace = x.ctypes.data == out.ctypes.data
        for b in prange((n + span - 1) // span):
            ob = out[b * span : min(b * span + span, n)]
            if inplace:  # ob is the memory of x
                sigmoid_inplace(ob, log)
            else:
                sigmoid_into(x[b * span : min(b * span + span, n)], ob, log)

    kernel.__name__ = kernel.__qualname__ = "_log_sigmoid" if log else "_sigmoid"
    return kernel


def _bce(
    x, t, w, pw, coef, loss, sums, grad, span, w_full, pw_full, store_loss, want_sum, want_grad
):
    """Fused binary cross-entropy over blocks of ``span`` elements.

    w, pw: n entries (one per element) when ``w_full`` / ``pw_full``, else at least ``span``
    entries whose first ``span`` are the same for every block. ``store_loss``: per-element
    losses into ``loss`` (n entries); ``want_sum``: each block's sum of losses into ``sums``
    (one float64 per block); ``want_grad``: ``coef * d loss / dx`` into ``grad`` (n entries; it
    may be ``x`` itself: every element is read before it is written). Arrays not asked for may
    be empty. Returns the sum of ``sums``.
    """
    n = x.shape[0]
    nblocks = (n + span - 1) // span
    inplace = want_grad and grad.ctypes.data == x.ctypes.data
    for b in prange(nblocks):
        start = b * span
        stop = min(start + span, n)
        m = stop - start
        wb = w[start:stop] if w_full else w[:m]
        pwb = pw[start:stop] if pw_full else pw[:m]
        lb = loss[start:stop] if store_loss else loss
        gb = grad[start:stop] if want_grad else grad
        s = _bce_block(
            x[start:stop],
            t[start:stop],
            wb,
            pwb,
            coef,
            lb,
            gb,
            store_loss,
            want_sum,
            want_grad,
            inplace,
        )
        if want_sum:
            sums[b] = s
    total = np.float64(0.0)
    for b in range(sums.shape[0]):  # in block order: the same sum for any thread count
        total += sums[b]
    return total


sigmoid_kernel = row_kernel(_sigmoid_family(log=False))
log_sigmoid_kernel = row_kernel(_sigmoid_family(log=True))
bce_kernel = row_kernel(_bce)
