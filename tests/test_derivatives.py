"""softmax_jacobian, softmax_jvp, softmax_vjp, log_softmax_vjp: against the reference, and against
central finite differences of a long-double softmax written here (not the package's), including
the check that a diagonal-only "derivative" is rejected and softmax + squared-error loss."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import (
    COMPARISONS,
    DERIVATIVES,
    LAYOUT_NAMES,
    RESULT_DTYPE,
    layouts,
    random_logits,
    random_probs,
)

import fastsoftmax as fs
from fastsoftmax import reference as ref

SHAPES = [(1, 1), (1, 7), (7, 1), (0, 5), (33, 17), (2, 3, 5), (11,), (4, 0, 3)]
DTYPES = [np.float16, np.float32, np.float64, np.int32, np.bool_]
PRODUCTS = ["softmax_jvp", "softmax_vjp", "log_softmax_vjp"]
LD = np.longdouble


def call(name, *args, **kwargs):
    return COMPARISONS[name].fast(*args, **kwargs)


def call_ref(name, *args, **kwargs):
    return COMPARISONS[name].reference(*args, **kwargs)


def first_arg(name, x, axis=-1, temperature=1.0):
    """First argument of a derivative function for logits x: probabilities or log-probabilities."""
    if name == "log_softmax_vjp":
        return fs.log_softmax(x, axis=axis, temperature=temperature)
    return fs.softmax(x, axis=axis, temperature=temperature)


# ----------------------------------------------------------------------------- long-double oracles


def ld_softmax(z, temperature=1.0, axis=-1):
    u = np.asarray(z).astype(LD) / LD(temperature)
    e = np.exp(u - u.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def ld_log_softmax(z, temperature=1.0, axis=-1):
    u = np.asarray(z).astype(LD) / LD(temperature)
    m = u.max(axis=axis, keepdims=True)
    return (u - m) - np.log(np.exp(u - m).sum(axis=axis, keepdims=True))


def fd_jacobian(f, z, temperature=1.0, h=1e-6):
    """Central differences in long double: J[r, i, j] = d f(z)_i / d z_j for rows z (rows, C)."""
    z = np.asarray(z).astype(LD)
    rows, classes = z.shape
    jac = np.empty((rows, classes, classes), dtype=LD)
    for j in range(classes):
        step = np.zeros_like(z)
        step[:, j] = LD(h)
        jac[:, :, j] = (f(z + step, temperature) - f(z - step, temperature)) / (2 * LD(h))
    return jac


def fd_directional(f, z, direction, temperature=1.0, h=1e-6, axis=-1):
    """Central difference of f along ``direction`` (any shape, any axis): J v without building J."""
    z = np.asarray(z).astype(LD)
    d = np.asarray(direction).astype(LD) * LD(h)
    return (f(z + d, temperature, axis) - f(z - d, temperature, axis)) / (2 * LD(h))


def gradient_check_error(analytic, numeric) -> float:
    """||analytic - numeric|| / ||numeric|| over the whole array (the usual gradient check)."""
    numeric = np.asarray(numeric, dtype=LD)
    diff = np.asarray(analytic, dtype=LD) - numeric
    return float(np.sqrt(np.sum(diff * diff)) / np.sqrt(np.sum(numeric * numeric)))


GRADCHECK_OK = 1e-8  # float64 analytic vs long-double central differences (h = 1e-6)


# ---------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("name", DERIVATIVES)
def test_matches_reference(name, shape, dtype, rng):
    entry = COMPARISONS[name]
    args, _ = entry.make_args(shape, dtype, rng)
    before = [a.copy() for a in args]
    got = entry.fast(*args)
    want = entry.reference(*args)
    assert got.dtype == RESULT_DTYPE[np.dtype(dtype)] == want.dtype
    assert got.shape == entry.result_shape(shape)
    entry.check(got, want, args)
    for a, b in zip(args, before, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "pair",
    [
        (np.float32, np.float64),
        (np.float16, np.float32),
        (np.int32, np.float32),
        (np.float32, np.bool_),
        (np.float16, np.float16),
        (np.int64, np.uint8),
    ],
    ids=lambda p: f"{np.dtype(p[0]).name}-{np.dtype(p[1]).name}",
)
@pytest.mark.parametrize("name", PRODUCTS)
def test_mixed_dtypes_promote(name, pair, rng):
    a = random_probs((5, 6), pair[0], rng)
    b = random_logits((5, 6), pair[1], rng, scale=1.0)
    got = call(name, a, b)
    want = call_ref(name, a, b)
    expected_dtype = np.result_type(
        RESULT_DTYPE[np.dtype(pair[0])], RESULT_DTYPE[np.dtype(pair[1])]
    )
    assert got.dtype == expected_dtype
    COMPARISONS[name].check(got, want, (a, b))
    np.testing.assert_array_equal(
        got, call(name, a.astype(expected_dtype), b.astype(expected_dtype))
    )


@pytest.mark.parametrize("name", PRODUCTS)
def test_shape_mismatch(name):
    for a_shape, b_shape in [
        ((3, 4), (3, 5)),
        ((3, 4), (4, 3)),
        ((3, 4), (4,)),
        ((2, 3, 4), (3, 4)),
    ]:
        with pytest.raises(ValueError, match="shape"):
            call(name, np.ones(a_shape), np.ones(b_shape))
        with pytest.raises(ValueError, match="shape"):
            call_ref(name, np.ones(a_shape), np.ones(b_shape))


@pytest.mark.slow
@pytest.mark.parametrize("classes", [600, 2000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_jacobian_beyond_reference_limit(dtype, classes, rng):
    """C beyond the reference's limit: against diag(p) - p p^T in long double."""
    p = random_probs((2, classes), dtype, rng)
    got = fs.softmax_jacobian(p)
    pl = p.astype(LD)
    exact = pl[:, :, None] * np.eye(classes, dtype=LD) - pl[:, :, None] * pl[:, None, :]
    eps = np.finfo(dtype).eps
    # each entry is one or two roundings of an exact product of the inputs
    err = np.abs(got.astype(LD) - exact)
    assert np.all(err <= 2 * eps * np.abs(exact) + 2 * eps * pl[:, :, None] * pl[:, None, :])


@pytest.mark.parametrize("temperature", [1.0, 0.4])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", PRODUCTS)
def test_long_rows_100k(name, dtype, temperature, rng):
    """(2, 100_000): the reference would build 1e10-entry Jacobians; use the long-double formula.

    Allowed error per entry (eps of the dtype, T the temperature): the row sum/dot product to
    4 eps of the sum of magnitudes, each entry to 4 eps.
    """
    shape = (2, 100_000)
    a = (
        random_probs(shape, dtype, rng)
        if name != "log_softmax_vjp"
        else ld_log_softmax(random_logits(shape, np.float64, rng)).astype(dtype)
    )
    b = random_logits(shape, dtype, rng, scale=1.0)
    got = call(name, a, b, temperature=temperature)
    assert got.dtype == dtype
    al, bl, inv_t = a.astype(LD), b.astype(LD), LD(1) / LD(temperature)
    eps = np.finfo(dtype).eps
    if name == "log_softmax_vjp":
        p = np.exp(al)
        exact = (bl - p * bl.sum(-1, keepdims=True)) * inv_t
        allowed = 4 * eps * (np.abs(bl) + p * np.abs(bl).sum(-1, keepdims=True)) * inv_t
    else:
        dot = (al * bl).sum(-1, keepdims=True)
        exact = al * (bl - dot) * inv_t
        allowed = 4 * eps * al * (np.abs(bl) + (al * np.abs(bl)).sum(-1, keepdims=True)) * inv_t
    assert np.all(np.abs(got.astype(LD) - exact) <= allowed)


def test_vjp_equals_jvp_for_softmax(rng):
    """J is symmetric: softmax_vjp equals softmax_jvp; both equal J @ v with J from the Jacobian."""
    p = random_probs((6, 9), np.float64, rng)
    v = random_logits((6, 9), np.float64, rng)
    np.testing.assert_array_equal(
        fs.softmax_vjp(p, v, temperature=2.0), fs.softmax_jvp(p, v, temperature=2.0)
    )
    jac = fs.softmax_jacobian(p)
    np.testing.assert_array_equal(jac, np.swapaxes(jac, -1, -2))
    np.testing.assert_allclose(
        fs.softmax_jvp(p, v), np.einsum("rij,rj->ri", jac, v), rtol=1e-12, atol=1e-15
    )


def test_jacobian_rows_sum_to_zero(rng):
    p = random_probs((5, 12), np.float64, rng)
    jac = fs.softmax_jacobian(p)
    assert jac.shape == (5, 12, 12)
    np.testing.assert_allclose(jac.sum(-1), 0.0, atol=4e-16)
    np.testing.assert_array_equal(np.diagonal(jac, axis1=-2, axis2=-1), p * (1 - p))


# ----------------------------------------------------------------------- layouts, axes, temperature


@pytest.mark.parametrize("layout", LAYOUT_NAMES)
@pytest.mark.parametrize("name", DERIVATIVES)
def test_layouts(name, layout, rng):
    entry = COMPARISONS[name]
    shape = (4, 5, 6)
    args, _ = entry.make_args(shape, np.float32, rng)
    contiguous = [np.ascontiguousarray(a) for a in args]
    for axis in (0, 1, 2, -1):
        expected = entry.fast(*contiguous, axis=axis)
        # the layout on each argument in turn and on all at once
        variants = [
            [layouts(a)[layout] if k == i else a for k, a in enumerate(args)]
            for i in range(len(args))
        ]
        variants.append([layouts(a)[layout] for a in args])
        for variant in variants:
            got = entry.fast(*variant, axis=axis)
            np.testing.assert_array_equal(got, expected, err_msg=f"{layout} axis={axis}")
            entry.check(got, entry.reference(*variant, axis=axis), tuple(variant))


@pytest.mark.parametrize("axis", [0, 1, 2, -1, -2, -3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", DERIVATIVES)
def test_axes(name, axis, dtype, rng):
    x = random_logits((4, 5, 6), dtype, rng)
    a = first_arg(name, x, axis=axis)
    args = (a,) if name == "softmax_jacobian" else (a, random_logits((4, 5, 6), dtype, rng))
    got = call(name, *args, axis=axis)
    COMPARISONS[name].check(got, call_ref(name, *args, axis=axis), args)
    moved = call(name, *(np.moveaxis(t, axis, -1) for t in args))
    if name == "softmax_jacobian":
        np.testing.assert_array_equal(got, moved)  # batch + (C, C) either way
    else:
        np.testing.assert_array_equal(got, np.moveaxis(moved, -1, axis))


@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.5, 100.0, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", PRODUCTS)
def test_temperature(name, dtype, temperature, rng):
    x = random_logits((33, 17), dtype, rng)
    a = first_arg(name, x, temperature=temperature)
    b = random_logits((33, 17), dtype, rng)
    got = call(name, a, b, temperature=temperature)
    kwargs = {"temperature": temperature}
    COMPARISONS[name].check(got, call_ref(name, a, b, **kwargs), (a, b), kwargs)
    # the temperature only divides the product
    np.testing.assert_allclose(
        got,
        call(name, a, b) / dtype(temperature),
        rtol=4 * np.finfo(dtype).eps,
        atol=4 * np.finfo(dtype).eps * np.max(np.abs(got)),
    )


def test_jacobian_has_no_temperature_or_out():
    with pytest.raises(TypeError):
        fs.softmax_jacobian(np.ones((2, 3)) / 3, temperature=2.0)
    with pytest.raises(TypeError):
        fs.softmax_jacobian(np.ones((2, 3)) / 3, out=np.empty((2, 3, 3)))


# ----------------------------------------------------------------------------- out=


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", PRODUCTS)
def test_out(name, dtype, rng):
    args, _ = COMPARISONS[name].make_args((6, 7), dtype, rng)
    expected = call(name, *args)
    for order in ("C", "F"):
        out = np.full((6, 7), -9.0, dtype=dtype, order=order)
        assert call(name, *args, out=out) is out
        np.testing.assert_array_equal(out, expected)
    big = np.full((6, 14), -9.0, dtype=dtype)
    assert call(name, *args, out=big[:, ::2]) is not None
    np.testing.assert_array_equal(big[:, ::2], expected)
    assert np.all(big[:, 1::2] == -9.0)


@pytest.mark.parametrize("axis", [0, -1])
@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "reversed"])
@pytest.mark.parametrize("name", PRODUCTS)
def test_out_in_place(name, layout, which, axis, rng):
    """out= the first or the second argument (in any layout): same result as a fresh array."""
    args, _ = COMPARISONS[name].make_args((9, 13), np.float64, rng)
    expected = call(name, *args, axis=axis)
    args = [layouts(a)[layout] for a in args]
    res = call(name, *args, axis=axis, out=args[which])
    assert res is args[which]
    np.testing.assert_array_equal(args[which], expected)


@pytest.mark.parametrize("name", PRODUCTS)
def test_out_overlapping_both_inputs(name, rng):
    """probs and tangent are views of one buffer; out is a third, overlapping view."""
    buf = np.abs(random_logits((8, 10), np.float64, rng))
    a, b = buf[:, :5], buf[:, 5:]
    expected = call(name, a.copy(), b.copy())
    out = buf[:, 2:7]  # overlaps both inputs
    assert call(name, a, b, out=out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("name", PRODUCTS)
def test_same_array_twice(name, rng):
    p = random_probs((4, 6), np.float64, rng)
    expected = call(name, p, p.copy())
    np.testing.assert_array_equal(call(name, p, p), expected)
    res = call(name, p, p, out=p)
    assert res is p
    np.testing.assert_array_equal(p, expected)


# ----------------------------------------------------------------------------- finite differences


@pytest.mark.parametrize("temperature", [1.0, 0.7, 3.0])
def test_jacobian_matches_finite_differences(temperature, rng):
    z = random_logits((5, 7), np.float64, rng, scale=1.5)
    p = fs.softmax(z, temperature=temperature)
    numeric = fd_jacobian(ld_softmax, z, temperature)  # dp/dz = J / T
    analytic = fs.softmax_jacobian(p) / temperature
    assert gradient_check_error(analytic, numeric) < GRADCHECK_OK
    np.testing.assert_allclose(analytic, numeric.astype(np.float64), rtol=0, atol=1e-10)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 3.0])
@pytest.mark.parametrize("name", ["softmax_jvp", "softmax_vjp"])
def test_softmax_products_match_finite_differences(name, temperature, rng):
    z = random_logits((5, 7), np.float64, rng, scale=1.5)
    v = random_logits((5, 7), np.float64, rng, scale=1.0)
    p = fs.softmax(z, temperature=temperature)
    jac = fd_jacobian(ld_softmax, z, temperature)
    numeric = (
        np.einsum("rij,rj->ri", jac, v)
        if name == "softmax_jvp"
        else np.einsum("rj,rji->ri", v, jac)
    )
    got = call(name, p, v, temperature=temperature)
    assert gradient_check_error(got, numeric) < GRADCHECK_OK
    # the JVP is the directional derivative, without the Jacobian
    if name == "softmax_jvp":
        assert (
            gradient_check_error(got, fd_directional(ld_softmax, z, v, temperature)) < GRADCHECK_OK
        )


@pytest.mark.parametrize("temperature", [1.0, 0.7, 3.0])
def test_log_softmax_vjp_matches_finite_differences(temperature, rng):
    z = random_logits((5, 7), np.float64, rng, scale=1.5)
    g = random_logits((5, 7), np.float64, rng, scale=1.0)
    logp = fs.log_softmax(z, temperature=temperature)
    jac = fd_jacobian(ld_log_softmax, z, temperature)
    numeric = np.einsum("rj,rji->ri", g, jac)
    got = fs.log_softmax_vjp(logp, g, temperature=temperature)
    assert gradient_check_error(got, numeric) < GRADCHECK_OK


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("name", PRODUCTS)
def test_products_along_axis_match_finite_differences(name, axis, rng):
    z = random_logits((3, 4, 5), np.float64, rng)
    v = random_logits((3, 4, 5), np.float64, rng)
    f = ld_log_softmax if name == "log_softmax_vjp" else ld_softmax
    got = call(name, first_arg(name, z, axis=axis, temperature=1.5), v, axis=axis, temperature=1.5)
    if name == "log_softmax_vjp":
        # g^T J for a row-wise J: sum over i of g_i * d f_i/d z_j, taken as directional derivatives
        moved_z, moved_g = (
            np.moveaxis(z, axis, -1).reshape(-1, z.shape[axis]),
            np.moveaxis(v, axis, -1),
        )
        jac = fd_jacobian(lambda zz, t: ld_log_softmax(zz, t), moved_z, 1.5)
        numeric = np.einsum("rj,rji->ri", moved_g.reshape(jac.shape[:2]), jac)
        numeric = np.moveaxis(numeric.reshape(np.moveaxis(z, axis, -1).shape), -1, axis)
    else:
        numeric = fd_directional(f, z, v, 1.5, axis=axis)
    assert gradient_check_error(got, numeric) < GRADCHECK_OK


@pytest.mark.parametrize("name", DERIVATIVES)
def test_float32_derivatives_match_finite_differences(name, rng):
    z = random_logits((4, 9), np.float64, rng)
    v = random_logits((4, 9), np.float64, rng)
    f = ld_log_softmax if name == "log_softmax_vjp" else ld_softmax
    jac = fd_jacobian(f, z, 2.0)
    a32 = first_arg(name, z.astype(np.float32), temperature=2.0)
    if name == "softmax_jacobian":
        got, numeric = fs.softmax_jacobian(a32) / np.float32(2.0), jac
    elif name == "softmax_jvp":
        got = fs.softmax_jvp(a32, v.astype(np.float32), temperature=2.0)
        numeric = np.einsum("rij,rj->ri", jac, v)
    else:
        got, numeric = (
            call(name, a32, v.astype(np.float32), temperature=2.0),
            np.einsum("rj,rji->ri", v, jac),
        )
    assert got.dtype == np.float32
    assert gradient_check_error(got, numeric) < 1e-6


def _diagonal_only_vjp(p, g, temperature):
    """Classic wrong softmax backward: keeps dp_i/dz_i = p_i (1 - p_i), drops dp_i/dz_j, i != j."""
    return p * (1 - p) * g / temperature


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gradient_check_rejects_diagonal_only_derivative(temperature, rng):
    """The finite-difference check must tell the right VJP from the diagonal-only one.

    Nearly uniform p over C = 100 classes and a cotangent of zero mean make the dropped
    off-diagonal terms only ~1/C = 1% of the gradient: the hard case, where a loose check passes.
    """
    classes = 100
    z = rng.standard_normal((3, classes)) * 0.05
    g = rng.standard_normal((3, classes))
    g -= g.mean(axis=-1, keepdims=True)
    p = fs.softmax(z, temperature=temperature)
    numeric = np.einsum("rj,rji->ri", g, fd_jacobian(ld_softmax, z, temperature))

    ours = gradient_check_error(fs.softmax_vjp(p, g, temperature=temperature), numeric)
    wrong = gradient_check_error(_diagonal_only_vjp(p, g, temperature), numeric)
    assert ours < GRADCHECK_OK
    assert 0.005 < wrong < 0.02, f"diagonal-only error {wrong:.3%}"  # ~1%, as the classic bug
    assert wrong > 1e5 * ours

    # on a generic (peaked) input the diagonal-only version is far worse
    z = rng.standard_normal((3, 10)) * 3
    g = rng.standard_normal((3, 10))
    p = fs.softmax(z, temperature=temperature)
    numeric = np.einsum("rj,rji->ri", g, fd_jacobian(ld_softmax, z, temperature))
    assert (
        gradient_check_error(fs.softmax_vjp(p, g, temperature=temperature), numeric) < GRADCHECK_OK
    )
    assert gradient_check_error(_diagonal_only_vjp(p, g, temperature), numeric) > 0.05


@pytest.mark.parametrize("temperature", [1.0, 0.5, 4.0])
def test_softmax_with_squared_error_loss(temperature, rng):
    """L(z) = 0.5 ||softmax(z / T) - y||^2 summed over rows: dL/dz = softmax_vjp(p, p - y, T)."""
    z = random_logits((4, 7), np.float64, rng, scale=1.5)
    y = random_probs((4, 7), np.float64, rng)

    def loss(zz):
        d = ld_softmax(zz, temperature) - y.astype(LD)
        return 0.5 * np.sum(d * d)

    p = fs.softmax(z, temperature=temperature)
    grad = fs.softmax_vjp(p, p - y, temperature=temperature)
    h = LD(1e-6)
    numeric = np.empty(z.shape, dtype=LD)
    zl = z.astype(LD)
    for idx in np.ndindex(z.shape):
        step = np.zeros_like(zl)
        step[idx] = h
        numeric[idx] = (loss(zl + step) - loss(zl - step)) / (2 * h)
    assert gradient_check_error(grad, numeric) < GRADCHECK_OK
    assert gradient_check_error(_diagonal_only_vjp(p, p - y, temperature), numeric) > 1e-3
    # and one gradient step lowers the loss
    assert loss(z - 0.1 * grad) < loss(z)


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_log_softmax_with_nll_matches_cross_entropy_gradient(temperature, rng):
    """-sum(y * log_softmax(z / T)) has gradient log_softmax_vjp(logp, -y, T), which is also
    cross_entropy_backward with probability targets and reduction="sum"; finite differences
    agree."""
    z = random_logits((5, 6), np.float64, rng)
    y = random_probs((5, 6), np.float64, rng)
    grad = fs.log_softmax_vjp(
        fs.log_softmax(z, temperature=temperature), -y, temperature=temperature
    )
    np.testing.assert_allclose(
        grad,
        fs.cross_entropy_backward(z, y, reduction="sum", temperature=temperature),
        rtol=1e-12,
        atol=1e-15,
    )
    jac = fd_jacobian(ld_log_softmax, z, temperature)
    assert gradient_check_error(grad, np.einsum("rj,rji->ri", -y, jac)) < GRADCHECK_OK


# ----------------------------------------------------------------------------- special values


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", PRODUCTS)
def test_nan_row(name, dtype, rng):
    for which in (0, 1):
        args, _ = COMPARISONS[name].make_args((5, 6), dtype, rng)
        args[which][2, 4] = np.nan
        got = call(name, *args)
        if name == "log_softmax_vjp" and which == 0:
            # (g - exp(logp) sum(g)) / T: a NaN log-probability poisons its own entry only (the
            # reference agrees); a NaN logits row gives an all-NaN logp row in practice anyway
            assert np.isnan(got[2, 4]) and np.sum(np.isnan(got[2])) == 1
        else:
            assert np.all(np.isnan(got[2]))
        others = [0, 1, 3, 4]
        assert not np.any(np.isnan(got[others]))
        np.testing.assert_array_equal(got[others], call(name, *(a[others] for a in args)))
        COMPARISONS[name].check(got, call_ref(name, *args), args)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_jacobian_nan_row(dtype, rng):
    p = random_probs((3, 4), dtype, rng)
    p[1, 2] = np.nan
    jac = fs.softmax_jacobian(p)
    assert np.all(np.isnan(jac[1, 2, :])) and np.all(np.isnan(jac[1, :, 2]))
    np.testing.assert_array_equal(jac[[0, 2]], fs.softmax_jacobian(p[[0, 2]]))
    COMPARISONS["softmax_jacobian"].check(jac, ref.softmax_jacobian(p), (p,))


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: np.dtype(d).name)
def test_masked_logits(dtype, temperature, rng):
    """-inf logits: p = 0 there, so J v is exactly 0 there; logp = -inf gives (g - 0) / T there."""
    z = random_logits((4, 8), dtype, rng)
    z[:, ::3] = -np.inf
    z[3] = -np.inf  # an all -inf row: p all 0, logp all -inf
    p = fs.softmax(z, temperature=temperature)
    logp = fs.log_softmax(z, temperature=temperature)
    v = random_logits((4, 8), dtype, rng)
    for name in ("softmax_jvp", "softmax_vjp"):
        got = call(name, p, v, temperature=temperature)
        assert np.all(got[:, ::3] == 0.0) and np.all(got[3] == 0.0) and np.all(np.isfinite(got))
        COMPARISONS[name].check(
            got, call_ref(name, p, v, temperature=temperature), (p, v), {"temperature": temperature}
        )
    got = fs.log_softmax_vjp(logp, v, temperature=temperature)
    assert np.all(np.isfinite(got))
    # exp(-inf) = 0 leaves g / T there (exactly: 1 / T is exact for T = 1, 2)
    np.testing.assert_array_equal(got[:, ::3], v[:, ::3] / dtype(temperature))
    np.testing.assert_array_equal(got[3], v[3] / dtype(temperature))
    want = ref.log_softmax_vjp(logp, v, temperature=temperature)
    COMPARISONS["log_softmax_vjp"].check(got, want, (logp, v), {"temperature": temperature})
    jac = fs.softmax_jacobian(p)
    assert np.all(jac[:, ::3, :] == 0.0) and np.all(jac[:, :, ::3] == 0.0) and np.all(jac[3] == 0.0)
    # the unmasked block of J v: the same as for the softmax of the unmasked logits alone
    kept = np.delete(z[:3], np.s_[::3], axis=1)
    pk = fs.softmax(kept, temperature=temperature)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-14}
    np.testing.assert_allclose(
        np.delete(fs.softmax_jvp(p, v)[:3], np.s_[::3], axis=1),
        fs.softmax_jvp(pk, np.delete(v[:3], np.s_[::3], axis=1)),
        **tol,
    )


def test_jvp_of_ones_is_zero(rng):
    p = random_probs((6, 50), np.float64, rng)
    for name in ("softmax_jvp", "softmax_vjp"):
        np.testing.assert_allclose(call(name, p, np.ones_like(p)), 0.0, atol=4e-16)
    # log_softmax's Jacobian I - 1 p^T applied from the left to g = p gives p - p sum(p) = 0
    np.testing.assert_allclose(fs.log_softmax_vjp(np.log(p), p), 0.0, atol=4e-16)
