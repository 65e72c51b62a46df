"""Dask arrays in, lazy dask arrays out: the NumPy functions mapped over blocks of whole rows.

Reached from a public function's entry when one of its array arguments is a dask array
(``fastsoftmax._lazy``); each function here has the public signature. Row-wise functions call
the public NumPy function on blocks whose class axis is whole (a split class axis is rechunked,
with a ``PerformanceWarning``), so every row gives the bits the NumPy call gives. The binary
family is elementwise and maps over any blocks. Other arguments (targets, weights, masks,
tangents, grad_output, selected indices) may be NumPy or dask arrays; they are chunked like
the logits. The fused linear cross-entropy splits x into blocks of whole rows the same way (its
feature axis whole), passes the linear weight, bias and class weights whole to every block, and
adds the blocks' weight gradients in block order.

Reductions ("sum", "mean"): each block gives its partial loss sum (the NumPy function's "sum",
in the logits' dtype) and, for class-index targets, its weighted count of rows; ``math.fsum``
adds the partials in one task, so the result does not depend on the scheduler, the number of
workers or the order in which blocks finish, only on the chunks. Gradients use the global
"mean" denominator, passed to every block as ``grad_output / denominator`` with reduction
"sum": the per-row coefficient the NumPy call computes, bit for bit whenever the denominator
is (the kernel adds class weights in an order of its own; sums without weights are exact).

Errors that shapes and dtypes reveal are raised when the graph is built, by the checks of
``_validate`` (on zero-stride stand-ins with the real shapes, which they reject before reading
any value) and by one call of the NumPy function on a one-row probe. Errors in values (a label
out of range, a NaN target) come from the NumPy function at compute time, with indices into the
whole array.
"""

from __future__ import annotations

import math
import operator
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any

import dask
import dask.array as da
import numpy as np
from dask.array.core import PerformanceWarning

from . import _validate as v
from ._validate import check_binary_target, check_broadcast_weight
from .binary import _run as _bce_run
from .binary import log_sigmoid as _log_sigmoid
from .binary import sigmoid as _sigmoid
from .derivatives import log_softmax_vjp as _log_softmax_vjp
from .derivatives import softmax_jacobian as _softmax_jacobian
from .derivatives import softmax_jvp as _softmax_jvp
from .linear import linear_cross_entropy as _linear_cross_entropy
from .linear import linear_cross_entropy_with_grad as _linear_cross_entropy_with_grad
from .losses import _run as _ce_run
from .selective import selective_log_softmax as _selective_log_softmax
from .selective import selective_log_softmax_vjp as _selective_log_softmax_vjp
from .softmax import log_softmax as _log_softmax
from .softmax import logsumexp as _logsumexp
from .softmax import softmax as _softmax

_PACKAGE = os.path.dirname(os.path.abspath(__file__))

# --------------------------------------------------------------------------- helpers


def _user_stacklevel() -> int:
    """The ``stacklevel`` of the first caller outside this package (for warnings)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


def _no_out(out: Any) -> None:
    if out is not None:
        raise TypeError(
            "out is not supported for dask arrays: the result is a lazy dask array "
            "(write it with dask.array.store or to_zarr)"
        )


def _stand_in(shape: tuple[float, ...], dtype: np.dtype) -> np.ndarray:
    """A zero-stride array of zeros with ``shape``: lets the NumPy checks see the real shape
    (an unknown length, NaN in dask, counts as 0 here; the blocks are checked when computed)."""
    return np.broadcast_to(np.zeros((), dtype), tuple(0 if math.isnan(n) else n for n in shape))


def _meta(a: Any) -> np.ndarray:
    """An argument's shape and dtype as a zero-stride stand-in (a NumPy argument as itself)."""
    if isinstance(a, da.Array):
        return _stand_in(a.shape, a.dtype)
    return np.asarray(a)


def _probe(a: Any, keep: tuple[int, ...] = ()) -> np.ndarray:
    """Zeros of ``a``'s dtype with every dimension 1 except those in ``keep``: an argument of
    a one-row call that checks everything but the shapes."""
    meta = _meta(a)
    return np.zeros(tuple(n if i in keep else 1 for i, n in enumerate(meta.shape)), meta.dtype)


def _aligned(a: Any, shape: tuple[int, ...], chunks: tuple[tuple[int, ...], ...]) -> da.Array:
    """``a`` as a dask array chunked like an array of ``shape`` and ``chunks`` along the
    dimensions it shares with it (right-aligned, as in broadcasting; length-1 dimensions whole)."""
    if not isinstance(a, da.Array):
        a = np.asarray(a)
        a = da.from_array(a, chunks=a.shape)
    lead = len(shape) - a.ndim
    want = tuple(
        chunks[lead + i]
        if _same((a.shape[i],), (shape[lead + i],)) and a.shape[i] != 1
        else (a.shape[i],)
        for i in range(a.ndim)
    )
    return a if all(map(_same, a.chunks, want)) else a.rechunk(want)


def _same(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    """Equal lengths or chunks, where dask's NaN (unknown) equals NaN."""
    return len(a) == len(b) and all(
        x == y or math.isnan(x) and math.isnan(y) for x, y in zip(a, b, strict=True)
    )


def _whole_axis(x: da.Array, axis: int, what: str = "class axis") -> da.Array:
    """``x`` with the class (or feature) axis in one chunk: a softmax needs whole rows."""
    if x.numblocks[axis] == 1:
        return x
    warnings.warn(
        f"the {what} (axis {axis}) is split into {x.numblocks[axis]} chunks; rechunking it to "
        "one chunk, since each row must be whole in one block (chunk along the other axes only "
        "to avoid this copy)",
        PerformanceWarning,
        stacklevel=_user_stacklevel(),
    )
    return x.rechunk({axis: -1})


def _main(x: Any, axis: int | None) -> da.Array:
    """The main input as a dask array (a NumPy one chunked automatically, its class axis whole)."""
    if not isinstance(x, da.Array):
        x = np.asarray(x)
        chunks = "auto" if axis is None or x.ndim == 0 else {axis % x.ndim: -1}
        x = da.from_array(x, chunks=chunks)
    return x if axis is None else _whole_axis(x, axis)


_INDEX = re.compile(r"at index \(([\d, ]*)\)")


def _global_message(exc: ValueError, start: tuple[int, ...]) -> ValueError:
    """The NumPy message with a block's ``at index (i, j)`` counted in the whole array."""

    def shift(m: re.Match) -> str:
        local = [int(i) for i in m.group(1).replace(" ", "").split(",") if i]
        return f"at index {tuple(i + s for i, s in zip(local, start, strict=True))}"

    return ValueError(_INDEX.sub(shift, str(exc)))


def _block_start(block_info: dict | None, dims: int) -> tuple[int, ...]:
    if not block_info:
        return (0,) * dims
    return tuple(lo for lo, _ in block_info[0]["array-location"][:dims])


def _fsum(partials: np.ndarray) -> np.ndarray:
    return np.float64(math.fsum(np.ravel(partials)))


def _total(partials: da.Array) -> da.Array:
    """The correctly rounded sum of one float64 partial per block, as a 0-d dask array."""
    grid = partials.rechunk(partials.shape) if partials.ndim else partials
    return da.blockwise(
        _fsum,
        (),
        grid,
        tuple(range(grid.ndim)),
        concatenate=True,
        dtype=np.float64,
        meta=np.empty((), np.float64),
    )


def _inverse(denominator: np.ndarray) -> np.ndarray:
    """1 / denominator, NaN for 0 (every row ignored), as the NumPy kernels compute it."""
    d = float(denominator)
    return np.float64(1.0 / d if d != 0.0 else math.nan)


def _partials_chunks(x: da.Array, dims: int) -> tuple[tuple[int, ...], ...]:
    """Chunks of an array holding one value per block of ``x`` over its first ``dims`` axes."""
    return tuple((1,) * n for n in x.numblocks[:dims])


def _count(shape: tuple[float, ...]) -> int:
    """The number of entries of ``shape``, for a "mean" over rows or elements."""
    n = math.prod(shape)
    if math.isnan(n):
        raise ValueError(
            "reduction='mean' over a dask array of unknown chunk sizes: call "
            "compute_chunk_sizes() on it first"
        )
    return n


def _check_broadcast(a: Any, shape: tuple[int, ...], check: Callable[[np.ndarray], Any]) -> None:
    """Raise the NumPy error of ``check`` when ``a`` does not broadcast to ``shape``."""
    meta = _meta(a)
    try:
        fits = np.broadcast_shapes(meta.shape, shape) == shape
    except ValueError:
        fits = False
    if not fits:
        check(meta)


def _check_where(where: Any, shape: tuple[int, ...], axis: int) -> None:
    """Raise the NumPy error for a ``where`` of the wrong dtype or shape."""
    _check_broadcast(where, shape, lambda m: v.check_where(m, shape, axis))
    if _meta(where).dtype != np.bool_:
        v.check_where(_meta(where), shape, axis)


# --------------------------------------------------------------------------- softmax family


def _masked(fn: Callable, x: np.ndarray, where: np.ndarray, **kwargs: Any) -> np.ndarray:
    return fn(x, where=where, **kwargs)


def _rowwise(fn: Callable, x: Any, axis: Any, temperature: Any, out: Any, where: Any) -> da.Array:
    axis = v.normalize_axis(axis, np.ndim(x))
    x = _main(x, axis)
    _no_out(out)
    dtype = fn(_probe(x, (axis,)), axis=axis, temperature=temperature).dtype
    if where is None:
        return x.map_blocks(fn, axis=axis, temperature=temperature, dtype=dtype)
    _check_where(where, x.shape, axis)
    return da.map_blocks(
        _masked,
        fn,
        x,
        _aligned(where, x.shape, x.chunks),
        axis=axis,
        temperature=temperature,
        dtype=dtype,
    )


def softmax(
    x: Any, axis: int = -1, *, temperature: float = 1.0, out: Any = None, where: Any = None
) -> da.Array:
    """Lazy :func:`fastsoftmax.softmax`."""
    return _rowwise(_softmax, x, axis, temperature, out, where)


def log_softmax(
    x: Any, axis: int = -1, *, temperature: float = 1.0, out: Any = None, where: Any = None
) -> da.Array:
    """Lazy :func:`fastsoftmax.log_softmax`."""
    return _rowwise(_log_softmax, x, axis, temperature, out, where)


def logsumexp(x: Any, axis: int = -1, *, keepdims: bool = False, out: Any = None) -> da.Array:
    """Lazy :func:`fastsoftmax.logsumexp`."""
    axis = v.normalize_axis(axis, np.ndim(x))
    x = _main(x, axis)
    _no_out(out)
    dtype = _logsumexp(_probe(x, (axis,)), axis=axis).dtype
    if keepdims:
        chunks = x.chunks[:axis] + ((1,),) + x.chunks[axis + 1 :]
        return x.map_blocks(_logsumexp, axis=axis, keepdims=True, chunks=chunks, dtype=dtype)
    return x.map_blocks(_logsumexp, axis=axis, drop_axis=axis, dtype=dtype)


# --------------------------------------------------------------------------- derivatives


def softmax_jacobian(probs: Any, axis: int = -1) -> da.Array:
    """Lazy :func:`fastsoftmax.softmax_jacobian` (shape ``batch + (C, C)``)."""
    axis = v.normalize_axis(axis, np.ndim(probs))
    p = da.moveaxis(_main(probs, axis), axis, -1)
    dtype = _softmax_jacobian(_probe(p, (p.ndim - 1,))).dtype
    return p.map_blocks(
        _softmax_jacobian, new_axis=p.ndim, chunks=p.chunks + (p.chunks[-1],), dtype=dtype
    )


def _product(
    fn: Callable, a: Any, b: Any, names: tuple[str, str], axis: Any, temperature: Any, out: Any
) -> da.Array:
    v.common_dtype(_meta(a), _meta(b), names=names)  # dtype errors, as NumPy
    v.check_same_shape(_meta(a), _meta(b), *names)
    axis = v.normalize_axis(axis, np.ndim(a))
    _no_out(out)
    lead = _main(a if isinstance(a, da.Array) else b, axis)
    a, b = (_aligned(c, lead.shape, lead.chunks) for c in (a, b))
    dtype = fn(_probe(a, (axis,)), _probe(b, (axis,)), axis=axis, temperature=temperature).dtype
    return da.map_blocks(fn, a, b, axis=axis, temperature=temperature, dtype=dtype)


def softmax_jvp(
    probs: Any, tangent: Any, axis: int = -1, *, temperature: float = 1.0, out: Any = None
) -> da.Array:
    """Lazy :func:`fastsoftmax.softmax_jvp`."""
    return _product(_softmax_jvp, probs, tangent, ("probs", "tangent"), axis, temperature, out)


def softmax_vjp(
    probs: Any, cotangent: Any, axis: int = -1, *, temperature: float = 1.0, out: Any = None
) -> da.Array:
    """Lazy :func:`fastsoftmax.softmax_vjp`."""
    return _product(_softmax_jvp, probs, cotangent, ("probs", "cotangent"), axis, temperature, out)


def log_softmax_vjp(
    log_probs: Any, cotangent: Any, axis: int = -1, *, temperature: float = 1.0, out: Any = None
) -> da.Array:
    """Lazy :func:`fastsoftmax.log_softmax_vjp`."""
    return _product(
        _log_softmax_vjp, log_probs, cotangent, ("log_probs", "cotangent"), axis, temperature, out
    )


# --------------------------------------------------------------------------- shared by the losses


def _scalar(a: Any) -> float:
    """A Python float from a float, a 0-d array or a block of one element."""
    return float(np.ravel(a)[0])


def _grad_output(g: Any, reduction: str, shape: tuple[int, ...]) -> Any:
    """grad_output checked against the shapes: a float, a 0-d dask array, or an array of
    ``shape`` (reduction "none")."""
    meta = _meta(g)
    if meta.dtype.kind not in "biuf" or not (
        meta.ndim == 0 or reduction == "none" and meta.shape == shape
    ):
        v.check_grad_output(meta, reduction, shape)  # raises the NumPy error
    if isinstance(g, da.Array):
        return g
    return float(meta) if meta.ndim == 0 else g


def _widened(z: np.ndarray, reduction: str) -> np.ndarray:
    """float16 logits as the float32 the NumPy functions compute them in, when the block's loss
    is a partial sum: it then stays in float32 (the NumPy call rounds only the total to
    float16). Per-row losses keep float16 blocks, rounded once from float64 as in the NumPy
    call."""
    return z.astype(np.float32) if reduction != "none" and z.dtype == np.float16 else z


def _rounded(grad: Any, z: np.ndarray) -> Any:
    """A gradient computed from widened float16 logits ``z``, rounded to float16 as the NumPy
    call rounds it."""
    if grad is None or z.dtype != np.float16 or grad.dtype == z.dtype:
        return grad
    return grad.astype(z.dtype)


def _partial_array(loss: Any, dims: int) -> np.ndarray:
    """A block's reduced loss as the float64 partial of shape (1, ..., 1)."""
    return np.full((1,) * dims, np.float64(loss))


def _reduced(
    partials: da.Array, reduction: str, denominator: Any, dtype: np.dtype, divide: bool
) -> da.Array:
    """The 0-d loss from per-block partials: the sum, or for "mean" the sum times (or over)
    the global denominator, in the order the NumPy function uses, cast to ``dtype``."""
    total = _total(partials)
    if reduction == "mean":
        total = total / denominator if divide else total * denominator
    return total.astype(dtype)


# --------------------------------------------------------------------------- cross-entropy


def _ce_block(
    z: np.ndarray,
    t: np.ndarray,
    w: Any,
    mask: Any,
    g: Any,
    inv: Any,
    *,
    index: bool,
    options: dict,
    reduction: str,
    want_loss: bool,
    want_grad: bool,
    block_info: dict | None = None,
) -> Any:
    """One block of rows through the NumPy cross-entropy: its loss (per row for "none", else
    the float64 partial sum) and/or its gradient."""
    dims = z.ndim - 1
    if index:
        t = t[..., 0]
    if isinstance(w, np.ndarray):
        w = w.reshape(-1)
    if isinstance(g, np.ndarray):
        g = g[..., 0]
    if inv is not None:  # the "mean" gradient: grad_output / global denominator, with "sum"
        g = _scalar(g) * _scalar(inv)
    try:
        loss, grad = _ce_run(
            _widened(z, reduction),
            t,
            w,
            options["ignore_index"],
            "none" if reduction == "none" else "sum",
            options["label_smoothing"],
            options["temperature"],
            options["z_loss"],
            options["softcap"],
            g,
            want_grad,
            None,
            mask,
        )
    except ValueError as exc:
        raise _global_message(exc, _block_start(block_info, dims)) from None
    grad = _rounded(grad, z)
    if reduction != "none":
        loss = _partial_array(loss, dims)
    if want_loss and want_grad:
        return loss, grad
    return loss if want_loss else grad


def _denominator_block(
    t: np.ndarray,
    w: Any,
    mask: Any,
    *,
    classes: int,
    logits_dtype: np.dtype,
    ignore_index: int,
    block_info: dict | None = None,
) -> np.ndarray:
    """A block's "mean" denominator for class-index targets: the sum of ``w[target]`` over rows
    neither ignored nor masked entirely, accumulated in row order (the NumPy kernel may add in
    another order: equal when the sums are exact, e.g. without weights). Reads no logits."""
    t = t[..., 0]
    if isinstance(w, np.ndarray):
        w = w.reshape(-1)
    try:
        args = v.cross_entropy_args(
            _stand_in(t.shape + (classes,), logits_dtype),
            t,
            w,
            ignore_index,
            "sum",
            0.0,
            1.0,
            1.0,
            mask,
        )
    except ValueError as exc:
        raise _global_message(exc, _block_start(block_info, t.ndim)) from None
    labels = args.target[args.target != ignore_index]
    weights = np.cumsum(args.weight[labels], dtype=np.float64)
    return _partial_array(weights[-1] if weights.size else 0.0, t.ndim)


def _mean_inverse(
    x: da.Array,
    dims: int,
    t_arr: da.Array | None,
    w_arr: Any,
    m_arr: Any,
    classes: int,
    dtype: np.dtype,
    ignore_index: int,
) -> Any:
    """1 / the global "mean" denominator of a cross-entropy over the rows of ``x`` (its first
    ``dims`` axes): the weighted count of class-index targets ``t_arr`` (a trailing axis of 1)
    summed over the blocks in one task, lazily; the number of rows for probability targets
    (``t_arr`` None)."""
    if t_arr is None:
        rows = _count(x.shape[:dims])
        return np.float64(1.0 / rows if rows else math.nan)
    parts = da.map_blocks(
        _denominator_block,
        t_arr,
        w_arr,
        m_arr,
        classes=classes,
        logits_dtype=dtype,
        ignore_index=ignore_index,
        drop_axis=dims,
        dtype=np.float64,
        chunks=_partials_chunks(x, dims),
        meta=np.empty((0,) * dims, np.float64),
    )
    return _total(parts).map_blocks(_inverse, dtype=np.float64)


def _ce_checks(
    logits: Any,
    target: Any,
    weight: Any,
    ignore_index: Any,
    reduction: str,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
    softcap: Any,
    grad_output: Any,
    where: Any,
) -> tuple[bool, Any, np.dtype]:
    """The NumPy checks of a cross-entropy call that the graph can make before any block is
    read; returns (class-index target?, grad_output as a float or array, result dtype)."""
    z, t = _meta(logits), _meta(target)
    if z.ndim == 0:  # the NumPy checks give the error
        v.cross_entropy_args(
            z, t, None, ignore_index, reduction, label_smoothing, temperature, 1.0, None
        )
    batch, classes = z.shape[:-1], z.shape[-1]
    index = t.dtype.kind in "iu"
    if t.dtype.kind not in "iuf" or t.shape != (batch if index else z.shape):
        v.check_target(t, z.shape, 0, z.dtype)  # raises the NumPy error
    if isinstance(weight, da.Array) and weight.shape != (classes,):
        v.check_weight(_meta(weight), classes, z.dtype)  # raises the NumPy error
    g = _grad_output(grad_output, reduction, batch)
    if where is not None:
        _check_where(where, z.shape, z.ndim - 1)
    # the other checks (dtypes, options, NumPy weight values) on a one-row probe of each argument
    probe_w = weight if not isinstance(weight, da.Array) else _probe(weight, (0,))
    probe_m = None if where is None else np.ones(_probe(where, (np.ndim(where) - 1,)).shape, bool)
    _, probe = _ce_run(
        _probe(z, (z.ndim - 1,)),
        _probe(t, () if index else (t.ndim - 1,)),
        probe_w,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        g if isinstance(g, float) else _probe(g),
        True,
        None,
        probe_m,
    )
    if index and not isinstance(target, da.Array):  # NumPy labels: checked whole now, as NumPy
        v.check_target(t, z.shape, ignore_index, probe.dtype)
    return index, g, probe.dtype


def _ce_graph(
    logits: Any,
    target: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
    softcap: Any,
    grad_output: Any,
    out: Any,
    where: Any,
    want_loss: bool,
    want_grad: bool,
) -> tuple[Any, Any]:
    """The lazy cross-entropy: (loss or None, gradient or None)."""
    reduction = v.check_reduction(reduction)
    index, g, dtype = _ce_checks(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        grad_output,
        where,
    )
    if want_grad:
        _no_out(out)
    x = _main(logits, np.ndim(logits) - 1)
    classes = x.shape[-1]
    row_chunks = x.chunks[:-1]
    rows_shape = x.shape[:-1]  # NaN where dask does not know a length
    if index:
        t_arr = _aligned(target, rows_shape, row_chunks)[..., None]
    else:
        t_arr = _aligned(target, x.shape, x.chunks)
    w_arr = None
    if weight is not None:  # one key in the graph (a constant would be copied into every task)
        w = (
            weight
            if isinstance(weight, da.Array)
            else da.from_array(v.check_weight(weight, classes, dtype))
        )
        w_arr = w.rechunk(-1).reshape((1,) * (x.ndim - 1) + (classes,))
    m_arr = None if where is None else _aligned(where, x.shape, x.chunks)
    g_arr = g if isinstance(g, float) else _aligned(g, rows_shape, row_chunks)[..., None]

    inverse = None
    if reduction == "mean":
        inverse = _mean_inverse(
            x, x.ndim - 1, t_arr if index else None, w_arr, m_arr, classes, x.dtype, ignore_index
        )
    inv_arr = None
    if want_grad and reduction == "mean":
        inv_arr = inverse.reshape((1,) * x.ndim) if isinstance(inverse, da.Array) else inverse

    kwargs = dict(
        index=index,
        options=dict(
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            temperature=temperature,
            z_loss=z_loss,
            softcap=softcap,
        ),
        reduction=reduction,
        want_loss=want_loss,
        want_grad=want_grad,
    )
    args = (x, t_arr, w_arr, m_arr, g_arr, inv_arr)
    reduced = reduction != "none"
    loss_chunks = _partials_chunks(x, x.ndim - 1) if reduced else row_chunks
    loss_dtype = np.dtype(np.float64) if reduced else dtype
    loss = grad = None
    if want_loss and want_grad:
        pairs = da.map_blocks(
            _ce_block,
            *args,
            **kwargs,
            drop_axis=x.ndim - 1,
            chunks=loss_chunks,
            dtype=object,
            meta=np.empty((0,) * (x.ndim - 1), object),
        )
        loss = pairs.map_blocks(
            operator.itemgetter(0), dtype=loss_dtype, meta=np.empty((0,) * (x.ndim - 1), loss_dtype)
        )
        grad = pairs.map_blocks(
            operator.itemgetter(1),
            new_axis=x.ndim - 1,
            chunks=x.chunks,
            dtype=dtype,
            meta=np.empty((0,) * x.ndim, dtype),
        )
    elif want_loss:
        loss = da.map_blocks(
            _ce_block,
            *args,
            **kwargs,
            drop_axis=x.ndim - 1,
            chunks=loss_chunks,
            dtype=loss_dtype,
            meta=np.empty((0,) * (x.ndim - 1), loss_dtype),
        )
    else:
        grad = da.map_blocks(_ce_block, *args, **kwargs, dtype=dtype)
    if loss is not None and reduced:
        loss = _reduced(loss, reduction, inverse, dtype, divide=False)
    return loss, grad


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    where: Any = None,
) -> da.Array:
    """Lazy :func:`fastsoftmax.cross_entropy` (a 0-d dask array for "mean"/"sum")."""
    # locals() is the parameters and nothing else at this point: they go on by name
    return _ce_graph(**locals(), grad_output=1.0, out=None, want_loss=True, want_grad=False)[0]


def cross_entropy_backward(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    grad_output: Any = 1.0,
    out: Any = None,
    where: Any = None,
) -> da.Array:
    """Lazy :func:`fastsoftmax.cross_entropy_backward`."""
    return _ce_graph(**locals(), want_loss=False, want_grad=True)[1]


def cross_entropy_with_grad(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    out: Any = None,
    where: Any = None,
) -> tuple[da.Array, da.Array]:
    """Lazy :func:`fastsoftmax.cross_entropy_with_grad`: (loss, gradient), one pass per block."""
    return _ce_graph(**locals(), grad_output=1.0, want_loss=True, want_grad=True)


# --------------------------------------------------------------------------- selective log-softmax


_AT = re.compile(r" at \(([\d, ]*)\) is out of range")


def _shifted(exc: ValueError, start: tuple[int, ...]) -> ValueError:
    """A block's ``index value v at (i, k) is out of range`` counted in the whole array (the
    axis of K selected classes is never split: its coordinate stays)."""

    def shift(m: re.Match) -> str:
        local = [int(i) for i in m.group(1).replace(" ", "").split(",") if i]
        offsets = list(start) + [0] * (len(local) - len(start))
        return f" at {tuple(i + s for i, s in zip(local, offsets, strict=True))} is out of range"

    return ValueError(_AT.sub(shift, str(exc)))


def _selective_block(
    z: np.ndarray,
    idx: np.ndarray,
    g: Any,
    *,
    temperature: Any,
    vjp: bool,
    per_row: bool,
    block_info: dict | None = None,
) -> np.ndarray:
    """One block of rows through the NumPy selective log-softmax or its VJP. Blocks are laid out
    as logits ``(rows..., C, 1)`` and index and cotangent ``(rows..., 1, K)`` (``(rows..., 1, 1)``
    for one class per row), so that C and K are separate axes."""
    z = z[..., 0]
    idx = idx[..., 0, 0] if per_row else idx[..., 0, :]
    try:
        if vjp:
            g = g[..., 0, 0] if per_row else g[..., 0, :]
            return _selective_log_softmax_vjp(z, idx, g, temperature=temperature)[..., None]
        result = _selective_log_softmax(z, idx, temperature=temperature)
    except ValueError as exc:
        raise _shifted(exc, _block_start(block_info, z.ndim - 1)) from None
    return result[..., None, None] if per_row else result[..., None, :]


def _selective_graph(
    logits: Any, index: Any, cotangent: Any, temperature: Any, out: Any, vjp: bool
) -> da.Array:
    """The lazy selective log-softmax (``vjp`` False) or its VJP."""
    z = _meta(logits)
    i = None if index is None else _meta(index)
    dims = z.ndim - 1
    # the NumPy checks in the NumPy order: dtypes, dimensions, classes, temperature and the
    # index dtype on one-row probes; then the shapes, the cotangent, NumPy index values
    k_axis = i is not None and i.ndim == dims + 1
    probe_z = _probe(logits, (dims,))
    probe_i = (
        None if i is None else np.zeros((1,) * max(dims, 0) + i.shape[dims:] * k_axis, i.dtype)
    )
    dtype = _selective_log_softmax(probe_z, probe_i, temperature=temperature).dtype
    if not (i.ndim in (dims, dims + 1) and _same(i.shape[:dims], z.shape[:dims])):
        v.check_class_index(i, z.shape)  # raises the NumPy error
    if vjp:
        c = None if cotangent is None else _meta(cotangent)
        v.as_float_array(None if c is None else _probe(cotangent), "cotangent")
        if not _same(c.shape, i.shape):
            raise ValueError(
                f"cotangent has shape {c.shape}; it must match index's shape {i.shape}"
            )
        _no_out(out)
    if not isinstance(index, da.Array):  # NumPy indices: checked whole now, as NumPy
        v.check_class_index(index, z.shape)

    x = _main(logits, dims)
    rows_shape, row_chunks = x.shape[:-1], x.chunks[:-1]
    k = i.shape[-1] if k_axis else 1

    def layout(a: Any) -> da.Array:  # index or cotangent as (rows..., 1, K)
        if not k_axis:
            return _aligned(a, rows_shape, row_chunks)[..., None, None]
        return _aligned(a, rows_shape + (k,), row_chunks + ((k,),))[..., None, :]

    args = (x[..., None], layout(index), layout(cotangent) if vjp else None)
    kwargs = dict(
        temperature=temperature,
        vjp=vjp,
        per_row=not k_axis,
        dtype=dtype,
        meta=np.empty((0,) * (dims + 2), dtype),
    )
    if vjp:
        return da.map_blocks(_selective_block, *args, **kwargs, chunks=x.chunks + ((1,),))[..., 0]
    lazy = da.map_blocks(_selective_block, *args, **kwargs, chunks=row_chunks + ((1,), (k,)))
    return lazy[..., 0, :] if k_axis else lazy[..., 0, 0]


def selective_log_softmax(logits: Any, index: Any, *, temperature: float = 1.0) -> da.Array:
    """Lazy :func:`fastsoftmax.selective_log_softmax`, over blocks of whole rows (bit for bit)."""
    return _selective_graph(logits, index, None, temperature, None, False)


def selective_log_softmax_vjp(
    logits: Any, index: Any, cotangent: Any, *, temperature: float = 1.0, out: Any = None
) -> da.Array:
    """Lazy :func:`fastsoftmax.selective_log_softmax_vjp`, over blocks of whole rows (bit for
    bit)."""
    return _selective_graph(logits, index, cotangent, temperature, out, True)


# --------------------------------------------------------------------------- linear cross-entropy


def _linear_block(
    x: np.ndarray,
    t: np.ndarray,
    w_lin: np.ndarray,
    b: Any,
    w: Any,
    inv: Any,
    *,
    index: bool,
    options: dict,
    reduction: str,
    want_grad: bool,
    block_info: dict | None = None,
) -> Any:
    """One block of rows through the NumPy linear cross-entropy with reduction "sum" (or
    "none"): its loss (per row, or the partial sum) or the tuple (loss, dx, dW, db), the
    gradients scaled by the global "mean" factor ``inv``. Blocks are laid out as x
    ``(rows..., 1, H)``, target ``(rows..., 1, 1)`` or ``(rows..., C, 1)``, linear_weight
    ``(1..., C, H)``, linear_bias and weight ``(1..., C, 1)``."""
    dims = x.ndim - 2
    x = x[..., 0, :]
    t = t[..., 0, 0] if index else t[..., 0]
    w_lin = w_lin.reshape(w_lin.shape[-2:])
    b = None if b is None else b.reshape(-1)
    w = None if w is None else w.reshape(-1)
    kwargs = dict(
        linear_bias=b, weight=w, reduction="none" if reduction == "none" else "sum", **options
    )
    try:
        if not want_grad:
            loss = _linear_cross_entropy(x, w_lin, t, **kwargs)
        else:
            loss, dx, dw, db = _linear_cross_entropy_with_grad(x, w_lin, t, **kwargs)
    except ValueError as exc:
        raise _global_message(exc, _block_start(block_info, dims)) from None
    if reduction != "none":
        loss = _partial_array(loss, dims)
    if not want_grad:
        return loss
    scale = None if inv is None else _scalar(inv)  # "mean": the NumPy call's coefficient
    if scale is not None and not math.isnan(scale):
        np.multiply(dx, scale, out=dx, dtype=np.float64, casting="unsafe")
    elif scale is not None:  # denominator 0: NaN where the kernel scales (all but ignored rows)
        live = t != options["ignore_index"] if index else np.ones(x.shape[:-1], bool)
        dx[live] = np.nan
        if np.any(live):  # NaN in every entry of the sums over rows, as in the NumPy call
            dw[...] = np.nan
            if db is not None:
                db[...] = np.nan
    return loss, dx, dw, db


def _grads_start(block: tuple) -> tuple[np.ndarray, Any]:
    """The first block's (dW, db), db in float64 (as the NumPy call accumulates it)."""
    return block[2], None if block[3] is None else block[3].astype(np.float64)


def _grads_add(acc: tuple, block: tuple) -> tuple[np.ndarray, Any]:
    """(dW, db) plus the next block's (new arrays: a task never changes its inputs)."""
    return acc[0] + block[2], None if acc[1] is None else acc[1] + block[3]


def _grads_final(acc: tuple, inv: Any, dtype: np.dtype) -> tuple[np.ndarray, Any]:
    """(dW, db) times the "mean" factor (in float64, rounded once) in the result dtype."""
    dw, db = acc
    if inv is not None and not math.isnan(_scalar(inv)):  # NaN: set by the blocks
        dw = np.multiply(
            dw, _scalar(inv), out=np.empty_like(dw), dtype=np.float64, casting="unsafe"
        )
        db = None if db is None else db * _scalar(inv)
    return dw, None if db is None else db.astype(dtype)


def _linear_checks(
    x: Any,
    linear_weight: Any,
    target: Any,
    linear_bias: Any,
    weight: Any,
    ignore_index: Any,
    reduction: str,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
    softcap: Any,
    chunk_size: Any,
) -> tuple[bool, np.dtype]:
    """The NumPy checks of a linear cross-entropy call that the graph can make before any block
    is read; returns (class-index target?, result dtype)."""
    xm, wm, bm, tm = (
        None if a is None else _meta(a) for a in (x, linear_weight, linear_bias, target)
    )
    if xm is None or wm is None:
        v.check_linear(xm, wm, bm)  # raises the NumPy error
    names = ("x", "linear_weight", "linear_bias")
    dtype = v.common_dtype(*(m for m in (xm, wm, bm) if m is not None), names=names)
    # the shapes, on stand-ins of the common dtype (no copies)
    v.check_linear(*(None if m is None else _stand_in(m.shape, dtype) for m in (xm, wm, bm)))
    classes = wm.shape[0]
    batch = xm.shape[:-1]
    index = tm is not None and tm.dtype.kind in "iu"
    if (
        tm is None
        or tm.dtype.kind not in "iuf"
        or not _same(tm.shape, batch if index else batch + (classes,))
    ):
        v.check_target(tm, batch + (classes,), 0, dtype)  # raises the NumPy error
    if isinstance(weight, da.Array) and weight.shape != (classes,):
        v.check_weight(_meta(weight), classes, dtype)  # raises the NumPy error
    if weight is not None and not isinstance(weight, da.Array):
        v.check_weight(weight, classes, dtype)  # NumPy weights: checked whole now
    # the other checks (dtypes, options) on a one-row, one-class, one-feature probe
    rows = (1,) * len(batch)
    probe_t = np.zeros(rows if index else rows + (1,), tm.dtype)
    probe_w = None if weight is None else np.zeros(1, _meta(weight).dtype)
    probe_b = None if bm is None else np.zeros(1, bm.dtype)
    _, dx, _, _ = _linear_cross_entropy_with_grad(
        np.zeros(rows + (1,), xm.dtype),
        np.zeros((1, 1), wm.dtype),
        probe_t,
        linear_bias=probe_b,
        weight=probe_w,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
    )
    if index and not isinstance(target, da.Array):  # NumPy labels: checked whole now, as NumPy
        v.check_target(target, batch + (classes,), ignore_index, dx.dtype)
    return index, dx.dtype


def _whole(a: Any, dims: int, trailing: int) -> da.Array:
    """A class-sized argument (linear_weight, linear_bias, weight) as one dask chunk, one key
    in the graph however many blocks read it (a NumPy constant would be copied into every
    task), with ``dims`` leading axes of length 1 and ``trailing`` ones after it."""
    a = a if isinstance(a, da.Array) else da.from_array(np.asarray(a))
    a = a.rechunk(-1) if a.npartitions > 1 else a
    return a[(None,) * dims + (Ellipsis,) + (None,) * trailing]


def _linear_graph(
    x: Any,
    linear_weight: Any,
    target: Any,
    linear_bias: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    temperature: Any,
    z_loss: Any,
    softcap: Any,
    chunk_size: Any,
    want_grad: bool,
) -> Any:
    """The lazy linear cross-entropy: the loss, or (loss, dx, dW, db)."""
    reduction = v.check_reduction(reduction)
    index, dtype = _linear_checks(
        x,
        linear_weight,
        target,
        linear_bias,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        z_loss,
        softcap,
        chunk_size,
    )
    if not isinstance(x, da.Array):
        x = np.asarray(x)
        x = da.from_array(x, chunks={x.ndim - 1: -1})
    x = _whole_axis(x, x.ndim - 1, "feature axis")
    dims = x.ndim - 1
    classes, features = np.shape(_meta(linear_weight))
    rows_shape, row_chunks = x.shape[:-1], x.chunks[:-1]
    if index:
        t_rows = _aligned(target, rows_shape, row_chunks)
        t_arr = t_rows[..., None, None]
    else:
        t_arr = _aligned(target, rows_shape + (classes,), row_chunks + ((classes,),))[..., None]
    w_lin = _whole(linear_weight, dims, 0)
    b_arr = None if linear_bias is None else _whole(linear_bias, dims, 1)
    w_arr = None if weight is None else _whole(weight, dims, 1)

    inverse = None
    if reduction == "mean":
        inverse = _mean_inverse(
            x,
            dims,
            t_rows[..., None] if index else None,
            None if w_arr is None else w_arr[..., 0],
            None,
            classes,
            dtype,
            ignore_index,
        )
    inv_arr = None
    if want_grad and reduction == "mean":
        inv_arr = inverse.reshape((1,) * (dims + 2)) if isinstance(inverse, da.Array) else inverse

    options = dict(
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        temperature=temperature,
        z_loss=z_loss,
        softcap=softcap,
        chunk_size=chunk_size,
    )
    reduced = reduction != "none"
    loss_chunks = _partials_chunks(x, dims) if reduced else row_chunks
    loss_dtype = np.dtype(np.float64) if reduced else dtype
    args = (x[..., None, :], t_arr, w_lin, b_arr, w_arr, inv_arr)
    kwargs = dict(
        index=index,
        options=options,
        reduction=reduction,
        want_grad=want_grad,
        drop_axis=(dims, dims + 1),
        chunks=loss_chunks,
    )
    if not want_grad:
        loss = da.map_blocks(
            _linear_block, *args, **kwargs, dtype=loss_dtype, meta=np.empty((0,) * dims, loss_dtype)
        )
        return _reduced(loss, reduction, inverse, dtype, divide=False) if reduced else loss
    parts = da.map_blocks(
        _linear_block, *args, **kwargs, dtype=object, meta=np.empty((0,) * dims, object)
    )
    loss = parts.map_blocks(
        operator.itemgetter(0), dtype=loss_dtype, meta=np.empty((0,) * dims, loss_dtype)
    )
    if reduced:
        loss = _reduced(loss, reduction, inverse, dtype, divide=False)
    dx = parts.map_blocks(
        operator.itemgetter(1),
        new_axis=dims,
        chunks=x.chunks,
        dtype=dtype,
        meta=np.empty((0,) * x.ndim, dtype),
    )
    # dW and db: the blocks' gradients added in block order (C order over the blocks), one task
    # after the other: the sums do not depend on the scheduler or the number of workers
    blocks = parts.to_delayed(optimize_graph=False).ravel()
    acc = dask.delayed(_grads_start, pure=True)(blocks[0])
    for block in blocks[1:]:
        acc = dask.delayed(_grads_add, pure=True)(acc, block)
    grads = dask.delayed(_grads_final, pure=True, nout=2)(acc, inverse, dtype)
    dw = da.from_delayed(grads[0], (classes, features), dtype=dtype, meta=np.empty((0, 0), dtype))
    db = None
    if linear_bias is not None:
        db = da.from_delayed(grads[1], (classes,), dtype=dtype, meta=np.empty((0,), dtype))
    return loss, dx, dw, db


def linear_cross_entropy(
    x: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    chunk_size: Any = None,
) -> da.Array:
    """Lazy :func:`fastsoftmax.linear_cross_entropy` (a 0-d dask array for "mean"/"sum").

    x is split into blocks of whole rows (a split feature axis is rechunked, with a
    ``PerformanceWarning``); linear_weight, linear_bias and weight go whole to every block (one
    graph key each). Each block is one NumPy call with reduction "sum" ("none": per-row losses);
    the partial sums are added with ``math.fsum`` in one task and "mean" divides by the global
    denominator, as for :func:`cross_entropy`. The partials are the blocks' NumPy "sum" in the
    result dtype (float16 inputs: rounded to float16 per block, where the NumPy call rounds
    once). ``chunk_size`` applies within each block.
    """
    return _linear_graph(**locals(), want_grad=False)


def linear_cross_entropy_with_grad(
    x: Any,
    linear_weight: Any,
    target: Any,
    *,
    linear_bias: Any = None,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    temperature: float = 1.0,
    z_loss: float = 0.0,
    softcap: Any = None,
    chunk_size: Any = None,
) -> tuple[Any, ...]:
    """Lazy :func:`fastsoftmax.linear_cross_entropy_with_grad`: ``(loss, dx, dlinear_weight,
    dlinear_bias)`` as dask arrays (``dlinear_bias`` None without a bias), one NumPy call per
    block of rows for all four.

    - loss: as in :func:`linear_cross_entropy`.
    - dx: per block, rows of the NumPy call's dx. With "sum" and "none" each row's gradient
      through the logits is the NumPy call's; with "mean" the block's "sum" dx is multiplied by
      1 / (global denominator) in float64 and rounded once, where the NumPy call scales the
      logits' gradient before ``g @ W``: a few ulps apart. As in the NumPy call itself, the BLAS
      may round the logits and dx differently for another number of rows.
    - dlinear_weight, dlinear_bias: the sums of the blocks' gradients, added in block order (C
      order over the blocks of rows) one task after another, then scaled for "mean" in float64.
      The order is fixed by the chunks, never by the scheduler or the number of workers; the
      results equal the NumPy call's up to the rounding of that sum order (the NumPy call adds
      its own chunks of rows in its own order: see :mod:`fastsoftmax.linear` for the bound).
      dW is added in the result dtype, as the NumPy call adds its chunks; db in float64.

    One dW per block is held until it is added, and two (C, H) arrays per addition.
    """
    return _linear_graph(**locals(), want_grad=True)


# --------------------------------------------------------------------------- binary family


def sigmoid(x: Any, *, out: Any = None) -> da.Array:
    """Lazy :func:`fastsoftmax.sigmoid`, over blocks of any shape."""
    x = _main(x, None)
    _no_out(out)
    return x.map_blocks(_sigmoid, dtype=_sigmoid(_probe(x)).dtype)


def log_sigmoid(x: Any, *, out: Any = None) -> da.Array:
    """Lazy :func:`fastsoftmax.log_sigmoid`, over blocks of any shape."""
    x = _main(x, None)
    _no_out(out)
    return x.map_blocks(_log_sigmoid, dtype=_log_sigmoid(_probe(x)).dtype)


def _bce_block(
    z: np.ndarray,
    t: np.ndarray,
    w: Any,
    pw: Any,
    g: Any,
    *,
    reduction: str,
    want_loss: bool,
    want_grad: bool,
) -> Any:
    """One block through the NumPy binary cross-entropy: its loss (elementwise for "none",
    else the float64 partial sum) and/or its gradient."""
    loss, grad = _bce_run(
        _widened(z, reduction),
        t,
        w,
        pw,
        "none" if reduction == "none" else "sum",
        g,
        want_loss,
        want_grad,
        None,
    )
    grad = _rounded(grad, z)
    if want_loss and reduction != "none":
        loss = _partial_array(loss, z.ndim)
    if want_loss and want_grad:
        return loss, grad
    return loss if want_loss else grad


def _bce_graph(
    logits: Any,
    target: Any,
    weight: Any,
    pos_weight: Any,
    reduction: Any,
    grad_output: Any,
    out: Any,
    want_loss: bool,
    want_grad: bool,
) -> tuple[Any, Any]:
    """The lazy binary cross-entropy: (loss or None, gradient or None)."""
    z, t = _meta(logits), _meta(target)
    dtype = v.compute_dtype(z.dtype, "logits")
    reduction = v.check_reduction(reduction)
    if t.shape != z.shape:
        check_binary_target(t, z.shape, dtype)  # raises the NumPy error
    for name, w in (("weight", weight), ("pos_weight", pos_weight)):
        if w is not None:
            _check_broadcast(
                w, z.shape, lambda m, n=name: check_broadcast_weight(m, n, z.shape, dtype)
            )
    g = _grad_output(grad_output, reduction, z.shape)
    if want_grad:
        _no_out(out)
    # the other checks (dtypes, options) on a one-element probe of each argument
    probes = [None if w is None else _probe(w) for w in (weight, pos_weight)]
    _, probe = _bce_run(
        _probe(z),
        _probe(t),
        *probes,
        reduction,
        g if isinstance(g, float) else _probe(g),
        True,
        True,
        None,
    )
    dtype = probe.dtype
    # NumPy weights are checked whole now (dask ones block by block at compute time)
    for name, w in (("weight", weight), ("pos_weight", pos_weight)):
        if w is not None and not isinstance(w, da.Array):
            check_broadcast_weight(w, name, z.shape, dtype)

    x = _main(logits, None)
    n = _count(x.shape) if reduction == "mean" else 0
    if want_grad and reduction == "mean":  # NumPy's per-element coefficient: (1 / n) * g
        inverse = 1.0 / n if n else math.nan
        g = inverse * g if isinstance(g, float) else inverse * g.astype(np.float64)
    if not isinstance(g, float):
        g = _aligned(g, x.shape, x.chunks)
    args = [x, _aligned(target, x.shape, x.chunks)]
    args += [None if w is None else _aligned(w, x.shape, x.chunks) for w in (weight, pos_weight)]
    kwargs = dict(reduction=reduction, want_loss=want_loss, want_grad=want_grad)
    reduced = reduction != "none"
    loss_chunks = _partials_chunks(x, x.ndim) if reduced else x.chunks
    loss_dtype = np.dtype(np.float64) if reduced else dtype
    loss = grad = None
    if want_loss and want_grad:
        pairs = da.map_blocks(
            _bce_block,
            *args,
            g,
            **kwargs,
            chunks=loss_chunks,
            dtype=object,
            meta=np.empty((0,) * x.ndim, object),
        )
        loss = pairs.map_blocks(
            operator.itemgetter(0), dtype=loss_dtype, meta=np.empty((0,) * x.ndim, loss_dtype)
        )
        grad = pairs.map_blocks(
            operator.itemgetter(1),
            chunks=x.chunks,
            dtype=dtype,
            meta=np.empty((0,) * x.ndim, dtype),
        )
    elif want_loss:
        loss = da.map_blocks(_bce_block, *args, g, **kwargs, chunks=loss_chunks, dtype=loss_dtype)
    else:
        grad = da.map_blocks(_bce_block, *args, g, **kwargs, dtype=dtype)
    if loss is not None and reduced:
        loss = _reduced(loss, reduction, n if n else math.nan, dtype, divide=True)
    return loss, grad


def binary_cross_entropy_with_logits(
    logits: Any, target: Any, *, weight: Any = None, pos_weight: Any = None, reduction: str = "mean"
) -> da.Array:
    """Lazy :func:`fastsoftmax.binary_cross_entropy_with_logits`."""
    return _bce_graph(logits, target, weight, pos_weight, reduction, 1.0, None, True, False)[0]


def binary_cross_entropy_with_logits_backward(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    reduction: str = "mean",
    grad_output: Any = 1.0,
    out: Any = None,
) -> da.Array:
    """Lazy :func:`fastsoftmax.binary_cross_entropy_with_logits_backward`."""
    return _bce_graph(logits, target, weight, pos_weight, reduction, grad_output, out, False, True)[
        1
    ]


def binary_cross_entropy_with_logits_with_grad(
    logits: Any,
    target: Any,
    *,
    weight: Any = None,
    pos_weight: Any = None,
    reduction: str = "mean",
    out: Any = None,
) -> tuple[da.Array, da.Array]:
    """Lazy :func:`fastsoftmax.binary_cross_entropy_with_logits_with_grad`."""
    return _bce_graph(logits, target, weight, pos_weight, reduction, 1.0, out, True, True)
