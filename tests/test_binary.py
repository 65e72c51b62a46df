"""The binary case: sigmoid, log_sigmoid, binary_cross_entropy_with_logits (+ _backward and
_with_grad).

Checked against the NumPy twins in ``fastsoftmax.reference``, against PyTorch for every option
combination, against the two-class softmax / cross-entropy of the same package, against central
finite differences, and on the special values (large |x|, +-inf, NaN) and errors.
"""

from __future__ import annotations

import itertools

import numba
import numpy as np
import pytest
from conftest import (
    INPUT_DTYPES,
    LAYOUT_NAMES,
    REJECTED_DTYPES,
    RESULT_DTYPE,
    jit_only,
    layouts,
    needs_jit,
)
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from fastsoftmax import _runtime
from fastsoftmax import reference as ref
from fastsoftmax.binary import SPAN
from fastsoftmax.testing import check_grad

BCE = fs.binary_cross_entropy_with_logits
BCE_BACKWARD = fs.binary_cross_entropy_with_logits_backward
BCE_WITH_GRAD = fs.binary_cross_entropy_with_logits_with_grad

# kernel vs twin (twin computed in float64 and rounded): a few ulp of the result dtype (float16
# results are rounded from the kernel's float32 ones)
RTOL = {np.dtype(np.float16): 2e-3, np.dtype(np.float32): 4e-6, np.dtype(np.float64): 1e-13}
SHAPES = [
    (),
    (0,),
    (1,),
    (7,),
    (3, 5),
    (2, 3, 4),
    (4, 0, 3),
    (SPAN + 3,),
    *jit_only((3, 2 * SPAN + 1)),
]


def close(actual, expected, rtol=None, scale_atol=True, msg=""):
    """Same dtype/shape/type, NaN and inf in the same places, finite entries within tolerance.

    With ``scale_atol`` entries are compared to ``rtol * max|expected|`` absolutely as well: right
    for gradients ``sigmoid(x) (a + b) - a``, which cancel where sigmoid(x) ~ y.
    """
    exp = np.asarray(expected)
    act = np.asarray(actual)
    assert type(actual) is type(expected) or (
        isinstance(actual, np.ndarray) and isinstance(expected, np.ndarray)
    ), msg
    assert act.dtype == exp.dtype, f"{msg}: dtype {act.dtype} != {exp.dtype}"
    assert act.shape == exp.shape, f"{msg}: shape {act.shape} != {exp.shape}"
    rtol = RTOL[exp.dtype] if rtol is None else rtol
    finite = np.abs(exp[np.isfinite(exp)])
    atol = rtol * float(finite.max()) if scale_atol and finite.size else 0.0
    # type, dtype and shape are checked above: assert_allclose's strict= needs NumPy 2
    np.testing.assert_allclose(act, exp, rtol=rtol, atol=atol, equal_nan=True, err_msg=msg)


def logits_of(shape, dtype, rng, scale=4.0):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        return rng.integers(0 if dtype.kind == "u" else -6, 7, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def soft_targets(shape, rng, dtype=np.float64):
    """Targets in [0, 1] with exact 0s and 1s among them."""
    y = rng.random(shape)
    y[rng.random(shape) < 0.3] = 0.0
    y[rng.random(shape) < 0.3] = 1.0
    return y.astype(dtype)


# --------------------------------------------------------------------------- against the twins


@pytest.mark.parametrize("fn", ["sigmoid", "log_sigmoid"])
@pytest.mark.parametrize("dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_elementwise_matches_reference(fn, dtype, shape, rng):
    x = logits_of(shape, dtype, rng, scale=20.0)
    got = getattr(fs, fn)(x)
    want = getattr(ref, fn)(x)
    assert got.dtype == RESULT_DTYPE[np.dtype(dtype)]
    close(got, want, scale_atol=False, msg=f"{fn} {dtype} {shape}")


@pytest.mark.parametrize("fn", ["sigmoid", "log_sigmoid"])
@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_elementwise_layouts_and_out(fn, layout, rng):
    x = logits_of((5, 6, 7), np.float64, rng)
    want = getattr(ref, fn)(x)
    arr = layouts(x)[layout]
    np.testing.assert_array_equal(getattr(fs, fn)(arr), getattr(fs, fn)(x))
    close(getattr(fs, fn)(arr), want)
    for out in (
        np.empty_like(x),
        np.empty(x.shape, order="F"),
        np.empty((10, 12, 14))[::2, ::2, ::2],
    ):
        res = getattr(fs, fn)(arr, out=out)
        assert res is out
        np.testing.assert_array_equal(out, getattr(fs, fn)(x))


@pytest.mark.parametrize("fn", ["sigmoid", "log_sigmoid"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_in_place(fn, dtype, rng):
    x = logits_of((3, 2 * SPAN + 5), dtype, rng)
    want = getattr(fs, fn)(x)
    res = getattr(fs, fn)(x, out=x)
    assert res is x
    np.testing.assert_array_equal(x, want)
    # in place on a non-contiguous view
    y = logits_of((8, 10), dtype, rng)
    want = getattr(fs, fn)(y[::2, 1::3])
    view = y[::2, 1::3]
    assert getattr(fs, fn)(view, out=view) is view
    np.testing.assert_array_equal(y[::2, 1::3], want)


WEIGHT_SHAPES = {
    "none": None,
    "scalar": (),
    "one": (1,),
    "class": (-1,),  # (C,): along the last axis
    "row": (-2, 1),  # (..., N, 1): one weight per row
    "full": "full",
}


def weight_of(kind, shape, rng):
    spec = WEIGHT_SHAPES[kind]
    if spec is None:
        return None
    if spec == "full":
        wshape = shape
    elif spec == (-1,):
        wshape = shape[-1:]
    elif spec == (-2, 1):
        wshape = shape[:-1] + (1,)
    else:
        wshape = spec
    w = rng.random(wshape) * 2.0
    w.reshape(-1)[:1] = 0.0  # a zero weight among them
    return w


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("pw_kind", ["none", "scalar", "class", "full"])
@pytest.mark.parametrize("w_kind", list(WEIGHT_SHAPES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int64], ids=str)
def test_bce_matches_reference(dtype, w_kind, pw_kind, reduction, rng):
    for shape in [(6, 5), (2, 3, 4), (9,), *jit_only((3, 2 * SPAN + 3), (1100, 7))]:
        x = logits_of(shape, dtype, rng)
        y = soft_targets(shape, rng)
        kw = dict(
            weight=weight_of(w_kind, shape, rng),
            pos_weight=weight_of(pw_kind, shape, rng),
            reduction=reduction,
        )
        msg = f"{dtype} {shape} {kw}"
        loss = BCE(x, y, **kw)
        close(loss, ref.binary_cross_entropy_with_logits(x, y, **kw), msg=msg)
        gout = 0.7 if reduction != "none" else rng.standard_normal(shape)
        close(
            BCE_BACKWARD(x, y, grad_output=gout, **kw),
            ref.binary_cross_entropy_with_logits_backward(x, y, grad_output=gout, **kw),
            msg=msg,
        )
        lg, g = BCE_WITH_GRAD(x, y, **kw)
        rl, rg = ref.binary_cross_entropy_with_logits_with_grad(x, y, **kw)
        close(lg, rl, msg=msg)
        close(g, rg, msg=msg)
        # the fused function gives exactly what the separate ones give
        np.testing.assert_array_equal(lg, loss)
        np.testing.assert_array_equal(g, BCE_BACKWARD(x, y, **kw))


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
def test_bce_layouts(layout, rng):
    shape = (4, 5, 6)
    x = logits_of(shape, np.float64, rng)
    y = soft_targets(shape, rng)
    w = rng.random(shape)
    pw = rng.random(6) + 0.5
    want = BCE_WITH_GRAD(x, y, weight=w, pos_weight=pw, reduction="sum")
    lx, ly, lw = layouts(x)[layout], layouts(y)[layout], layouts(w)[layout]
    got = BCE_WITH_GRAD(lx, ly, weight=lw, pos_weight=layouts(pw)[layout], reduction="sum")
    assert got[0] == want[0]
    np.testing.assert_array_equal(got[1], want[1])
    none = BCE(lx, ly, weight=lw, reduction="none")
    np.testing.assert_array_equal(none, BCE(x, y, weight=w, reduction="none"))


def test_bce_out_and_in_place(rng):
    shape = (7, 9)
    x = logits_of(shape, np.float32, rng)
    y = soft_targets(shape, rng, np.float32)
    want_loss, want_grad = BCE_WITH_GRAD(x, y, pos_weight=np.arange(9) / 4.0)
    logits = x.copy()
    loss, grad = BCE_WITH_GRAD(logits, y, pos_weight=np.arange(9) / 4.0, out=logits)
    assert grad is logits and loss == want_loss
    np.testing.assert_array_equal(logits, want_grad)
    for out in (np.empty(shape, np.float32, order="F"), np.empty((14, 18), np.float32)[::2, ::2]):
        assert BCE_BACKWARD(x, y, pos_weight=np.arange(9) / 4.0, out=out) is out
        np.testing.assert_array_equal(out, want_grad)
    # in place through a non-contiguous view of the logits
    big = np.zeros((14, 18), np.float32)
    big[::2, ::2] = x
    view = big[::2, ::2]
    BCE_WITH_GRAD(view, y, pos_weight=np.arange(9) / 4.0, out=view)
    np.testing.assert_array_equal(big[::2, ::2], want_grad)
    assert not big[1::2].any()


def test_bce_dtypes(rng):
    x = logits_of((4, 3), np.float16, rng)
    y = np.array([[0, 1, 1]] * 4)  # integer target: cast to the logits' compute dtype
    loss, grad = BCE_WITH_GRAD(x, y)  # float16 logits: computed in float32, float16 results
    assert isinstance(loss, np.float16) and grad.dtype == np.float16
    want_loss, want_grad = BCE_WITH_GRAD(x.astype(np.float32), y)
    assert loss == np.float16(want_loss) and np.array_equal(grad, want_grad.astype(np.float16))
    assert BCE(x, y, reduction="none").dtype == np.float16
    out = x.copy()
    assert BCE_BACKWARD(out, y, out=out) is out and np.array_equal(out, grad)
    with pytest.raises(ValueError, match="out has dtype"):
        BCE_BACKWARD(x, y, out=np.empty(x.shape, np.float32))
    for fn in ("sigmoid", "log_sigmoid"):
        assert getattr(fs, fn)(x).dtype == np.float16
        np.testing.assert_array_equal(
            getattr(fs, fn)(x), getattr(fs, fn)(x.astype(np.float32)).astype(np.float16)
        )
    loss, grad = BCE_WITH_GRAD(x.astype(np.int32), y.astype(bool), reduction="sum")
    assert isinstance(loss, np.float64) and grad.dtype == np.float64
    assert BCE(x.astype(np.float32), y, reduction="none").dtype == np.float32
    # float64 weights do not promote float32 logits
    assert isinstance(BCE(x.astype(np.float32), y, weight=np.ones(3)), np.float32)


def test_bce_empty():
    x = np.zeros((0, 4))
    assert np.isnan(BCE(x, x))
    assert BCE(x, x, reduction="sum") == 0.0
    assert BCE(x, x, reduction="none").shape == (0, 4)
    loss, grad = BCE_WITH_GRAD(x, x, weight=np.ones(4), pos_weight=np.ones(4))
    assert np.isnan(loss) and grad.shape == (0, 4)
    assert np.isnan(ref.binary_cross_entropy_with_logits(x, x))


def test_bce_scalar_input():
    """0-d logits give NumPy scalars (loss and gradient), as NumPy's ufuncs do, fast and
    reference alike; with ``out=`` (0-d) the result is ``out``."""
    for impl in (BCE_WITH_GRAD, ref.binary_cross_entropy_with_logits_with_grad):
        loss, grad = impl(np.float64(0.5), 1.0, reduction="none")
        assert type(loss) is np.float64 and type(grad) is np.float64, impl
        np.testing.assert_allclose(loss, np.log1p(np.exp(-0.5)), rtol=1e-15)
        np.testing.assert_allclose(grad, 1 / (1 + np.exp(-0.5)) - 1, rtol=1e-15)
    assert type(BCE_BACKWARD(np.float32(0.5), 1.0)) is np.float32
    assert type(BCE(np.array(0.5, np.float16), 1.0, reduction="none")) is np.float16
    for fn in ("sigmoid", "log_sigmoid"):
        assert type(np.exp(np.array(0.0))) is np.float64
        for impl in (getattr(fs, fn), getattr(ref, fn)):
            assert type(impl(0.0)) is np.float64 and type(impl(np.float32(0.0))) is np.float32
            out = np.empty(())
            assert impl(0.0, out=out) is out
    assert fs.sigmoid(0.0) == 0.5


# --------------------------------------------------------------------------- against PyTorch

torch_options = list(
    itertools.product(
        ["none", "scalar", "class", "row", "full"],  # weight
        ["none", "one", "class", "full"],  # pos_weight
        ["mean", "sum", "none"],
    )
)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("w_kind,pw_kind,reduction", torch_options)
def test_bce_matches_torch(w_kind, pw_kind, reduction, dtype, rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for shape in [(6, 5), (2, 3, 4), (11,)]:
        x = logits_of(shape, dtype, rng)
        x.reshape(-1)[:2] = [30.0, -30.0]
        y = soft_targets(shape, rng, dtype)
        w = weight_of(w_kind, shape, rng)
        pw = weight_of(pw_kind, shape, rng)
        w = None if w is None else w.astype(dtype)
        pw = None if pw is None else pw.astype(dtype)
        tx = torch.tensor(x, requires_grad=True)
        tloss = F.binary_cross_entropy_with_logits(
            tx,
            torch.tensor(y),
            weight=None if w is None else torch.tensor(w),
            pos_weight=None if pw is None else torch.tensor(pw),
            reduction=reduction,
        )
        gout = rng.standard_normal(tloss.shape).astype(dtype) if reduction == "none" else 1.5
        tloss.backward(torch.tensor(gout, dtype=tloss.dtype))
        kw = dict(weight=w, pos_weight=pw, reduction=reduction)
        msg = f"{shape} {kw}"
        loss = BCE(x, y, **kw)
        close(np.asarray(loss), tloss.detach().numpy(), rtol=rtol, msg=msg)
        close(BCE_BACKWARD(x, y, grad_output=gout, **kw), tx.grad.numpy(), rtol=rtol, msg=msg)
        lg, g = BCE_WITH_GRAD(x, y, **kw)
        assert np.array_equal(lg, loss)
        unit = BCE_BACKWARD(
            x, y, grad_output=np.ones(shape, dtype) if reduction == "none" else 1.0, **kw
        )
        np.testing.assert_array_equal(g, unit)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_matches_torch(dtype):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-120, 120, 4001), [-1e30, 1e30, 0.0, -0.0, 1e-30]]).astype(
        dtype
    )
    t = torch.tensor(x)
    rtol = 4 * np.finfo(dtype).eps  # both ~1-2 ulp from the exact value
    # torch's float32 sigmoid flushes subnormal results to 0; ours keeps them: atol = tiny
    tiny = np.finfo(dtype).tiny
    np.testing.assert_allclose(fs.sigmoid(x), torch.sigmoid(t).numpy(), rtol=rtol, atol=tiny)
    np.testing.assert_allclose(
        fs.log_sigmoid(x), torch.nn.functional.logsigmoid(t).numpy(), rtol=rtol * 2, atol=tiny
    )


# --------------------------------------------------------------------------- independent math


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_class_softmax_is_sigmoid(dtype, rng):
    z = np.concatenate([rng.standard_normal(500) * 5, np.linspace(-80, 80, 161)]).astype(dtype)
    pair = np.stack([z, np.zeros_like(z)], axis=-1)
    rtol = 2e-6 if dtype == np.float32 else 4e-15
    np.testing.assert_allclose(fs.sigmoid(z), fs.softmax(pair)[:, 0], rtol=rtol, atol=0)
    np.testing.assert_allclose(fs.sigmoid(-z), fs.softmax(pair)[:, 1], rtol=rtol, atol=0)
    # log_softmax = z - m - log(sum) is accurate to ~eps absolutely near 0; log_sigmoid (log1p)
    # keeps relative accuracy there, so the two agree to rtol or to an eps absolutely
    eps = np.finfo(dtype).eps
    np.testing.assert_allclose(fs.log_sigmoid(z), fs.log_softmax(pair)[:, 0], rtol=rtol, atol=eps)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_is_two_class_cross_entropy(reduction, rng):
    """BCE(z, y) with y in {0, 1} == cross_entropy([z, 0], class 0 if y else class 1)."""
    z = rng.standard_normal((40, 3)) * 6
    y = (rng.random((40, 3)) < 0.5).astype(np.float64)
    pair = np.stack([z, np.zeros_like(z)], axis=-1)
    cls = np.where(y == 1, 0, 1)
    # cross_entropy's log(sum) near 1 is accurate to ~eps absolutely: atol a few eps
    np.testing.assert_allclose(
        BCE(z, y, reduction=reduction),
        fs.cross_entropy(pair, cls, reduction=reduction),
        rtol=1e-13,
        atol=1e-15,
    )
    gpair = fs.cross_entropy_backward(pair, cls, reduction=reduction)
    np.testing.assert_allclose(
        BCE_BACKWARD(z, y, reduction=reduction), gpair[..., 0], rtol=1e-13, atol=1e-16
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_bce_gradient_is_sigmoid_minus_target(dtype, rng):
    z = logits_of((50, 4), dtype, rng)
    y = soft_targets((50, 4), rng, dtype)
    rtol = 4e-6 if dtype == np.float32 else 1e-14
    s = fs.sigmoid(z)
    np.testing.assert_allclose(BCE_BACKWARD(z, y, reduction="sum"), s - y, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(
        BCE_WITH_GRAD(z, y)[1], (s - y) / z.size, rtol=rtol, atol=rtol / z.size
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bce_gradient_finite_differences(reduction, weighted, rng):
    shape = (5, 4)
    x = rng.standard_normal(shape) * 3
    y = soft_targets(shape, rng)
    kw = dict(reduction=reduction)
    if weighted:
        kw.update(weight=rng.random((5, 1)) + 0.1, pos_weight=rng.random(4) * 3)
    gout = rng.standard_normal(shape) if reduction == "none" else 1.0

    def f(z):
        return np.sum(gout * BCE(z, y, **kw))

    grad = BCE_BACKWARD(x, y, grad_output=gout, **kw)
    assert check_grad(f, x, grad) < 1e-8
    if reduction != "none":  # f returning (loss, grad): the fused function checks itself
        assert check_grad(lambda z: BCE_WITH_GRAD(z, y, **kw), x) < 1e-8


def test_sigmoid_derivatives_finite_differences(rng):
    x = rng.standard_normal(20) * 4
    # d sigmoid = s (1 - s); d log_sigmoid = 1 - s = sigmoid(-x)
    s = fs.sigmoid(x)
    assert (
        check_grad(lambda z: np.sum(fs.sigmoid(z) * np.arange(20)), x, s * (1 - s) * np.arange(20))
        < 1e-8
    )
    assert check_grad(lambda z: np.sum(fs.log_sigmoid(z)), x, fs.sigmoid(-x)) < 1e-8


def test_sigmoid_symmetry_and_range(rng):
    x = rng.standard_normal(10000) * 30
    s = fs.sigmoid(x)
    assert np.all((s >= 0) & (s <= 1))
    np.testing.assert_allclose(s + fs.sigmoid(-x), 1.0, rtol=0, atol=2.3e-16)
    assert np.all(fs.log_sigmoid(x) <= 0)
    np.testing.assert_allclose(fs.log_sigmoid(x) - fs.log_sigmoid(-x), x, rtol=1e-14, atol=1e-14)


# --------------------------------------------------------------------------- special values


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_logits_exact_limits(dtype):
    big = dtype(1000.0)
    x = np.array([big, big, -big, -big, np.inf, np.inf, -np.inf, -np.inf], dtype=dtype)
    y = np.array([1, 0, 1, 0, 1, 0, 1, 0], dtype=dtype)
    np.testing.assert_array_equal(fs.sigmoid(x), [1, 1, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(fs.log_sigmoid(x), [0, 0, -1000, -1000, 0, 0, -np.inf, -np.inf])
    loss, grad = BCE_WITH_GRAD(x, y, reduction="none")
    np.testing.assert_array_equal(loss, [0, 1000, 1000, 0, 0, np.inf, np.inf, 0])
    np.testing.assert_array_equal(grad, [0, 1, -1, 0, 0, 1, -1, 0])
    finite = slice(0, 4)
    assert BCE(x[finite], y[finite], reduction="sum") == 2000
    assert np.isfinite(BCE(x[finite], y[finite]))
    # a zero weight silences an infinite term (no 0 * inf = NaN)
    w = np.array([1, 1, 1, 1, 1, 0, 0, 1], dtype=dtype)
    np.testing.assert_array_equal(
        BCE(x, y, weight=w, reduction="none"), [0, 1000, 1000, 0, 0, 0, 0, 0]
    )
    np.testing.assert_array_equal(
        ref.binary_cross_entropy_with_logits(x, y, reduction="none"),
        [0, 1000, 1000, 0, 0, np.inf, np.inf, 0],
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_small_terms_keep_relative_accuracy(dtype):
    """log1p(exp(-|x|)) for large |x| is exp(-|x|), not 0: the tail of the loss keeps its digits."""
    x = np.array([10.0, 20.0, 40.0, 80.0], dtype=dtype)
    expected = np.log1p(np.exp(-x.astype(np.float64)))
    rtol = 4e-7 if dtype == np.float32 else 4e-16
    np.testing.assert_allclose(-fs.log_sigmoid(x), expected.astype(dtype), rtol=rtol, atol=0)
    np.testing.assert_allclose(
        BCE(x, np.ones_like(x), reduction="none"), expected.astype(dtype), rtol=rtol, atol=0
    )
    e = np.exp(-x.astype(np.float64))
    np.testing.assert_allclose(fs.sigmoid(-x), (e / (1 + e)).astype(dtype), rtol=rtol, atol=0)


def test_nan_stays_local():
    x = np.array([[0.5, np.nan, -2.0], [1.0, 2.0, 3.0]])
    y = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    s = fs.sigmoid(x)
    assert np.isnan(s[0, 1]) and np.isfinite(np.delete(s.ravel(), 1)).all()
    loss, grad = BCE_WITH_GRAD(x, y, weight=np.array([1.0, 0.0, 1.0]), reduction="none")
    assert np.isnan(loss[0, 1]) and np.isnan(grad[0, 1])  # NaN even with weight 0
    assert (
        np.isfinite(np.delete(loss.ravel(), 1)).all()
        and np.isfinite(np.delete(grad.ravel(), 1)).all()
    )
    assert np.isnan(BCE(x, y)) and np.isnan(BCE(x, y, reduction="sum"))
    close(
        loss,
        ref.binary_cross_entropy_with_logits(
            x, y, weight=np.array([1.0, 0.0, 1.0]), reduction="none"
        ),
    )


# --------------------------------------------------------------------------- threads, blocks


@pytest.mark.slow
@pytest.mark.parametrize("pos_weight", [None, "class"])
@needs_jit
def test_thread_count_invariance(pos_weight, rng):
    shape = (300, 257) if pos_weight else (77_777,)
    x = logits_of(shape, np.float32, rng)
    y = soft_targets(shape, rng, np.float32)
    pw = rng.random(shape[-1]) if pos_weight else None
    assert x.size >= _runtime.SERIAL_BELOW
    before = numba.get_num_threads()
    results = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            results.append(
                (
                    BCE_WITH_GRAD(x, y, pos_weight=pw, reduction="sum"),
                    fs.sigmoid(x),
                    fs.log_sigmoid(x),
                )
            )
    finally:
        numba.set_num_threads(before)
    (l0, g0), s0, ls0 = results[0]
    for (l1, g1), s1, ls1 in results[1:]:
        assert l0 == l1
        np.testing.assert_array_equal(g0, g1)
        np.testing.assert_array_equal(s0, s1)
        np.testing.assert_array_equal(ls0, ls1)


@pytest.mark.parametrize("classes", [1, 3, 7, SPAN - 1, SPAN + 1, 3 * SPAN])
def test_weights_along_last_axis_align_with_blocks(classes, rng):
    """A (C,) weight is tiled over blocks of a multiple of C entries: every C and block size."""
    rows = max(2, 3 * SPAN // classes + 1)
    shape = (rows, classes)
    x = logits_of(shape, np.float64, rng)
    y = soft_targets(shape, rng)
    w = rng.random(classes)
    pw = rng.random(classes) * 3
    for kw in (
        dict(weight=w),
        dict(pos_weight=pw),
        dict(weight=w, pos_weight=pw),
        dict(weight=rng.random((rows, 1)), pos_weight=pw),
    ):
        for reduction in ("sum", "none"):
            loss, grad = BCE_WITH_GRAD(x, y, reduction=reduction, **kw)
            want_loss, want_grad = ref.binary_cross_entropy_with_logits_with_grad(
                x, y, reduction=reduction, **kw
            )
            close(loss, want_loss, msg=f"{classes} {kw}")
            close(grad, want_grad, msg=f"{classes} {kw}")


@given(
    hnp.arrays(
        np.float64,
        hnp.array_shapes(min_dims=1, max_dims=3, max_side=6),
        elements=st.floats(-1e4, 1e4),
    ),
    st.floats(0, 1),
)
def test_property_bce_nonnegative_and_matches_reference(x, p):
    y = np.full(x.shape, p)
    loss = BCE(x, y, reduction="none")
    assert np.all(loss >= 0)
    close(loss, ref.binary_cross_entropy_with_logits(x, y, reduction="none"))
    close(BCE_BACKWARD(x, y), ref.binary_cross_entropy_with_logits_backward(x, y))
    s = fs.sigmoid(x)
    assert np.all((s >= 0) & (s <= 1)) and np.all(fs.log_sigmoid(x) <= 0)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize("dtype", REJECTED_DTYPES, ids=str)
def test_rejected_dtypes(dtype):
    bad = np.zeros(3, dtype=dtype)
    good = np.zeros(3)
    for call in (
        lambda: fs.sigmoid(bad),
        lambda: fs.log_sigmoid(bad),
        lambda: BCE(bad, good),
        lambda: BCE(good, bad),
        lambda: BCE(good, good, weight=bad),
        lambda: BCE(good, good, pos_weight=bad),
    ):
        with pytest.raises(TypeError):
            call()
    with pytest.raises(TypeError):
        fs.sigmoid(None)
    with pytest.raises(TypeError):
        BCE(None, np.zeros(3))
    with pytest.raises(TypeError):
        BCE_BACKWARD(np.zeros(3), np.zeros(3), reduction="none", grad_output=np.zeros(3, complex))


@pytest.mark.parametrize(
    "make_call, match",
    [
        (lambda x, y: BCE(x, y[:, :3]), "target has shape"),
        (lambda x, y: BCE(x, y[0]), "target has shape"),
        (lambda x, y: BCE(x, np.where(y > 0.5, np.nan, y)), "target holds NaN"),
        (lambda x, y: BCE(x, y + np.inf), "target holds NaN or inf"),
        (lambda x, y: BCE(x, y, weight=np.ones(5)), "weight has shape"),
        (lambda x, y: BCE(x, y, weight=np.ones((1, 6, 4))), "weight has shape"),
        (lambda x, y: BCE(x, y, weight=np.ones((6, 4, 1))), "weight has shape"),
        (lambda x, y: BCE(x, y, pos_weight=np.ones(6)), "pos_weight has shape"),
        (lambda x, y: BCE(x, y, weight=-np.ones(4)), "weight holds a negative"),
        (lambda x, y: BCE(x, y, pos_weight=np.full(4, -0.5)), "pos_weight holds a negative"),
        (lambda x, y: BCE(x, y, weight=np.full(4, np.nan)), "weight holds NaN"),
        (lambda x, y: BCE(x, y, pos_weight=np.full(4, np.inf)), "pos_weight holds NaN or inf"),
        (lambda x, y: BCE(x, y, reduction="avg"), "reduction must be one of"),
        (lambda x, y: BCE_BACKWARD(x, y, grad_output=np.ones((6, 4))), "grad_output has shape"),
        (
            lambda x, y: BCE_BACKWARD(x, y, reduction="none", grad_output=np.ones(4)),
            "grad_output has shape",
        ),
        (lambda x, y: BCE_BACKWARD(x, y, out=np.empty((4, 6))), "out has shape"),
        (lambda x, y: BCE_WITH_GRAD(x, y, out=np.empty((6, 4), np.float32)), "out has dtype"),
        (lambda x, y: fs.sigmoid(x, out=np.empty(24)), "out has shape"),
        (lambda x, y: fs.log_sigmoid(x, out=np.empty((6, 4), np.float32)), "out has dtype"),
    ],
)
def test_errors(make_call, match, rng):
    x = rng.standard_normal((6, 4))
    y = soft_targets((6, 4), rng)
    with pytest.raises(ValueError, match=match):
        make_call(x, y)


def test_errors_raised_before_writing(rng):
    x = rng.standard_normal((6, 4))
    y = soft_targets((6, 4), rng)
    out = np.full((6, 4), 7.0)
    readonly = np.zeros((6, 4))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        BCE_WITH_GRAD(x, y, out=readonly)
    with pytest.raises(ValueError, match="read-only"):
        fs.sigmoid(x, out=readonly)
    with pytest.raises(ValueError):
        BCE_WITH_GRAD(x, y, weight=-np.ones(4), out=out)
    with pytest.raises(TypeError):
        fs.sigmoid(x, out=[0.0] * 24)
    assert np.all(out == 7.0)


@pytest.mark.parametrize(
    "name",
    [
        "sigmoid",
        "log_sigmoid",
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy_with_logits_backward",
        "binary_cross_entropy_with_logits_with_grad",
    ],
)
def test_reference_rejects_alike(name, rng):
    """The NumPy twin, whose checks are its own, rejects what the public function rejects with
    the same exception class (the public messages are checked in test_errors)."""
    x = rng.standard_normal((6, 4))
    y = soft_targets((6, 4), rng)
    fast, slow = getattr(fs, name), getattr(ref, name)
    binary = "sigmoid" in name and "cross" not in name
    calls = [((None,), {}), ((x.astype(complex),), {})]
    if name != "binary_cross_entropy_with_logits":  # the loss alone takes no out=
        outs = [[0.0] * 24, np.empty((4, 6)), np.empty((6, 4), np.float32), np.empty((6, 4), int)]
        calls += [((x,), {"out": out}) for out in outs]
    if not binary:
        calls = [(args + (y,), kw) for args, kw in calls] + [
            ((x, y[:, :3]), {}),
            ((x, np.where(y > 0.5, np.nan, y)), {}),
            ((x, y.astype(str)), {}),
            ((x, y), {"weight": np.ones(3)}),
            ((x, y), {"weight": np.ones((6, 4, 1))}),
            ((x, y), {"weight": np.ones(4, complex)}),
            ((x, y), {"pos_weight": -np.ones(4)}),
            ((x, y), {"pos_weight": np.full(4, np.inf)}),
            ((x, y), {"reduction": "x"}),
        ]
    if name.endswith("_backward"):
        calls += [
            ((x, y), {"grad_output": np.ones((6, 4))}),
            ((x, y), {"grad_output": "1"}),
            ((x, y), {"reduction": "none", "grad_output": np.ones(4)}),
        ]
    for args, kw in calls:
        with pytest.raises((TypeError, ValueError)) as e_fast:
            fast(*args, **kw)
        with pytest.raises((TypeError, ValueError)) as e_slow:
            slow(*args, **kw)
        assert type(e_slow.value) is type(e_fast.value), (name, kw, e_fast.value, e_slow.value)
        assert "unexpected keyword" not in str(e_fast.value)  # a check, not a bad call


@needs_jit
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_elementwise_results_do_not_depend_on_position(dtype):
    """An element gives the same bits in a loop's vector body as in its scalar remainder (a
    single-element call): with FMA contraction the two paths rounded differently."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(300) * 3).astype(dtype)
    y = rng.random(300).astype(dtype)
    pw = (rng.random(300) + 0.5).astype(dtype)
    whole = {
        "loss": fs.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction="none"),
        "grad": fs.binary_cross_entropy_with_logits_backward(x, y, pos_weight=pw, reduction="none"),
        "sigmoid": fs.sigmoid(x),
        "log_sigmoid": fs.log_sigmoid(x),
    }
    for i in range(x.size):
        one = slice(i, i + 1)
        single = {
            "loss": fs.binary_cross_entropy_with_logits(
                x[one], y[one], pos_weight=pw[one], reduction="none"
            ),
            "grad": fs.binary_cross_entropy_with_logits_backward(
                x[one], y[one], pos_weight=pw[one], reduction="none"
            ),
            "sigmoid": fs.sigmoid(x[one]),
            "log_sigmoid": fs.log_sigmoid(x[one]),
        }
        for name, values in whole.items():
            assert values[i] == single[name][0], (name, i, x[i])
