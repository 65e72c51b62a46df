"""Hypothesis property tests: probabilities, log-probabilities, invariances, derivative identities
and agreement with the reference on random arrays (float32 and float64, moderate magnitudes).

Profiles (tests/conftest.py): "ci" by default, FASTSOFTMAX_HYPOTHESIS_PROFILE=long for 10,000
examples per test.
"""

from __future__ import annotations

import numpy as np
from conftest import COMPARISONS, DERIVATIVES, FORWARD, PLAIN_PYTHON, assert_matches
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastsoftmax as fs

FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
EPS64 = float(np.finfo(np.float64).eps)


def finite_elements(dtype: np.dtype, bound: float = 60.0):
    return st.floats(-bound, bound, allow_nan=False, allow_infinity=False, width=dtype.itemsize * 8)


@st.composite
def logits(draw, bound: float = 60.0, max_dims: int = 3, max_side: int = 24, dtype=None):
    """(array, axis): a finite float32/float64 array of 1-3 dims and a valid class axis."""
    dtype = draw(st.sampled_from(FLOAT_DTYPES)) if dtype is None else np.dtype(dtype)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=max_side))
    x = draw(hnp.arrays(dtype, shape, elements=finite_elements(dtype, bound)))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    return x, axis


temperatures = st.one_of(st.just(1.0), st.floats(0.1, 10.0))


def eps_of(a) -> float:
    return float(np.finfo(np.asarray(a).dtype).eps)


def plain_python_sum_ulps(classes: int) -> float:
    """Extra rounding of a row sum, in ulp, when the kernels run as plain Python.

    Compiled, a block of up to 256 terms is added in 32 partial sums of the row's dtype; plain
    Python (NUMBA_DISABLE_JIT=1) adds them one by one: up to half an ulp more per term.
    """
    return min(classes, 256) / 2 if PLAIN_PYTHON else 0.0


# ----------------------------------------------------------------------------- probabilities


@given(logits(), temperatures)
def test_probabilities_sum_to_one_and_lie_in_unit_interval(xa, temperature):
    x, axis = xa
    p = fs.softmax(x, axis=axis, temperature=temperature)
    assert p.dtype == x.dtype and p.shape == x.shape
    assert np.all(p >= 0) and np.all(p <= 1)
    total = np.sum(p.astype(np.float64), axis=axis)
    classes = x.shape[axis]
    # each entry within a few ulp (relative) of exact, plus float64 block-sum rounding
    ulps = 6 + plain_python_sum_ulps(classes)
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=ulps * eps_of(p) + classes * EPS64)
    assert np.all(p.max(axis=axis) >= 1.0 / classes * (1 - 4 * eps_of(p)))


@given(logits(), temperatures)
def test_log_softmax_is_nonpositive_and_is_log_of_softmax(xa, temperature):
    x, axis = xa
    logp = fs.log_softmax(x, axis=axis, temperature=temperature)
    assert logp.dtype == x.dtype
    assert np.all(logp <= 0)
    # the largest entry's log-probability is >= -log(C)
    assert np.all(
        logp.max(axis=axis) >= -np.log(x.shape[axis]) * (1 + 4 * eps_of(x)) - 4 * eps_of(x)
    )
    p = fs.softmax(x, axis=axis, temperature=temperature)
    big = p > 1e-3  # where log(p) is well conditioned
    np.testing.assert_allclose(
        np.exp(logp.astype(np.float64))[big], p[big], rtol=8 * eps_of(x) + 1e-300
    )


@given(logits())
def test_logsumexp_bounds(xa):
    """max(x) <= logsumexp(x) <= max(x) + log(C), and log_softmax = x - logsumexp(x)."""
    x, axis = xa
    lse = fs.logsumexp(x, axis=axis)
    m = x.max(axis=axis).astype(np.float64)
    tol = 4 * eps_of(x) * (1 + np.abs(m))
    assert np.all(lse >= m - tol)
    assert np.all(lse <= m + np.log(x.shape[axis]) + tol)
    logp = fs.log_softmax(x, axis=axis)
    expected = x.astype(np.float64) - np.expand_dims(lse, axis).astype(np.float64)
    np.testing.assert_allclose(
        logp, expected, rtol=0, atol=8 * eps_of(x) * (1 + np.max(np.abs(expected)))
    )


# ----------------------------------------------------------------------------- invariances


@given(logits(bound=30.0), st.data())
def test_shift_invariance(xa, data):
    """softmax(x + c) == softmax(x) with c per row (up to the rounding of x + c)."""
    x, axis = xa
    batch = list(x.shape)
    batch[axis] = 1
    c = data.draw(
        hnp.arrays(x.dtype, tuple(batch), elements=finite_elements(x.dtype, 100.0)), label="c"
    )
    y = x + c  # rounded: entries move by <= half an ulp of |x + c|
    eps = eps_of(x)
    p, q = fs.softmax(x, axis=axis), fs.softmax(y, axis=axis)
    rounding = 2 * eps * float(np.max(np.abs(y))) if y.size else 0.0
    tiny = float(np.finfo(x.dtype).tiny)
    assert np.all(np.abs(q.astype(np.float64) - p) <= (8 * eps + 2 * rounding) * p + tiny)
    lp, lq = fs.log_softmax(x, axis=axis), fs.log_softmax(y, axis=axis)
    assert np.all(np.abs(lq.astype(np.float64) - lp) <= 8 * eps * (1 + np.abs(lp)) + 2 * rounding)
    lse_x, lse_y = fs.logsumexp(x, axis=axis), fs.logsumexp(y, axis=axis)
    shifted = lse_x.astype(np.float64) + np.squeeze(c, axis=axis)
    assert np.all(np.abs(lse_y - shifted) <= 4 * eps * (1 + np.abs(shifted)) + 2 * rounding)


@given(logits(max_dims=2), st.randoms(use_true_random=False))
def test_permutation_equivariance(xa, random):
    x, axis = xa
    perm = list(range(x.shape[axis]))
    random.shuffle(perm)
    p = fs.softmax(x, axis=axis)
    q = fs.softmax(np.take(x, perm, axis=axis), axis=axis)
    ulps = 4 + plain_python_sum_ulps(x.shape[axis])  # the row sum is added in another order
    np.testing.assert_allclose(
        q, np.take(p, perm, axis=axis), rtol=ulps * eps_of(x), atol=float(np.finfo(x.dtype).tiny)
    )


@given(logits(max_dims=2))
def test_rows_are_independent(xa):
    """A row's result is the same, bit for bit, computed alone or in a batch."""
    x, axis = xa
    assume(x.ndim == 2)
    rows = np.moveaxis(x, axis, -1)  # (rows, classes) view
    for name in FORWARD:
        whole = COMPARISONS[name].fast(x, axis=axis)
        if name != "logsumexp":
            whole = np.moveaxis(whole, axis, -1)
        for i in range(rows.shape[0]):
            np.testing.assert_array_equal(whole[i], COMPARISONS[name].fast(rows[i]))


# ----------------------------------------------------------------------------- derivatives


@given(logits(), temperatures, st.floats(-10, 10))
def test_jvp_of_constant_tangent_is_zero(xa, temperature, k):
    """J 1 = 0: softmax does not change when every logit moves together.

    Bounds relative to max(p, smallest normal): below it (subnormal p) only absolute accuracy is
    left.
    """
    x, axis = xa
    p = fs.softmax(x, axis=axis, temperature=temperature)
    p_floor = np.maximum(p.astype(np.float64), float(np.finfo(x.dtype).tiny))
    tangent = np.full(x.shape, k, dtype=x.dtype)
    classes = x.shape[axis]
    bound = (min(classes, 256) + 8) * eps_of(x) * (abs(k) + 1) / temperature * p_floor
    for fn in (fs.softmax_jvp, fs.softmax_vjp):
        assert np.all(np.abs(fn(p, tangent, axis=axis, temperature=temperature)) <= bound)
    # and the log_softmax VJP of g = p is 0 (p is the direction log_softmax's Jacobian removes);
    # exp(logp) is the exp of a rounded logp: relative error |logp| eps on top of the sum's
    logp = fs.log_softmax(x, axis=axis, temperature=temperature)
    bound = (
        (min(classes, 256) + 8 + np.abs(logp.astype(np.float64)))
        * eps_of(x)
        / temperature
        * p_floor
    )
    assert np.all(np.abs(fs.log_softmax_vjp(logp, p, axis=axis, temperature=temperature)) <= bound)


@given(logits(bound=20.0), st.data())
def test_vjp_sums_to_zero(xa, data):
    """1^T J = 0: a softmax VJP (any cotangent) has zero sum over classes."""
    x, axis = xa
    g = data.draw(hnp.arrays(x.dtype, x.shape, elements=finite_elements(x.dtype, 5.0)), label="g")
    p = fs.softmax(x, axis=axis)
    dz = fs.softmax_vjp(p, g, axis=axis)
    # sum_i p_i (g_i - <p, g>) = <p, g> (1 - sum(p)): rounding only, relative to the row's |g|
    scale = np.max(np.abs(g), axis=axis) + 1e-30
    bound = (min(x.shape[axis], 256) + 8) * eps_of(x) * scale
    assert np.all(np.abs(dz.astype(np.float64).sum(axis=axis)) <= bound)


# ---------------------------------------------------------------------------- against the reference


@given(logits(), temperatures, st.sampled_from(FORWARD))
def test_forward_agrees_with_reference(xa, temperature, name):
    x, axis = xa
    entry = COMPARISONS[name]
    kwargs = {"temperature": temperature} if entry.takes_temperature else {}
    got, want = entry.fast(x, axis=axis, **kwargs), entry.reference(x, axis=axis, **kwargs)
    if name == "softmax":
        # the float32 reference rounds (x - max) / T: an entry far below the max is only good to
        # ~|x - max| / T ulp there, so compare on the scale of the largest probability
        assert_matches(got, want, err_msg=name)
    else:
        entry.check(got, want, (x,), kwargs)


@given(logits(bound=20.0, max_side=16), temperatures, st.sampled_from(DERIVATIVES), st.data())
def test_derivatives_agree_with_reference(xa, temperature, name, data):
    x, axis = xa
    entry = COMPARISONS[name]
    if name == "log_softmax_vjp":
        first = fs.log_softmax(x, axis=axis, temperature=temperature)
    else:
        first = fs.softmax(x, axis=axis, temperature=temperature)
    if name == "softmax_jacobian":
        args, kwargs = (first,), {}
    else:
        second = data.draw(
            hnp.arrays(x.dtype, x.shape, elements=finite_elements(x.dtype, 10.0)), label="v"
        )
        args, kwargs = (first, second), {"temperature": temperature}
    entry.check(
        entry.fast(*args, axis=axis, **kwargs),
        entry.reference(*args, axis=axis, **kwargs),
        args,
        kwargs,
    )


# ----------------------------------------------------------------------------- special values


def special_elements(dtype: np.dtype):
    return st.one_of(
        finite_elements(dtype, 30.0), st.sampled_from([np.inf, -np.inf, np.nan, -np.nan])
    )


@given(
    st.sampled_from(FLOAT_DTYPES).flatmap(
        lambda dt: hnp.arrays(
            dt,
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=8),
            elements=special_elements(dt),
        )
    )
)
def test_special_values_follow_the_rules(x):
    """NaN row -> NaN row; otherwise no NaN; +inf entries share equally; -inf entries get 0;
    all -inf -> zeros / -inf; the reference agrees."""
    p, logp, lse = fs.softmax(x), fs.log_softmax(x), fs.logsumexp(x)
    for i, row in enumerate(x):
        if np.isnan(row).any():
            assert np.all(np.isnan(p[i])) and np.all(np.isnan(logp[i])) and np.isnan(lse[i])
            continue
        assert not np.isnan(p[i]).any() and not np.isnan(logp[i]).any() and not np.isnan(lse[i])
        posinf = np.isposinf(row)
        if posinf.any():
            np.testing.assert_array_equal(
                p[i], np.where(posinf, x.dtype.type(1.0 / posinf.sum()), 0)
            )
            assert lse[i] == np.inf
        elif np.isneginf(row).all():
            assert np.all(p[i] == 0) and np.all(logp[i] == -np.inf) and lse[i] == -np.inf
        else:
            assert np.all(p[i][np.isneginf(row)] == 0) and np.all(
                logp[i][np.isneginf(row)] == -np.inf
            )
            assert abs(float(np.sum(p[i], dtype=np.float64)) - 1) <= 8 * eps_of(x)
    assert_matches(p, COMPARISONS["softmax"].reference(x))
    COMPARISONS["log_softmax"].check(logp, COMPARISONS["log_softmax"].reference(x), (x,))
    COMPARISONS["logsumexp"].check(lse, COMPARISONS["logsumexp"].reference(x), (x,))
