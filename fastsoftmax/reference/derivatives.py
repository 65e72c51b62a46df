"""Reference softmax Jacobian and its products, built from the full C x C Jacobian per row."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_array, as_arrays, check_out, class_axis, inverse_temperature
from ._exact import deliver, log_softmax_vjp_last


def _jacobian_last(p: np.ndarray) -> np.ndarray:
    """``diag(p) - p p^T`` of every row of ``p`` (class axis last)."""
    eye = np.eye(p.shape[-1], dtype=p.dtype)
    return p[..., :, None] * eye - p[..., :, None] * p[..., None, :]


def softmax_jacobian(probs: ArrayLike, axis: int = -1) -> np.ndarray:
    """Reference: ``J = diag(p) - p p^T`` per row, shape batch + (C, C)."""
    p, dtype = as_array(probs, "probs")
    axis = class_axis(axis, p.ndim)
    return deliver(_jacobian_last(np.moveaxis(p, axis, -1)), dtype, None)


def _product(product_last, a, b, names, axis, temperature, out) -> Any:
    """``product_last(a, b, 1/T)`` with the class axis moved last and back."""
    (a, b), dtype = as_arrays(dict(zip(names, (a, b), strict=True)))
    if a.shape != b.shape:
        raise ValueError(f"{names[1]} has shape {b.shape}, not {names[0]}'s {a.shape}")
    axis = class_axis(axis, a.ndim)
    inv_t = inverse_temperature(temperature, a.dtype)
    check_out(out, a.shape, dtype)
    res = product_last(np.moveaxis(a, axis, -1), np.moveaxis(b, axis, -1), inv_t)
    return deliver(np.moveaxis(res, -1, axis), dtype, out)


def _jvp_last(p: np.ndarray, v: np.ndarray, inv_t: float) -> np.ndarray:
    return np.einsum("...ij,...j->...i", _jacobian_last(p), v) * p.dtype.type(inv_t)


def _vjp_last(p: np.ndarray, g: np.ndarray, inv_t: float) -> np.ndarray:
    return np.einsum("...j,...ji->...i", g, _jacobian_last(p)) * p.dtype.type(inv_t)


def softmax_jvp(
    probs: ArrayLike, tangent: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None
) -> np.ndarray:
    """Reference: ``np.einsum('...ij,...j->...i', J, v) / T`` with the full Jacobian J."""
    return _product(_jvp_last, probs, tangent, ("probs", "tangent"), axis, temperature, out)


def softmax_vjp(
    probs: ArrayLike, cotangent: ArrayLike, axis: int = -1, *, temperature: float = 1.0, out=None
) -> np.ndarray:
    """Reference: ``np.einsum('...j,...ji->...i', g, J) / T`` with the full Jacobian J."""
    return _product(_vjp_last, probs, cotangent, ("probs", "cotangent"), axis, temperature, out)


def log_softmax_vjp(
    log_probs: ArrayLike,
    cotangent: ArrayLike,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    out=None,
) -> np.ndarray:
    """Reference: ``g^T (I - 1 p^T) / T`` with p = exp(logp): the log_softmax Jacobian is
    I - 1 p^T."""
    names = ("log_probs", "cotangent")
    return _product(log_softmax_vjp_last, log_probs, cotangent, names, axis, temperature, out)
