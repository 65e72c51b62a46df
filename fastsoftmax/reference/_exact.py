"""Row formulas along the last axis, exact where the math allows, and how results are returned.

With m = max(u) and d = sum(exp(u - m)) - 1, taken as the sum over every entry but one maximum
(whose own term is exactly 1, so no subtraction rounds): logsumexp(u) = m + log1p(d) and
log_softmax(u) = (u - m) - log1p(d). Rows without a finite maximum take the limits of
softmax: NaN rows stay NaN, +inf entries share the probability, an all -inf (or empty) row has
probability 0 everywhere and logsumexp -inf.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def deliver(result: np.ndarray, dtype: np.dtype, out: np.ndarray | None) -> Any:
    """``result`` rounded to ``dtype`` (+-inf beyond its range): copied into ``out`` and ``out``
    returned when given, else an array, or a NumPy scalar when 0-d."""
    with np.errstate(over="ignore"):
        rounded = np.asarray(result).astype(dtype)
    if out is not None:
        np.copyto(out, rounded)
        return out
    return rounded if rounded.ndim else rounded[()]


def max_and_log1p_rest(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(m, log1p(d)) along the last axis (keepdims); log1p(d) is 0 where m is not finite."""
    m = np.max(u, axis=-1, keepdims=True, initial=-np.inf)  # -inf: the max of no entries
    finite = np.isfinite(m)
    with np.errstate(invalid="ignore", over="ignore"):
        e = np.exp(u - np.where(finite, m, 0))
    if u.shape[-1]:  # leave out the term of one maximum: it is exactly 1
        np.put_along_axis(e, np.argmax(u, axis=-1, keepdims=True), 0, axis=-1)
    return m, np.where(finite, np.log1p(np.sum(e, axis=-1, keepdims=True)), 0)


def softmax_last(u: np.ndarray) -> np.ndarray:
    """exp(u - m) / sum(exp(u - m)) along the last axis, in u's dtype, with the limits above."""
    m = np.max(u, axis=-1, keepdims=True, initial=-np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        # a row holding +inf: the softmax of the indicator of its +inf entries
        shifted = np.where(
            np.isposinf(m), np.where(np.isposinf(u), 0, -np.inf), u - np.where(np.isfinite(m), m, 0)
        ).astype(u.dtype)
        e = np.exp(shifted)
        s = np.sum(e, axis=-1, keepdims=True)
        return np.where(s == 0, 0, e / np.where(s == 0, 1, s)).astype(u.dtype)  # NaN stays NaN


def log_softmax_last(u: np.ndarray) -> np.ndarray:
    """(u - m) - log1p(d) along the last axis, in u's dtype; log(softmax)'s limits elsewhere."""
    m, log1p_d = max_and_log1p_rest(u)
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = (u - m) - log1p_d
        return np.where(np.isfinite(m), exact, np.log(softmax_last(u))).astype(u.dtype)


def logsumexp_last(u: np.ndarray) -> np.ndarray:
    """m + log1p(d) along the last axis (keepdims): NaN, +inf and -inf rows give NaN, +inf and
    -inf (an empty row -inf)."""
    m, log1p_d = max_and_log1p_rest(u)
    return (m + log1p_d).astype(u.dtype)


def log_softmax_vjp_last(logp: np.ndarray, g: np.ndarray, inv_t: float) -> np.ndarray:
    """``g^T (I - 1 p^T) / T`` with p = exp(logp) and the full C x C Jacobian, per row."""
    p = np.exp(logp)
    c = p.shape[-1]
    jac = np.eye(c, dtype=p.dtype) - np.ones((c, 1), dtype=p.dtype) * p[..., None, :]
    return np.einsum("...j,...ji->...i", g, jac) * p.dtype.type(inv_t)


def sigmoid64(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) for x >= 0 and exp(x) / (1 + exp(x)) for x < 0 (float64)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(x >= 0, 1.0 / (1.0 + np.exp(-x)), np.exp(x) / (1.0 + np.exp(x)))


def log_sigmoid64(x: np.ndarray) -> np.ndarray:
    """log(sigmoid(x)) = min(x, 0) - log1p(exp(-|x|)) (float64)."""
    return np.minimum(x, 0.0) - np.log1p(np.exp(-np.abs(x)))
