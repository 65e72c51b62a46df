"""Shared test machinery: the comparison table, input makers, array layouts, tolerances, hypothesis.

``COMPARISONS`` is the one table that drives the correctness tests: it maps every public name of
fastsoftmax to its fast function, its NumPy twin in ``fastsoftmax.reference``, a maker of valid
arguments and the largest class count the reference can afford. Other test modules import it
(pytest puts ``tests/`` on ``sys.path`` because of this rootdir conftest)::

    from conftest import COMPARISONS, assert_matches

    entry = COMPARISONS["cross_entropy_with_grad"]
    args, kwargs = entry.make_args((4, 7), np.float32, np.random.default_rng(0))
    assert_matches(entry.fast(*args, **kwargs), entry.reference(*args, **kwargs))

Hypothesis profiles: "ci" (the default: 50 examples, no deadline) and "long" (10,000 examples),
chosen with the environment variable ``FASTSOFTMAX_HYPOTHESIS_PROFILE=long``.

With ``NUMBA_DISABLE_JIT=1`` (the coverage run, ``PLAIN_PYTHON``) the kernels run as plain Python,
element by element: tests marked ``needs_jit`` are skipped there, and shape lists leave out their
``jit_only(...)`` entries. Everything runs when the kernels are compiled.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, settings

import fastsoftmax as fs
from fastsoftmax import reference as ref

# --------------------------------------------------------------------------- hypothesis profiles

settings.register_profile(
    "ci", max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("FASTSOFTMAX_HYPOTHESIS_PROFILE", "ci"))

# --------------------------------------------------------------------------- plain-Python runs

PLAIN_PYTHON = bool(numba.config.DISABLE_JIT)
# Tests that need the compiled kernels: large inputs (plain Python takes ~20 us per exp), thread
# counts, the disk cache, or rounding that only the compiled code has (FMA contraction, reductions
# over 32 partial sums). Skipped when NUMBA_DISABLE_JIT=1.
needs_jit = pytest.mark.needs_jit


def has_avx2(*, fma: bool = False) -> bool:
    """Whether this CPU has AVX2 (the kernels' vector loops then use ymm registers), and FMA too
    if ``fma``."""
    try:
        import llvmlite.binding as llvm

        features = llvm.get_host_cpu_features().flatten()
    except Exception:
        return False
    return "+avx2" in features and (not fma or "+fma" in features)


def jit_only(*items: Any) -> list[Any]:
    """``list(items)``, or ``[]`` when the kernels run as plain Python (``NUMBA_DISABLE_JIT=1``)."""
    return [] if PLAIN_PYTHON else list(items)


def pytest_configure(config: pytest.Config) -> None:
    if PLAIN_PYTHON:  # NumPy scalars warn where the compiled kernels (numpy error model) do not
        config.addinivalue_line("filterwarnings", r"ignore::RuntimeWarning:fastsoftmax\._kernels")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not PLAIN_PYTHON:
        return
    skip = pytest.mark.skip(reason="needs the compiled kernels (NUMBA_DISABLE_JIT=1 is set)")
    for item in items:
        if item.get_closest_marker("needs_jit") is not None:
            item.add_marker(skip)


# --------------------------------------------------------------------------- input makers

Args = tuple[tuple[Any, ...], dict[str, Any]]


def random_logits(
    shape: tuple[int, ...], dtype: Any, rng: np.random.Generator, scale: float = 3.0
) -> np.ndarray:
    """Logits of ``dtype``: normal * scale for floats, small integers for ints, coin flips for
    bool."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        low = 0 if dtype.kind == "u" else -5
        return rng.integers(low, 6, size=shape).astype(dtype)
    return (rng.standard_normal(shape) * scale).astype(dtype)


def random_probs(
    shape: tuple[int, ...], dtype: Any, rng: np.random.Generator, axis: int = -1
) -> np.ndarray:
    """Rows of probabilities along ``axis`` (the float64 softmax of random logits), cast to
    ``dtype``.

    For integer and bool dtypes the values are not probabilities but still valid arguments.
    """
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return random_logits(shape, dtype, rng)
    z = rng.standard_normal(shape) * 2.0
    if 0 in shape:
        return z.astype(dtype)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(dtype)


def index_target(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Class indices (int64) of shape ``shape[:-1]`` in ``[0, shape[-1])``."""
    classes = shape[-1]
    if classes == 0:
        return np.zeros(shape[:-1], dtype=np.int64)
    return rng.integers(0, classes, size=shape[:-1]).astype(np.int64)


def prob_target(shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Probability targets of ``shape`` (rows sum to 1), of a float dtype (float64 for int/bool
    logits)."""
    dtype = np.dtype(dtype)
    dtype = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    return random_probs(shape, dtype, rng)


def _make_x(shape, dtype, rng) -> Args:
    return (random_logits(shape, dtype, rng),), {}


def _make_probs(shape, dtype, rng) -> Args:
    return (random_probs(shape, dtype, rng),), {}


def _make_probs_vector(shape, dtype, rng) -> Args:
    return (random_probs(shape, dtype, rng), random_logits(shape, dtype, rng, scale=1.0)), {}


def _make_log_probs_vector(shape, dtype, rng) -> Args:
    p = random_probs(shape, np.float64, rng)
    with np.errstate(divide="ignore"):
        logp = np.log(p)
    if np.dtype(dtype).kind in "biu":
        logp = random_logits(shape, dtype, rng)
    return (logp.astype(dtype), random_logits(shape, dtype, rng, scale=1.0)), {}


def _make_ce(shape, dtype, rng) -> Args:
    return (random_logits(shape, dtype, rng, scale=2.0), index_target(shape, rng)), {}


# Absolute-error scales: ``atol = rtol * scale(args, expected)`` when comparing with the reference.
# Each is the magnitude the result's absolute error is proportional to (for both implementations).


def _finite_max(a: Any) -> float:
    a = np.abs(np.asarray(a, dtype=np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else 0.0


def _relative_only(args, kwargs, expected) -> float:
    return 0.0  # softmax: every probability to a few ulp, relative


def _log_softmax_scale(args, kwargs, expected) -> float:
    # x / T - logsumexp(x / T): the float32 reference rounds both terms, so its absolute error is
    # ~eps * max|x / T| (the kernel subtracts the max first); log(sum) adds ~eps even near 0
    inv_t = 1.0 / float(kwargs.get("temperature", 1.0))
    return max(1.0, _finite_max(expected), _finite_max(args[0]) * inv_t)


def _log_scale(args, kwargs, expected) -> float:
    return max(1.0, _finite_max(expected))  # log(sum) has absolute error ~eps even when ~0


def _jacobian_scale(args, kwargs, expected) -> float:
    return _finite_max(args[0])  # p_i - p_i p_j: the reference cancels to eps * p


def _product_scale(args, kwargs, expected) -> float:
    return _finite_max(args[0]) * _finite_max(args[1])  # p_i (v_i - <p, v>)


def _log_vjp_scale(args, kwargs, expected) -> float:
    return _finite_max(args[1]) + _finite_max(expected)  # g_i - p_i sum(g)


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Comparison:
    """One public function: fast and reference implementations and how to call them.

    Attributes
    ----------
    name : str
        The public name (``fastsoftmax.<name>``).
    fast, reference : callable
        ``fastsoftmax.<name>`` and ``fastsoftmax.reference.<name>`` (same signature).
    make_args : callable
        ``make_args(shape, dtype, rng) -> (args, kwargs)``: valid arguments whose arrays have
        ``shape`` (the class axis last) and ``dtype``; cross-entropy entries use class-index
        targets (see :func:`index_target` / :func:`prob_target` for others).
    max_classes : int or None
        Largest class count the reference can afford (the JVP/VJP/Jacobian references build
        C x C Jacobians); None means no limit. Beyond it, tests use an oracle instead.
    family : str
        "forward", "derivative" or "loss".
    takes_axis, takes_temperature, takes_out : bool
        Whether the function has the ``axis`` argument, ``temperature=`` and ``out=``.
    n_inputs : int
        How many leading positional arrays have the input shape (candidates for ``out=`` in place).
    error_scale : callable or None
        ``error_scale(args, kwargs, expected) -> float``: the absolute tolerance against the
        reference is rtol times this (0: purely relative); None: the largest finite ``|expected|``.
    """

    name: str
    fast: Callable
    reference: Callable
    make_args: Callable[[tuple[int, ...], Any, np.random.Generator], Args]
    max_classes: int | None
    family: str
    takes_axis: bool = True
    takes_temperature: bool = True
    takes_out: bool = True
    n_inputs: int = 1
    error_scale: Callable[[tuple, dict, Any], float] | None = None

    def check(
        self,
        actual: Any,
        expected: Any,
        args: tuple,
        kwargs: dict | None = None,
        *,
        rtol: float | None = None,
        err_msg: str = "",
    ) -> None:
        """Assert that a fast result matches the reference result for ``f(*args, **kwargs)``."""
        kwargs = {} if kwargs is None else kwargs
        scale = None if self.error_scale is None else self.error_scale(args, kwargs, expected)
        assert_matches(actual, expected, rtol=rtol, atol_scale=scale, err_msg=err_msg or self.name)

    def result_shape(self, shape: tuple[int, ...], axis: int = -1) -> tuple[int, ...]:
        """Shape of the array result (the gradient for ``cross_entropy_with_grad``)."""
        axis = axis % len(shape)
        if self.name == "logsumexp":
            return shape[:axis] + shape[axis + 1 :]
        if self.name == "softmax_jacobian":
            return shape[:axis] + shape[axis + 1 :] + (shape[axis], shape[axis])
        if self.name == "cross_entropy":
            return ()
        return shape


REFERENCE_MAX_CLASSES = 512

_ENTRIES = [
    Comparison(
        "softmax", fs.softmax, ref.softmax, _make_x, None, "forward", error_scale=_relative_only
    ),
    Comparison(
        "log_softmax",
        fs.log_softmax,
        ref.log_softmax,
        _make_x,
        None,
        "forward",
        error_scale=_log_softmax_scale,
    ),
    Comparison(
        "logsumexp",
        fs.logsumexp,
        ref.logsumexp,
        _make_x,
        None,
        "forward",
        takes_temperature=False,
        error_scale=_log_scale,
    ),
    Comparison(
        "softmax_jacobian",
        fs.softmax_jacobian,
        ref.softmax_jacobian,
        _make_probs,
        REFERENCE_MAX_CLASSES,
        "derivative",
        takes_temperature=False,
        takes_out=False,
        error_scale=_jacobian_scale,
    ),
    Comparison(
        "softmax_jvp",
        fs.softmax_jvp,
        ref.softmax_jvp,
        _make_probs_vector,
        REFERENCE_MAX_CLASSES,
        "derivative",
        n_inputs=2,
        error_scale=_product_scale,
    ),
    Comparison(
        "softmax_vjp",
        fs.softmax_vjp,
        ref.softmax_vjp,
        _make_probs_vector,
        REFERENCE_MAX_CLASSES,
        "derivative",
        n_inputs=2,
        error_scale=_product_scale,
    ),
    Comparison(
        "log_softmax_vjp",
        fs.log_softmax_vjp,
        ref.log_softmax_vjp,
        _make_log_probs_vector,
        REFERENCE_MAX_CLASSES,
        "derivative",
        n_inputs=2,
        error_scale=_log_vjp_scale,
    ),
    Comparison(
        "cross_entropy",
        fs.cross_entropy,
        ref.cross_entropy,
        _make_ce,
        None,
        "loss",
        takes_axis=False,
        takes_out=False,
    ),
    Comparison(
        "cross_entropy_backward",
        fs.cross_entropy_backward,
        ref.cross_entropy_backward,
        _make_ce,
        None,
        "loss",
        takes_axis=False,
    ),
    Comparison(
        "cross_entropy_with_grad",
        fs.cross_entropy_with_grad,
        ref.cross_entropy_with_grad,
        _make_ce,
        None,
        "loss",
        takes_axis=False,
    ),
]

COMPARISONS: dict[str, Comparison] = {c.name: c for c in _ENTRIES}
# The softmax family, its derivatives and cross-entropy; tests/test_softmax.py checks
# that the table holds exactly these and that each is public. (The binary family has its own tests.)
SOFTMAX_FAMILY_API = frozenset(
    {
        "softmax",
        "log_softmax",
        "logsumexp",
        "softmax_jacobian",
        "softmax_jvp",
        "softmax_vjp",
        "log_softmax_vjp",
        "cross_entropy",
        "cross_entropy_backward",
        "cross_entropy_with_grad",
    }
)

FORWARD = [c.name for c in _ENTRIES if c.family == "forward"]
DERIVATIVES = [c.name for c in _ENTRIES if c.family == "derivative"]
LOSSES = [c.name for c in _ENTRIES if c.family == "loss"]

# --------------------------------------------------------------------------- dtypes, tolerances

# Input dtype -> the dtype the result must have (float16 is computed in float32).
RESULT_DTYPE = {
    np.dtype(np.float16): np.dtype(np.float16),
    np.dtype(np.float32): np.dtype(np.float32),
    np.dtype(np.float64): np.dtype(np.float64),
    np.dtype(np.int8): np.dtype(np.float64),
    np.dtype(np.int32): np.dtype(np.float64),
    np.dtype(np.int64): np.dtype(np.float64),
    np.dtype(np.uint8): np.dtype(np.float64),
    np.dtype(np.bool_): np.dtype(np.float64),
}
INPUT_DTYPES = list(RESULT_DTYPE)
REJECTED_DTYPES = [np.complex64, np.complex128, np.longdouble, object, np.str_, np.bytes_]

# Relative tolerance per result dtype, kernel vs reference computed in the same dtype. float16
# results are rounded from float32 (or, in some references, float64) results: 2 ulp apart at most.
RTOL = {np.dtype(np.float16): 2e-3, np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


def rtol_for(dtype: Any) -> float:
    return RTOL[np.dtype(dtype)]


def assert_close(
    actual: Any, expected: Any, *, rtol: float | None = None, atol: float = 0.0, err_msg: str = ""
) -> None:
    """Equal dtype and shape, NaN/inf in the same places, finite values within rtol/atol.

    ``atol`` is at least ``rtol`` times the dtype's smallest normal number: a subnormal result has
    no relative accuracy to speak of (so e.g. 0 and 1.5e-323 are equal in float64).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.dtype == expected.dtype, f"{err_msg}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{err_msg}: shape {actual.shape} != {expected.shape}"
    if rtol is None:
        rtol = rtol_for(expected.dtype)
    if expected.dtype.kind == "f":
        atol = max(atol, rtol * float(np.finfo(expected.dtype).tiny))
    # dtype and shape are checked above: assert_allclose's strict= needs NumPy 2
    np.testing.assert_allclose(
        actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=err_msg
    )


def assert_matches(
    actual: Any,
    expected: Any,
    *,
    rtol: float | None = None,
    atol_scale: float | None = None,
    err_msg: str = "",
) -> None:
    """``assert_close`` for results of any public function (arrays, scalars, (loss, grad) tuples).

    The absolute tolerance is ``rtol * atol_scale``; ``atol_scale=None`` takes the largest finite
    ``|expected|`` (right for results that are differences of O(1) terms, where an entry near 0 is
    only known to that absolute accuracy), 0 makes the check purely relative. For tuples each
    element is compared on its own scale when ``atol_scale`` is None.
    """
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), err_msg
        for a, e in zip(actual, expected, strict=True):
            assert_matches(a, e, rtol=rtol, atol_scale=atol_scale, err_msg=err_msg)
        return
    expected_arr = np.asarray(expected)
    if rtol is None:
        rtol = rtol_for(expected_arr.dtype)
    if atol_scale is None:
        finite = np.abs(expected_arr[np.isfinite(expected_arr)])
        atol_scale = float(finite.max()) if finite.size else 0.0
    assert isinstance(actual, np.ndarray) == isinstance(expected, np.ndarray), (
        f"{err_msg}: returned {type(actual).__name__}, reference {type(expected).__name__}"
    )
    assert_close(actual, expected, rtol=rtol, atol=rtol * atol_scale, err_msg=err_msg)


# --------------------------------------------------------------------------- layouts


def layouts(x: np.ndarray) -> dict[str, np.ndarray]:
    """The same values as ``x`` in several memory layouts, all of ``x``'s shape and dtype.

    - "C": C-contiguous copy;  "F": Fortran-ordered copy
    - "strided": every other element along every axis of a larger buffer
    - "transposed": a contiguous buffer in reversed axis order, viewed back (the class axis has
      the largest stride; for 2-D this equals "F", for more dimensions it differs)
    - "reversed": negative strides along every axis
    - "readonly": a C copy with ``writeable=False``
    """
    x = np.asarray(x)
    big = np.zeros(tuple(2 * n for n in x.shape), dtype=x.dtype)
    strided = big[tuple(slice(None, None, 2) for _ in x.shape)]
    strided[...] = x
    flip = tuple(slice(None, None, -1) for _ in x.shape)
    reversed_ = np.ascontiguousarray(x[flip])[flip]
    readonly = np.array(x, order="C")
    readonly.flags.writeable = False
    out = {
        "C": np.ascontiguousarray(x),
        "F": np.asfortranarray(x),
        "strided": strided,
        "transposed": np.ascontiguousarray(x.T).T,
        "reversed": reversed_,
        "readonly": readonly,
    }
    for name, arr in out.items():
        assert arr.shape == x.shape and arr.dtype == x.dtype, name
        np.testing.assert_array_equal(arr, x)
    return out


LAYOUT_NAMES = ["C", "F", "strided", "transposed", "reversed", "readonly"]

# --------------------------------------------------------------------------- threads


def parallel_threads_available() -> bool:
    """True if numba may run 2 threads (thread-count invariance tests need it)."""
    import numba

    return numba.config.NUMBA_NUM_THREADS >= 2


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape)
