"""Accuracy of the vectorized exp/log and of softmax on long rows, against high-precision oracles.

Targets: float32 softmax within 3e-6 relative error of a float64 reference for every row length
up to 2**20 (entries above 1e-30), and no worse than PyTorch's on the same rows; float64 within
1e-13 of a longdouble reference.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import PLAIN_PYTHON, jit_only, needs_jit
from numba import njit

import fastsoftmax as fs
from fastsoftmax._kernels._math import exp_shifted, vexp, vlog

# rows of 2**20 elements: seconds each, so in the slow set
LONGEST = pytest.param(20, marks=pytest.mark.slow)
LONGDOUBLE_IS_WIDER = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps
# Compiled, each Horner step of the exp polynomial is one FMA; plain Python (NUMBA_DISABLE_JIT=1)
# rounds the product and the sum apart, which measured 1.19 ulp (float32) and 1.13 ulp (float64).
EXP_ULP = 1.25 if PLAIN_PYTHON else 1.0


@njit(error_model="numpy")
def _apply_vexp(x, out):
    for j in range(x.shape[0]):
        out[j] = vexp(x[j])


@njit(error_model="numpy")
def _apply_vlog(x, out):
    for j in range(x.shape[0]):
        out[j] = vlog(x[j])


@njit(error_model="numpy")
def _apply_exp_shifted(x, shift, scale, out):
    for j in range(x.shape[0]):
        out[j] = exp_shifted(x[j], shift, scale)


def _ulp_error(got, exact, dtype):
    exact_rounded = exact.astype(dtype)
    spacing = np.spacing(np.abs(exact_rounded)).astype(np.longdouble)
    return np.abs(got.astype(np.longdouble) - exact) / spacing


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vexp_ulp_error_over_the_normal_range(dtype):
    info = np.finfo(dtype)
    lo, hi = np.log(float(info.tiny)), np.log(float(info.max))
    x = np.linspace(lo, hi, 400_001).astype(dtype)
    got = np.empty_like(x)
    _apply_vexp(x, got)
    exact = np.exp(x.astype(np.longdouble))
    inside = (exact >= info.tiny) & (exact <= info.max)
    assert _ulp_error(got[inside], exact[inside], dtype).max() <= EXP_ULP


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vexp_special_values(dtype):
    info = np.finfo(dtype)
    x = np.array(
        [-np.inf, np.inf, np.nan, 0.0, -0.0, 1e4, -1e4, np.log(float(info.max)) * 1.01], dtype
    )
    got = np.empty_like(x)
    _apply_vexp(x, got)
    np.testing.assert_array_equal(got[:2], [0.0, np.inf])
    assert np.isnan(got[2])
    np.testing.assert_array_equal(got[3:], [1.0, 1.0, np.inf, 0.0, np.inf])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vexp_subnormal_results(dtype):
    info = np.finfo(dtype)
    x = np.linspace(
        np.log(float(info.smallest_subnormal)) + 0.5, np.log(float(info.tiny)), 10_001
    ).astype(dtype)
    got = np.empty_like(x)
    _apply_vexp(x, got)
    exact = np.exp(x.astype(np.longdouble))
    # subnormals carry fewer bits: compare in absolute units of the smallest subnormal
    err = np.abs(got.astype(np.longdouble) - exact) / np.longdouble(info.smallest_subnormal)
    assert err.max() <= 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vlog_accuracy_and_special_values(dtype):
    info = np.finfo(dtype)
    # geomspace up to float64's max overflows in an intermediate power before NumPy puts the
    # exact endpoint in place; the values are right, so only that overflow is ignored
    with np.errstate(over="ignore"):
        wide = np.geomspace(float(info.smallest_subnormal), float(info.max), 200_001)
    x = np.concatenate([wide.astype(dtype), np.linspace(0.5, 2.0, 100_001).astype(dtype)])
    got = np.empty_like(x)
    _apply_vlog(x, got)
    exact = np.log(x.astype(np.longdouble))
    nonzero = exact != 0
    assert _ulp_error(got[nonzero], exact[nonzero], dtype).max() <= 3.0
    sp = np.array([0.0, -0.0, -1.0, np.inf, np.nan, 1.0], dtype)
    out = np.empty_like(sp)
    _apply_vlog(sp, out)
    np.testing.assert_array_equal(out[[0, 1, 3, 5]], [-np.inf, -np.inf, np.inf, 0.0])
    assert np.isnan(out[2]) and np.isnan(out[4])


def _float64_softmax(x):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


@pytest.mark.parametrize("log2_len", [1, 4, 10, 14, 17, *jit_only(LONGEST)])
def test_float32_softmax_long_rows(log2_len):
    rng = np.random.default_rng(log2_len)
    # wide logits: entries down to ~1e-30 and below, where a plain exp(x - max) in float32 loses
    # |x - max| * 6e-8 of relative accuracy
    x = (rng.standard_normal((2, 2**log2_len)) * 12).astype(np.float32)
    got = fs.softmax(x)
    want = _float64_softmax(x)
    big = want > 1e-30
    rel = np.abs(got[big] - want[big]) / want[big]
    assert rel.max() <= 3e-6
    np.testing.assert_allclose(got.sum(axis=-1, dtype=np.float64), 1.0, rtol=1e-5)


@pytest.mark.skipif(not LONGDOUBLE_IS_WIDER, reason="np.longdouble is float64 on this platform")
@pytest.mark.parametrize("log2_len", [1, 10, 17, *jit_only(LONGEST)])
def test_float64_softmax_long_rows(log2_len):
    rng = np.random.default_rng(100 + log2_len)
    x = rng.standard_normal((1, 2**log2_len)) * 12
    got = fs.softmax(x)
    xl = x.astype(np.longdouble)
    e = np.exp(xl - xl.max())
    want = e / e.sum()
    big = want > 1e-30
    rel = np.abs(got[big].astype(np.longdouble) - want[big]) / want[big]
    assert rel.max() <= 1e-13


@needs_jit
def test_compensated_subtraction_is_what_keeps_float32_accurate():
    # the oracle check above would fail without the TwoSum in exp_shifted: rounding x - max to
    # float32 alone already costs more than the 3e-6 budget on these rows
    rng = np.random.default_rng(20)
    x = (rng.standard_normal((2, 2**20)) * 12).astype(np.float32)
    m = x.max(axis=-1, keepdims=True)
    want = np.exp(x.astype(np.float64) - m)
    rounded = np.exp((x - m).astype(np.float64))
    big = want > 1e-30
    assert (np.abs(rounded - want) / want)[big].max() > 3e-6
    p = _float64_softmax(x)
    assert (np.abs(fs.softmax(x) - p) / p)[p > 1e-30].max() < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("scale", [1.0, 1 / 3, 2.5, 20.0])
def test_exp_shifted_is_exact_in_the_shift_and_the_scale(dtype, scale):
    """float32: exp((x - shift) * scale) within 1 ulp (relative 1.2e-7) of the exact value for the
    rounded inputs, down to the smallest normal result: the rounding errors of x - shift and of
    the product reach the exp (a plain float32 (x - shift) * scale loses up to ~|u| 6e-8); below
    it (subnormal results) within 2 units of the smallest subnormal. float64 rounds x - shift and
    the product: (2 + |u|) eps, in absolute terms below the smallest normal."""
    info = np.finfo(dtype)
    scale = dtype(scale)
    shift = dtype(3.7)
    u = np.linspace(np.log(float(info.smallest_subnormal)) - 2.0, 0.0, 300_001)
    x = (shift + u / float(scale)).astype(dtype)
    got = np.empty_like(x)
    _apply_exp_shifted(x, shift, scale, got)
    exact = np.exp((x.astype(np.longdouble) - np.longdouble(shift)) * np.longdouble(scale))
    allowed = float(info.eps) * (np.ones_like(u) if dtype == np.float32 else 2.0 + np.abs(u))
    normal = exact >= info.tiny
    rel = np.abs(got[normal].astype(np.longdouble) - exact[normal]) / exact[normal]
    assert np.all(rel <= allowed[normal])
    sub = ~normal
    err = np.abs(got[sub].astype(np.longdouble) - exact[sub])
    assert np.all(err <= 2 * float(info.smallest_subnormal) + allowed[sub] * float(info.tiny))


@needs_jit
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_float32_softmax_no_less_accurate_than_torch(temperature):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 4096)) * 12).astype(np.float32)
    want = _float64_softmax(x.astype(np.float64) / temperature)
    got = fs.softmax(x, temperature=temperature)
    theirs = torch.softmax(torch.from_numpy(x) / temperature, dim=-1).numpy()
    for floor in (1e-10, 1e-30):
        big = want > floor
        ours = (np.abs(got - want) / want)[big].max()
        peer = (np.abs(theirs - want) / want)[big].max()
        assert ours <= peer, (floor, ours, peer)
