"""Masked softmax (`where=`): JAX semantics, against the reference and independent math."""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs
import fastsoftmax.reference as ref


def _case(rng, rows, classes, dtype):
    x = rng.standard_normal((rows, classes)).astype(dtype) * 3
    mask = rng.random((rows, classes)) > 0.4
    mask[0] = True
    if rows > 1:
        mask[1] = False  # a row masked entirely
    return x, mask


@pytest.mark.parametrize("classes", [1, 5, 63, 64, 300])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_matches_reference(name, dtype, classes):
    rng = np.random.default_rng(classes)
    x, mask = _case(rng, 9, classes, dtype)
    got = getattr(fs, name)(x, where=mask)
    want = getattr(ref, name)(x, where=mask)
    assert got.dtype == want.dtype == dtype
    tol = 2e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * 30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_masked_entries_are_left_out(dtype):
    rng = np.random.default_rng(0)
    x, mask = _case(rng, 7, 12, dtype)
    x[~mask] = np.nan  # left-out entries must not matter, not even NaN
    p = fs.softmax(x, where=mask)
    lp = fs.log_softmax(x, where=mask)
    assert np.all(p[~mask] == 0)
    assert np.all(lp[~mask] == -np.inf)
    assert not np.isnan(p).any() and not np.isnan(lp).any()
    # kept entries: the plain softmax of the kept entries alone
    for i in range(7):
        if mask[i].any():
            kept = x[i, mask[i]].astype(np.float64)
            e = np.exp(kept - kept.max())
            np.testing.assert_allclose(p[i, mask[i]], e / e.sum(), rtol=2e-6)
        else:
            assert np.all(p[i] == 0) and np.all(lp[i] == -np.inf)


def test_where_broadcasts_and_follows_axis():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 3))
    mask = np.array([True, False, True, True, False, True])[:, None]  # along axis 1
    got = fs.softmax(x, axis=1, where=mask)
    np.testing.assert_allclose(got, ref.softmax(x, axis=1, where=mask), rtol=1e-12)
    assert np.all(got[:, [1, 4], :] == 0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-12)


def test_all_true_mask_equals_no_mask():
    x = np.random.default_rng(2).standard_normal((5, 70)).astype(np.float32)
    # the masked loop may be vectorized with another interleave (sum order): within 2 ulp
    np.testing.assert_allclose(fs.softmax(x, where=True), fs.softmax(x), rtol=2.4e-7)
    np.testing.assert_allclose(
        fs.log_softmax(x, where=True), fs.log_softmax(x), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("target_kind", ["index", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_matches_reference(target_kind, reduction, smoothing, weighted):
    rng = np.random.default_rng(3)
    x, mask = _case(rng, 8, 10, np.float64)
    weight = rng.random(10) + 0.1 if weighted else None
    if target_kind == "index":
        target = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in mask])
    else:
        target = rng.dirichlet(np.ones(10), size=8)
    kw = dict(where=mask, weight=weight, label_smoothing=smoothing, reduction=reduction)
    loss, grad = fs.cross_entropy_with_grad(x, target, **kw)
    rloss, rgrad = ref.cross_entropy_with_grad(x, target, **kw)
    np.testing.assert_allclose(loss, rloss, rtol=1e-12)
    np.testing.assert_allclose(grad, rgrad, rtol=1e-10, atol=1e-14)
    assert np.all(grad[~mask] == 0)
    assert np.all(grad[1] == 0)  # the row masked entirely
    if reduction == "none":
        assert loss[1] == 0
    np.testing.assert_allclose(fs.cross_entropy(x, target, **kw), loss, rtol=1e-12)
    np.testing.assert_allclose(fs.cross_entropy_backward(x, target, **kw), grad, rtol=1e-12)


@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_cross_entropy_gradient_by_finite_differences(target_kind):
    rng = np.random.default_rng(4)
    x, mask = _case(rng, 5, 7, np.float64)
    if target_kind == "index":
        target = np.array([rng.choice(np.flatnonzero(m)) if m.any() else 0 for m in mask])
    else:
        target = rng.dirichlet(np.ones(7), size=5)
    kw = dict(where=mask, weight=rng.random(7) + 0.5, label_smoothing=0.2)
    grad = fs.cross_entropy_backward(x, target, **kw)
    h = 1e-6
    fd = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        up, down = x.copy(), x.copy()
        up[idx] += h
        down[idx] -= h
        fd[idx] = (fs.cross_entropy(up, target, **kw) - fs.cross_entropy(down, target, **kw)) / (
            2 * h
        )
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_masked_smoothing_spreads_over_kept_classes_only():
    # independent of the reference: with eps = 1 the target is uniform over the kept classes
    x = np.array([[0.3, -1.0, 2.0, 0.5]])
    mask = np.array([[True, False, True, True]])
    loss = fs.cross_entropy(x, np.array([0]), where=mask, label_smoothing=1.0)
    kept = x[0, mask[0]]
    logp = kept - np.log(np.exp(kept).sum())
    np.testing.assert_allclose(loss, -logp.mean(), rtol=1e-12)


def test_fully_masked_index_row_leaves_the_mean():
    x = np.random.default_rng(5).standard_normal((3, 4))
    mask = np.ones((3, 4), bool)
    mask[2] = False
    y = np.array([1, 2, 3])
    masked = fs.cross_entropy(x, y, where=mask)
    np.testing.assert_allclose(masked, fs.cross_entropy(x[:2], y[:2]), rtol=1e-12)


def test_target_on_a_left_out_class_is_an_error():
    x = np.zeros((2, 3))
    mask = np.array([[True, True, True], [True, False, True]])
    with pytest.raises(ValueError, match=r"index \(1,\)"):
        fs.cross_entropy(x, np.array([0, 1]), where=mask)
    with pytest.raises(ValueError, match="leaves out"):
        ref.cross_entropy(x, np.array([0, 1]), where=mask)


@pytest.mark.parametrize("fn", [fs.softmax, fs.log_softmax, ref.softmax])
def test_bad_where(fn):
    x = np.zeros((2, 3))
    with pytest.raises(TypeError, match="boolean"):
        fn(x, where=np.ones((2, 3)))
    with pytest.raises(ValueError, match="broadcast"):
        fn(x, where=np.ones((4,), bool))


# A NaN on a kept entry makes its row NaN throughout, left-out entries included, for softmax,
# log_softmax and the cross-entropy gradient alike (the longdouble oracle of
# tests/test_option_specials.py states the same).
def _nan_rows_case() -> tuple[np.ndarray, np.ndarray]:
    x = np.array([[1.0, np.nan, 2.0, 0.5], [np.inf, np.nan, -1.0, 0.0], [0.3, 0.1, np.nan, 2.0]])
    mask = np.array(
        [[True, True, False, True], [True, True, True, False], [False, True, True, True]]
    )
    return x, mask


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_nan_row_is_nan_throughout(name, dtype):
    x, mask = _nan_rows_case()
    x = x.astype(dtype)
    want = getattr(ref, name)(x, where=mask)
    assert np.all(np.isnan(want))
    np.testing.assert_array_equal(getattr(fs, name)(x, where=mask), want, strict=True)


@pytest.mark.parametrize("softcap", [None, 50.0], ids=["plain", "softcap"])
@pytest.mark.parametrize("target_kind", ["index", "prob"])
def test_nan_row_gradient_is_nan_throughout(target_kind, softcap):
    """Also with a softcap, whose chain factor is applied after the kernel (it zeroed the
    left-out classes of NaN rows)."""
    x, mask = _nan_rows_case()
    x = np.vstack([x, [1.0, 2.0, 3.0, np.nan]])  # a finite row, NaN on its left-out class
    mask = np.vstack([mask, [True, True, True, False]])
    target = np.array([0, 2, 3, 1]) if target_kind == "index" else np.full((4, 4), 0.25)
    kw = dict(where=mask, softcap=softcap, reduction="none")
    want_loss, want_grad = ref.cross_entropy_with_grad(x, target, **kw)
    assert np.all(np.isnan(want_loss[:3])) and np.all(np.isnan(want_grad[:3]))
    assert np.isfinite(want_loss[3]) and want_grad[3, 3] == 0
    loss, grad = fs.cross_entropy_with_grad(x, target, **kw)
    np.testing.assert_array_equal(loss, want_loss, strict=True)
    assert grad.dtype == want_grad.dtype and grad.shape == want_grad.shape
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)
