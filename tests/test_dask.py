"""Dask arrays through every public function: lazy dask results equal to the NumPy call on the
same data, bit for bit for everything computed row by row (softmax family, derivatives, per-row
losses, gradients, selective log-softmax) and to the rounding of the summation order for
"sum"/"mean" losses and the linear cross-entropy's weight gradients (its per-row results to the
BLAS's rounding for another number of rows). On the
threaded scheduler for every chunk layout, and on a 2-process ``distributed.LocalCluster`` whose
workers start from an empty numba cache."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest
from conftest import index_target, needs_jit, prob_target, random_logits

import fastsoftmax as fs

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")
from dask.array.core import PerformanceWarning  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS, C = 23, 7
LAYOUTS = {  # row chunks of a (ROWS, C) array
    "one_chunk": (ROWS,),
    "uneven": (10, 1, 12),
    "single_rows": (1,) * ROWS,
}
SUM_RTOL = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 4e-7, np.dtype(np.float64): 1e-15}
GRAD_RTOL = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12}


@pytest.fixture(autouse=True)
def threaded():
    with dask.config.set(scheduler="threads"):
        yield


def make_cases(dtype, seed: int = 0) -> dict[str, tuple]:
    """name -> (function, args, kwargs, reduced): the same data for the NumPy and dask calls."""
    rng = np.random.default_rng(seed)
    x = random_logits((ROWS, C), dtype, rng)
    p = fs.softmax(x)
    logp = fs.log_softmax(x)
    v = rng.standard_normal((ROWS, C)).astype(dtype)
    t = index_target((ROWS, C), rng)
    t[[3, 11]] = -100
    w = (rng.random(C) + 0.25).astype(dtype)
    dyadic = np.array([0.5, 2.0, 1.0, 0.25, 1.5, 3.0, 0.75], dtype)
    mask = rng.random((ROWS, C)) < 0.7
    mask[np.arange(ROWS), np.where(t >= 0, t, 0)] = True  # the target class is always kept
    mask[5] = False  # a row masked entirely (ignored)
    pt = prob_target((ROWS, C), dtype, rng)
    y = (rng.random((ROWS, C)) < 0.4).astype(dtype)
    g_rows = rng.random(ROWS)
    g_elems = rng.random((ROWS, C)).astype(dtype)
    cases = {
        "softmax": (fs.softmax, (x,), {}, False),
        "softmax_where_T": (fs.softmax, (x,), dict(temperature=1.7, where=mask), False),
        "softmax_where_row_mask": (fs.softmax, (x,), dict(where=mask[:, :1]), False),
        "log_softmax": (fs.log_softmax, (x,), dict(where=mask), False),
        "logsumexp": (fs.logsumexp, (x,), {}, False),
        "logsumexp_keepdims": (fs.logsumexp, (x,), dict(keepdims=True), False),
        "softmax_jacobian": (fs.softmax_jacobian, (p,), {}, False),
        "softmax_jvp": (fs.softmax_jvp, (p, v), dict(temperature=0.5), False),
        "softmax_vjp": (fs.softmax_vjp, (p, v), {}, False),
        "log_softmax_vjp": (fs.log_softmax_vjp, (logp, v), {}, False),
        "sigmoid": (fs.sigmoid, (x,), {}, False),
        "log_sigmoid": (fs.log_sigmoid, (x,), {}, False),
    }
    ce = dict(weight=w, label_smoothing=0.1, temperature=1.3)
    for red in ("none", "sum", "mean"):
        reduced = red != "none"
        cases[f"ce_{red}"] = (fs.cross_entropy, (x, t), dict(reduction=red), reduced)
        cases[f"ce_{red}_weighted"] = (fs.cross_entropy, (x, t), dict(reduction=red, **ce), reduced)
        cases[f"ce_{red}_where"] = (
            fs.cross_entropy,
            (x, t),
            dict(reduction=red, where=mask),
            reduced,
        )
        cases[f"ce_{red}_probs"] = (
            fs.cross_entropy,
            (x, pt),
            dict(reduction=red, weight=w),
            reduced,
        )
        # random class weights: the "mean" denominator is a float64 sum whose order the compiled
        # kernel chooses (vectorized), so the gradients match to rounding
        close = "close" if red == "mean" else False
        cases[f"ce_backward_{red}"] = (
            fs.cross_entropy_backward,
            (x, t),
            dict(reduction=red, **ce),
            close,
        )
        cases[f"ce_backward_{red}_grad_output"] = (
            fs.cross_entropy_backward,
            (x, t),
            dict(reduction=red, grad_output=0.3, label_smoothing=0.1, temperature=1.3),
            False,
        )
        cases[f"ce_with_grad_{red}"] = (
            fs.cross_entropy_with_grad,
            (x, t),
            dict(reduction=red, where=mask, **ce),
            close or reduced,
        )
        # weights whose sums are exact: the gradients are bit-identical for every reduction
        cases[f"ce_with_grad_{red}_dyadic_weights"] = (
            fs.cross_entropy_with_grad,
            (x, np.where(t < 0, 2, t)),
            dict(reduction=red, weight=dyadic, ignore_index=2, temperature=0.8),
            reduced,
        )
        cases[f"ce_with_grad_{red}_probs"] = (
            fs.cross_entropy_with_grad,
            (x, pt),
            dict(reduction=red),
            reduced,
        )
        cases[f"bce_{red}"] = (
            fs.binary_cross_entropy_with_logits,
            (x, y),
            dict(reduction=red, weight=w, pos_weight=w[::-1].copy()),
            reduced,
        )
        cases[f"bce_backward_{red}"] = (
            fs.binary_cross_entropy_with_logits_backward,
            (x, y),
            dict(reduction=red, grad_output=0.7, weight=mask),
            False,
        )
        cases[f"bce_with_grad_{red}"] = (
            fs.binary_cross_entropy_with_logits_with_grad,
            (x, y),
            dict(reduction=red, pos_weight=w),
            reduced,
        )
    cases["ce_backward_none_grad_rows"] = (
        fs.cross_entropy_backward,
        (x, t),
        dict(reduction="none", grad_output=g_rows),
        False,
    )
    cases["bce_backward_none_grad_elems"] = (
        fs.binary_cross_entropy_with_logits_backward,
        (x, y),
        dict(reduction="none", grad_output=g_elems),
        False,
    )
    return cases


CASE_NAMES = list(make_cases(np.float32))


def to_dask(a, row_chunks, all_arrays: bool = False):
    """Row-shaped arrays as dask arrays with ``row_chunks`` (others, e.g. class weights, too when
    ``all_arrays``: then in chunks of 3)."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return a
    if a.shape[0] == ROWS:
        return da.from_array(a, chunks=(row_chunks,) + tuple((s,) for s in a.shape[1:]))
    return da.from_array(a, chunks=3) if all_arrays else a


def dask_call(fn, args, kwargs, row_chunks, all_arrays=False, which=None):
    """``fn`` with its arguments made dask arrays (all, or the positions/keys in ``which``)."""

    def conv(key, a):
        return to_dask(a, row_chunks, all_arrays) if which is None or key in which else a

    d_args = tuple(conv(i, a) for i, a in enumerate(args))
    d_kwargs = {k: conv(k, a) for k, a in kwargs.items()}
    return fn(*d_args, **d_kwargs)


def as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


def assert_close(got, expected, reduced, first: bool) -> None:
    """Bit for bit, but the reduced loss when ``reduced`` is True, everything when "close"."""
    if reduced == "close" or reduced is True and first and expected.ndim == 0:
        rtol = (SUM_RTOL if expected.ndim == 0 else GRAD_RTOL)[expected.dtype]
        scale = np.max(np.abs(expected), initial=0.0)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 1e-3 * scale)
    else:
        np.testing.assert_array_equal(got, expected)


def check_same(lazy, expected, reduced):
    """Computed dask results against the NumPy results: dtype, shape and values."""
    lazy, expected = as_tuple(lazy), as_tuple(expected)
    assert all(isinstance(r, da.Array) for r in lazy)
    got = dask.compute(*lazy)
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        e = np.asarray(e)
        assert g.dtype == e.dtype and g.shape == e.shape
        assert_close(g, e, reduced, i == 0)
    return got


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", CASE_NAMES)
def test_matches_numpy(name, layout, dtype):
    fn, args, kwargs, reduced = make_cases(dtype)[name]
    check_same(dask_call(fn, args, kwargs, LAYOUTS[layout]), fn(*args, **kwargs), reduced)


@pytest.mark.parametrize(
    "name", [n for n in CASE_NAMES if n.startswith(("ce_", "bce_", "softmax"))]
)
def test_mixed_numpy_and_dask_arguments(name):
    fn, args, kwargs, reduced = make_cases(np.float32, seed=1)[name]
    expected = fn(*args, **kwargs)
    # every array a dask array, class weights included
    check_same(dask_call(fn, args, kwargs, LAYOUTS["uneven"], all_arrays=True), expected, reduced)
    # only the main input, or everything but the main input
    check_same(dask_call(fn, args, kwargs, (5, 18), which={0}), expected, reduced)
    if len(args) > 1 or kwargs.get("where") is not None:
        others = {1, "where", "grad_output", "weight"}
        check_same(
            dask_call(fn, args, kwargs, (2, 21), all_arrays=True, which=others), expected, reduced
        )


def test_batch_dims_chunked_and_class_axis_first():
    rng = np.random.default_rng(2)
    x = random_logits((4, 5, C), np.float32, rng)
    t = index_target(x.shape, rng)
    X = da.from_array(x, chunks=((1, 3), (2, 2, 1), C))
    T = da.from_array(t, chunks=((3, 1), (5,)))  # rechunked to the logits' rows
    check_same(fs.cross_entropy_with_grad(X, T), fs.cross_entropy_with_grad(x, t), True)
    check_same(
        fs.cross_entropy(X, t, reduction="none"), fs.cross_entropy(x, t, reduction="none"), False
    )
    xt = np.moveaxis(x, -1, 0).copy()
    Xt = da.from_array(xt, chunks=(C, 2, (1, 4)))
    for fn in (fs.softmax, fs.log_softmax, fs.logsumexp, fs.softmax_jacobian):
        check_same(fn(Xt, axis=0), fn(xt, axis=0), False)
    check_same(fs.softmax_jvp(Xt, xt, axis=0), fs.softmax_jvp(xt, xt, axis=0), False)
    # one row: logits of shape (C,), a 0-d target
    check_same(
        fs.cross_entropy_with_grad(X[0, 0], t[0, 0]),
        fs.cross_entropy_with_grad(x[0, 0], t[0, 0]),
        True,
    )


def test_empty_class_axis_and_one_row():
    x = random_logits((ROWS, C), np.float32, np.random.default_rng(10))
    empty = x[:, :0]
    X0 = da.from_array(empty, chunks=(LAYOUTS["uneven"], 0))
    for fn in (fs.softmax, fs.log_softmax, fs.logsumexp, fs.softmax_jacobian):
        check_same(fn(X0), fn(empty), False)
    check_same(fs.softmax_jvp(X0, empty), fs.softmax_jvp(empty, empty), False)
    row = da.from_array(x[0])
    assert fs.logsumexp(row).compute() == fs.logsumexp(x[0])  # a 0-d result: a NumPy scalar
    assert fs.cross_entropy(row, 3, reduction="none").compute() == fs.cross_entropy(
        x[0], 3, reduction="none"
    )


def test_split_class_axis_is_rechunked_with_a_performance_warning():
    x = random_logits((ROWS, C), np.float32, np.random.default_rng(3))
    split = r"class axis \(axis 1\) is split into 3 chunks"
    with pytest.warns(PerformanceWarning, match=split) as rec:
        lazy = fs.softmax(da.from_array(x, chunks=(6, 3)))
    assert rec[0].filename == __file__  # attributed to the caller
    check_same(lazy, fs.softmax(x), False)
    t = np.arange(ROWS) % C
    with pytest.warns(PerformanceWarning):
        lazy = fs.cross_entropy_with_grad(da.from_array(x, chunks=(6, 4)), t)
    check_same(lazy, fs.cross_entropy_with_grad(x, t), True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # elementwise: any chunks, no warning
        check_same(fs.sigmoid(da.from_array(x, chunks=(6, 3))), fs.sigmoid(x), False)


def test_unknown_chunk_sizes():
    rng = np.random.default_rng(9)
    x = random_logits((ROWS, C), np.float32, rng)
    t = index_target(x.shape, rng)
    X, T = da.from_array(x, chunks=(6, C)), da.from_array(t, chunks=6)
    keep = x[:, 0] > 0
    Xk, Tk = X[X[:, 0] > 0], T[X[:, 0] > 0]  # row counts unknown (NaN) until computed
    assert np.isnan(Xk.shape[0])
    check_same(fs.softmax(Xk), fs.softmax(x[keep]), False)
    check_same(
        fs.cross_entropy_with_grad(Xk, Tk), fs.cross_entropy_with_grad(x[keep], t[keep]), True
    )
    with pytest.raises(ValueError, match=r"unknown chunk sizes: call compute_chunk_sizes\(\)"):
        fs.binary_cross_entropy_with_logits(Xk, Xk)


def test_results_are_lazy():
    x = random_logits((ROWS, C), np.float32, np.random.default_rng(4))
    loads = []

    def load():
        loads.append(1)
        return x

    X = da.from_delayed(dask.delayed(load)(), shape=x.shape, dtype=x.dtype)
    t = np.arange(ROWS) % C
    results = [
        fs.softmax(X),
        fs.logsumexp(X),
        fs.cross_entropy(X, t),
        fs.sigmoid(X),
        *fs.cross_entropy_with_grad(X, t),
        fs.binary_cross_entropy_with_logits(X, x),
    ]
    assert loads == [] and all(isinstance(r, da.Array) for r in results)


def test_reductions_do_not_depend_on_scheduler_or_workers():
    fn, args, kwargs, _ = make_cases(np.float64)["ce_with_grad_mean"]
    lazy = dask_call(fn, args, kwargs, LAYOUTS["single_rows"])
    runs = [dask.compute(*lazy, scheduler="sync")]
    runs += [dask.compute(*lazy, scheduler="threads", num_workers=n) for n in (1, 2, 4)]
    for loss, grad in runs[1:]:
        assert loss.tobytes() == runs[0][0].tobytes()
        assert grad.tobytes() == runs[0][1].tobytes()


@pytest.mark.slow
def test_import_does_not_import_dask():
    code = "import sys, fastsoftmax; assert 'dask' not in sys.modules, sorted(sys.modules)"
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)


# --------------------------------------------------------------------------- errors

X32 = np.random.default_rng(5).standard_normal((8, 5)).astype(np.float32)
T8 = np.arange(8) % 5


def _unreadable(a):
    """A dask array that fails if its values are ever computed: graph-time errors only."""

    def fail():
        raise AssertionError("values were read")

    return da.from_delayed(dask.delayed(fail)(), shape=a.shape, dtype=a.dtype)


GRAPH_TIME_ERRORS = {
    "axis": lambda x: fs.softmax(x, axis=2),
    "temperature": lambda x: fs.softmax(x, temperature=0.0),
    "dtype": lambda x: fs.log_softmax(x.astype(np.complex64)),
    "ce_zero_classes": lambda x: fs.cross_entropy(x[:, :0], T8),
    "where_shape": lambda x: fs.softmax(x, where=np.ones((3,), bool)),
    "where_dtype": lambda x: fs.softmax(x, where=np.ones((5,), int)),
    "jvp_shape": lambda x: fs.softmax_jvp(x, x[:, :4]),
    "out": lambda x: fs.softmax(x, out=np.empty((8, 5), np.float32)),
    "ce_target_shape": lambda x: fs.cross_entropy(x, T8[:5]),
    "ce_target_dtype": lambda x: fs.cross_entropy(x, T8.astype(complex)),
    "ce_prob_target_shape": lambda x: fs.cross_entropy(x, X32[:, :3]),
    "ce_weight_shape": lambda x: fs.cross_entropy(x, T8, weight=np.ones(4)),
    "ce_weight_negative": lambda x: fs.cross_entropy(x, T8, weight=-np.ones(5)),
    "ce_reduction": lambda x: fs.cross_entropy(x, T8, reduction="avg"),
    "ce_label_smoothing": lambda x: fs.cross_entropy(x, T8, label_smoothing=2.0),
    "ce_ignore_index": lambda x: fs.cross_entropy(x, T8, ignore_index=1.5),
    "ce_grad_output_shape": lambda x: fs.cross_entropy_backward(x, T8, grad_output=np.ones(3)),
    "ce_grad_output_mean": lambda x: fs.cross_entropy_backward(x, T8, grad_output=np.ones(8)),
    "ce_scalar_logits": lambda x: fs.cross_entropy(x[0, 0], T8),
    "bce_target_shape": lambda x: fs.binary_cross_entropy_with_logits(x, X32[:, :2]),
    "bce_weight_shape": lambda x: fs.binary_cross_entropy_with_logits(x, X32, weight=np.ones(3)),
    "bce_weight_negative": lambda x: fs.binary_cross_entropy_with_logits(
        x, X32, weight=-np.ones(5)
    ),
    "bce_reduction": lambda x: fs.binary_cross_entropy_with_logits(x, X32, reduction="x"),
    "bce_grad_output": lambda x: fs.binary_cross_entropy_with_logits_backward(
        x, X32, grad_output=np.ones(3)
    ),
    "sigmoid_dtype": lambda x: fs.sigmoid(x.astype(np.complex64)),
    "selective_index_shape": lambda x: fs.selective_log_softmax(x, T8[:5]),
    "selective_index_dtype": lambda x: fs.selective_log_softmax(x, X32[:, :2]),
    "selective_index_none": lambda x: fs.selective_log_softmax(x, None),
    "selective_index_value": lambda x: fs.selective_log_softmax(x, np.full((8, 2), 5)),
    "selective_temperature": lambda x: fs.selective_log_softmax(x, T8, temperature=-1.0),
    "selective_zero_classes": lambda x: fs.selective_log_softmax(x[:, :0], T8),
    "selective_scalar_logits": lambda x: fs.selective_log_softmax(x[0, 0], T8),
    "selective_vjp_cotangent_shape": lambda x: fs.selective_log_softmax_vjp(x, T8, X32[:, :2]),
    "selective_vjp_cotangent_dtype": lambda x: fs.selective_log_softmax_vjp(
        x, T8, T8.astype(complex)
    ),
    "selective_vjp_out": lambda x: fs.selective_log_softmax_vjp(
        x, T8, X32[:, 0], out=np.empty((8, 5), np.float32)
    ),
    "linear_weight_shape": lambda x: fs.linear_cross_entropy(x, X32[:3, :4], T8 % 3),
    "linear_bias_shape": lambda x: fs.linear_cross_entropy(
        x, X32[:3], T8 % 3, linear_bias=np.ones(4, np.float32)
    ),
    "linear_x_dtype": lambda x: fs.linear_cross_entropy(x.astype(np.complex64), X32[:3], T8 % 3),
    "linear_target_shape": lambda x: fs.linear_cross_entropy(x, X32[:3], T8[:5] % 3),
    "linear_prob_target_shape": lambda x: fs.linear_cross_entropy(x, X32[:3], X32[:, :2]),
    "linear_target_value": lambda x: fs.linear_cross_entropy(x, X32[:3], T8),
    "linear_class_weight": lambda x: fs.linear_cross_entropy(
        x, X32[:3], T8 % 3, weight=-np.ones(3)
    ),
    "linear_reduction": lambda x: fs.linear_cross_entropy_with_grad(
        x, X32[:3], T8 % 3, reduction="avg"
    ),
    "linear_chunk_size": lambda x: fs.linear_cross_entropy(x, X32[:3], T8 % 3, chunk_size=0),
    "linear_softcap": lambda x: fs.linear_cross_entropy_with_grad(x, X32[:3], T8 % 3, softcap=-1.0),
}


def numpy_error(call, x) -> tuple[type, str]:
    try:
        call(x)
    except Exception as exc:  # noqa: BLE001 - any error type is compared
        return type(exc), str(exc)
    return TypeError, "out is not supported for dask arrays"  # the one dask-only error


@pytest.mark.parametrize("name", list(GRAPH_TIME_ERRORS))
def test_bad_arguments_raise_the_numpy_error_when_the_graph_is_built(name):
    call = GRAPH_TIME_ERRORS[name]
    kind, message = numpy_error(call, X32)
    with pytest.raises(kind, match=re.escape(message)):
        call(_unreadable(X32))


@pytest.mark.parametrize("reduction", ["none", "mean"])
def test_bad_values_raise_the_numpy_error_at_compute_time(reduction):
    t = np.arange(ROWS) % C
    t[17] = C + 2
    x = random_logits((ROWS, C), np.float32, np.random.default_rng(6))
    with pytest.raises(ValueError) as np_err:
        fs.cross_entropy(x, t, reduction=reduction)
    X = da.from_array(x, chunks=(LAYOUTS["uneven"], C))
    with pytest.raises(ValueError, match=re.escape(str(np_err.value))):  # NumPy labels: now
        fs.cross_entropy(X, t, reduction=reduction)
    lazy = fs.cross_entropy(X, da.from_array(t, chunks=5), reduction=reduction)
    with pytest.raises(ValueError, match=re.escape(str(np_err.value))):  # index counted globally
        lazy.compute()
    y = np.zeros((ROWS, C), np.float32)
    y[9, 2] = np.nan
    lazy = fs.binary_cross_entropy_with_logits(da.from_array(x, chunks=4), y, reduction=reduction)
    with pytest.raises(ValueError, match="target holds NaN or inf"):
        lazy.compute()


# --------------------------------------------------------------------------- selective, linear

H = 5  # features of the linear cross-entropy's x (ROWS, H), C classes


def check_linear_same(lazy, expected, dtype, bitwise_dx: bool = False) -> None:
    """(loss, dx, dW, db) of the dask call against the NumPy call: the loss to the rounding of
    the block sums (per-row losses and dx to the BLAS's rounding for another row count; bit for
    bit when ``bitwise_dx``), dW and db to the rounding of the sum over blocks."""
    lazy, expected = as_tuple(lazy), as_tuple(expected)
    assert len(lazy) == len(expected)
    assert all(
        r is None if e is None else isinstance(r, da.Array)
        for r, e in zip(lazy, expected, strict=True)
    )
    got = dask.compute(*[r for r in lazy if r is not None])
    for i, (g, e) in enumerate(zip(got, [e for e in expected if e is not None], strict=True)):
        e = np.asarray(e)
        assert g.dtype == e.dtype == dtype and g.shape == e.shape, i
        rtol = (SUM_RTOL if e.ndim == 0 else GRAD_RTOL)[e.dtype]
        if bitwise_dx and i == 1:
            np.testing.assert_array_equal(g, e)
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol * np.max(np.abs(e), initial=0.0))


def linear_data(dtype, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    t = index_target((ROWS, C), rng)
    t[[3, 11]] = -100
    return dict(
        x=rng.standard_normal((ROWS, H)).astype(dtype),
        w_lin=rng.standard_normal((C, H)).astype(dtype),
        b=rng.standard_normal(C).astype(dtype),
        t=t,
        pt=prob_target((ROWS, C), dtype, rng),
        w=(rng.random(C) + 0.25).astype(dtype),
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_selective_log_softmax_matches_numpy_bit_for_bit(layout, dtype):
    rng = np.random.default_rng(11)
    z = random_logits((ROWS, C), dtype, rng)
    Z = da.from_array(z, chunks=(LAYOUTS[layout], C))
    idx_k = rng.integers(0, C, (ROWS, 3))
    idx_k[:, 2] = idx_k[:, 0]  # a class selected twice
    idx_row = rng.integers(0, C, ROWS)
    for idx in (idx_k, idx_row):
        g = rng.standard_normal(idx.shape).astype(dtype)
        for index, cot in ((idx, g), (da.from_array(idx, chunks=4), da.from_array(g, chunks=7))):
            check_same(
                fs.selective_log_softmax(Z, index, temperature=1.3),
                fs.selective_log_softmax(z, idx, temperature=1.3),
                False,
            )
            check_same(
                fs.selective_log_softmax_vjp(Z, index, cot, temperature=0.7),
                fs.selective_log_softmax_vjp(z, idx, g, temperature=0.7),
                False,
            )
    # NumPy logits with dask indices; batch dimensions chunked; one row (1-D logits)
    check_same(
        fs.selective_log_softmax(z, da.from_array(idx_row, chunks=5)),
        fs.selective_log_softmax(z, idx_row),
        False,
    )
    z3, i3 = z[:20].reshape(4, 5, C), idx_k[:20].reshape(4, 5, 3)
    Z3 = da.from_array(z3, chunks=((1, 3), (2, 3), C))
    check_same(fs.selective_log_softmax(Z3, i3), fs.selective_log_softmax(z3, i3), False)
    check_same(
        fs.selective_log_softmax_vjp(Z3, i3[..., 0], z3[..., 0]),
        fs.selective_log_softmax_vjp(z3, i3[..., 0], z3[..., 0]),
        False,
    )
    check_same(
        fs.selective_log_softmax(da.from_array(z[0]), idx_k[0]),
        fs.selective_log_softmax(z[0], idx_k[0]),
        False,
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_linear_cross_entropy_matches_numpy(reduction, layout, dtype):
    d = linear_data(dtype)
    X = da.from_array(d["x"], chunks=(LAYOUTS[layout], H))
    bitwise = layout == "one_chunk" and reduction != "mean"  # then one NumPy call, unscaled
    cases = [  # (target, options): index and probability targets, with and without a bias
        (d["t"], dict(linear_bias=d["b"], weight=d["w"], label_smoothing=0.1, temperature=1.3)),
        (d["t"], {}),
        (d["pt"], dict(linear_bias=d["b"])),
        (d["pt"], dict(weight=d["w"], chunk_size=4)),
    ]
    if reduction == "mean":
        cases.append((d["t"], dict(linear_bias=d["b"], z_loss=1e-3, softcap=2.0)))
    for target, kw in cases:
        args = (d["w_lin"], target)
        kw = dict(kw, reduction=reduction)
        check_linear_same(
            fs.linear_cross_entropy(X, *args, **kw),
            fs.linear_cross_entropy(d["x"], *args, **kw),
            dtype,
        )
        check_linear_same(
            fs.linear_cross_entropy_with_grad(X, *args, **kw),
            fs.linear_cross_entropy_with_grad(d["x"], *args, **kw),
            dtype,
            bitwise,
        )


def test_linear_cross_entropy_dask_weights_batch_dims_and_warnings():
    d = linear_data(np.float32, seed=12)
    x3, t3 = d["x"][:20].reshape(4, 5, H), d["t"][:20].reshape(4, 5)
    X3 = da.from_array(x3, chunks=((1, 3), (2, 3), H))
    weights = dict(
        linear_bias=da.from_array(d["b"], chunks=3), weight=da.from_array(d["w"], chunks=2)
    )
    expected = fs.linear_cross_entropy_with_grad(
        x3, d["w_lin"], t3, linear_bias=d["b"], weight=d["w"]
    )
    # every argument a dask array (linear_weight split: rechunked whole, no warning)
    check_linear_same(
        fs.linear_cross_entropy_with_grad(
            X3, da.from_array(d["w_lin"], chunks=(3, 2)), da.from_array(t3, chunks=2), **weights
        ),
        expected,
        np.float32,
    )
    # NumPy x, dask weights only
    check_linear_same(
        fs.linear_cross_entropy_with_grad(x3, d["w_lin"], t3, **weights), expected, np.float32
    )
    with pytest.warns(PerformanceWarning, match=r"the feature axis \(axis 1\) is split") as rec:
        lazy = fs.linear_cross_entropy(da.from_array(d["x"], chunks=(6, 3)), d["w_lin"], d["t"])
    assert rec[0].filename == __file__
    check_linear_same(lazy, fs.linear_cross_entropy(d["x"], d["w_lin"], d["t"]), np.float32)


def test_linear_cross_entropy_mean_with_a_zero_denominator():
    d = linear_data(np.float64, seed=13)
    X = da.from_array(d["x"], chunks=(LAYOUTS["uneven"], H))
    ignored = np.full(ROWS, -100)
    zero_weight = np.where(np.arange(ROWS) % 2, -100, 0)  # class 0 has weight 0
    w = np.where(np.arange(C) == 0, 0.0, 1.0)
    for t, kw in ((ignored, {}), (zero_weight, dict(weight=w))):
        expected = fs.linear_cross_entropy_with_grad(
            d["x"], d["w_lin"], t, linear_bias=d["b"], **kw
        )
        got = dask.compute(
            *fs.linear_cross_entropy_with_grad(X, d["w_lin"], t, linear_bias=d["b"], **kw)
        )
        for g, e in zip(
            got, expected, strict=True
        ):  # NaN where the NumPy call has NaN, 0 elsewhere
            np.testing.assert_array_equal(g, e)
        # ignore_index=None is torch's default, -100: the same lazy results
        lazy_none = fs.linear_cross_entropy_with_grad(
            X, d["w_lin"], t, linear_bias=d["b"], ignore_index=None, **kw
        )
        for g, e in zip(dask.compute(*lazy_none), expected, strict=True):
            np.testing.assert_array_equal(g, e)


def test_linear_weight_gradients_do_not_depend_on_scheduler_or_workers():
    d = linear_data(np.float64, seed=14)
    X = da.from_array(d["x"], chunks=(LAYOUTS["single_rows"], H))
    lazy = fs.linear_cross_entropy_with_grad(
        X, d["w_lin"], d["t"], linear_bias=d["b"], weight=d["w"]
    )
    runs = [dask.compute(*lazy, scheduler="sync")]
    runs += [dask.compute(*lazy, scheduler="threads", num_workers=n) for n in (1, 2, 4)]
    for run in runs[1:]:
        assert [r.tobytes() for r in run] == [r.tobytes() for r in runs[0]]


def test_selective_and_linear_are_lazy_and_errors_in_values_come_at_compute_time():
    x = random_logits((ROWS, C), np.float32, np.random.default_rng(15))
    loads = []

    def load():
        loads.append(1)
        return x

    X = da.from_delayed(dask.delayed(load)(), shape=x.shape, dtype=x.dtype)
    t = np.arange(ROWS) % C
    w_lin = np.ones((3, C), np.float32)
    results = [
        fs.selective_log_softmax(X, t),
        fs.selective_log_softmax_vjp(X, t, x[:, 0]),
        fs.linear_cross_entropy(X, w_lin, t % 3),
        *fs.linear_cross_entropy_with_grad(X, w_lin, t % 3, linear_bias=w_lin[:, 0]),
    ]
    assert loads == [] and all(isinstance(r, da.Array) for r in results)
    # a bad value in a dask index or target: the NumPy message, counted in the whole array
    bad = t.copy()
    bad[17] = C + 2
    for call in (
        lambda i: fs.selective_log_softmax(x, i),
        lambda i: fs.linear_cross_entropy(x, np.ones((C, C), np.float32), i, reduction="sum"),
    ):
        with pytest.raises(ValueError) as np_err:
            call(bad)
        lazy = call(da.from_array(bad, chunks=5))
        with pytest.raises(ValueError, match=re.escape(str(np_err.value))):
            lazy.compute()
    k_bad = np.stack([t, bad], axis=1)
    with pytest.raises(ValueError, match=re.escape("at (17, 1) is out of range")):
        fs.selective_log_softmax(
            da.from_array(x, chunks=(5, C)), da.from_array(k_bad, chunks=(5, 2))
        ).compute()


# --------------------------------------------------------------------------- distributed


def local_cluster(n_workers: int, env: dict[str, str] | None = None):
    """A LocalCluster of worker processes on 127.0.0.1 (no dashboard) and its client."""
    distributed = pytest.importorskip("distributed")
    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
    env = {"PYTHONPATH": path, **(env or {})}
    cluster = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
        env=env,
        memory_limit="1GiB",
        silence_logs=40,
    )
    return cluster, distributed.Client(cluster, timeout=60)


@pytest.fixture(scope="module")
def client():
    """Two worker processes, sharing the tests' numba cache."""
    cluster, client = local_cluster(2)
    with cluster, client:
        yield client


def results(client, lazy, timeout: float = 180.0) -> list:
    """The computed values of dask arrays on the cluster, failing after ``timeout`` seconds."""
    return [future.result(timeout=timeout) for future in client.compute(list(lazy))]


def _cache_files(cache) -> list[str]:
    return [f for _, _, files in os.walk(cache) for f in files if f.endswith((".nbi", ".nbc"))]


@pytest.mark.slow
@needs_jit
def test_cluster_worker_compiles_from_an_empty_cache(tmp_path):
    cluster, client = local_cluster(1, {"NUMBA_CACHE_DIR": str(tmp_path)})
    with cluster, client:
        seen = client.run(lambda: __import__("numba").config.CACHE_DIR)
        assert list(seen.values()) == [str(tmp_path)] and _cache_files(tmp_path) == []
        cases = make_cases(np.float32, seed=8)
        for name in ("softmax", "ce_with_grad_mean_dyadic_weights"):
            fn, args, kwargs, reduced = cases[name]
            lazy = as_tuple(dask_call(fn, args, kwargs, LAYOUTS["uneven"]))
            got = results(client, lazy)
            for i, (g, e) in enumerate(zip(got, as_tuple(fn(*args, **kwargs)), strict=True)):
                assert_close(g, np.asarray(e), reduced, i == 0)
    assert _cache_files(tmp_path)  # the worker compiled the kernels and cached them there


@pytest.mark.slow
@needs_jit
@pytest.mark.parametrize("layout", ["uneven", "single_rows"])
def test_cluster_every_function_matches_numpy_and_threads(client, layout):
    cases = make_cases(np.float32, seed=7)
    names = list(cases)
    lazies = [
        as_tuple(dask_call(cases[n][0], cases[n][1], cases[n][2], LAYOUTS[layout])) for n in names
    ]
    flat = [r for lazy in lazies for r in lazy]
    remote = iter(results(client, flat))
    for name, lazy in zip(names, lazies, strict=True):
        fn, args, kwargs, reduced = cases[name]
        local = dask.compute(*lazy)
        for i, (r, loc, e) in enumerate(
            zip((next(remote) for _ in lazy), local, as_tuple(fn(*args, **kwargs)), strict=True)
        ):
            # the same graph gives the same bits on any scheduler, but for the kernels' block
            # sums, whose vectorized loops may round differently with the memory alignment
            if not (reduced is True and i == 0):
                assert r.tobytes() == loc.tobytes(), name
            assert_close(r, np.asarray(e), reduced, i == 0)


@pytest.mark.slow
@needs_jit
def test_example_runs_on_a_local_cluster():
    pytest.importorskip("distributed")
    script = os.path.join(ROOT, "examples", "dask_per_token_losses.py")
    args = ["--tokens", "6000", "--vocab", "50", "--block", "1000", "--memory-limit", "512MiB"]
    run = subprocess.run(
        [sys.executable, script, *args],
        env=dict(os.environ, PYTHONPATH=ROOT),
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    )
    assert "dashboard: http://127.0.0.1:" in run.stdout
    assert "equal to the NumPy call on the first block" in run.stdout


@needs_jit
def test_cluster_selective_and_linear_match_numpy(client):
    d = linear_data(np.float32, seed=16)
    z = random_logits((ROWS, C), np.float32, np.random.default_rng(16))
    Z = da.from_array(z, chunks=(LAYOUTS["uneven"], C))
    X = da.from_array(d["x"], chunks=(LAYOUTS["uneven"], H))
    idx = np.stack([d["t"] % C, d["t"] % 3], axis=1)
    selective = [fs.selective_log_softmax(Z, idx), fs.selective_log_softmax_vjp(Z, idx, z[:, :2])]
    linear = fs.linear_cross_entropy_with_grad(
        X, d["w_lin"], d["t"], linear_bias=d["b"], weight=d["w"]
    )
    got = iter(results(client, [*selective, *linear]))
    for expected in (
        fs.selective_log_softmax(z, idx),
        fs.selective_log_softmax_vjp(z, idx, z[:, :2]),
    ):
        np.testing.assert_array_equal(next(got), expected)
    expected = fs.linear_cross_entropy_with_grad(
        d["x"], d["w_lin"], d["t"], linear_bias=d["b"], weight=d["w"]
    )
    for i, e in enumerate(expected):
        rtol = SUM_RTOL[e.dtype] if i == 0 else GRAD_RTOL[e.dtype]
        np.testing.assert_allclose(next(got), e, rtol=rtol, atol=rtol * np.max(np.abs(e)))
