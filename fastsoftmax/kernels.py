"""The row kernels as a stable API for your own ``@njit`` code.

Every function here is a numba ``@njit`` function: call it from a jitted training step (or from
Python) with arrays you own, and nothing is validated, allocated (beyond O(rows) scratch) or
launched in parallel behind your back::

    import numpy as np
    from numba import njit
    from fastsoftmax.kernels import cross_entropy_index_rows

    @njit
    def sgd_step(W, X, y, lr, logits):
        logits[:] = X @ W                          # (rows, classes), C-contiguous
        loss = cross_entropy_index_rows(logits, y, logits)   # gradient written over logits
        W -= lr * (X.T @ logits)
        return loss

Contract (the same for every function):

- Arrays are C-contiguous, float32 or float64, and all float arrays of one call share that dtype
  (a float32 call computes in float32, as the public functions do); ``rows x classes`` arrays are
  2-D with the class axis last; ``classes >= 1``.
- Shapes are NOT checked: a wrong shape reads or writes out of bounds. Class-index targets must
  be in ``[0, classes)`` (or -100, PyTorch's ``ignore_index``, to skip a row) and are not checked.
- ``out`` may be the input itself (in place) where stated.
- Pass writable arrays: numba types read-only arrays (``np.broadcast_to`` views, read-only
  memory maps) apart and compiles each function again for them, which takes seconds. The public
  functions hand read-only inputs to the kernels as writable aliases; calling these directly,
  that is up to you.
- The results are those of the public functions to rounding (the same kernels; numba may inline
  them into your function and optimize them together, which can move a result by an ulp). One
  call runs on one thread, so they are safe to call inside your own ``prange`` loop, e.g. one
  call per block of rows.
- numba's disk cache does not notice changes in functions called from another file: if your own
  ``@njit(cache=True)`` function calls these, clear its cache after upgrading fastsoftmax
  (numba issue #1833).
- Special values follow the package rules: a NaN in a row gives NaN for that row, +inf logits
  share the probability, -inf logits get exactly 0, an all -inf row gives softmax 0.

Each function compiles on first use for the dtypes it meets (cached on disk).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._kernels import binary as _kb
from ._kernels import cross_entropy as _kce
from ._kernels import derivatives as _kd
from ._kernels import softmax as _ksm
from ._kernels.binary import SPAN
from ._validate import IGNORE_INDEX

__all__ = [
    "softmax_rows",
    "log_softmax_rows",
    "logsumexp_rows",
    "softmax_jvp_rows",
    "softmax_vjp_rows",
    "log_softmax_vjp_rows",
    "cross_entropy_index_rows",
    "cross_entropy_prob_rows",
    "sigmoid_flat",
    "log_sigmoid_flat",
    "binary_cross_entropy_with_logits_flat",
]

# The serial compilations of the internal kernels (module globals, so numba can call them).
_softmax = _ksm.softmax_kernel.serial
_log_softmax = _ksm.log_softmax_kernel.serial
_logsumexp = _ksm.logsumexp_kernel.serial
_jvp = _kd.jvp_kernel.serial
_log_softmax_vjp = _kd.log_softmax_vjp_kernel.serial
_ce_index = _kce.index_target_rows.serial
_ce_prob = _kce.prob_target_rows.serial
_sigmoid = _kb.sigmoid_kernel.serial
_log_sigmoid = _kb.log_sigmoid_kernel.serial
_bce = _kb.bce_kernel.serial


@njit(cache=True)
def softmax_rows(x, out):
    """``out[i] = softmax(x[i])`` for every row of the (rows, classes) array ``x``.

    ``out``: (rows, classes), same dtype; may be ``x``.
    """
    _softmax(x, x.dtype.type(1.0), out, None)


@njit(cache=True)
def log_softmax_rows(x, out):
    """``out[i] = log_softmax(x[i]) = x[i] - logsumexp(x[i])`` for every row.

    ``out``: (rows, classes), same dtype; may be ``x``.
    """
    _log_softmax(x, x.dtype.type(1.0), out, None)


@njit(cache=True)
def logsumexp_rows(x, out):
    """``out[i] = log(sum(exp(x[i])))`` for every row.

    ``out``: (rows,), float32 or float64 (the row sums are accumulated in float64 either way).
    """
    _logsumexp(x, out)


@njit(cache=True)
def softmax_jvp_rows(p, v, out):
    """``out[i] = J_i v[i] = p[i] * (v[i] - sum(p[i] * v[i]))``, J_i the softmax Jacobian at row i.

    ``p``: probabilities (rows, classes) (softmax output); ``v``, ``out``: the same shape and
    dtype; ``out`` may be ``p`` or ``v``.
    """
    _jvp(p, v, p.dtype.type(1.0), out)


@njit(cache=True)
def softmax_vjp_rows(p, g, out):
    """``out[i] = g[i]^T J_i``: the gradient through softmax, given ``g = dL/dp``.

    J is symmetric, so this equals :func:`softmax_jvp_rows` (``p * (g - sum(p * g))``).
    """
    _jvp(p, g, p.dtype.type(1.0), out)


@njit(cache=True)
def log_softmax_vjp_rows(logp, g, out):
    """``out[i] = g[i] - exp(logp[i]) * sum(g[i])``: the gradient through log_softmax.

    ``logp``: log-probabilities (rows, classes); ``g = dL/dlogp`` and ``out`` the same shape
    and dtype; ``out`` may be ``logp`` or ``g``.
    """
    _log_softmax_vjp(logp, g, logp.dtype.type(1.0), out)


@njit(cache=True)
def _unweighted_mean_operands(logits, grad):
    """(class weights 1, grad_output 1 per row, per-row loss buffer, gradient rows, whether the
    gradient is wanted) for the internal cross-entropy kernels: ``grad`` with 0 rows skips the
    gradient (a (1, classes) dummy goes in its place)."""
    n, classes = logits.shape
    want_grad = grad.shape[0] == n
    g = grad if want_grad else np.empty((1, classes), dtype=logits.dtype)
    ones = np.ones(classes, dtype=logits.dtype)
    return ones, np.ones(n, dtype=np.float64), np.empty(n, dtype=np.float64), g, want_grad


@njit(cache=True)
def cross_entropy_index_rows(logits, target, grad):
    """Mean softmax cross-entropy over the rows, and its gradient, in one fused pass per row.

    ``loss = mean_i(logsumexp(logits[i]) - logits[i, target[i]])`` over the rows whose target is
    not -100 (NaN if there are none), and ``grad = d loss / d logits = (softmax(logits) -
    onehot(target)) / n_rows`` (0 on skipped rows).

    Parameters
    ----------
    logits : (rows, classes) float array
    target : (rows,) integer array, values in [0, classes) or -100
    grad : (rows, classes) array of the logits' dtype, or ``logits`` itself (the gradient then
        overwrites the logits); pass an array with 0 rows to skip the gradient.

    Returns
    -------
    float (float64)
    """
    weight, gout, losses, g, want_grad = _unweighted_mean_operands(logits, grad)
    one = logits.dtype.type(1.0)
    return _ce_index(
        logits, target, weight, IGNORE_INDEX, 0.0, 0.0, one, gout, True, losses, g, want_grad, None
    )


@njit(cache=True)
def cross_entropy_prob_rows(logits, target, grad):
    """Mean cross-entropy against probability targets, and its gradient.

    ``loss = mean_i(-sum_c target[i, c] * log_softmax(logits[i])_c)`` and
    ``grad = (softmax(logits) * sum(target, axis=1) - target) / rows``.

    Parameters
    ----------
    logits : (rows, classes) float array
    target : (rows, classes) array of the logits' dtype (finite)
    grad : (rows, classes) array of the logits' dtype, or ``logits`` itself; 0 rows to skip.

    Returns
    -------
    float (float64)
    """
    weight, gout, losses, g, want_grad = _unweighted_mean_operands(logits, grad)
    return _ce_prob(
        logits,
        target,
        weight,
        0.0,
        0.0,
        logits.dtype.type(1.0),
        gout,
        True,
        losses,
        g,
        want_grad,
        None,
    )


@njit(cache=True)
def sigmoid_flat(x, out):
    """``out = 1 / (1 + exp(-x))`` elementwise on 1-D arrays (pass ``a.reshape(-1)`` for others).

    ``out``: same shape and dtype; may be ``x``.
    """
    _sigmoid(x, out, SPAN)


@njit(cache=True)
def log_sigmoid_flat(x, out):
    """``out = log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|))`` elementwise on 1-D arrays.

    ``out``: same shape and dtype; may be ``x``.
    """
    _log_sigmoid(x, out, SPAN)


@njit(cache=True)
def binary_cross_entropy_with_logits_flat(x, y, grad):
    """Mean binary cross-entropy with logits over a 1-D array, and its gradient.

    ``loss = mean(max(x, 0) - x * y + log1p(exp(-|x|)))`` (no weights) and
    ``grad = (sigmoid(x) - y) / n``.

    Parameters
    ----------
    x : (n,) float array of logits
    y : (n,) float array of targets (the same dtype, finite)
    grad : (n,) array of x's dtype, or ``x`` itself; an empty array to skip the gradient.

    Returns
    -------
    float (float64); NaN for n == 0.
    """
    n = x.shape[0]
    span = min(SPAN, n) if n > 0 else 1
    ones = np.ones(span, dtype=x.dtype)
    nblocks = (n + span - 1) // span
    sums = np.empty(nblocks, dtype=np.float64)
    loss = np.empty(0, dtype=x.dtype)
    coef = 1.0 / n if n > 0 else np.nan
    want_grad = grad.shape[0] == n
    total = _bce(
        x, y, ones, ones, coef, loss, sums, grad, span, False, False, False, True, want_grad
    )
    return total / n if n > 0 else np.nan
