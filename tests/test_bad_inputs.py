"""Bad inputs for every public function: a clear exception, raised before anything is written.

One table, ``CASES``: each case names the function, builds fresh arguments, and states the
exception class (TypeError, ValueError or numpy's AxisError) and a fragment of the message. For
every case the test checks that

- ``fastsoftmax.<fn>`` raises that class with that message fragment;
- every array argument, and ``out``, is unchanged afterwards (values, dtype, shape, flags);
- the interpreter is alive and the package still computes (a sanity call right after);
- the reference twin ``fastsoftmax.reference.<fn>``, whose argument checks are written apart
  from the package's, raises exactly the same class and leaves its arguments unchanged too
  ("raise alike", as bottleneck's slow functions do; its messages are its own).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref

AxisError = np.exceptions.AxisError

SOFTMAX_FAMILY = ["softmax", "log_softmax"]
PRODUCTS = ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"]
LOSSES = ["cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad"]
WITH_OUT = (
    SOFTMAX_FAMILY
    + ["logsumexp"]
    + PRODUCTS
    + ["cross_entropy_backward", "cross_entropy_with_grad"]
)
WITH_AXIS = SOFTMAX_FAMILY + ["logsumexp", "softmax_jacobian"] + PRODUCTS
WITH_TEMPERATURE = SOFTMAX_FAMILY + PRODUCTS + LOSSES
ALL = SOFTMAX_FAMILY + ["logsumexp", "softmax_jacobian"] + PRODUCTS + LOSSES
# the softmax / cross-entropy API (other public families have their own bad-input tests)
assert set(ALL) <= set(fs.__all__)

# --------------------------------------------------------------------------- valid building blocks

N, C = 3, 4


def logits(shape=(N, C), dtype=np.float64) -> np.ndarray:
    return (np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape) % 5 - 2).astype(dtype)


def probs(shape=(N, C), dtype=np.float64) -> np.ndarray:
    z = logits(shape)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(dtype)


def labels() -> np.ndarray:
    return np.array([0, 3, 1], dtype=np.int64)


def valid_args(fn: str, dtype=np.float64) -> tuple[list[Any], dict[str, Any]]:
    """Valid positional arguments of ``fn`` (shape (3, 4), class axis last)."""
    if fn in SOFTMAX_FAMILY or fn == "logsumexp":
        return [logits(dtype=dtype)], {}
    if fn == "softmax_jacobian":
        return [probs(dtype=dtype)], {}
    if fn == "log_softmax_vjp":
        return [np.log(probs()).astype(dtype), logits(dtype=dtype)], {}
    if fn in PRODUCTS:
        return [probs(dtype=dtype), logits(dtype=dtype)], {}
    return [logits(dtype=dtype), labels()], {}


def result_shape(fn: str, keepdims: bool = False) -> tuple[int, ...]:
    if fn == "logsumexp":
        return (N, 1) if keepdims else (N,)
    return (N, C)


# --------------------------------------------------------------------------- the table


@dataclass
class Case:
    """One bad call: ``fn(*args, **kwargs)`` must raise ``exc`` with ``match`` in the message."""

    id: str
    fn: str
    build: Callable[[], tuple[list[Any], dict[str, Any]]]
    exc: type[Exception]
    match: str | None = None
    marks: list[Any] = field(default_factory=list)


CASES: list[Case] = []


def case(id: str, fn: str, build, exc, match=None, marks=()) -> None:
    CASES.append(Case(f"{fn}-{id}", fn, build, exc, match, list(marks)))


def replace_arg(fn: str, index: int, value_factory: Callable[[], Any], **kwargs):
    """A builder: the valid arguments of ``fn`` with positional argument ``index`` replaced."""

    def build():
        args, kw = valid_args(fn)
        args[index] = value_factory()
        kw.update(kwargs)
        return args, kw

    return build


def with_kwargs(fn: str, dtype=np.float64, **kwargs):
    """A builder: the valid arguments of ``fn`` plus ``kwargs`` (values, or factories)."""

    def build():
        args, kw = valid_args(fn, dtype)
        kw.update({k: v() if callable(v) else v for k, v in kwargs.items()})
        return args, kw

    return build


def readonly(shape, dtype=np.float64) -> np.ndarray:
    a = np.zeros(shape, dtype=dtype)
    a.flags.writeable = False
    return a


# Wrong dtypes and non-arrays as the first argument, for every function.
BAD_DTYPES = {
    "complex128": (lambda: logits().astype(np.complex128), TypeError, "complex128"),
    "complex64": (lambda: logits().astype(np.complex64), TypeError, "complex64"),
    "object": (lambda: logits().astype(object), TypeError, "object"),
    "str": (lambda: logits().astype(str), TypeError, "dtype"),
    "datetime64": (lambda: np.zeros((N, C), dtype="datetime64[s]"), TypeError, "datetime64"),
    "longdouble": (lambda: logits().astype(np.longdouble), TypeError, "longdouble|float128"),
    "None": (lambda: None, TypeError, None),
    "scalar": (lambda: 2.5, ValueError, "dimension"),
    "ragged_list": (lambda: [[1.0, 2.0], [3.0]], ValueError, "inhomogeneous"),
    "zero_classes": (lambda: np.zeros((N, 0)), ValueError, "length 0"),
}
for fn in ALL:
    for name, (factory, exc, match) in BAD_DTYPES.items():
        if name == "zero_classes" and fn not in LOSSES:
            continue  # an empty class axis gives an empty result (-inf for logsumexp)
        build = replace_arg(fn, 0, factory)
        if fn in PRODUCTS and name == "scalar":
            # both arrays must have the same shape for the error to be about the dimension
            def build(fn=fn, factory=factory):
                return [factory(), factory()], {}

        if fn in LOSSES and name == "zero_classes":

            def build(fn=fn, factory=factory):
                return [factory(), np.zeros(N, dtype=np.int64)], {}

        if fn in LOSSES and name == "scalar":

            def build(fn=fn, factory=factory):
                return [factory(), 0], {}

        case(f"x_{name}", fn, build, exc, match)

# The second array of the products: wrong shape and wrong dtype.
for fn in PRODUCTS:
    case(
        "second_shape_mismatch",
        fn,
        replace_arg(fn, 1, lambda: logits((N, C + 1))),
        ValueError,
        "shape",
    )
    case("second_not_broadcast", fn, replace_arg(fn, 1, lambda: logits((C,))), ValueError, "shape")
    case("second_transposed", fn, replace_arg(fn, 1, lambda: logits((C, N))), ValueError, "shape")
    case(
        "second_complex",
        fn,
        replace_arg(fn, 1, lambda: logits().astype(np.complex128)),
        TypeError,
        "complex",
    )
    case(
        "second_object",
        fn,
        replace_arg(fn, 1, lambda: logits().astype(object)),
        TypeError,
        "object",
    )
    case("second_None", fn, replace_arg(fn, 1, lambda: None), TypeError, None)
    case("second_str", fn, replace_arg(fn, 1, lambda: "abc"), TypeError, "dtype")

# Axis: out of range and not an integer.
for fn in WITH_AXIS:
    case("axis_2", fn, with_kwargs(fn, axis=2), AxisError, "axis 2")
    case("axis_-3", fn, with_kwargs(fn, axis=-3), AxisError, "axis -3")
    case("axis_float", fn, with_kwargs(fn, axis=1.0), TypeError, "axis must be an integer")
    case("axis_str", fn, with_kwargs(fn, axis="1"), TypeError, "axis must be an integer")
    case("axis_None", fn, with_kwargs(fn, axis=None), TypeError, "axis must be an integer")
    case("axis_bool", fn, with_kwargs(fn, axis=True), TypeError, "axis must be an integer")
    case("axis_tuple", fn, with_kwargs(fn, axis=(0, 1)), TypeError, "axis must be an integer")

# Temperature: <= 0, non-finite, not a real number.
BAD_TEMPERATURES = {
    "0": (0.0, ValueError, "temperature"),
    "int_0": (0, ValueError, "temperature"),
    "negative": (-1.0, ValueError, "temperature"),
    "nan": (float("nan"), ValueError, "temperature"),
    "inf": (float("inf"), ValueError, "temperature"),
    "-inf": (float("-inf"), ValueError, "temperature"),
    "str": ("2.0", TypeError, "temperature"),
    "None": (None, TypeError, "temperature"),
    "complex": (1 + 0j, TypeError, "temperature"),
}
for fn in WITH_TEMPERATURE:
    for name, (value, exc, match) in BAD_TEMPERATURES.items():
        case(
            f"temperature_{name}",
            fn,
            with_kwargs(fn, temperature=lambda value=value: value),
            exc,
            match,
        )

# out: wrong shape, wrong dtype, read-only, not an array, a different-shaped view of the input.
for fn in WITH_OUT:
    shape = result_shape(fn)
    case(
        "out_shape",
        fn,
        with_kwargs(fn, out=lambda shape=shape: np.zeros(shape + (1,))),
        ValueError,
        "out has shape",
    )
    case(
        "out_dtype_float32",
        fn,
        with_kwargs(fn, out=lambda shape=shape: np.zeros(shape, np.float32)),
        ValueError,
        "out has dtype",
    )
    case(
        "out_dtype_int",
        fn,
        with_kwargs(fn, out=lambda shape=shape: np.zeros(shape, np.int64)),
        ValueError,
        "out has dtype",
    )
    case(
        "out_readonly",
        fn,
        with_kwargs(fn, out=lambda shape=shape: readonly(shape)),
        ValueError,
        "read-only",
    )
    case(
        "out_list",
        fn,
        with_kwargs(fn, out=lambda shape=shape: np.zeros(shape).tolist()),
        TypeError,
        "numpy.ndarray",
    )

    def _aliasing_view(fn=fn):
        args, kw = valid_args(fn)
        kw["out"] = args[0].reshape(-1)  # the input itself, seen with another shape
        return args, kw

    case("out_aliases_input_other_shape", fn, _aliasing_view, ValueError, "out has shape")

    if fn not in ("logsumexp",):

        def _transposed_view(fn=fn):
            args, kw = valid_args(fn)
            kw["out"] = args[0].T
            return args, kw

        case("out_aliases_input_transposed", fn, _transposed_view, ValueError, "out has shape")

    def _readonly_input_as_out(fn=fn):
        args, kw = valid_args(fn)
        args[0].flags.writeable = False
        if fn != "logsumexp":
            kw["out"] = args[0]
        else:
            kw["out"] = readonly((N,))
        return args, kw

    case("out_is_readonly_input", fn, _readonly_input_as_out, ValueError, "read-only")

    def _float16_input_float32_out(fn=fn):
        args, kw = valid_args(fn, np.float16)  # computed in float32, but the result is float16
        kw["out"] = np.zeros(result_shape(fn), np.float32)
        return args, kw

    case(
        "out_float32_for_float16_input", fn, _float16_input_float32_out, ValueError, "out has dtype"
    )

case(
    "out_keepdims_mismatch",
    "logsumexp",
    with_kwargs("logsumexp", keepdims=True, out=lambda: np.zeros((N,))),
    ValueError,
    "out has shape",
)
case(
    "out_no_keepdims_mismatch",
    "logsumexp",
    with_kwargs("logsumexp", keepdims=False, out=lambda: np.zeros((N, 1))),
    ValueError,
    "out has shape",
)


# Cross-entropy targets, weights, options and grad_output.
def ce_target(value_factory):
    return lambda fn: replace_arg(fn, 1, value_factory)


BAD_TARGETS = {
    "label_negative": (
        lambda: np.array([0, -1, 1]),
        ValueError,
        re.escape("target value -1 at index (1,)"),
    ),
    "label_eq_C": (
        lambda: np.array([0, 1, C]),
        ValueError,
        re.escape(f"target value {C} at index (2,)"),
    ),
    "label_huge": (
        lambda: np.array([2**40, 1, 1]),
        ValueError,
        re.escape(f"target value {2**40} at index (0,)"),
    ),
    "label_huge_uint64": (
        lambda: np.array([1, 2**64 - 1, 1], dtype=np.uint64),
        ValueError,
        "out of range",
    ),
    # 2**64 - 100 as int64 is -100, the default ignore_index: it must not pass as ignored
    "label_uint64_wrapping_to_ignore_index": (
        lambda: np.array([1, 2**64 - 100, 1], dtype=np.uint64),
        ValueError,
        re.escape(f"target value {2**64 - 100} at index (1,)"),
    ),
    "label_-101": (lambda: np.array([0, 1, -101]), ValueError, "out of range"),
    "label_int8_negative": (
        lambda: np.array([0, -5, 1], dtype=np.int8),
        ValueError,
        "out of range",
    ),
    "index_target_too_long": (
        lambda: np.array([0, 1, 2, 3]),
        ValueError,
        "class-index target has shape",
    ),
    "index_target_2d": (
        lambda: np.array([[0], [1], [2]]),
        ValueError,
        "class-index target has shape",
    ),
    "index_target_scalar": (lambda: 1, ValueError, "class-index target has shape"),
    "float_target_batch_shape": (
        lambda: np.array([0.0, 1.0, 2.0]),
        ValueError,
        "probability target has shape",
    ),
    "prob_target_wrong_classes": (
        lambda: probs((N, C + 1)),
        ValueError,
        "probability target has shape",
    ),
    "prob_target_transposed": (lambda: probs((C, N)), ValueError, "probability target has shape"),
    "prob_target_nan": (
        lambda: np.where(np.eye(N, C, dtype=bool), np.nan, probs()),
        ValueError,
        "NaN",
    ),
    "prob_target_inf": (
        lambda: np.where(np.eye(N, C, dtype=bool), np.inf, probs()),
        ValueError,
        "inf",
    ),
    "prob_target_-inf": (
        lambda: np.where(np.eye(N, C, dtype=bool), -np.inf, probs()),
        ValueError,
        "inf",
    ),
    "target_complex": (lambda: probs().astype(np.complex128), TypeError, "target has dtype"),
    "target_bool": (lambda: np.array([True, False, True]), TypeError, "target has dtype"),
    "target_str": (lambda: np.array(["0", "1", "2"]), TypeError, "target has dtype"),
    "target_object": (lambda: labels().astype(object), TypeError, "target has dtype"),
    "target_None": (lambda: None, TypeError, "target"),
    "target_ragged": (lambda: [[0.5, 0.5], [1.0]], ValueError, "inhomogeneous"),
}
BAD_WEIGHTS = {
    "weight_short": (lambda: np.ones(C - 1), ValueError, "weight has shape"),
    "weight_2d": (lambda: np.ones((1, C)), ValueError, "weight has shape"),
    "weight_scalar": (lambda: 1.0, ValueError, "weight has shape"),
    "weight_nan": (lambda: np.array([1.0, np.nan, 1.0, 1.0]), ValueError, "NaN or inf"),
    "weight_inf": (lambda: np.array([1.0, np.inf, 1.0, 1.0]), ValueError, "NaN or inf"),
    "weight_negative": (lambda: np.array([1.0, -0.5, 1.0, 1.0]), ValueError, "negative"),
    "weight_complex": (lambda: np.ones(C, dtype=np.complex128), TypeError, "weight has dtype"),
    "weight_str": (lambda: np.array(["1"] * C), TypeError, "weight has dtype"),
}
BAD_OPTIONS = {
    "label_smoothing_-0.1": ({"label_smoothing": -0.1}, ValueError, "label_smoothing"),
    "label_smoothing_1.5": ({"label_smoothing": 1.5}, ValueError, "label_smoothing"),
    "label_smoothing_nan": ({"label_smoothing": float("nan")}, ValueError, "label_smoothing"),
    "label_smoothing_str": ({"label_smoothing": "0.1"}, TypeError, "label_smoothing"),
    "label_smoothing_None": ({"label_smoothing": None}, TypeError, "label_smoothing"),
    "reduction_avg": ({"reduction": "avg"}, ValueError, "reduction"),
    "reduction_upper": ({"reduction": "MEAN"}, ValueError, "reduction"),
    "reduction_None": ({"reduction": None}, ValueError, "reduction"),
    "ignore_index_float": ({"ignore_index": 1.5}, TypeError, "ignore_index"),
    "ignore_index_None": ({"ignore_index": None}, TypeError, "ignore_index"),
    "ignore_index_str": ({"ignore_index": "-100"}, TypeError, "ignore_index"),
    "z_loss_negative": ({"z_loss": -0.1}, ValueError, "z_loss"),
    "z_loss_inf": ({"z_loss": float("inf")}, ValueError, "z_loss"),
    "z_loss_None": ({"z_loss": None}, TypeError, "z_loss"),
    "softcap_0": ({"softcap": 0.0}, ValueError, "softcap"),
    "softcap_negative": ({"softcap": -30.0}, ValueError, "softcap"),
    "softcap_nan": ({"softcap": float("nan")}, ValueError, "softcap"),
    "softcap_str": ({"softcap": "30"}, TypeError, "softcap"),
    "softcap_over_temperature_overflows": (
        {"softcap": 1e300, "temperature": 1e-300},
        ValueError,
        "softcap / temperature",
    ),
    # a subnormal cap (float64 logits here) would divide away the precision of z
    "softcap_subnormal": ({"softcap": 1e-310}, ValueError, "smallest normal"),
    "softcap_over_temperature_subnormal": (
        {"softcap": 1e-300, "temperature": 1e10},
        ValueError,
        "softcap / temperature",
    ),
}
for fn in LOSSES:
    for name, (factory, exc, match) in BAD_TARGETS.items():
        case(name, fn, replace_arg(fn, 1, factory), exc, match)
    for name, (factory, exc, match) in BAD_WEIGHTS.items():
        case(name, fn, with_kwargs(fn, weight=factory), exc, match)
    for name, (kwargs, exc, match) in BAD_OPTIONS.items():
        case(
            name, fn, with_kwargs(fn, **{k: (lambda v=v: v) for k, v in kwargs.items()}), exc, match
        )
    case("logits_0d", fn, lambda: ([np.float64(1.0), 0], {}), ValueError, "dimension")
    case(
        "logits_1d_target_1",
        fn,
        lambda: ([logits((C,)), np.array([1])], {}),
        ValueError,
        "class-index target has shape",
    )
    # a label error wins over nothing: the right row index is named for extra batch dimensions
    case(
        "label_out_of_range_3d",
        fn,
        lambda: ([logits((2, 3, C)), np.array([[0, 1, 2], [3, C + 2, 0]])], {}),
        ValueError,
        re.escape(f"target value {C + 2} at index (1, 1)"),
    )

BAD_GRAD_OUTPUT = {
    "array_for_mean": ({"grad_output": lambda: np.ones(N)}, ValueError, "grad_output has shape"),
    "array_for_sum": (
        {"grad_output": lambda: np.ones(N), "reduction": "sum"},
        ValueError,
        "grad_output has shape",
    ),
    "wrong_shape_none": (
        {"grad_output": lambda: np.ones(N + 1), "reduction": "none"},
        ValueError,
        "grad_output has shape",
    ),
    "full_shape_none": (
        {"grad_output": lambda: np.ones((N, C)), "reduction": "none"},
        ValueError,
        "grad_output has shape",
    ),
    "complex": ({"grad_output": lambda: 1 + 1j}, TypeError, "grad_output"),
    "str": ({"grad_output": lambda: "1.0"}, TypeError, "grad_output"),
    "None": ({"grad_output": lambda: None}, TypeError, "grad_output"),
}
for name, (kwargs, exc, match) in BAD_GRAD_OUTPUT.items():
    case(
        f"grad_output_{name}",
        "cross_entropy_backward",
        with_kwargs("cross_entropy_backward", **kwargs),
        exc,
        match,
    )


# where= (the class mask of the softmax family and the losses): not boolean, not broadcastable,
# or leaving out a class-index target.
def _mask_off_class_0():
    m = np.ones((N, C), dtype=bool)
    m[:, 0] = False
    return m


for fn in SOFTMAX_FAMILY + LOSSES:
    case(
        "where_float",
        fn,
        with_kwargs(fn, where=lambda: np.ones((N, C))),
        TypeError,
        "where must be a boolean",
    )
    case(
        "where_int",
        fn,
        with_kwargs(fn, where=lambda: np.ones((N, C), dtype=np.int64)),
        TypeError,
        "where must be a boolean",
    )
    case(
        "where_shape",
        fn,
        with_kwargs(fn, where=lambda: np.ones((N, C + 1), dtype=bool)),
        ValueError,
        "does not broadcast",
    )
    case(
        "where_transposed",
        fn,
        with_kwargs(fn, where=lambda: np.ones((C, N), dtype=bool)),
        ValueError,
        "does not broadcast",
    )
for fn in LOSSES:
    # labels() puts class 0 in row 0: that target is a left-out class
    case(
        "where_leaves_out_target",
        fn,
        with_kwargs(fn, where=_mask_off_class_0),
        ValueError,
        re.escape("target value 0 at index (0,)"),
    )

CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"

# --------------------------------------------------------------------------- the checks


def _snapshot(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.copy(), value.dtype, value.shape, value.strides, value.flags.writeable)
    if isinstance(value, list):
        return [_snapshot(v) for v in value]
    return value


def _assert_same(before: Any, value: Any, what: str) -> None:
    if isinstance(value, np.ndarray):
        copy, dtype, shape, strides, writeable = before
        assert (value.dtype, value.shape, value.strides, value.flags.writeable) == (
            dtype,
            shape,
            strides,
            writeable,
        ), f"{what} changed its layout"
        if dtype.kind in "fc":
            np.testing.assert_array_equal(value, copy, err_msg=f"{what} was modified")
        else:
            assert np.array_equal(value.astype(object), copy.astype(object)), f"{what} was modified"
    elif isinstance(value, list):
        for b, v in zip(before, value, strict=True):
            _assert_same(b, v, what)


def _sanity() -> None:
    """The package still works after the exception (nothing half-initialized, no crash)."""
    np.testing.assert_array_equal(fs.softmax(np.zeros((2, 2))), np.full((2, 2), 0.5))
    assert fs.cross_entropy(np.zeros((1, 2)), np.array([1])) == pytest.approx(np.log(2))


def _check_raises(func, c: Case, side: str, match: bool = True) -> type[BaseException]:
    """``func`` raises ``c.exc`` (with ``c.match`` in its message when ``match``) and leaves its
    arguments as they were; return the exception's class."""
    args, kwargs = c.build()
    before_args = [_snapshot(a) for a in args]
    before_kwargs = {k: _snapshot(v) for k, v in kwargs.items()}
    with pytest.raises(c.exc, match=c.match if match else None) as info:
        func(*args, **kwargs)
    # numba errors or bare asserts must never leak out as the "expected" class by accident
    assert type(info.value).__module__.split(".")[0] in ("builtins", "numpy"), (
        f"{side}: unexpected exception type {type(info.value)}"
    )
    for i, (b, a) in enumerate(zip(before_args, args, strict=True)):
        _assert_same(b, a, f"{side}: positional argument {i}")
    for k, v in kwargs.items():
        _assert_same(before_kwargs[k], v, f"{side}: {k}=")
    return type(info.value)


def assert_raises_alike(c: Case) -> None:
    """``fastsoftmax.<fn>`` raises ``c.exc`` with ``c.match`` in its message; the reference twin,
    whose checks are its own, raises exactly the same class (with a message of its own); neither
    modifies its arguments."""
    fast = _check_raises(getattr(fs, c.fn), c, "fastsoftmax")
    slow = _check_raises(getattr(ref, c.fn), c, "reference", match=False)
    assert slow is fast, f"reference raised {slow.__name__}, fastsoftmax {fast.__name__}"


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_bad_input_raises_cleanly(c: Case) -> None:
    _check_raises(getattr(fs, c.fn), c, "fastsoftmax")
    _sanity()


@pytest.mark.parametrize("c", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_reference_raises_alike(c: Case) -> None:
    """The NumPy twin, with checks of its own, rejects the same input with the same class."""
    assert_raises_alike(c)


def test_case_table_size() -> None:
    """Every softmax / cross-entropy function has bad-input cases, and the table is large (see
    the ids)."""
    assert len(CASES) >= 60
    assert {c.fn for c in CASES} == set(ALL)
    for fn in ALL:
        assert sum(c.fn == fn for c in CASES) >= 10, fn


def test_every_valid_builder_is_valid() -> None:
    """The building blocks themselves are accepted (so each case tests exactly one error)."""
    for fn in ALL:
        args, kw = valid_args(fn)
        getattr(fs, fn)(*args, **kw)
        getattr(ref, fn)(*args, **kw)
        for dtype in (np.float16, np.float32):
            getattr(fs, fn)(*valid_args(fn, dtype)[0])


@pytest.mark.parametrize("ignore_index", [2**63, -(2**63) - 1, 2**70])
def test_ignore_index_outside_int64(ignore_index) -> None:
    z, t = logits(), labels()
    with pytest.raises(ValueError, match="ignore_index"):
        fs.cross_entropy(z, t, ignore_index=ignore_index)
    with pytest.raises(ValueError, match="ignore_index"):
        ref.cross_entropy(z, t, ignore_index=ignore_index)
