"""Reference softmax, log_softmax and logsumexp: the formulas of ``_exact`` along any axis."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_array, check_out, class_axis, class_mask, inverse_temperature
from ._exact import deliver, log_softmax_last, logsumexp_last, softmax_last


def _rowwise(row_formula, x, axis, temperature, out, where) -> Any:
    """``row_formula`` of u = x / T (-inf where ``where`` is False) along ``axis``."""
    x, dtype = as_array(x, "x")
    axis = class_axis(axis, x.ndim)
    inv_t = inverse_temperature(temperature, x.dtype)
    check_out(out, x.shape, dtype)
    mask = class_mask(where, x.shape)
    u = x * x.dtype.type(inv_t)
    if mask is not None:
        u = np.where(mask, u, -np.inf).astype(x.dtype)
    res = row_formula(np.moveaxis(u, axis, -1))
    return deliver(np.moveaxis(res, -1, axis), dtype, out)


def softmax(
    x: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None, where=None
) -> np.ndarray:
    """Reference: ``exp(u - max(u)) / sum(exp(u - max(u)))``, u = x / T (-inf where masked)."""
    return _rowwise(softmax_last, x, axis, temperature, out, where)


def log_softmax(
    x: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None, where=None
) -> np.ndarray:
    """Reference: ``(u - m) - log1p(d)``, u = x / T (-inf where masked), m = max(u), d the sum
    of ``exp(u - m)`` over all entries but one maximum; ``log(softmax(u))``'s limits for rows
    without a finite maximum."""
    return _rowwise(log_softmax_last, x, axis, temperature, out, where)


def logsumexp(x: ArrayLike, axis: int = -1, *, keepdims: bool = False, out=None) -> Any:
    """Reference: ``m + log1p(d)`` as in :func:`log_softmax`; NaN, +inf and -inf rows give NaN,
    +inf and -inf (no entries: -inf)."""
    x, dtype = as_array(x, "x")
    axis = class_axis(axis, x.ndim)
    shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1 :]
    check_out(out, shape, dtype)
    res = logsumexp_last(np.moveaxis(x, axis, -1))
    return deliver(np.moveaxis(res, -1, axis).reshape(shape), dtype, out)
