"""softmax, log_softmax and logsumexp: against the NumPy reference, against long-double oracles,
and every rule of the API (dtypes, layouts, axes, temperature, out=, keepdims, special values,
errors). The thread-count invariance test here covers every public function."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from conftest import (
    COMPARISONS,
    DERIVATIVES,
    FORWARD,
    LAYOUT_NAMES,
    REJECTED_DTYPES,
    RESULT_DTYPE,
    SOFTMAX_FAMILY_API,
    assert_close,
    assert_matches,
    jit_only,
    layouts,
    needs_jit,
    parallel_threads_available,
    random_logits,
)

import fastsoftmax as fs
import fastsoftmax._runtime as runtime
from fastsoftmax import reference as ref

SHAPES = [(1, 1), (1, 7), (7, 1), (0, 5), (33, 17), (2, 3, 5), (11,), (4, 0, 3)]
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.bool_]
SOFTMAX_LIKE = ["softmax", "log_softmax"]


def call(name, *args, **kwargs):
    return COMPARISONS[name].fast(*args, **kwargs)


def call_ref(name, *args, **kwargs):
    return COMPARISONS[name].reference(*args, **kwargs)


def oracle(name: str, x, axis: int = -1, temperature: float = 1.0, keepdims: bool = False):
    """The forward functions in np.longdouble (80-bit on x86), straight from the formulas."""
    u = np.asarray(x).astype(np.longdouble) / np.longdouble(temperature)
    m = u.max(axis=axis, keepdims=True)
    e = np.exp(u - m)
    s = e.sum(axis=axis, keepdims=True)
    if name == "softmax":
        return e / s
    if name == "log_softmax":
        return (u - m) - np.log(s)
    lse = m + np.log(s)
    return lse if keepdims else np.squeeze(lse, axis=axis)


def max_error_ratio(
    name: str, got, x, axis: int = -1, temperature: float = 1.0, keepdims: bool = False
) -> float:
    """The largest error of ``got`` against the long-double oracle, in units of the allowed error.

    Allowed, with eps the result dtype's epsilon and gap = |x_i - max(x)| / T (long double):

    - softmax: relative error (against max(|exact|, smallest normal), so underflow to 0 or a
      subnormal passes) of 4 eps for float32 at T = 1, where the kernel feeds the rounding error
      of x - max into the exp; otherwise 3 eps (1 + gap), the cost of rounding (x - max) / T;
    - log_softmax: absolute error 3 eps (1 + |exact|);
    - logsumexp: relative error 2 eps.

    Plus, for the row sum, float64 eps times C / 256: the kernels add 256-entry blocks, then the
    block sums in float64 one after the other (``fastsoftmax/_kernels/_math.py``), whose rounding
    error grows with the number of blocks (negligible against float32's eps; for float64 rows of
    1e5 entries it dominates: a measured 2-4 eps of normalization error, where NumPy's pairwise
    sum has < 1 eps).

    A ratio <= 1 passes.
    """
    got = np.asarray(got)
    info = np.finfo(got.dtype)
    eps = float(info.eps)
    blocks = float(np.finfo(np.float64).eps) * np.shape(x)[axis] / 256
    exact = oracle(name, x, axis=axis, temperature=temperature, keepdims=keepdims)
    err = np.abs(got.astype(np.longdouble) - exact)
    if name == "softmax":
        u = np.asarray(x).astype(np.longdouble) / np.longdouble(temperature)
        gap = np.abs(u - u.max(axis=axis, keepdims=True))
        if got.dtype == np.float32 and temperature == 1.0:
            allowed = 4 * eps * np.ones_like(gap)
        else:
            allowed = 3 * eps * (1 + gap)
        ratio = err / np.maximum(np.abs(exact), np.longdouble(info.tiny)) / (allowed + blocks)
    elif name == "log_softmax":
        ratio = err / (3 * eps * (1 + np.abs(exact)) + blocks)
    else:
        ratio = err / (2 * eps * np.abs(exact) + blocks)
    return float(np.max(ratio)) if ratio.size else 0.0


# ---------------------------------------------------------------------------- against the reference


def test_comparison_table_covers_the_api():
    assert set(COMPARISONS) == SOFTMAX_FAMILY_API
    assert SOFTMAX_FAMILY_API <= set(fs.__all__)
    for name, entry in COMPARISONS.items():
        assert entry.fast is getattr(fs, name) and entry.reference is getattr(ref, name)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", FORWARD)
def test_matches_reference(name, shape, dtype, rng):
    (x,), _ = COMPARISONS[name].make_args(shape, dtype, rng)
    x_before = x.copy()
    got = call(name, x)
    want = call_ref(name, x)
    assert got.dtype == RESULT_DTYPE[np.dtype(dtype)] == want.dtype
    assert got.shape == COMPARISONS[name].result_shape(shape)
    COMPARISONS[name].check(got, want, (x,))
    np.testing.assert_array_equal(x, x_before)  # the input is never modified


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", FORWARD)
@needs_jit
def test_long_rows_100k(name, dtype, rng):
    """(2, 100_000): against the reference and a long-double oracle (float32 sums stay accurate)."""
    x = random_logits((2, 100_000), dtype, rng)
    got = call(name, x)
    # float32 softmax: the reference rounds x - max in float32 (|x - max| up to ~25 here, so its
    # own error reaches ~1.2e-6 relative, within the 2e-6 of the table)
    COMPARISONS[name].check(got, call_ref(name, x), (x,))
    assert max_error_ratio(name, got, x) <= 1


@needs_jit  # the bounds hold for the compiled rounding (FMA, reductions over 32 partial sums)
@pytest.mark.parametrize("temperature", [1.0, 0.3, 4.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", SOFTMAX_LIKE)
def test_longdouble_oracle(name, dtype, temperature, rng):
    """Independent of the reference: float32/float64 within a few ulp of the 80-bit answer."""
    x = random_logits((64, 129), dtype, rng, scale=8.0)
    got = call(name, x, temperature=temperature)
    assert max_error_ratio(name, got, x, temperature=temperature) <= 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_logsumexp_longdouble_oracle(dtype, rng):
    x = random_logits((64, 129), dtype, rng, scale=8.0)
    assert max_error_ratio("logsumexp", fs.logsumexp(x), x) <= 1
    x = random_logits((3, 40), dtype, rng, scale=30.0) + dtype(200.0)  # far from 0: no cancellation
    assert max_error_ratio("logsumexp", fs.logsumexp(x), x) <= 1


@needs_jit  # the bound holds for the compiled rounding (FMA, reductions over 32 partial sums)
def test_float32_computed_natively(rng):
    """float32 stays float32 (no float64 detour in the result) yet is as accurate as its ulp."""
    x = random_logits((8, 1000), np.float32, rng, scale=10.0)
    got = fs.softmax(x)
    assert got.dtype == np.float32
    p64 = fs.softmax(x.astype(np.float64))
    np.testing.assert_allclose(got, p64, rtol=4e-7, atol=0)


# ----------------------------------------------------------------------------- dtypes and errors


@pytest.mark.parametrize(
    "dtype", [np.int8, np.int64, np.uint8, np.float16], ids=lambda d: np.dtype(d).name
)
@pytest.mark.parametrize("name", FORWARD)
def test_more_dtypes(name, dtype, rng):
    (x,), _ = COMPARISONS[name].make_args((5, 9), dtype, rng)
    got = call(name, x)
    assert got.dtype == RESULT_DTYPE[np.dtype(dtype)]
    COMPARISONS[name].check(got, call_ref(name, x), (x,))
    # the same as the explicitly converted input, bit for bit
    np.testing.assert_array_equal(got, call(name, x.astype(got.dtype)))


def _rejected(dtype, shape=(3, 4)):
    if dtype is object:
        return np.array(np.arange(12.0).reshape(shape), dtype=object)
    if dtype in (np.str_, np.bytes_):
        return np.full(shape, "1", dtype=dtype)
    return np.ones(shape, dtype=dtype)


@pytest.mark.parametrize("dtype", REJECTED_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", FORWARD + DERIVATIVES)
def test_rejected_dtypes_raise_type_error(name, dtype):
    x = _rejected(dtype)
    args = (x, np.ones((3, 4))) if COMPARISONS[name].n_inputs == 2 else (x,)
    with pytest.raises(TypeError, match="dtype"):
        call(name, *args)
    with pytest.raises(TypeError, match="dtype"):
        call_ref(name, *args)
    if COMPARISONS[name].n_inputs == 2:  # a bad second argument too
        with pytest.raises(TypeError, match="dtype"):
            call(name, np.ones((3, 4)), x)


@pytest.mark.parametrize(
    "dtype", [np.float16, np.float32, np.float64, np.int32], ids=lambda d: np.dtype(d).name
)
@pytest.mark.parametrize("shape", [(3, 0), (0,), (2, 0, 0), (0, 0)], ids=str)
@pytest.mark.parametrize("name", FORWARD + DERIVATIVES)
def test_zero_classes_give_empty_results(name, shape, dtype):
    """An empty class axis: softmax-like results and products are empty arrays of the input's
    shape, the Jacobian has shape batch + (0, 0), logsumexp is -inf (the log of an empty sum), in
    the result dtype; the reference agrees, and ``out=`` is filled and returned."""
    x = np.zeros(shape, dtype)
    args = (x, x) if COMPARISONS[name].n_inputs == 2 else (x,)
    want_dtype = RESULT_DTYPE[np.dtype(dtype)]
    got = call(name, *args)
    assert_matches(got, call_ref(name, *args), err_msg=name)
    assert got.dtype == want_dtype and got.shape == COMPARISONS[name].result_shape(shape)
    if name == "logsumexp":
        assert np.all(got == -np.inf)
    else:
        assert got.size == 0
    if COMPARISONS[name].takes_out:
        out = np.full(got.shape, 7, want_dtype)
        assert call(name, *args, out=out) is out
        np.testing.assert_array_equal(out, got)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_zero_classes_match_scipy_and_torch(axis):
    """An empty class axis as PyTorch gives it (softmax, log_softmax: empty; logsumexp: -inf, as
    JAX too) and SciPy's logsumexp (SciPy's softmax and log_softmax raise on it)."""
    x = np.zeros({0: (0, 4), 1: (2, 0, 3), -1: (3, 0)}[axis], np.float32)
    special = pytest.importorskip("scipy.special")
    np.testing.assert_array_equal(
        fs.logsumexp(x, axis=axis), special.logsumexp(x, axis=axis), strict=True
    )
    assert special.logsumexp(np.zeros(0)) == fs.logsumexp(np.zeros(0)) == -np.inf
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x)
    for name, fn in (
        ("softmax", torch.softmax),
        ("log_softmax", torch.log_softmax),
        ("logsumexp", torch.logsumexp),
    ):
        np.testing.assert_array_equal(
            call(name, x, axis=axis), fn(t, axis).numpy(), strict=True, err_msg=name
        )
        if name != "logsumexp":
            np.testing.assert_array_equal(
                call(name, x, axis=axis, where=np.ones(x.shape, bool)),
                fn(t, axis).numpy(),
                strict=True,
                err_msg=name,
            )


@pytest.mark.parametrize("layout", ["C", "F", "readonly"])
@pytest.mark.parametrize("name", FORWARD)
def test_float16_in_float16_out(name, layout, rng):
    """float16 input gives a float16 result (as NumPy, PyTorch and JAX), computed in float32:
    exactly the float32 result rounded to float16. ``out=`` takes a float16 array, the input
    itself included (in place); a float32 ``out`` is the wrong dtype."""
    x = layouts(random_logits((5, 9), np.float16, rng))[layout]
    got = call(name, x, axis=0)
    assert got.dtype == np.float16
    want = call(name, x.astype(np.float32), axis=0).astype(np.float16)
    np.testing.assert_array_equal(got, want, strict=True)
    COMPARISONS[name].check(got, call_ref(name, x, axis=0), (x,), {})
    out = np.empty(got.shape, np.float16)
    assert call(name, x, axis=0, out=out) is out
    np.testing.assert_array_equal(out, got)
    with pytest.raises(ValueError, match="out has dtype"):
        call(name, x, axis=0, out=np.empty(got.shape, np.float32))
    if name != "logsumexp" and layout != "readonly":
        y = x.copy()
        assert call(name, y, axis=0, out=y) is y
        np.testing.assert_array_equal(y, got)


def test_float16_dtypes_match_numpy_scipy_and_torch(rng):
    x = random_logits((4, 6), np.float16, rng)
    assert fs.softmax(x).dtype == fs.log_softmax(x).dtype == fs.logsumexp(x).dtype == np.float16
    assert np.exp(x).dtype == np.float16 and np.max(x, axis=-1).dtype == np.float16
    special = pytest.importorskip("scipy.special")
    np.testing.assert_allclose(
        fs.softmax(x).astype(np.float64),
        special.softmax(x.astype(np.float64), axis=-1),
        rtol=1e-3,
        atol=1e-4,
    )
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(x)
    for name, fn in (
        ("softmax", torch.softmax),
        ("log_softmax", torch.log_softmax),
        ("logsumexp", torch.logsumexp),
    ):
        want = fn(t, -1)
        got = call(name, x)
        assert str(want.dtype) == "torch.float16" and got.dtype == np.float16
        np.testing.assert_allclose(
            got.astype(np.float64), want.double().numpy(), rtol=2e-3, atol=2e-3, err_msg=name
        )


@pytest.mark.parametrize("name", FORWARD + DERIVATIVES)
def test_scalar_and_none_rejected(name):
    n = COMPARISONS[name].n_inputs
    with pytest.raises(ValueError, match="at least 1 dimension"):
        call(name, *([np.float64(1.0)] * n))
    with pytest.raises(TypeError):
        call(name, *([None] * n))


@pytest.mark.parametrize("axis", [2, -3, 1.0, "0", True, None])
@pytest.mark.parametrize("name", FORWARD + DERIVATIVES)
def test_bad_axis(name, axis):
    x = np.ones((3, 4))
    args = (x, x) if COMPARISONS[name].n_inputs == 2 else (x,)
    expected = (
        np.exceptions.AxisError
        if isinstance(axis, int) and not isinstance(axis, bool)
        else TypeError
    )
    with pytest.raises(expected):
        call(name, *args, axis=axis)
    with pytest.raises(expected):
        call_ref(name, *args, axis=axis)


def test_array_like_inputs():
    rows = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]
    np.testing.assert_array_equal(fs.softmax(rows), fs.softmax(np.array(rows)))
    np.testing.assert_array_equal(fs.logsumexp((1, 2, 3)), fs.logsumexp(np.array([1.0, 2.0, 3.0])))
    assert fs.logsumexp([0.0, 0.0]).shape == ()
    assert math.isclose(float(fs.logsumexp([0.0, 0.0])), math.log(2.0), rel_tol=1e-15)


# ----------------------------------------------------------------------------- layouts and axes


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("shape", [(33, 17), (4, 5, 6)], ids=str)
@pytest.mark.parametrize("name", FORWARD)
def test_layouts(name, shape, layout, rng):
    x = random_logits(shape, np.float32, rng)
    expected = call(name, np.ascontiguousarray(x))
    arr = layouts(x)[layout]
    for axis in range(-len(shape), len(shape)):
        got = call(name, arr, axis=axis)
        np.testing.assert_array_equal(
            got, call(name, np.ascontiguousarray(x), axis=axis), err_msg=f"{layout} axis={axis}"
        )
        COMPARISONS[name].check(got, call_ref(name, arr, axis=axis), (arr,))
    np.testing.assert_array_equal(call(name, arr), expected)
    np.testing.assert_array_equal(arr, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", FORWARD)
def test_readonly_contiguous_input(name, dtype, rng):
    """A read-only C-contiguous float array goes to the kernel without a copy, so every kernel
    must compile for read-only inputs (one that writes to, or declares as writable, its input row
    fails to compile for them)."""
    x = random_logits((4, 9), dtype, rng)
    expected = call(name, x)
    x.flags.writeable = False
    np.testing.assert_array_equal(call(name, x), expected)


@pytest.mark.parametrize("name", FORWARD)
def test_broadcast_readonly_input(name, rng):
    """A stride-0 (broadcast) read-only view gives every row the one row's result."""
    row = random_logits((9,), np.float64, rng)
    x = np.broadcast_to(row, (6, 9))
    got = call(name, x)
    np.testing.assert_array_equal(got, np.broadcast_to(call(name, row), got.shape))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", FORWARD)
def test_axes(name, axis, dtype, rng):
    x = random_logits((4, 5, 6), dtype, rng)
    got = call(name, x, axis=axis)
    COMPARISONS[name].check(got, call_ref(name, x, axis=axis), (x,))
    # the same as moving the axis last, bit for bit
    moved = call(name, np.moveaxis(x, axis, -1))
    if name == "logsumexp":
        np.testing.assert_array_equal(got, moved)
    else:
        np.testing.assert_array_equal(got, np.moveaxis(moved, -1, axis))
    if name == "softmax":
        np.testing.assert_allclose(got.sum(axis=axis), 1.0, rtol=10 * np.finfo(dtype).eps)


# ----------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("temperature", [0.05, 0.5, 1.0, 2.5, 100.0, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", SOFTMAX_LIKE)
def test_temperature(name, dtype, temperature, rng):
    """Against the reference (absolute tolerance: with small T both round (x - max) / T, so tiny
    probabilities differ by ~|x - max| / T ulp) and, entry by entry, against the oracle."""
    x = random_logits((33, 17), dtype, rng)
    got = call(name, x, temperature=temperature)
    want = call_ref(name, x, temperature=temperature)
    if name == "softmax":  # the reference rounds (x - max) / T, tiny entries to ~|x - max| / T ulp
        assert_matches(got, want)
    else:
        COMPARISONS[name].check(got, want, (x,), {"temperature": temperature})
    assert max_error_ratio(name, got, x, temperature=temperature) <= 1
    if temperature == 1.0:
        np.testing.assert_array_equal(got, call(name, x))


@pytest.mark.parametrize(
    "temperature,error",
    [
        (0.0, ValueError),
        (-1.0, ValueError),
        (np.inf, ValueError),
        (np.nan, ValueError),
        (-np.inf, ValueError),
        ("1", TypeError),
        (None, TypeError),
        (True, TypeError),
        (1 + 0j, TypeError),
        (np.array([1.0, 2.0]), TypeError),
    ],
)
@pytest.mark.parametrize(
    "name", ["softmax", "log_softmax", "softmax_jvp", "softmax_vjp", "log_softmax_vjp"]
)
def test_bad_temperature(name, temperature, error):
    x = np.ones((2, 3))
    args = (x, x) if COMPARISONS[name].n_inputs == 2 else (x,)
    out = np.full((2, 3), 7.0)
    with pytest.raises(error, match="temperature"):
        call(name, *args, temperature=temperature, out=out)
    with pytest.raises(error, match="temperature"):
        call_ref(name, *args, temperature=temperature)
    assert np.all(out == 7.0)


def test_logsumexp_has_no_temperature():
    with pytest.raises(TypeError):
        fs.logsumexp(np.ones(3), temperature=2.0)


# ----------------------------------------------------------------------------- out=


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.float16, np.int32], ids=lambda d: np.dtype(d).name
)
@pytest.mark.parametrize("name", FORWARD)
def test_out(name, dtype, rng):
    x = random_logits((6, 7), dtype, rng)
    expected = call(name, x)
    for order in ("C", "F"):
        out = np.full(expected.shape, -123.0, dtype=expected.dtype, order=order)
        res = call(name, x, out=out)
        assert res is out
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", FORWARD)
def test_out_strided_view(name, rng):
    x = random_logits((6, 7), np.float64, rng)
    expected = call(name, x)
    big = np.full((12,) + expected.shape[1:] if expected.ndim == 2 else (12,), -5.0)
    out = big[::2]
    assert call(name, x, out=out) is out
    np.testing.assert_array_equal(out, expected)
    assert np.all(big[1::2] == -5.0)  # nothing written between the strides


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "transposed", "reversed"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", SOFTMAX_LIKE)
def test_out_in_place(name, dtype, layout, axis, rng):
    x0 = random_logits((9, 13), dtype, rng)
    expected = call(name, x0, axis=axis)
    x = layouts(x0)[layout]
    res = call(name, x, axis=axis, out=x)
    assert res is x
    np.testing.assert_array_equal(x, expected)


@pytest.mark.parametrize("name", SOFTMAX_LIKE)
def test_out_overlapping_input_partially(name, rng):
    """out is a different view of the input's memory (rows reversed): the result is still f(x)."""
    x = random_logits((8, 5), np.float64, rng)
    expected = call(name, x.copy())
    out = x[::-1]
    call(name, x, out=out)
    np.testing.assert_array_equal(x[::-1], expected)
    y = random_logits((8, 5), np.float64, rng)
    expected = call(name, y.copy())
    out = y.reshape(5, 8).T  # same memory, other strides
    call(name, y, out=out)
    np.testing.assert_array_equal(out, expected)


def test_logsumexp_out_overlapping_input(rng):
    x = random_logits((6, 6), np.float64, rng)
    expected = fs.logsumexp(x.copy())
    out = x[:, 0]  # the result overwrites the first column, which is also input
    assert fs.logsumexp(x, out=out) is out
    np.testing.assert_array_equal(out, expected)


def _bad_outs(shape, dtype):
    other = np.float64 if np.dtype(dtype) == np.float32 else np.float32
    ro = np.full(shape, 7.0, dtype=dtype)
    ro.flags.writeable = False
    return [
        ("shape", np.full(shape + (1,), 7.0, dtype=dtype), ValueError),
        (
            "shape",
            np.full(shape[::-1] if len(set(shape)) > 1 else (1,) + shape, 7.0, dtype=dtype),
            ValueError,
        ),
        ("dtype", np.full(shape, 7.0, dtype=other), ValueError),
        ("dtype", np.full(shape, 7.0, dtype=np.float16), ValueError),
        ("read-only", ro, ValueError),
        ("ndarray", np.full(shape, 7.0, dtype=dtype).tolist(), TypeError),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", FORWARD + ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"])
def test_bad_out_raises_before_writing(name, dtype, rng):
    entry = COMPARISONS[name]
    args, _ = entry.make_args((4, 6), dtype, rng)
    before = [a.copy() for a in args]
    shape = entry.result_shape((4, 6))
    for what, out, error in _bad_outs(shape, dtype):
        snapshot = np.array(out, copy=True)
        with pytest.raises(error, match=what if what != "ndarray" else "numpy.ndarray"):
            entry.fast(*args, out=out)
        with pytest.raises(error):
            entry.reference(*args, out=out)
        np.testing.assert_array_equal(np.asarray(out), snapshot)
        for a, b in zip(args, before, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", SOFTMAX_LIKE)
def test_in_place_with_other_error_leaves_input(name, rng):
    """out=x plus an invalid argument: the error comes first, x is untouched."""
    x = random_logits((3, 4), np.float64, rng)
    before = x.copy()
    with pytest.raises(ValueError):
        call(name, x, temperature=-1.0, out=x)
    with pytest.raises(np.exceptions.AxisError):
        call(name, x, axis=5, out=x)
    np.testing.assert_array_equal(x, before)


def test_out_of_input_dtype_when_result_is_promoted(rng):
    """int input: the result is float64, so an int out (even x itself) is rejected."""
    x = random_logits((3, 4), np.int32, rng)
    with pytest.raises(ValueError, match="dtype"):
        fs.softmax(x, out=x)
    out = np.empty((3, 4), np.float64)
    assert fs.softmax(x, out=out) is out
    np.testing.assert_array_equal(out, fs.softmax(x.astype(np.float64)))


# ----------------------------------------------------------------------------- keepdims


@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2])
def test_logsumexp_keepdims(axis, keepdims, rng):
    x = random_logits((3, 4, 5), np.float64, rng)
    got = fs.logsumexp(x, axis=axis, keepdims=keepdims)
    want = ref.logsumexp(x, axis=axis, keepdims=keepdims)
    assert got.shape == np.sum(x, axis=axis, keepdims=keepdims).shape
    assert_close(got, want, rtol=1e-12, atol=1e-12 * np.max(np.abs(want)))
    assert max_error_ratio("logsumexp", got, x, axis=axis, keepdims=keepdims) <= 1
    out = np.empty(got.shape)
    assert fs.logsumexp(x, axis=axis, keepdims=keepdims, out=out) is out
    np.testing.assert_array_equal(out, got)
    with pytest.raises(ValueError, match="shape"):
        fs.logsumexp(x, axis=axis, keepdims=not keepdims, out=out)


@pytest.mark.parametrize(
    "dtype", [np.float16, np.float32, np.float64, np.int64], ids=lambda d: np.dtype(d).name
)
def test_logsumexp_1d_returns_a_numpy_scalar(dtype, rng):
    """A 0-d result is a NumPy scalar of the result dtype, as NumPy's reductions and SciPy's
    logsumexp return; with ``out=`` (a 0-d array) it is ``out``; keepdims keeps an array."""
    x = random_logits((7,), dtype, rng)
    want_type = RESULT_DTYPE[np.dtype(dtype)].type
    for impl in (fs.logsumexp, ref.logsumexp):
        got = impl(x)
        assert type(got) is want_type, impl
        assert type(impl(x, axis=0)) is want_type and type(impl(np.zeros(0, dtype))) is want_type
        assert isinstance(impl(x, keepdims=True), np.ndarray) and impl(x, keepdims=True).shape == (
            1,
        )
    assert type(np.max(x.astype(want_type))) is want_type
    special = pytest.importorskip("scipy.special")
    assert type(special.logsumexp(np.array([0.0, 1.0]))) is type(fs.logsumexp(np.array([0.0, 1.0])))
    out = np.empty((), want_type)
    assert fs.logsumexp(x, out=out) is out and out[()] == fs.logsumexp(x)


# ----------------------------------------------------------------------------- special values

NEG_NAN = np.copysign(np.nan, -1.0)


@pytest.mark.parametrize("nan", [np.nan, NEG_NAN], ids=["nan", "negative-nan"])
@pytest.mark.parametrize("where", [0, 3, 5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", FORWARD)
def test_nan_row(name, dtype, where, nan, rng):
    x = random_logits((5, 6), dtype, rng)
    x[2, where] = nan
    got = call(name, x)
    assert np.all(np.isnan(got[2]))
    others = [0, 1, 3, 4]
    assert not np.any(np.isnan(got[others]))
    np.testing.assert_array_equal(got[others], call(name, x[others]))  # other rows untouched
    COMPARISONS[name].check(got, call_ref(name, x), (x,))


@pytest.mark.parametrize("name", FORWARD)
def test_nan_with_infinities_is_nan(name):
    x = np.array(
        [
            [np.inf, np.nan, 0.0],
            [-np.inf, np.nan, -np.inf],
            [np.inf, -np.inf, NEG_NAN],
            [1.0, 2.0, 3.0],
        ]
    )
    got = call(name, x)
    assert np.all(np.isnan(got[:3]))
    assert np.all(np.isfinite(got[3]))


@pytest.mark.parametrize("temperature", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_posinf_splits_probability(dtype, temperature):
    inf = np.inf
    x = np.array(
        [
            [1.0, inf, 2.0, inf, -inf],
            [inf, 0.0, 0.0, 0.0, 0.0],
            [inf, inf, inf, inf, inf],
            [0.0, 1.0, 2.0, 3.0, 4.0],
        ],
        dtype=dtype,
    )
    p = fs.softmax(x, temperature=temperature)
    assert p.dtype == dtype
    np.testing.assert_array_equal(p[0], [0.0, 0.5, 0.0, 0.5, 0.0])
    np.testing.assert_array_equal(p[1], [1.0, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(p[2], np.full(5, dtype(0.2)))
    logp = fs.log_softmax(x, temperature=temperature)
    log_half = dtype(-math.log(2.0))
    np.testing.assert_array_equal(logp[0], [-inf, log_half, -inf, log_half, -inf])
    np.testing.assert_array_equal(logp[1], [0.0, -inf, -inf, -inf, -inf])
    np.testing.assert_allclose(logp[2], -math.log(5.0), rtol=rtol32(dtype))
    lse = fs.logsumexp(x)
    np.testing.assert_array_equal(lse[:3], [inf, inf, inf])
    assert np.isfinite(lse[3])
    kwargs = {"temperature": temperature}
    COMPARISONS["softmax"].check(p, ref.softmax(x, **kwargs), (x,), kwargs)
    COMPARISONS["log_softmax"].check(logp, ref.log_softmax(x, **kwargs), (x,), kwargs)
    COMPARISONS["logsumexp"].check(lse, ref.logsumexp(x), (x,))


def rtol32(dtype):
    return 2e-7 if dtype == np.float32 else 1e-15


@pytest.mark.parametrize("temperature", [1.0, 3.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_neginf_gives_exact_zero(dtype, temperature, rng):
    x = random_logits((6, 8), dtype, rng)
    mask = np.zeros(x.shape, bool)
    mask[:, ::3] = True
    x[mask] = -np.inf
    p = fs.softmax(x, temperature=temperature)
    logp = fs.log_softmax(x, temperature=temperature)
    assert np.all(p[mask] == 0.0) and not np.any(np.isnan(p))
    assert np.all(logp[mask] == -np.inf) and not np.any(np.isnan(logp))
    # the other entries: the softmax of the unmasked entries alone
    kept = x[~mask].reshape(6, -1)
    np.testing.assert_allclose(
        p[~mask].reshape(6, -1), fs.softmax(kept, temperature=temperature), rtol=rtol32(dtype) * 4
    )
    assert max_error_ratio("softmax", p[~mask].reshape(6, -1), kept, temperature=temperature) <= 1
    assert max_error_ratio("logsumexp", fs.logsumexp(x), kept) <= 1


@pytest.mark.parametrize("shape", [(1,), (4, 1), (3, 7), *jit_only((2, 100_000))], ids=str)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_all_neginf_rows(dtype, shape, rng):
    """Row 0 entirely -inf: softmax 0 (not NaN, not -0), log_softmax -inf, logsumexp -inf."""
    x = random_logits(shape, dtype, rng)
    x[0] = -np.inf  # the first entry of a 1-D row, the first row otherwise
    if x.ndim == 1:
        x[:] = -np.inf
    p, logp, lse = fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x)
    first = slice(None) if x.ndim == 1 else 0
    assert np.all(p[first] == 0.0) and not np.signbit(p[first]).any()
    assert np.all(logp[first] == -np.inf)
    assert np.all(lse[() if x.ndim == 1 else 0] == -np.inf)
    assert not np.isnan(p).any() and not np.isnan(logp).any() and not np.isnan(lse).any()
    if x.ndim > 1 and x.shape[0] > 1:  # the other rows are untouched
        np.testing.assert_array_equal(p[1:], fs.softmax(x[1:]))
        np.testing.assert_allclose(p[1:].sum(-1), 1.0, rtol=1e-5)
    for t in (1.0, 0.25):
        np.testing.assert_array_equal(fs.softmax(x, temperature=t)[first], 0.0)
        np.testing.assert_array_equal(fs.log_softmax(x, temperature=t)[first], -np.inf)
    COMPARISONS["softmax"].check(p, ref.softmax(x), (x,))
    COMPARISONS["log_softmax"].check(logp, ref.log_softmax(x), (x,))
    COMPARISONS["logsumexp"].check(lse, ref.logsumexp(x), (x,))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_extreme_finite_logits(dtype):
    """Entries near the float maximum: no overflow in x - max, exact limits where they are exact."""
    big = np.finfo(dtype).max
    x = np.array(
        [
            [big, big, 0.0],
            [-big, big, 0.0],
            [big, -big, -big],
            [-big, -big, -big],
            [1e-30, -1e-30, 0.0],
        ],
        dtype=dtype,
    )
    p = fs.softmax(x)
    np.testing.assert_array_equal(p[0], [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(p[1], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(p[2], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[3], 1 / 3, rtol=rtol32(dtype) * 2)
    np.testing.assert_allclose(p[4], 1 / 3, rtol=rtol32(dtype) * 2)
    lse = fs.logsumexp(x)
    np.testing.assert_allclose(lse[0], big, rtol=rtol32(dtype))
    assert np.all(np.isfinite(lse)) and np.all(np.isfinite(fs.log_softmax(x)[[0, 3, 4]]))


def test_tiny_probabilities_float32_keep_relative_accuracy():
    """Entries 80 nats below the max (p ~ 1e-35, float32 subnormal range starts at 1e-38)."""
    x = np.array([[0.0, -80.0, -80.5, -3.25, -60.125]], dtype=np.float32)
    assert max_error_ratio("softmax", fs.softmax(x), x) <= 1


# -------------------------------------------------------------------------- thread-count invariance


def _spy_launches(monkeypatch):
    """Record the work size of every kernel launch made by the public modules."""
    import sys

    # sys.modules: ``fastsoftmax.softmax`` as an attribute is the function, not the module
    modules = [sys.modules[f"fastsoftmax.{m}"] for m in ("softmax", "derivatives", "losses")]
    works = []

    def spy(kernel, work, *args):
        works.append(work)
        return runtime.launch(kernel, work, *args)

    for module in modules:
        monkeypatch.setattr(module, "launch", spy)
    return works


@pytest.mark.skipif(not parallel_threads_available(), reason="numba has fewer than 2 threads here")
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", list(COMPARISONS))
@needs_jit
def test_thread_count_invariance(name, dtype, monkeypatch, rng):
    """1 thread (serial kernel) and 2 threads (parallel kernel): bit-identical results."""
    shape = (150, 231) if name == "softmax_jacobian" else (301, 257)
    entry = COMPARISONS[name]
    args, kwargs = entry.make_args(shape, dtype, rng)
    if entry.takes_temperature:
        kwargs["temperature"] = 0.7
    works = _spy_launches(monkeypatch)
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = entry.fast(*args, **kwargs)
        numba.set_num_threads(2)
        two = entry.fast(*args, **kwargs)
    finally:
        numba.set_num_threads(previous)
    assert works and min(works) >= runtime.SERIAL_BELOW, "input too small for the parallel kernel"
    assert not runtime._serial_only
    one = one if isinstance(one, tuple) else (one,)
    two = two if isinstance(two, tuple) else (two,)
    for a, b in zip(one, two, strict=True):
        a, b = np.asarray(a), np.asarray(b)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), f"{name}: results differ between 1 and 2 threads"


@pytest.mark.skipif(not parallel_threads_available(), reason="numba has fewer than 2 threads here")
@needs_jit
def test_row_independent_of_batch(rng):
    """A row's result does not depend on the other rows (serial small batch vs parallel large)."""
    x = random_logits((400, 129), np.float32, rng)
    big = fs.softmax(x)
    for i in (0, 17, 399):
        np.testing.assert_array_equal(big[i], fs.softmax(x[i]))
    np.testing.assert_array_equal(fs.log_softmax(x)[5], fs.log_softmax(x[5:6])[0])
    np.testing.assert_array_equal(fs.logsumexp(x)[7], fs.logsumexp(x[7]))
