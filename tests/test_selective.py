"""selective_log_softmax and selective_log_softmax_vjp: against the reference (full log_softmax
then take_along_axis; scatter then log_softmax_vjp), torch autograd of log_softmax + gather, finite
differences, special rows, and bad inputs."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import assert_close, random_logits
from test_bad_inputs import Case, assert_raises_alike

import fastsoftmax as fs
from fastsoftmax import reference as ref

SHAPES = [
    ((5, 9), None),
    ((5, 9), 3),
    ((2, 3, 40), 2),
    ((7,), None),
    ((7,), 4),
    ((0, 6), 2),
    ((33, 300), 5),
]


def make(shape, k, dtype, seed):
    rng = np.random.default_rng(seed)
    z = random_logits(shape, dtype, rng)
    index_shape = shape[:-1] if k is None else shape[:-1] + (k,)
    idx = rng.integers(0, shape[-1], size=index_shape)
    g = rng.standard_normal(index_shape)
    return z, idx, g


@pytest.mark.parametrize("temperature", [1.0, 0.6])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,k", SHAPES)
def test_matches_reference(shape, k, dtype, temperature) -> None:
    z, idx, g = make(shape, k, dtype, seed=len(shape))
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    got = fs.selective_log_softmax(z, idx, temperature=temperature)
    expected = ref.selective_log_softmax(z, idx, temperature=temperature)
    scale = float(np.abs(z).max(initial=1.0)) / temperature  # log_softmax's absolute error scale
    assert_close(got, expected, rtol=rtol, atol=rtol * scale)
    vjp = fs.selective_log_softmax_vjp(z, idx, g, temperature=temperature)
    expected = ref.selective_log_softmax_vjp(z, idx, g, temperature=temperature)
    assert_close(vjp, expected, rtol=rtol, atol=rtol * float(np.abs(g).sum(initial=0.0)))


def test_equals_full_log_softmax_and_repeated_classes() -> None:
    """Every class selected (in a shuffled order, one twice): the row's log_softmax itself; the
    VJP adds both cotangents of a repeated class."""
    z, _, _ = make((4, 6), None, np.float64, seed=1)
    idx = np.array([[5, 4, 3, 2, 1, 0, 0]] * 4)
    full = fs.log_softmax(z)
    np.testing.assert_allclose(fs.selective_log_softmax(z, idx), full[:, idx[0]], rtol=1e-14)
    g = np.ones((4, 7))
    expected = fs.log_softmax_vjp(full, np.array([[2.0, 1, 1, 1, 1, 1]] * 4))
    np.testing.assert_allclose(fs.selective_log_softmax_vjp(z, idx, g), expected, atol=1e-15)


def test_matches_torch_autograd() -> None:
    torch = pytest.importorskip("torch")
    z, idx, g = make((6, 11), 3, np.float64, seed=2)
    zt = torch.tensor(z, requires_grad=True)
    lp = torch.gather(torch.log_softmax(zt / 1.7, -1), -1, torch.tensor(idx))
    lp.backward(torch.tensor(g))
    np.testing.assert_allclose(
        fs.selective_log_softmax(z, idx, temperature=1.7), lp.detach().numpy(), rtol=1e-13
    )
    np.testing.assert_allclose(
        fs.selective_log_softmax_vjp(z, idx, g, temperature=1.7),
        zt.grad.numpy(),
        rtol=1e-12,
        atol=1e-15,
    )


def test_vjp_finite_differences() -> None:
    z, idx, g = make((3, 5), 2, np.float64, seed=3)
    h = 1e-6
    numeric = np.empty_like(z)
    for i in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[i] += h
        zm[i] -= h
        numeric[i] = np.sum(
            g
            * (
                fs.selective_log_softmax(zp, idx, temperature=2.0)
                - fs.selective_log_softmax(zm, idx, temperature=2.0)
            )
        ) / (2 * h)
    np.testing.assert_allclose(
        fs.selective_log_softmax_vjp(z, idx, g, temperature=2.0), numeric, rtol=1e-7, atol=1e-9
    )


def test_special_rows_match_the_reference() -> None:
    """NaN rows, rows with +inf entries, all -inf rows, -inf masks: the softmax limits."""
    z = np.array(
        [
            [0.0, np.nan, 1.0, 2.0],
            [np.inf, 0.0, np.inf, -np.inf],
            [-np.inf] * 4,
            [-np.inf, 3.0, -np.inf, 1.0],
            [1e300, -1e300, 0.0, 5.0],
        ]
    )
    idx = np.array([[0, 2], [0, 1], [3, 0], [0, 1], [1, 0]])
    g = np.array([[1.0, 2.0]] * 5)
    with np.errstate(all="ignore"):
        expected = ref.selective_log_softmax(z, idx)
        expected_vjp = ref.selective_log_softmax_vjp(z, idx, g)
    assert_close(fs.selective_log_softmax(z, idx), expected, rtol=1e-14)
    assert_close(fs.selective_log_softmax_vjp(z, idx, g), expected_vjp, rtol=1e-14, atol=1e-300)


def test_vjp_out_in_place() -> None:
    z, idx, g = make((4, 30), 2, np.float32, seed=4)
    expected = fs.selective_log_softmax_vjp(z, idx, g)
    res = fs.selective_log_softmax_vjp(z, idx, g, out=z)
    assert res is z
    np.testing.assert_array_equal(z, expected)


# --------------------------------------------------------------------------- dtypes, scalars

FLOAT16_SHAPES = [
    ((5, 9), None),
    ((5, 9), 3),
    ((2, 3, 40), 2),
    ((7,), None),
    ((7,), 4),
    ((0, 6), 2),
]


@pytest.mark.parametrize("mod", [fs, ref], ids=["fast", "reference"])
@pytest.mark.parametrize("shape,k", FLOAT16_SHAPES)
def test_float16_in_float16_out(mod, shape, k) -> None:
    """float16 logits: computed in float32 and rounded once to float16, i.e. exactly the float32
    computation rounded (the log-probs and the VJP), fast and reference alike."""
    z, idx, g = make(shape, k, np.float16, seed=20 + len(shape))
    z32 = z.astype(np.float32)
    lp = mod.selective_log_softmax(z, idx, temperature=0.8)
    assert np.asarray(lp).dtype == np.float16
    want = np.asarray(mod.selective_log_softmax(z32, idx, temperature=0.8)).astype(np.float16)
    np.testing.assert_array_equal(lp, want, strict=True)
    vjp = mod.selective_log_softmax_vjp(z, idx, g, temperature=0.8)
    assert vjp.dtype == np.float16 and vjp.shape == z.shape
    want = mod.selective_log_softmax_vjp(z32, idx, g, temperature=0.8).astype(np.float16)
    np.testing.assert_array_equal(vjp, want, strict=True)


def test_float16_fast_matches_reference() -> None:
    z, idx, g = make((33, 300), 5, np.float16, seed=21)
    assert_close(
        fs.selective_log_softmax(z, idx), ref.selective_log_softmax(z, idx), rtol=2e-3, atol=2e-3
    )
    assert_close(
        fs.selective_log_softmax_vjp(z, idx, g),
        ref.selective_log_softmax_vjp(z, idx, g),
        rtol=2e-3,
        atol=2e-3 * float(np.abs(g).sum()) / 30,
    )


@pytest.mark.parametrize("mod", [fs, ref], ids=["fast", "reference"])
def test_vjp_float16_out(mod) -> None:
    """float16 logits: ``out`` must be float16 (a float32 ``out`` raises); it may be the logits."""
    z, idx, g = make((4, 30), 2, np.float16, seed=22)
    want = mod.selective_log_softmax_vjp(z.astype(np.float32), idx, g).astype(np.float16)
    out = np.full(z.shape, np.nan, np.float16)
    assert mod.selective_log_softmax_vjp(z, idx, g, out=out) is out
    np.testing.assert_array_equal(out, want, strict=True)
    in_place = z.copy()
    assert mod.selective_log_softmax_vjp(in_place, idx, g, out=in_place) is in_place
    np.testing.assert_array_equal(in_place, want, strict=True)
    with pytest.raises(ValueError, match="out has dtype"):
        mod.selective_log_softmax_vjp(z, idx, g, out=np.empty(z.shape, np.float32))


@pytest.mark.parametrize("mod", [fs, ref], ids=["fast", "reference"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32])
def test_zero_d_result_is_a_scalar(mod, dtype) -> None:
    """1-D logits with one scalar index: a NumPy scalar of the result dtype (float16 for float16,
    float64 for integers), not a 0-d array."""
    z = np.arange(5).astype(dtype)
    res = mod.selective_log_softmax(z, 3)
    want_type = np.float64 if dtype == np.int32 else dtype
    assert type(res) is want_type
    np.testing.assert_allclose(
        float(res),
        3 - np.log(np.exp(np.arange(5.0)).sum()),
        rtol=2e-3 if dtype == np.float16 else 1e-6,
    )
    res = mod.selective_log_softmax(z, np.array([3]))  # shape (1,): an array
    assert isinstance(res, np.ndarray) and res.shape == (1,) and res.dtype == want_type


def test_float16_matches_torch() -> None:
    """float16 logits against torch's float16 log_softmax + gather and its autograd, on CPU."""
    torch = pytest.importorskip("torch")
    z, idx, g = make((6, 11), 3, np.float16, seed=23)
    zt = torch.tensor(z, requires_grad=True)
    lp = torch.gather(torch.log_softmax(zt / 1.7, -1), -1, torch.tensor(idx))
    lp.backward(torch.tensor(g, dtype=torch.float16))
    assert lp.dtype == torch.float16 and zt.grad.dtype == torch.float16
    got = fs.selective_log_softmax(z, idx, temperature=1.7)
    assert got.dtype == np.float16
    np.testing.assert_allclose(
        got.astype(np.float64), lp.detach().double().numpy(), rtol=4e-3, atol=2e-3
    )
    vjp = fs.selective_log_softmax_vjp(z, idx, g, temperature=1.7)
    assert vjp.dtype == np.float16
    np.testing.assert_allclose(
        vjp.astype(np.float64), zt.grad.double().numpy(), rtol=4e-3, atol=2e-3
    )


def _valid():
    z, idx, g = make((3, 4), 2, np.float64, seed=5)
    return [z, idx, g]


def _build(fn, pos, value, **kw):
    def build():
        args = _valid()
        if fn == "selective_log_softmax":
            args = args[:2]
        if pos is not None:
            args[pos] = value() if callable(value) else value
        return args, kw

    return build


BAD = [
    ("logits_scalar", None, 0, 1.0, {}, ValueError, "at least 1 dimension"),
    ("logits_complex", None, 0, lambda: np.ones((3, 4), complex), {}, TypeError, "complex"),
    ("no_classes", None, 0, lambda: np.ones((3, 0)), {}, ValueError, "length 0"),
    ("index_float", None, 1, lambda: np.zeros((3, 2)), {}, TypeError, "index has dtype"),
    ("index_None", None, 1, None, {}, TypeError, "index must be an array"),
    ("index_shape", None, 1, lambda: np.zeros((4, 2), int), {}, ValueError, "index has shape"),
    ("index_3d", None, 1, lambda: np.zeros((3, 2, 1), int), {}, ValueError, "index has shape"),
    (
        "index_negative",
        None,
        1,
        lambda: np.array([[0, 1], [-1, 0], [2, 3]]),
        {},
        ValueError,
        re.escape("index value -1 at (1, 0)"),
    ),
    (
        "index_C",
        None,
        1,
        lambda: np.array([[0, 1], [1, 0], [2, 4]]),
        {},
        ValueError,
        "out of range",
    ),
    ("temperature_0", None, None, None, {"temperature": 0.0}, ValueError, "temperature"),
    ("cotangent_shape", "vjp", 2, lambda: np.ones((3, 3)), {}, ValueError, "cotangent has shape"),
    ("cotangent_str", "vjp", 2, lambda: np.array([["a"] * 2] * 3), {}, TypeError, "dtype"),
    ("out_shape", "vjp", None, None, {"out": np.zeros((3, 2))}, ValueError, "out has shape"),
]
CASES = []
for name, only, pos, value, kw, exc, match in BAD:
    for fn in ("selective_log_softmax", "selective_log_softmax_vjp"):
        if only == "vjp" and fn != "selective_log_softmax_vjp":
            continue
        CASES.append(Case(f"{fn}-{name}", fn, _build(fn, pos, value, **kw), exc, match))


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_cleanly(c: Case) -> None:
    assert_raises_alike(c)
