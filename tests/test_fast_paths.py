"""The wrappers' fast paths for plain inputs, against their general paths.

A plain input (``_validate.plain_rows``) is a writable C-contiguous 2-D float32/float64 array; a
call made only of plain arrays and simple options skips the general checks and conversions. The
same call with read-only copies of the arrays goes the general way (conversion checks, writable
aliases), so comparing the two checks the fast path: the same bits, the same result types, the
same errors, and an untouched ``out`` on error.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import jit_only
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs
from fastsoftmax import _validate

DTYPES = [np.float32, np.float64]
# short rows, one class, a long row, and a shape above the serial launch threshold
SHAPES = [(64, 10), (5, 1), (3, 40), *jit_only((300, 129))]


def frozen(a: np.ndarray) -> np.ndarray:
    """A read-only copy: the same values, sent down the general path."""
    b = np.array(a, order="C")
    b.flags.writeable = False
    return b


def logits_with_specials(shape, dtype, rng) -> np.ndarray:
    """Random logits whose rows 1-3 hold a NaN, a +inf and -inf entries (where they exist)."""
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    rows, classes = shape
    if rows > 3:
        x[1, 0] = np.nan
        x[2, -1] = np.inf
        x[3, : max(1, classes // 2)] = -np.inf
    return x


def assert_same(fast, general) -> None:
    """Identical results: the same types, dtypes, shapes and bits (NaN where NaN)."""
    assert type(fast) is type(general)
    if isinstance(fast, tuple):
        assert len(fast) == len(general)
        for a, b in zip(fast, general, strict=True):
            assert_same(a, b)
        return
    assert np.asarray(fast).dtype == np.asarray(general).dtype
    np.testing.assert_array_equal(fast, general, strict=True)


def targets(rows: int, classes: int, ignore_index: int, rng) -> np.ndarray:
    y = rng.integers(0, classes, rows)
    y[::4] = ignore_index  # ignored rows among the others
    return y


CE_OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"label_smoothing": 0.1},
    {"temperature": 2.0, "z_loss": 1e-3},
    {"temperature": 1},
    {"ignore_index": 3, "reduction": "none", "label_smoothing": 1.0},
]


@pytest.mark.parametrize("options", CE_OPTIONS, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("where_out", ["new", "out", "in_place"])
def test_cross_entropy_fast_path_matches_general_path(options, shape, dtype, where_out):
    rng = np.random.default_rng(0)
    x = logits_with_specials(shape, dtype, rng)
    y = targets(shape[0], shape[1], options.get("ignore_index", -100), rng)
    forward = fs.cross_entropy(x, y, **options)
    assert_same(forward, fs.cross_entropy(frozen(x), frozen(y), **options))
    grad_output = rng.standard_normal(shape[0]) if options.get("reduction") == "none" else 0.5
    kwargs = dict(options, grad_output=grad_output)
    for fn, kw in (
        (fs.cross_entropy_with_grad, options),
        (fs.cross_entropy_backward, kwargs),
    ):
        general = fn(frozen(x), frozen(y), **kw)
        z = x.copy()
        if where_out == "new":
            fast = fn(z, y, **kw)
        else:
            out = z if where_out == "in_place" else np.full_like(z, 7.0)
            fast = fn(z, y, out=out, **kw)
            grad = fast[1] if isinstance(fast, tuple) else fast
            assert grad is out
        assert_same(fast, general)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("where_out", ["new", "out", "in_place"])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_softmax_fast_path_matches_general_path(shape, dtype, name, where_out, temperature):
    fn = getattr(fs, name)
    x = logits_with_specials(shape, dtype, np.random.default_rng(1))
    general = fn(frozen(x), temperature=temperature)
    z = x.copy()
    if where_out == "new":
        fast = fn(z, 1, temperature=temperature)
    else:
        out = z if where_out == "in_place" else np.full_like(z, 7.0)
        fast = fn(z, temperature=temperature, out=out)
        assert fast is out
    assert_same(fast, general)


@pytest.mark.parametrize("shape", [*SHAPES, (0, 7)], ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("axis", [-1, 1])
def test_logsumexp_fast_path_matches_general_path(shape, dtype, axis):
    x = logits_with_specials(shape, dtype, np.random.default_rng(7))
    fast = fs.logsumexp(x.copy(), axis)
    assert_same(fast, fs.logsumexp(frozen(x), axis))
    assert fast.shape == shape[:1]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"])
@pytest.mark.parametrize("where_out", ["new", "out", "over_first", "over_second"])
def test_product_fast_path_matches_general_path(shape, dtype, name, where_out):
    fn = getattr(fs, name)
    rng = np.random.default_rng(2)
    logits = logits_with_specials(shape, dtype, rng)
    a = fs.log_softmax(logits) if name == "log_softmax_vjp" else fs.softmax(logits)
    b = rng.standard_normal(shape).astype(dtype)
    general = fn(frozen(a), frozen(b), temperature=2.0)
    a, b = a.copy(), b.copy()
    if where_out == "new":
        fast = fn(a, b, temperature=2.0)
    else:
        out = {"out": np.full_like(a, 7.0), "over_first": a, "over_second": b}[where_out]
        fast = fn(a, b, temperature=2.0, out=out)
        assert fast is out
    assert_same(fast, general)


def _ce_call(x, y, **kw):
    return fs.cross_entropy_with_grad(x, y, **kw)


# Calls with plain arrays that must fail: the fast path must raise what the general path raises
# (or leave it to it) and leave the inputs and ``out`` untouched.
BAD_CALLS = {
    "target_out_of_range": (_ce_call, {"target": 10}),
    "target_negative": (_ce_call, {"target": -1}),
    "temperature_zero": (_ce_call, {"temperature": 0.0}),
    "temperature_nan": (_ce_call, {"temperature": float("nan")}),
    "label_smoothing_above_1": (_ce_call, {"label_smoothing": 1.5}),
    "label_smoothing_nan": (_ce_call, {"label_smoothing": float("nan")}),
    "reduction_unknown": (_ce_call, {"reduction": "avg"}),
    "ignore_index_beyond_int64": (_ce_call, {"ignore_index": 2**70}),
    "ignore_index_bool": (_ce_call, {"ignore_index": True}),
    "z_loss_negative": (_ce_call, {"z_loss": -1.0}),
    "z_loss_inf": (_ce_call, {"z_loss": float("inf")}),
    "out_float64": (_ce_call, {"out": "float64"}),
    "out_wrong_shape": (_ce_call, {"out": "short"}),
    "grad_output_wrong_shape": (
        lambda x, y, **kw: fs.cross_entropy_backward(x, y, reduction="none", **kw),
        {"grad_output": "short"},
    ),
    "grad_output_array_for_mean": (
        lambda x, y, **kw: fs.cross_entropy_backward(x, y, **kw),
        {"grad_output": "rows"},
    ),
    "softmax_temperature_negative": (
        lambda x, y, **kw: fs.softmax(x, **kw),
        {"temperature": -1.0},
    ),
    "softmax_axis_bool": (lambda x, y, **kw: fs.softmax(x, True, **kw), {}),
    "softmax_axis_2": (lambda x, y, **kw: fs.log_softmax(x, 2, **kw), {}),
    "softmax_out_float64": (lambda x, y, **kw: fs.softmax(x, **kw), {"out": "float64"}),
    "jvp_temperature_inf": (
        lambda x, y, **kw: fs.softmax_jvp(x, x.copy(), **kw),
        {"temperature": float("inf")},
    ),
    "jvp_shapes_differ": (lambda x, y, **kw: fs.softmax_jvp(x, x[:-1].copy(), **kw), {}),
}


def _resolve(kw: dict, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """The call's keyword arguments with placeholders made concrete, and its target."""
    kw = dict(kw)
    y = y.copy()
    if "target" in kw:
        y[2] = kw.pop("target")
    if kw.get("out") == "float64":
        kw["out"] = np.zeros(x.shape, np.float64)
    elif kw.get("out") == "short":
        kw["out"] = np.zeros((x.shape[0] - 1, x.shape[1]), x.dtype)
    if kw.get("grad_output") == "short":
        kw["grad_output"] = np.ones(x.shape[0] - 1)
    elif kw.get("grad_output") == "rows":
        kw["grad_output"] = np.ones(x.shape[0])
    return kw, y


@pytest.mark.parametrize("case", list(BAD_CALLS))
@pytest.mark.parametrize("in_place", [False, True])
def test_fast_path_errors_match_general_path(case, in_place):
    fn, kw = BAD_CALLS[case]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 10)).astype(np.float32)
    y = rng.integers(0, 10, 8)
    kw, y = _resolve(kw, x, y)
    with pytest.raises(Exception) as general:
        fn(frozen(x), frozen(y), **kw)
    z, z_before, y_before = x.copy(), x.copy(), y.copy()
    if in_place and "out" not in kw and "softmax" not in case and "jvp" not in case:
        kw["out"] = z
    with pytest.raises(type(general.value)) as fast:
        fn(z, y, **kw)
    assert str(fast.value) == str(general.value)
    np.testing.assert_array_equal(z, z_before, strict=True)
    np.testing.assert_array_equal(y, y_before, strict=True)
    if isinstance(kw.get("out"), np.ndarray) and kw["out"] is not z:
        assert not kw["out"].any()


def _forbid(monkeypatch, *names: str) -> None:
    """Make the general path's entry points fail, to show that a call did not go through them."""

    def fail(*args, **kwargs):
        raise AssertionError("the general path was taken")

    for name in names:
        monkeypatch.setattr(_validate, name, fail)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_plain_calls_take_the_fast_path(monkeypatch, dtype):
    """The comparisons above would pass without any fast path: this shows the plain calls take
    it, and that calls that are not plain do not."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((16, 10)).astype(dtype)
    p = fs.softmax(x)
    y = rng.integers(0, 10, 16)
    _forbid(monkeypatch, "as_float_array", "product_args", "cross_entropy_args", "RowsOut")
    fs.softmax(x)
    fs.log_softmax(x, axis=1, out=np.empty_like(x))
    fs.logsumexp(x)
    fs.softmax_jvp(p, x)
    fs.softmax_vjp(p, x, out=x.copy())
    fs.cross_entropy(x, y, reduction="none", label_smoothing=0.2)
    fs.cross_entropy_with_grad(x, y, out=x.copy(), z_loss=1e-4)
    fs.cross_entropy_backward(x, y, grad_output=2.0, temperature=3.0)
    for not_plain in (
        lambda: fs.softmax(x.astype(np.float16)),
        lambda: fs.softmax(x.T),
        lambda: fs.softmax(frozen(x)),
        lambda: fs.softmax(x[None]),
        lambda: fs.softmax(x, axis=0),
        lambda: fs.softmax(x, where=np.ones(x.shape, bool)),
        lambda: fs.softmax(x, out=x[:, ::-1]),
        lambda: fs.logsumexp(x, keepdims=True),
        lambda: fs.logsumexp(x, out=np.empty(16, dtype)),
        lambda: fs.logsumexp(x, axis=0),
        lambda: fs.softmax_jvp(p, x.astype(np.float16)),
        lambda: fs.cross_entropy(x, y.astype(np.int32)),
        lambda: fs.cross_entropy(x, y, weight=np.ones(10)),
        lambda: fs.cross_entropy(x, p),
        lambda: fs.cross_entropy(x, y, softcap=5.0),
        lambda: fs.cross_entropy(x, y, label_smoothing=np.float64(0.1)),
    ):
        with pytest.raises(AssertionError, match="general path"):
            not_plain()


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_results_are_never_shared_between_calls(dtype):
    """The fast paths reuse vectors of ones between calls: no result may be one of them, and
    writing a result must not change the next one."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((16, 10)).astype(dtype)
    y = rng.integers(0, 10, 16)
    p = fs.softmax(x)
    calls = [
        lambda: fs.softmax(x),
        lambda: fs.log_softmax(x),
        lambda: fs.logsumexp(x),
        lambda: fs.softmax_jvp(p, x),
        lambda: fs.cross_entropy(x, y, reduction="none"),
        lambda: fs.cross_entropy_backward(x, y),
        lambda: fs.cross_entropy_with_grad(x, y)[1],
    ]
    for call in calls:
        first = call()
        expected = first.copy()
        first[...] = 1.0
        np.testing.assert_array_equal(call(), expected, strict=True)
    # the shared ones are still ones: the same loss as with explicit unit weights
    ones = np.ones(10, dtype)
    assert fs.cross_entropy(x, y) == fs.cross_entropy(x, y, weight=ones)
    assert_same(fs.cross_entropy_backward(x, y), fs.cross_entropy_backward(x, y, weight=ones))


@pytest.mark.parametrize("classes", [10, 40])
@pytest.mark.parametrize("shift", [1, -1])
@pytest.mark.parametrize(
    "name",
    ["softmax", "log_softmax", "softmax_jvp", "cross_entropy_with_grad", "cross_entropy_backward"],
)
def test_plain_out_overlapping_a_plain_input(name, shift, classes):
    """``out`` and the input are C-contiguous views of one buffer a row apart: both plain, yet
    the kernel may not write ``out`` directly (it would overwrite rows not yet read)."""
    rng = np.random.default_rng(6)
    x = rng.standard_normal((40, classes)).astype(np.float32)
    y = rng.integers(0, classes, 40)
    p = fs.softmax(x)
    calls = {
        "softmax": lambda a, **kw: fs.softmax(a, **kw),
        "log_softmax": lambda a, **kw: fs.log_softmax(a, **kw),
        "softmax_jvp": lambda a, **kw: fs.softmax_jvp(a, p, **kw),
        "cross_entropy_with_grad": lambda a, **kw: fs.cross_entropy_with_grad(a, y, **kw)[1],
        "cross_entropy_backward": lambda a, **kw: fs.cross_entropy_backward(a, y, **kw),
    }
    call = calls[name]
    src = p if name == "softmax_jvp" else x
    expected = call(src.copy())
    buf = np.zeros((41, classes), np.float32)
    a, out = (buf[:40], buf[1:]) if shift == 1 else (buf[1:], buf[:40])
    a[...] = src
    assert call(a, out=out) is out
    np.testing.assert_array_equal(out, expected, strict=True)


# ------------------------------------------------------------------ random calls (hypothesis)


@st.composite
def plain_ce_calls(draw):
    """A plain cross-entropy call: logits with any float values (NaN and infinities included),
    int64 targets that may be ignored or out of range, and random valid or invalid options."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    shape = (draw(st.integers(0, 12)), draw(st.integers(1, 70)))
    values = st.floats(width=np.dtype(dtype).itemsize * 8)
    x = draw(hnp.arrays(dtype, shape, elements=values))
    ignore_index = draw(st.sampled_from([-100, 0, 3]))
    y = draw(hnp.arrays(np.int64, shape[:1], elements=st.integers(-2, shape[1])))
    kwargs = {
        "ignore_index": ignore_index,
        "reduction": draw(st.sampled_from(["mean", "sum", "none"])),
        "label_smoothing": draw(st.sampled_from([0.0, 0.3, 1.0, 1.5])),
        "temperature": draw(st.sampled_from([1.0, 1, 0.25, 3.0, 0.0])),
        "z_loss": draw(st.sampled_from([0.0, 1e-3, -1.0])),
    }
    return x, y, kwargs


def _outcome(fn, *args, **kwargs):
    """The call's result, or the type and message of what it raised."""
    try:
        return fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        return (type(exc), str(exc))


@settings(max_examples=200)
@given(plain_ce_calls(), st.sampled_from(["cross_entropy", "with_grad", "backward"]))
def test_random_plain_cross_entropy_calls_match_general_path(call, name):
    x, y, kwargs = call
    fn = {
        "cross_entropy": fs.cross_entropy,
        "with_grad": fs.cross_entropy_with_grad,
        "backward": fs.cross_entropy_backward,
    }[name]
    with np.errstate(all="ignore"):  # a plain NumPy comparison of NaN-holding results follows
        general = _outcome(fn, frozen(x), frozen(y), **kwargs)
        fast = _outcome(fn, x.copy(), y.copy(), **kwargs)
    if isinstance(general, tuple) and isinstance(general[0], type):
        assert fast == general
    else:
        assert_same(fast, general)


@settings(max_examples=200)
@given(
    st.sampled_from(["softmax", "log_softmax", "logsumexp", "softmax_jvp", "log_softmax_vjp"]),
    st.sampled_from([np.float32, np.float64]),
    st.tuples(st.integers(0, 12), st.integers(0, 70)),
    st.sampled_from([1.0, 0.5, 0.0, -1.0]),
    st.data(),
)
def test_random_plain_calls_match_general_path(name, dtype, shape, temperature, data):
    values = st.floats(width=np.dtype(dtype).itemsize * 8)
    a = data.draw(hnp.arrays(dtype, shape, elements=values))
    b = data.draw(hnp.arrays(dtype, shape, elements=values))
    fn = getattr(fs, name)
    args = (a,) if name in ("softmax", "log_softmax", "logsumexp") else (a, b)
    kwargs = {} if name == "logsumexp" else {"temperature": temperature}
    with np.errstate(all="ignore"):
        general = _outcome(fn, *(frozen(v) for v in args), **kwargs)
        fast = _outcome(fn, *(v.copy() for v in args), **kwargs)
    if isinstance(general, tuple) and isinstance(general[0], type):
        assert fast == general
    else:
        assert_same(fast, general)
