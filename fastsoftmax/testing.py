"""Testing helpers for code built on fastsoftmax: a finite-difference gradient check.

The softmax JVP/VJP let softmax combine with any loss; :func:`check_grad` is the way to make sure
such a combination (or any hand-written gradient) is right::

    import numpy as np
    import fastsoftmax as fs
    from fastsoftmax.testing import check_grad

    t = np.array([[0.1, 0.7, 0.2]])

    def loss(z):                      # squared error on the probabilities
        return 0.5 * np.sum((fs.softmax(z) - t) ** 2)

    def grad(z):                      # dL/dz = J^T dL/dp, J never built
        p = fs.softmax(z)
        return fs.softmax_vjp(p, p - t)

    z = np.random.default_rng(0).standard_normal((1, 3))
    assert check_grad(loss, z, grad) < 1e-7

A gradient that keeps only the diagonal of the softmax Jacobian (``p * (1 - p) * dL/dp``, a
classic bug) fails this check: error ~1e-2 for 100 near-uniform classes (an untrained model),
0.1..1 for a few classes or peaked predictions, against ~1e-10..1e-9 for the right gradient.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["check_grad", "numerical_grad"]


def _value(f: Callable, x: np.ndarray, returns_grad: bool) -> float:
    out = f(x)
    if returns_grad:
        out = out[0]
    arr = np.asarray(out)
    if arr.size != 1:
        raise ValueError(f"f must return a scalar, got an array of shape {arr.shape}")
    return float(arr.reshape(()))


def _as_input(x: ArrayLike) -> np.ndarray:
    arr = np.array(x, copy=True)
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise TypeError(f"x has dtype {arr.dtype}; expected a real floating array")
    return arr


def numerical_grad(
    f: Callable[[np.ndarray], Any],
    x: ArrayLike,
    *,
    eps: float | None = None,
    indices: ArrayLike | None = None,
    returns_grad: bool = False,
) -> np.ndarray:
    """Central finite-difference gradient of the scalar function ``f`` at ``x``.

    ``g[i] = (f(x + h e_i) - f(x - h e_i)) / ((x_i + h) - (x_i - h))`` with
    ``h = eps * max(1, |x_i|)``; the denominator is the step actually taken in x's dtype (not the
    intended 2h), which removes the rounding of the perturbed point from the error.

    Parameters
    ----------
    f : callable
        Maps an array of x's shape and dtype to a scalar (or, with ``returns_grad``, to a tuple
        whose first item is the scalar). It receives a fresh array on every call.
    x : array_like
        The point; integer and bool arrays are converted to float64.
    eps : float, optional
        Relative step. Default ``eps_machine ** (1/3)`` of x's dtype (6.1e-6 for float64,
        4.9e-3 for float32), which balances the O(h^2) truncation and O(eps_machine / h)
        rounding errors of central differences.
    indices : array_like of int, optional
        Flat indices of the entries to differentiate (default all); others are left 0.
    returns_grad : bool
        ``f`` returns ``(value, gradient)``; only the value is used here.

    Returns
    -------
    ndarray of float64 with x's shape.
    """
    x = _as_input(x)
    if eps is None:
        eps = float(np.finfo(x.dtype).eps) ** (1.0 / 3.0)
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be finite and > 0, got {eps!r}")
    flat = x.reshape(-1)
    idx = (
        np.arange(flat.size) if indices is None else np.asarray(indices, dtype=np.intp).reshape(-1)
    )
    g = np.zeros(flat.size, dtype=np.float64)
    for i in idx:
        xi = flat[i]
        h = x.dtype.type(eps * max(1.0, abs(float(xi))))
        plus = x.copy()
        minus = x.copy()
        plus.reshape(-1)[i] = xi + h
        minus.reshape(-1)[i] = xi - h
        step = float(plus.reshape(-1)[i]) - float(minus.reshape(-1)[i])
        g[i] = (_value(f, plus, returns_grad) - _value(f, minus, returns_grad)) / step
    return g.reshape(x.shape)


def check_grad(
    f: Callable[[np.ndarray], Any],
    x: ArrayLike,
    grad: ArrayLike | Callable[[np.ndarray], ArrayLike] | None = None,
    *,
    eps: float | None = None,
    indices: ArrayLike | None = None,
) -> float:
    """Worst relative error between an analytic gradient and central finite differences.

    The error is ``max_i |g_fd[i] - g[i]| / max(max_i |g_fd[i]|, tiny)`` over the checked
    entries ``i``: the largest deviation measured against the size of the whole gradient (so
    entries where the gradient is ~0 do not blow up), with ``tiny`` the smallest normal float64.
    Expect ~1e-10..1e-9 for a correct gradient of a smooth float64 function (the finite
    differences themselves are accurate to about ``eps_machine ** (2/3)`` times ``|f| / max|g|``,
    so more like 1e-8..1e-7 when the gradient is small next to the loss value), ~1e-5..1e-3 in
    float32; a wrong gradient typically gives 1e-2 or more.

    Parameters
    ----------
    f : callable
        Maps an array of x's shape to a scalar loss; with ``grad=None`` it returns
        ``(loss, gradient)`` instead (like ``cross_entropy_with_grad``).
    x : array_like
        Where to check (not modified).
    grad : array_like or callable, optional
        The analytic gradient at ``x`` (x's shape), or a function returning it from ``x``.
        None: taken from ``f(x)[1]``.
    eps : float, optional
        Relative finite-difference step (see :func:`numerical_grad`).
    indices : array_like of int, optional
        Flat indices of the entries to check (default all): for large x, check a sample.

    Returns
    -------
    float
        The worst relative error; 0.0 if both gradients are exactly 0, NaN if either holds NaN
        (so that ``check_grad(...) < tol`` is False).
    """
    x = _as_input(x)
    returns_grad = grad is None
    if returns_grad:
        g = f(x.copy())[1]
    elif callable(grad):
        g = grad(x.copy())
    else:
        g = grad
    g = np.asarray(g, dtype=np.float64)
    if g.shape != x.shape:
        raise ValueError(f"the gradient has shape {g.shape}; it must match x's shape {x.shape}")
    fd = numerical_grad(f, x, eps=eps, indices=indices, returns_grad=returns_grad)
    flat_fd = fd.reshape(-1)
    flat_g = g.reshape(-1)
    if indices is not None:
        idx = np.asarray(indices, dtype=np.intp).reshape(-1)
        flat_fd, flat_g = flat_fd[idx], flat_g[idx]
    if flat_fd.size == 0:
        return 0.0
    if np.isnan(flat_fd).any() or np.isnan(flat_g).any():
        return float("nan")
    diff = float(np.max(np.abs(flat_fd - flat_g)))
    if diff == 0.0:
        return 0.0
    scale = max(float(np.max(np.abs(flat_fd))), float(np.finfo(np.float64).tiny))
    return diff / scale
