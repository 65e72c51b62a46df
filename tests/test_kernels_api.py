"""fastsoftmax.kernels: the row kernels called from users' own @njit code give the public
results."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import needs_jit
from numba import njit, prange

import fastsoftmax as fs
from fastsoftmax import kernels as K

DTYPES = [np.float32, np.float64]


def same(actual, expected):
    """Equal to rounding: the kernels are inlined into the caller and optimized with its
    constants (e.g. temperature 1), which may change an FMA or a rounding, not more."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape
    eps = np.finfo(expected.dtype).eps
    finite = np.abs(expected[np.isfinite(expected)])
    atol = 4 * eps * float(finite.max()) if finite.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=4 * eps, atol=atol, equal_nan=True)
    assert np.array_equal(np.isnan(actual), np.isnan(expected))
    assert np.array_equal(np.isinf(actual), np.isinf(expected))


SHAPES = [(1, 1), (5, 3), (40, 10), (7, 64), (3, 1000), (0, 4)]


def logits(shape, dtype, rng, specials=False):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if specials and shape[0] >= 5 and shape[1] >= 2:
        x[1, 0] = np.nan  # a NaN row
        x[2, :] = -np.inf  # an all -inf row
        x[3, 0] = x[3, 1] = np.inf  # two +inf entries
        x[4, 1] = -np.inf
    return x


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_kernels_equal_public(shape, dtype, rng):
    x = logits(shape, dtype, rng, specials=True)
    out = np.empty_like(x)
    K.softmax_rows(x, out)
    same(out, fs.softmax(x))
    K.log_softmax_rows(x, out)
    same(out, fs.log_softmax(x))
    lse = np.empty(shape[0], dtype=dtype)
    K.logsumexp_rows(x, lse)
    same(lse, fs.logsumexp(x))
    # in place, like the public function in place
    y, z = x.copy(), x.copy()
    K.softmax_rows(y, y)
    fs.softmax(z, out=z)
    same(y, z)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_derivative_kernels_equal_public(shape, dtype, rng):
    p = fs.softmax(logits(shape, dtype, rng))
    v = rng.standard_normal(shape).astype(dtype)
    out = np.empty_like(p)
    K.softmax_jvp_rows(p, v, out)
    same(out, fs.softmax_jvp(p, v))
    K.softmax_vjp_rows(p, v, out)
    same(out, fs.softmax_vjp(p, v))
    logp = fs.log_softmax(logits(shape, dtype, rng))
    K.log_softmax_vjp_rows(logp, v, out)
    same(out, fs.log_softmax_vjp(logp, v))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [s for s in SHAPES if s[0] > 0], ids=str)
def test_cross_entropy_kernels_equal_public(shape, dtype, rng):
    x = logits(shape, dtype, rng)
    y = rng.integers(0, shape[1], shape[0])
    grad = np.empty_like(x)
    loss = K.cross_entropy_index_rows(x, y, grad)
    want_loss, want_grad = fs.cross_entropy_with_grad(x, y)
    assert isinstance(loss, float)
    same(dtype(loss), want_loss)
    same(grad, want_grad)
    # ignore_index -100 skips a row; a 0-row gradient skips the gradient
    y[0] = -100
    if shape[0] > 1:
        same(
            dtype(K.cross_entropy_index_rows(x, y, np.empty((0, shape[1]), dtype))),
            fs.cross_entropy(x, y),
        )
    # probability targets
    t = fs.softmax(logits(shape, dtype, rng))
    loss = K.cross_entropy_prob_rows(x, t, grad)
    want_loss, want_grad = fs.cross_entropy_with_grad(x, t)
    same(dtype(loss), want_loss)
    same(grad, want_grad)
    # in place over the logits
    z = x.copy()
    K.cross_entropy_prob_rows(z, t, z)
    same(z, want_grad)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 17, 10_000])
def test_binary_kernels_equal_public(n, dtype, rng):
    x = (rng.standard_normal(n) * 4).astype(dtype)
    y = (rng.random(n) < 0.5).astype(dtype)
    out = np.empty_like(x)
    K.sigmoid_flat(x, out)
    same(out, fs.sigmoid(x))
    K.log_sigmoid_flat(x, out)
    same(out, fs.log_sigmoid(x))
    grad = np.empty_like(x)
    loss = K.binary_cross_entropy_with_logits_flat(x, y, grad)
    want_loss, want_grad = fs.binary_cross_entropy_with_logits_with_grad(x, y)
    same(dtype(loss), want_loss)
    same(grad, want_grad)


# ---------------------------------------------------------------- a user's own @njit training step


@njit(cache=False)
def _matmul(a, b, out):
    """out = a @ b with plain loops (no BLAS), the same in the njit and the Python loop."""
    for i in range(a.shape[0]):
        for j in range(b.shape[1]):
            acc = 0.0
            for k in range(a.shape[1]):
                acc += a[i, k] * b[k, j]
            out[i, j] = acc


@njit(cache=False)
def _sgd_update(W, X, dlogits, lr):
    """W -= lr * X^T dlogits."""
    for k in range(X.shape[1]):
        for j in range(W.shape[1]):
            acc = 0.0
            for i in range(X.shape[0]):
                acc += X[i, k] * dlogits[i, j]
            W[k, j] -= lr * acc


@njit(cache=False)
def njit_train(W, X, y, lr, steps, batch):
    """Minibatch softmax regression, entirely inside numba: the CE kernel fills the gradient
    over the logits buffer in place."""
    logits = np.empty((batch, W.shape[1]), dtype=W.dtype)
    losses = np.empty(steps)
    n = X.shape[0]
    for s in range(steps):
        start = (s * batch) % (n - batch + 1)
        xb = X[start : start + batch]
        _matmul(xb, W, logits)
        losses[s] = K.cross_entropy_index_rows(logits, y[start : start + batch], logits)
        _sgd_update(W, xb, logits, lr)
    return losses


def python_train(W, X, y, lr, steps, batch):
    """The same loop in Python with the public fused function."""
    logits = np.empty((batch, W.shape[1]), dtype=W.dtype)
    losses = np.empty(steps)
    n = X.shape[0]
    for s in range(steps):
        start = (s * batch) % (n - batch + 1)
        xb = X[start : start + batch]
        _matmul(xb, W, logits)
        losses[s], _ = fs.cross_entropy_with_grad(logits, y[start : start + batch], out=logits)
        _sgd_update(W, xb, logits, lr)
    return losses


def synthetic_classes(rng, n=600, d=8, classes=4):
    centers = rng.standard_normal((classes, d)) * 2
    y = rng.integers(0, classes, n)
    X = centers[y] + rng.standard_normal((n, d))
    return X, y


@pytest.mark.slow
def test_user_njit_training_step_matches_public_api(rng):
    X, y = synthetic_classes(rng)
    W0 = np.zeros((X.shape[1], 4))
    W_njit, W_py = W0.copy(), W0.copy()
    losses_njit = njit_train(W_njit, X, y, 0.05, 60, 32)
    losses_py = python_train(W_py, X, y, 0.05, 60, 32)
    # the same kernel in both loops: equal to rounding, which 60 SGD steps do not amplify
    np.testing.assert_allclose(losses_njit, losses_py, rtol=1e-12)
    np.testing.assert_allclose(W_njit, W_py, rtol=1e-10, atol=1e-12)
    assert losses_njit[0] == pytest.approx(np.log(4))  # W = 0: uniform prediction
    assert losses_njit[-10:].mean() < 0.3 * losses_njit[0]  # it learns
    accuracy = np.mean(np.argmax(X @ W_njit, axis=1) == y)
    assert accuracy > 0.9


@pytest.mark.slow
def test_docstring_example_with_matmul(rng):
    """The example in the fastsoftmax.kernels docstring, as written (numba's @ on 2-D arrays)."""

    @njit
    def sgd_step(W, X, y, lr, logits):
        logits[:] = X @ W
        loss = K.cross_entropy_index_rows(logits, y, logits)
        W -= lr * (X.T @ logits)
        return loss

    X, y = synthetic_classes(rng)
    W = np.zeros((X.shape[1], 4))
    logits = np.empty((X.shape[0], 4))
    losses = [sgd_step(W, X, y, 0.5, logits) for _ in range(30)]
    assert losses[0] == pytest.approx(np.log(4)) and losses[-1] < 0.5 * losses[0]


@pytest.mark.slow
def test_called_inside_user_prange(rng):
    """One kernel call per block of rows inside the user's own parallel loop."""

    @njit(parallel=True)
    def blockwise_softmax(x, out, block):
        nblocks = (x.shape[0] + block - 1) // block
        for b in prange(nblocks):
            K.softmax_rows(x[b * block : (b + 1) * block], out[b * block : (b + 1) * block])

    x = logits((1000, 37), np.float32, rng, specials=True)
    out = np.empty_like(x)
    blockwise_softmax(x, out, 64)
    same(out, fs.softmax(x))


@needs_jit
def test_public_names_are_njit_functions():
    from numba.core.registry import CPUDispatcher

    for name in K.__all__:
        fn = getattr(K, name)
        assert isinstance(fn, CPUDispatcher), name
        assert fn.__doc__ and "``" in fn.__doc__, name
