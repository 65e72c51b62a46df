"""softmax, log_softmax and logsumexp over one axis (the last by default)."""

from __future__ import annotations

import sys

import numpy as np
from numpy.typing import ArrayLike

from . import _validate as v
from ._kernels.softmax import log_softmax_kernel, logsumexp_kernel, softmax_kernel
from ._lazy import dask_call, dask_in
from ._runtime import launch


def _rowwise(
    kernel,
    x: ArrayLike,
    axis: int,
    temperature: float,
    out: np.ndarray | None,
    where: ArrayLike | None,
) -> np.ndarray:
    if (
        where is None
        and type(axis) is int
        and (axis == -1 or axis == 1)
        and v.plain_rows(x)
        and x.shape[1]
        and v.plain_out(out, x)
    ):  # the common call, kept cheap: x and out go to the kernel as they are
        scale = v.scale_for(temperature, x.dtype)  # raises what the general path would
        dest = np.empty(x.shape, x.dtype) if out is None else out
        launch(kernel, x.size, x, scale, dest, None)
        return dest
    x_in = x
    x = v.as_float_array(x, "x")
    dtype = v.result_dtype(x_in, x)
    axis = v.normalize_axis(axis, x.ndim)
    scale = v.scale_for(temperature, x.dtype)
    v.check_out(out, x.shape, dtype)
    mask = v.check_where(where, x.shape, axis)
    if x.shape[axis] == 0:  # no classes: an empty result, nothing to compute
        return v.deliver(np.empty(x.shape, dtype), dtype, out)
    rows = v.to_rows(x, axis)
    dest = v.RowsOut(out, x.shape, x.dtype, axis, (rows,))
    launch(kernel, rows.size, rows, scale, dest.rows, mask)
    return v.deliver(dest.result(), dtype, out)


def softmax(
    x: ArrayLike,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    out: np.ndarray | None = None,
    where: ArrayLike | None = None,
) -> np.ndarray:
    """Softmax along ``axis``: ``p_i = exp(x_i / T - m) / sum_j exp(x_j / T - m)``, m = max(x / T).

    Parameters
    ----------
    x : array_like
        Logits; float32/float64 are computed natively, float16 in float32 (the result is
        float16), ints and bools in float64.
    axis : int
        The class axis; an axis of length 0 gives an empty result of ``x``'s shape.
    temperature : float
        T > 0; the softmax of ``x / T``.
    out : ndarray, optional
        Writable array of the result's shape and dtype (float16 for float16 ``x``); may be ``x``
        itself.
    where : array_like of bool, optional
        Broadcastable to ``x``: entries where it is False are left out of the softmax (JAX
        semantics): they get probability 0 and take no part in the max and the sum; a row
        masked entirely gives all 0.

    Returns
    -------
    ndarray
        Probabilities along ``axis``. A row holding NaN gives NaN; +inf entries share the
        probability equally; -inf entries get exactly 0; an all -inf row gives all 0.
    """
    if "dask" in sys.modules and dask_in(x, where):
        return dask_call("softmax", x, axis, temperature=temperature, out=out, where=where)
    return _rowwise(softmax_kernel, x, axis, temperature, out, where)


def log_softmax(
    x: ArrayLike,
    axis: int = -1,
    *,
    temperature: float = 1.0,
    out: np.ndarray | None = None,
    where: ArrayLike | None = None,
) -> np.ndarray:
    """Log of the softmax along ``axis``: ``x_i / T - logsumexp(x / T)``, computed stably.

    Parameters and special values as in :func:`softmax`; -inf entries give -inf, an all -inf
    row gives all -inf, a row with k entries at +inf gives ``-log(k)`` there and -inf elsewhere.
    Entries left out by ``where`` give -inf (a row masked entirely: all -inf).
    """
    if "dask" in sys.modules and dask_in(x, where):
        return dask_call("log_softmax", x, axis, temperature=temperature, out=out, where=where)
    return _rowwise(log_softmax_kernel, x, axis, temperature, out, where)


def logsumexp(
    x: ArrayLike, axis: int = -1, *, keepdims: bool = False, out: np.ndarray | None = None
) -> np.ndarray | np.floating:
    """``log(sum(exp(x), axis))`` computed as ``m + log(sum(exp(x - m)))`` with m = max(x).

    Parameters
    ----------
    x : array_like
        Input (dtype rules as in :func:`softmax`).
    axis : int
        The axis reduced; an axis of length 0 gives -inf (the log of an empty sum).
    keepdims : bool
        Keep the reduced axis with length 1.
    out : ndarray, optional
        Writable array of the result's shape and dtype.

    Returns
    -------
    ndarray or NumPy scalar
        NaN for a row holding NaN, +inf for a row holding +inf, -inf for an all -inf row. A
        0-d result (1-D ``x`` without keepdims) is a NumPy scalar of the result dtype, unless
        ``out`` is given.
    """
    if "dask" in sys.modules and dask_in(x):
        return dask_call("logsumexp", x, axis, keepdims=keepdims, out=out)
    if (
        out is None
        and not keepdims
        and type(axis) is int
        and (axis == -1 or axis == 1)
        and v.plain_rows(x)
        and x.shape[1]
    ):  # the common call, kept cheap: x goes to the kernel as it is
        result = np.empty(x.shape[0], x.dtype)
        launch(logsumexp_kernel, x.size, x, result)
        return result
    x_in = x
    x = v.as_float_array(x, "x")
    dtype = v.result_dtype(x_in, x)
    axis = v.normalize_axis(axis, x.ndim)
    shape = x.shape[:axis] + ((1,) if keepdims else ()) + x.shape[axis + 1 :]
    v.check_out(out, shape, dtype)
    if x.shape[axis] == 0:  # the sum of no terms is 0
        return v.deliver(np.full(shape, -np.inf, dtype), dtype, out)
    rows = v.to_rows(x, axis)
    direct = (
        out is not None
        and dtype == x.dtype
        and out.flags.c_contiguous
        and not np.may_share_memory(out, x)
    )
    result = out if direct else np.empty(shape, x.dtype)
    launch(logsumexp_kernel, rows.size, rows, result.reshape(-1))
    return v.deliver(result, dtype, out)
