"""Derivatives of softmax and log_softmax: the Jacobian and its products with vectors.

With p = softmax(z / T): dp_i/dz_j = p_i (delta_ij - p_j) / T. These let the softmax combine with
any loss: given dL/dp, ``softmax_vjp(p, dL/dp)`` is dL/dz.
"""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v
from ._kernels.derivatives import jacobian_kernel, jvp_kernel, log_softmax_vjp_kernel
from ._lazy import dask_call, dask_in
from ._runtime import launch


def softmax_jacobian(probs: ArrayLike, axis: int = -1) -> np.ndarray:
    """The softmax Jacobian ``J = diag(p) - p p^T`` of each row of probabilities.

    Parameters
    ----------
    probs : array_like
        Softmax output, class axis ``axis``.
    axis : int
        The class axis.

    Returns
    -------
    ndarray
        Shape ``batch + (C, C)``, where ``batch`` is ``probs.shape`` without ``axis``:
        ``J[..., i, j] = p_i (delta_ij - p_j)`` (empty for C = 0). Memory is C times that of
        ``probs``; prefer :func:`softmax_jvp` / :func:`softmax_vjp`, which never build it.
    """
    if "dask" in sys.modules and dask_in(probs):
        return dask_call("softmax_jacobian", probs, axis)
    p = v.as_float_array(probs, "probs")
    dtype = v.result_dtype(probs, p)
    axis = v.normalize_axis(axis, p.ndim)
    classes = p.shape[axis]
    batch = p.shape[:axis] + p.shape[axis + 1 :]
    if classes == 0:  # no classes: an empty Jacobian, nothing to compute
        return np.empty(batch + (0, 0), dtype=dtype)
    rows = v.to_rows(p, axis)
    out = np.empty(batch + (classes, classes), dtype=p.dtype)
    launch(jacobian_kernel, rows.size * classes, rows, out.reshape(-1, classes, classes))
    return v.deliver(out, dtype, None)


def _product(
    kernel,
    a: ArrayLike,
    b: ArrayLike,
    names: tuple[str, str],
    axis: int,
    temperature: float,
    out: np.ndarray | None,
) -> np.ndarray:
    if (
        type(axis) is int
        and (axis == -1 or axis == 1)
        and v.plain_rows(a)
        and v.plain_rows(b)
        and a.shape == b.shape
        and (a.dtype is b.dtype or a.dtype == b.dtype)
        and a.shape[1]
        and v.plain_out(out, a, b)
    ):  # the common call, kept cheap: the arrays go to the kernel as they are
        scale = v.scale_for(temperature, a.dtype)  # raises what the general path would
        dest = np.empty(a.shape, a.dtype) if out is None else out
        launch(kernel, a.size, a, b, scale, dest)
        return dest
    a, b, axis, scale, dtype = v.product_args(a, b, names, axis, temperature, out)
    if a.shape[axis] == 0:  # no classes: an empty result, nothing to compute
        return v.deliver(np.empty(a.shape, dtype), dtype, out)
    rows_a, rows_b = v.to_rows(a, axis), v.to_rows(b, axis)
    dest = v.RowsOut(out, a.shape, a.dtype, axis, (rows_a, rows_b))
    launch(kernel, rows_a.size, rows_a, rows_b, scale, dest.rows)
    return v.deliver(dest.result(), dtype, out)


def softmax_jvp(
    probs: ArrayLike,
    tangent: ArrayLike,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Jacobian-vector product of softmax: ``J v = p * (v - sum(p * v)) / T``.

    Equal to ``np.einsum('...ij,...j->...i', softmax_jacobian(p), v) / T`` without building J:
    O(C) work and memory per row instead of O(C^2).

    Parameters
    ----------
    probs : array_like
        p = softmax(z / T).
    tangent : array_like
        v, same shape as ``probs``.
    axis : int
        The class axis.
    temperature : float
        T > 0 used to compute ``probs``.
    out : ndarray, optional
        Writable array of the result's shape and dtype; may be ``probs`` or ``tangent``.

    Returns
    -------
    ndarray
        Of ``probs``' shape, in the promoted dtype of the two inputs (float16 for two float16
        inputs, computed in float32); empty when the class axis has length 0.
    """
    if "dask" in sys.modules and dask_in(probs, tangent):
        return dask_call("softmax_jvp", probs, tangent, axis, temperature=temperature, out=out)
    return _product(jvp_kernel, probs, tangent, ("probs", "tangent"), axis, temperature, out)


def softmax_vjp(
    probs: ArrayLike,
    cotangent: ArrayLike,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Vector-Jacobian product of softmax: ``g^T J = p * (g - sum(p * g)) / T``, dL/dz from dL/dp.

    J is symmetric, so the values equal :func:`softmax_jvp`. Parameters as there, with the
    cotangent g = dL/dp in place of the tangent.
    """
    if "dask" in sys.modules and dask_in(probs, cotangent):
        return dask_call("softmax_vjp", probs, cotangent, axis, temperature=temperature, out=out)
    return _product(jvp_kernel, probs, cotangent, ("probs", "cotangent"), axis, temperature, out)


def log_softmax_vjp(
    log_probs: ArrayLike,
    cotangent: ArrayLike,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Vector-Jacobian product of log_softmax: ``(g - exp(logp) * sum(g)) / T``.

    Gives dL/dz from dL/dlogp.

    Parameters
    ----------
    log_probs : array_like
        logp = log_softmax(z / T).
    cotangent : array_like
        g = dL/dlogp, same shape.
    axis, temperature, out
        As in :func:`softmax_jvp`.
    """
    if "dask" in sys.modules and dask_in(log_probs, cotangent):
        return dask_call(
            "log_softmax_vjp", log_probs, cotangent, axis, temperature=temperature, out=out
        )
    return _product(
        log_softmax_vjp_kernel,
        log_probs,
        cotangent,
        ("log_probs", "cotangent"),
        axis,
        temperature,
        out,
    )
