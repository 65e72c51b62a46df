"""fastsoftmax.testing.check_grad: the finite-difference check, and what it says about softmax
derivatives combined with losses other than cross-entropy."""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax.testing import check_grad, numerical_grad

# ---------------------------------------------------------------- softmax + a loss of your own


def squared_error_problem(shape, rng, temperature=1.0):
    t = fs.softmax(rng.standard_normal(shape))  # a target distribution

    def loss(z):
        return 0.5 * np.sum((fs.softmax(z, temperature=temperature) - t) ** 2)

    def grad(z):  # dL/dz = J^T dL/dp, through the VJP: J is never built
        p = fs.softmax(z, temperature=temperature)
        return fs.softmax_vjp(p, p - t, temperature=temperature)

    def diagonal_only(z):  # the classic bug: dp_i/dz_j taken as p_i (1 - p_i) delta_ij
        p = fs.softmax(z, temperature=temperature)
        return p * (1 - p) * (p - t) / temperature

    return loss, grad, diagonal_only


@pytest.mark.parametrize("shape", [(1, 3), (4, 6), (2, 3, 10)])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_softmax_vjp_with_squared_error(shape, temperature, rng):
    loss, grad, diagonal_only = squared_error_problem(shape, rng, temperature)
    z = rng.standard_normal(shape) * 2
    good = check_grad(loss, z, grad)
    bad = check_grad(loss, z, diagonal_only)
    assert good < 1e-8, good  # measured ~1e-10 .. 1e-9
    assert bad > 1e-2, bad  # measured 0.1 .. 0.9: the dropped off-diagonal terms are flagged
    assert check_grad(loss, z, grad(z)) == good  # an array works like a callable


def test_diagonal_only_error_is_about_one_percent_at_initialization(rng):
    """100 classes, near-uniform logits (an untrained model), one-hot target: here the dropped
    off-diagonal terms change the gradient by only ~1% (measured 1.0e-2), small enough to slip
    through a loose check; check_grad reports it 10^6 times above the correct gradient's error."""
    C = 100
    t = np.eye(C)[[3]]
    z = rng.standard_normal((1, C)) * 0.1

    def loss(v):
        return 0.5 * np.sum((fs.softmax(v) - t) ** 2)

    p = fs.softmax(z)
    good = check_grad(loss, z, fs.softmax_vjp(p, p - t))
    bad = check_grad(loss, z, p * (1 - p) * (p - t))
    assert good < 1e-8, good
    assert 5e-3 < bad < 5e-2, bad


def test_softmax_jvp_and_log_softmax_vjp(rng):
    z = rng.standard_normal((3, 5))
    w = rng.standard_normal((3, 5))
    # f = <w, softmax(z)>: grad = J^T w = J w (symmetric), the JVP
    assert (
        check_grad(lambda v: np.sum(w * fs.softmax(v)), z, fs.softmax_jvp(fs.softmax(z), w)) < 1e-8
    )
    # f = <w, log_softmax(z)>: grad through the log_softmax VJP
    assert (
        check_grad(
            lambda v: np.sum(w * fs.log_softmax(v)),
            z,
            lambda v: fs.log_softmax_vjp(fs.log_softmax(v), w),
        )
        < 1e-8
    )


def test_cross_entropy_with_grad_as_a_pair(rng):
    z = rng.standard_normal((6, 4)) * 2
    y = rng.integers(0, 4, 6)
    # grad=None: f returns (loss, gradient)
    assert check_grad(lambda v: fs.cross_entropy_with_grad(v, y, label_smoothing=0.1), z) < 1e-8


def test_float32(rng):
    z = rng.standard_normal((4, 5)).astype(np.float32)
    y = rng.integers(0, 5, 4)
    err = check_grad(lambda v: fs.cross_entropy(v, y), z, lambda v: fs.cross_entropy_backward(v, y))
    assert err < 1e-2  # float32 finite differences: ~eps32^(2/3) ~ 1e-5 .. 1e-3


# ---------------------------------------------------------------- the helper itself


def test_exact_for_a_quadratic(rng):
    x = rng.standard_normal(10)
    assert check_grad(lambda v: np.sum(v**2), x, 2 * x) < 1e-10
    # a gradient off by 1% of its largest entry gives an error of 0.01
    wrong = 2 * x
    k = np.argmax(np.abs(wrong))
    wrong[k] *= 1.01
    assert check_grad(lambda v: np.sum(v**2), x, wrong) == pytest.approx(0.01, rel=1e-6)


def test_numerical_grad_against_known_derivative(rng):
    x = rng.uniform(-3, 3, (3, 4))
    g = numerical_grad(lambda v: np.sum(np.sin(v)), x)
    assert g.shape == x.shape and g.dtype == np.float64
    np.testing.assert_allclose(g, np.cos(x), rtol=0, atol=1e-9)


def test_relative_error_definition():
    x = np.array([1.0, 2.0])
    # f = 3 x0 + 4 x1: fd = (3, 4); analytic (3, 4.4): max|diff| = 0.4, max|fd| = 4 -> 0.1
    err = check_grad(lambda v: 3 * v[0] + 4 * v[1], x, np.array([3.0, 4.4]))
    assert err == pytest.approx(0.1, rel=1e-8)
    assert isinstance(err, float)


def test_indices_subset(rng):
    x = rng.standard_normal(50)
    calls = []

    def f(v):
        calls.append(1)
        return np.sum(v**3)

    wrong = 3 * x**2
    wrong[7] += 1.0
    assert check_grad(f, x, wrong, indices=[0, 1, 2]) < 1e-8
    assert len(calls) == 6  # two evaluations per checked entry
    assert check_grad(f, x, wrong, indices=[7]) > 0.1


def test_zero_nan_and_constant():
    x = np.zeros(3)
    assert check_grad(lambda v: 1.0, x, np.zeros(3)) == 0.0
    assert np.isnan(check_grad(lambda v: np.sum(v), x, np.array([1.0, np.nan, 1.0])))
    assert np.isnan(check_grad(lambda v: np.nan, x, np.zeros(3)))


def test_input_not_modified_and_ints_accepted(rng):
    x = rng.standard_normal(4)
    keep = x.copy()
    check_grad(lambda v: np.sum(v**2), x, lambda v: 2 * v)
    np.testing.assert_array_equal(x, keep)
    assert check_grad(lambda v: np.sum(v**2), np.array([1, 2, 3]), np.array([2.0, 4.0, 6.0])) < 1e-9


def test_errors():
    x = np.ones(3)
    with pytest.raises(ValueError, match="shape"):
        check_grad(lambda v: np.sum(v), x, np.ones(4))
    with pytest.raises(ValueError, match="scalar"):
        check_grad(lambda v: v, x, np.ones(3))
    with pytest.raises(ValueError, match="eps"):
        check_grad(lambda v: np.sum(v), x, np.ones(3), eps=0.0)
    with pytest.raises(TypeError):
        check_grad(lambda v: np.sum(v), np.ones(3, complex), np.ones(3))
