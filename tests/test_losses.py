"""cross_entropy, cross_entropy_backward and cross_entropy_with_grad.

Checked three independent ways for EVERY option combination (weight None/given, ignore_index
default -100 present in the target / a custom one inside [0, C), reduction mean/sum/none,
label_smoothing 0/0.1/1, temperature 1/2.5, class-index/probability targets: 108 combinations,
as ignore_index only applies to class indices and so is varied for those alone):

- against ``fastsoftmax.reference`` over a table of shapes (one row and class, an empty batch,
  extra batch dimensions, 1-D logits with a scalar target, 64 x 1000), dtypes and layouts;
- against PyTorch's ``F.cross_entropy`` forward and autograd backward (float64), where installed;
- against central finite differences of our own ``cross_entropy`` (trusts no reference).

Then the fused ``cross_entropy_with_grad`` and its ``out=``, special values (NaN rows, -inf masks)
and thread-count invariance.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import pytest
from conftest import (
    COMPARISONS,
    LAYOUT_NAMES,
    assert_close,
    jit_only,
    layouts,
    needs_jit,
    random_logits,
    rtol_for,
)

import fastsoftmax as fs
from fastsoftmax import reference as ref
from fastsoftmax._runtime import SERIAL_BELOW

CE = COMPARISONS["cross_entropy"]
CE_BACKWARD = COMPARISONS["cross_entropy_backward"]
CE_WITH_GRAD = COMPARISONS["cross_entropy_with_grad"]

# --------------------------------------------------------------------------- option combinations


@dataclass(frozen=True)
class Options:
    """One combination of cross-entropy options; ``kwargs(C)`` gives the keyword arguments."""

    weight: bool  # class weights given (else None)
    ignore: str  # "default": -100 present in the target; "custom": an index inside [0, C)
    reduction: str
    label_smoothing: float
    temperature: float
    index_target: bool  # class indices (else probabilities)

    @property
    def id(self) -> str:
        return "-".join(
            [
                "idx" if self.index_target else "prob",
                "w" if self.weight else "now",
                f"ign_{self.ignore}",
                self.reduction,
                f"ls{self.label_smoothing:g}",
                f"T{self.temperature:g}",
            ]
        )

    def ignore_index(self, classes: int) -> int:
        return -100 if self.ignore == "default" else min(2, classes - 1)

    def kwargs(self, classes: int, rng: np.random.Generator) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
            "temperature": self.temperature,
        }
        if self.ignore == "custom":
            kw["ignore_index"] = self.ignore_index(classes)
        if self.weight:
            kw["weight"] = rng.uniform(0.25, 2.0, size=classes)
        return kw


# ignore_index applies to class-index targets only (probability targets ignore it, see
# test_probability_targets_ignore_ignore_index), so it is varied for class indices alone:
# 72 class-index + 36 probability combinations.
OPTIONS = [
    Options(w, ign, red, ls, temp, idx)
    for idx, w, ign, red, ls, temp in itertools.product(
        (True, False),
        (False, True),
        ("default", "custom"),
        ("mean", "sum", "none"),
        (0.0, 0.1, 1.0),
        (1.0, 2.5),
    )
    if idx or ign == "default"
]
OPTION_IDS = [o.id for o in OPTIONS]
assert len(OPTIONS) == 108 and len(set(OPTION_IDS)) == 108

# Shapes: logits shape, class axis last. (6,) is 1-D logits with a scalar target; rows of 40 take
# the long-row kernel path (rows of under 20 classes are processed in chunks of rows).
SHAPES = [(1, 1), (4, 7), (0, 5), (2, 3, 5), (6,), (5, 40), *jit_only((64, 1000))]
TORCH_SHAPES = [(1, 1), (4, 7), (0, 5), (2, 3, 5), (6,)]


def make_target(
    shape: tuple[int, ...], opts: Options, rng: np.random.Generator, dtype: Any = np.float64
) -> np.ndarray:
    """A valid target for logits of ``shape``.

    Class indices: random classes, every third row (rows 1, 4, 7, ...) set to the ignore index,
    so both "default" (-100) and "custom" ignore values really occur. Probabilities: random rows
    that sum to 1, with class 0 exactly 0 in every other row.
    """
    classes = shape[-1]
    batch = shape[:-1]
    if opts.index_target:
        t = rng.integers(0, classes, size=batch).astype(np.int64)
        flat = t.reshape(-1)
        flat[1::3] = opts.ignore_index(classes)
        return flat.reshape(batch)
    e = np.exp(rng.standard_normal(shape) * 2.0)
    if classes > 1:
        e.reshape(-1, classes)[::2, 0] = 0.0
    t = e / e.sum(axis=-1, keepdims=True) if e.size else e
    return t.astype(dtype if np.dtype(dtype) in (np.float32, np.float64) else np.float64)


def make_case(shape: tuple[int, ...], opts: Options, seed: int, dtype: Any = np.float64):
    """(logits, target, kwargs) for ``opts``, deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    z = random_logits(shape, dtype, rng, scale=2.0)
    return z, make_target(shape, opts, rng, dtype), opts.kwargs(shape[-1], rng)


def grad_outputs(opts: Options, batch: tuple[int, ...], rng: np.random.Generator) -> list[Any]:
    """The grad_output values to test: a scalar, and for "none" also one value per row."""
    outs: list[Any] = [0.7]
    if opts.reduction == "none":
        outs.append(rng.uniform(-2.0, 2.0, size=batch))
    return outs


def gradient_scale(z: np.ndarray, t: np.ndarray, kw: dict[str, Any], grad_output: Any) -> float:
    """The magnitude of the largest term in a gradient entry, |g| / T / denominator * max(w).

    A gradient entry is ``coef * (A p_j - q_j)``, a difference of terms of this size: an entry
    that is mathematically 0 (e.g. one class) is only known to ``ulp * this scale``.
    """
    zz = np.asarray(z)
    w = np.ones(zz.shape[-1]) if kw.get("weight") is None else np.asarray(kw["weight"], float)
    denom = 1.0
    if kw.get("reduction", "mean") == "mean":
        t = np.asarray(t)
        if t.dtype.kind in "iu":
            ti = t.reshape(-1)
            kept = ti[ti != kw.get("ignore_index", -100)]
            denom = float(np.sum(w[kept])) if kept.size else 0.0
        else:
            denom = float(zz.size // zz.shape[-1])
    if denom == 0.0 or zz.size == 0:
        return 0.0
    g = float(np.max(np.abs(grad_output))) if np.size(grad_output) else 0.0
    return g / kw.get("temperature", 1.0) / denom * float(np.max(w))


def assert_grad_matches(actual, expected, z, t, kw, grad_output=1.0, err_msg: str = "") -> None:
    """Gradients equal to the result dtype's rtol, with atol = rtol * the scale of the terms."""
    expected = np.asarray(expected)
    rtol = rtol_for(expected.dtype)
    finite = np.abs(expected[np.isfinite(expected)])
    scale = max(gradient_scale(z, t, kw, grad_output), float(finite.max()) if finite.size else 0.0)
    assert isinstance(actual, np.ndarray), err_msg
    assert_close(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def loss_scale(z: np.ndarray, t: np.ndarray, kw: dict[str, Any]) -> float:
    """The magnitude of the terms a loss is the difference of: per row sum(q) * (|L| + |u_c|)
    <~ max(w) * (max|u| + log C + 1), times the rows summed, over the 'mean' denominator."""
    zz = np.asarray(z, dtype=np.float64)
    if zz.size == 0:
        return 0.0
    w = np.ones(zz.shape[-1]) if kw.get("weight") is None else np.asarray(kw["weight"], float)
    finite = np.abs(zz[np.isfinite(zz)])
    u = (float(finite.max()) if finite.size else 0.0) / kw.get("temperature", 1.0)
    per_row = float(np.max(w)) * (u + np.log(zz.shape[-1]) + 1.0)
    rows = zz.size // zz.shape[-1]
    reduction = kw.get("reduction", "mean")
    if reduction == "none":
        return per_row
    if reduction == "sum":
        return rows * per_row
    g = gradient_scale(z, t, kw, 1.0)  # max(w) / denominator
    return rows * per_row * g / float(np.max(w)) if g else 0.0


def assert_loss_matches(actual, expected, z, t, kw, err_msg: str = "") -> None:
    """Losses equal to the result dtype's rtol, with atol = rtol * the scale of the terms."""
    expected_arr = np.asarray(expected)
    rtol = rtol_for(expected_arr.dtype)
    assert isinstance(actual, np.ndarray) == isinstance(expected, np.ndarray), err_msg
    assert_close(actual, expected, rtol=rtol, atol=rtol * loss_scale(z, t, kw), err_msg=err_msg)


def zero_mean_denominator(z: np.ndarray, t: np.ndarray, kw: dict[str, Any]) -> bool:
    """'mean' with class indices whose weight sum is 0 (e.g. every row ignored): 0 / 0, a NaN
    loss, and (as in torch) a gradient of 0 on the rows that do not count."""
    t = np.asarray(t)
    if kw.get("reduction", "mean") != "mean" or t.dtype.kind not in "iu" or np.size(z) == 0:
        return False
    return gradient_scale(z, t, kw, 1.0) == 0.0


def _copies(*arrays: Any) -> list[Any]:
    return [np.array(a, copy=True) if isinstance(a, np.ndarray) else a for a in arrays]


def _assert_unchanged(before: list[Any], after: list[Any]) -> None:
    for b, a in zip(before, after, strict=True):
        if isinstance(b, np.ndarray):
            np.testing.assert_array_equal(a, b, strict=True)


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
def test_matches_reference_every_option(opts: Options) -> None:
    """Loss, gradient (both grad_output kinds) and fused pair equal the NumPy twin, every shape."""
    for k, shape in enumerate(SHAPES):
        z, t, kw = make_case(shape, opts, seed=k)
        before = _copies(z, t, kw.get("weight"))
        msg = f"{opts.id} shape={shape}"
        assert_loss_matches(CE.fast(z, t, **kw), CE.reference(z, t, **kw), z, t, kw, msg)
        loss, grad = CE_WITH_GRAD.fast(z, t, **kw)
        loss_r, grad_r = CE_WITH_GRAD.reference(z, t, **kw)
        assert_loss_matches(loss, loss_r, z, t, kw, msg)
        if zero_mean_denominator(z, t, kw):  # every row ignored: NaN loss, gradient 0 (as torch)
            assert np.isnan(loss)
            np.testing.assert_array_equal(grad, 0.0)
        assert_grad_matches(grad, grad_r, z, t, kw, 1.0, msg)
        for g in grad_outputs(opts, shape[:-1], np.random.default_rng(k)):
            assert_grad_matches(
                CE_BACKWARD.fast(z, t, grad_output=g, **kw),
                CE_BACKWARD.reference(z, t, grad_output=g, **kw),
                z,
                t,
                kw,
                g,
                msg,
            )
        _assert_unchanged(before, [z, t, kw.get("weight")])


# A few combinations exercised over every dtype x layout (the full table above is float64/C).
def test_probability_targets_ignore_ignore_index() -> None:
    """With probability targets ``ignore_index`` changes nothing (it only applies to class
    indices), which is why OPTIONS does not vary it for them."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 5))
    t = rng.random((6, 5))
    t /= t.sum(-1, keepdims=True)
    for fn in (CE.fast, CE_BACKWARD.fast, CE_WITH_GRAD.fast):
        for reduction in ("mean", "none"):
            plain = fn(z, t, reduction=reduction, label_smoothing=0.1)
            for ignore_index in (2, 0, -1):
                got = fn(z, t, reduction=reduction, label_smoothing=0.1, ignore_index=ignore_index)
                for a, b in zip(
                    got if isinstance(got, tuple) else (got,),
                    plain if isinstance(plain, tuple) else (plain,),
                    strict=True,
                ):
                    np.testing.assert_array_equal(a, b)


LAYOUT_OPTIONS = [
    Options(False, "default", "mean", 0.0, 1.0, True),
    Options(True, "custom", "none", 0.1, 2.5, True),
    Options(True, "default", "sum", 1.0, 1.0, True),
    Options(False, "default", "mean", 0.1, 2.5, False),
    Options(True, "default", "none", 0.0, 1.0, False),
]
DTYPES = [np.float32, np.float64, np.float16, np.int32]


def _layout_params():
    params = []
    for shape, sid in [((4, 7), "4x7"), ((2, 3, 5), "2x3x5"), ((64, 1000), "64x1000")]:
        for dtype in DTYPES:
            for layout in LAYOUT_NAMES:
                params.append(
                    pytest.param(
                        shape,
                        dtype,
                        layout,
                        marks=[needs_jit] if shape[-1] > 100 else [],
                        id=f"{sid}-{np.dtype(dtype).name}-{layout}",
                    )
                )
    return params


@pytest.mark.parametrize("shape,dtype,layout", _layout_params())
def test_dtypes_and_layouts(shape, dtype, layout) -> None:
    """Every dtype (float16 -> float16 computed in float32, int -> float64) and layout (logits AND
    target) gives the reference's result, of the right dtype, and leaves the inputs as they were."""
    result_dtype = {np.int32: np.float64}.get(dtype, dtype)
    for k, opts in enumerate(LAYOUT_OPTIONS):
        z0, t0, kw = make_case(shape, opts, seed=100 + k, dtype=dtype)
        z = layouts(z0)[layout]
        t = layouts(t0)[layout] if t0.ndim else t0
        before = _copies(z, t)
        msg = f"{opts.id} {np.dtype(dtype).name} {layout} {shape}"
        loss = CE.fast(z, t, **kw)
        assert np.asarray(loss).dtype == result_dtype, msg
        assert_loss_matches(loss, CE.reference(z0, t0, **kw), z0, t0, kw, msg)
        g = (
            1.5
            if opts.reduction != "none"
            else layouts(np.linspace(-1, 1, z.size // shape[-1]).reshape(shape[:-1]))[layout]
        )
        grad = CE_BACKWARD.fast(z, t, grad_output=g, **kw)
        assert grad.dtype == result_dtype and grad.shape == shape, msg
        assert_grad_matches(
            grad, CE_BACKWARD.reference(z0, t0, grad_output=g, **kw), z0, t0, kw, g, msg
        )
        loss, grad = CE_WITH_GRAD.fast(z, t, **kw)
        loss_r, grad_r = CE_WITH_GRAD.reference(z0, t0, **kw)
        assert np.asarray(loss).dtype == grad.dtype == result_dtype, msg
        assert_loss_matches(loss, loss_r, z0, t0, kw, msg)
        assert_grad_matches(grad, grad_r, z0, t0, kw, 1.0, msg)
        _assert_unchanged(before, [z, t])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_result_types(reduction) -> None:
    """'mean'/'sum' return a NumPy scalar of the result dtype (float16 for float16 logits); 'none'
    an array of the batch shape, and a NumPy scalar for 1-D logits (a 0-d result), fast and
    reference alike. The gradient has the result dtype too."""
    for shape, dtype in [
        ((3, 4), np.float32),
        ((2, 3, 4), np.float64),
        ((4,), np.float16),
        ((4,), np.float64),
        ((2, 4), np.float16),
    ]:
        z = np.ones(shape, dtype=dtype)
        t = np.zeros(shape[:-1], dtype=np.int64)
        loss = fs.cross_entropy(z, t, reduction=reduction)
        if reduction == "none" and len(shape) > 1:
            assert isinstance(loss, np.ndarray) and loss.shape == shape[:-1]
        else:
            assert type(loss) is np.dtype(dtype).type, (shape, dtype)
        assert loss.dtype == dtype
        assert type(ref.cross_entropy(z, t, reduction=reduction)) is type(loss)
        with_grad = fs.cross_entropy_with_grad(z, t, reduction=reduction)
        assert type(with_grad[0]) is type(loss) and with_grad[1].dtype == dtype
        assert type(ref.cross_entropy_with_grad(z, t, reduction=reduction)[0]) is type(loss)
        assert fs.cross_entropy_backward(z, t, reduction=reduction).dtype == dtype
        # uniform logits: -log(1/C) per row
        np.testing.assert_allclose(
            loss,
            np.log(shape[-1]) * (1 if reduction != "sum" else np.prod(shape[:-1])),
            rtol=1e-3 if dtype == np.float16 else 1e-6,
        )


@pytest.mark.parametrize("fn", ["cross_entropy_backward", "cross_entropy_with_grad"])
def test_float16_logits_gradient_into_float16_out(fn) -> None:
    """float16 logits: the gradient is float16 (computed in float32, then rounded), written into a
    float16 ``out``, the logits themselves included."""
    opts = Options(True, "default", "mean", 0.1, 1.0, False)
    z, t, kw = make_case((5, 7), opts, seed=77, dtype=np.float16)
    want = CE_BACKWARD.fast(z.astype(np.float32), t, **kw).astype(np.float16)
    in_place = z.copy()
    for logits, out in ((z, np.empty(z.shape, np.float16)), (in_place, in_place)):
        res = getattr(fs, fn)(logits, t, out=out, **kw)
        grad = res[1] if isinstance(res, tuple) else res
        assert grad is out
        np.testing.assert_array_equal(out, want, strict=True)


def test_float16_logits_match_torch(torch) -> None:
    """float16 logits give a float16 loss and gradient, as PyTorch does, with its values."""
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    z = random_logits((6, 5), np.float16, rng, scale=2.0)
    t = np.array([0, 4, 2, 1, 3, 0])
    for reduction in ("mean", "sum", "none"):
        zt = torch.tensor(z, requires_grad=True)
        want = F.cross_entropy(zt, torch.tensor(t), reduction=reduction)
        want.sum().backward()
        loss, grad = fs.cross_entropy_with_grad(z, t, reduction=reduction)
        assert str(want.dtype) == "torch.float16" and np.asarray(loss).dtype == np.float16
        assert str(zt.grad.dtype) == "torch.float16" and grad.dtype == np.float16
        np.testing.assert_allclose(
            np.asarray(loss, np.float64), want.detach().double().numpy(), rtol=2e-3, atol=1e-3
        )
        np.testing.assert_allclose(
            grad.astype(np.float64), zt.grad.double().numpy(), rtol=2e-3, atol=1e-3
        )


def test_weight_zero_and_integer_targets_of_any_int_dtype() -> None:
    """Zero class weights are allowed (those terms vanish); targets may be any integer dtype."""
    rng = np.random.default_rng(7)
    z = rng.standard_normal((9, 4))
    w = np.array([0.0, 1.0, 2.0, 0.5])
    t = np.array([0, 1, 2, 3, 0, 1, 2, 3, -100])
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint64):
        tt = t.astype(dt) if dt not in (np.uint8, np.uint64) else np.where(t < 0, 0, t).astype(dt)
        for red in ("mean", "sum", "none"):
            kw = {"weight": w, "reduction": red, "label_smoothing": 0.1}
            assert_loss_matches(
                fs.cross_entropy(z, tt, **kw), ref.cross_entropy(z, tt, **kw), z, tt, kw
            )
            assert_grad_matches(
                fs.cross_entropy_backward(z, tt, **kw),
                ref.cross_entropy_backward(z, tt, **kw),
                z,
                tt,
                kw,
            )


# --------------------------------------------------------------------------- against PyTorch


@pytest.fixture(scope="module")
def torch():
    """PyTorch with one intra-op thread (its thread pool makes tiny backward calls ~100x slower
    on a busy 2-core machine); the tests using it skip cleanly where torch is not installed."""
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(old)


def torch_cross_entropy(
    torch, z: np.ndarray, t: np.ndarray, opts: Options, kw: dict[str, Any], grad_output: Any
):
    """(loss, d(grad_output . loss)/dz) from torch autograd, float64, our class axis last."""
    F = torch.nn.functional
    zt = torch.tensor(z, dtype=torch.float64, requires_grad=True)
    inp = zt / kw["temperature"]
    if opts.index_target:
        tt = torch.tensor(t, dtype=torch.long)
    else:
        tt = torch.tensor(t, dtype=torch.float64)
    if z.ndim > 2:  # torch's class axis is dim 1: (N, d, C) -> (N, C, d)
        inp = torch.movedim(inp, -1, 1)
        if not opts.index_target:
            tt = torch.movedim(tt, -1, 1)
    weight = kw.get("weight")
    # torch raises for a non-default ignore_index with probability targets; fastsoftmax ignores
    # ignore_index there (it only applies to class indices), so torch gets the default
    ignore_index = kw.get("ignore_index", -100) if opts.index_target else -100
    loss = F.cross_entropy(
        inp,
        tt,
        weight=None if weight is None else torch.tensor(weight),
        ignore_index=ignore_index,
        reduction=kw["reduction"],
        label_smoothing=kw["label_smoothing"],
    )
    loss.backward(torch.as_tensor(grad_output, dtype=torch.float64).expand_as(loss))
    return loss.detach().numpy(), zt.grad.numpy()


def assert_torch_close(actual, expected, err_msg: str) -> None:
    actual = np.asarray(actual)
    assert actual.shape == np.shape(expected), err_msg
    finite = np.abs(expected[np.isfinite(expected)])
    atol = 1e-12 * max(1.0, float(finite.max()) if finite.size else 0.0)
    np.testing.assert_allclose(
        actual, expected, rtol=1e-10, atol=atol, equal_nan=True, err_msg=err_msg
    )


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
def test_matches_torch_every_option(torch, opts: Options) -> None:
    """Forward and autograd backward of torch.nn.functional.cross_entropy(z / T, ...), float64."""
    for k, shape in enumerate(TORCH_SHAPES):
        z, t, kw = make_case(shape, opts, seed=200 + k)
        kw = {"ignore_index": -100, **kw}
        for g in grad_outputs(opts, shape[:-1], np.random.default_rng(k)):
            msg = f"{opts.id} shape={shape} grad_output={g}"
            loss_t, grad_t = torch_cross_entropy(torch, z, t, opts, kw, g)
            assert_torch_close(fs.cross_entropy(z, t, **kw), loss_t, msg)
            assert_torch_close(fs.cross_entropy_backward(z, t, grad_output=g, **kw), grad_t, msg)
            if np.ndim(g) == 0 and g == 0.7:
                loss, grad = fs.cross_entropy_with_grad(z, t, **kw)
                assert_torch_close(loss, loss_t, msg)
                assert_torch_close(grad * 0.7, grad_t, msg)


@pytest.mark.parametrize(
    "opts", [o for o in OPTIONS if o.index_target], ids=[o.id for o in OPTIONS if o.index_target]
)
def test_all_rows_ignored_matches_torch(torch, opts: Options) -> None:
    """Every target is ignore_index: 'mean' is NaN (0 / 0, as torch), 'sum' 0, gradient 0."""
    z, _, kw = make_case((5, 4), opts, seed=300)
    t = np.full(5, opts.ignore_index(4), dtype=np.int64)
    kw = {"ignore_index": opts.ignore_index(4), **kw}
    loss_t, grad_t = torch_cross_entropy(torch, z, t, opts, kw, 1.0)
    loss = fs.cross_entropy(z, t, **kw)
    assert_torch_close(loss, loss_t, opts.id)
    if opts.reduction == "mean":
        assert np.isnan(loss)
    assert_torch_close(fs.cross_entropy_backward(z, t, **kw), grad_t, opts.id)
    np.testing.assert_array_equal(fs.cross_entropy_backward(z, t, **kw), 0.0)


@pytest.mark.parametrize("targets", ["mixed", "only_zero_weight_classes"])
def test_zero_weight_and_index_dtypes_match_torch(torch, targets) -> None:
    """Zero class weights, int16/int32 targets; with every kept target on a zero-weight class the
    'mean' is 0 / 0: NaN loss, NaN gradient on the kept rows and 0 on ignored rows (as torch)."""
    rng = np.random.default_rng(11)
    z = rng.standard_normal((8, 5)) * 3
    if targets == "mixed":
        t = np.array([0, 1, 2, 3, 4, 0, -100, 2])
    else:
        t = np.array([0, 4, 0, -100, 4, 0, -100, 0])
    w = np.array([0.0, 1.0, 3.0, 0.5, 0.0])
    for red, ls in itertools.product(("mean", "sum", "none"), (0.0, 0.2)):
        opts = Options(True, "default", red, ls, 1.0, True)
        kw = {"weight": w, "reduction": red, "label_smoothing": ls, "temperature": 1.0}
        loss_t, grad_t = torch_cross_entropy(torch, z, t, opts, kw, 1.0)
        assert_torch_close(fs.cross_entropy(z, t.astype(np.int32), **kw), loss_t, red)
        assert_torch_close(fs.cross_entropy_backward(z, t.astype(np.int16), **kw), grad_t, red)
        assert_torch_close(fs.cross_entropy_with_grad(z, t, **kw)[1], grad_t, red)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_reference_gradient_with_zero_mean_denominator(label_smoothing) -> None:
    z = np.random.default_rng(12).standard_normal((3, 4))
    t = np.array([0, -100, 0])
    kw = {"weight": np.array([0.0, 1.0, 1.0, 1.0]), "label_smoothing": label_smoothing}
    fast = fs.cross_entropy_backward(z, t, **kw)
    np.testing.assert_array_equal(fast[1], 0.0)
    np.testing.assert_array_equal(ref.cross_entropy_backward(z, t, **kw), fast)


# --------------------------------------------------------------------------- finite differences


def central_difference_gradient(f, z: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """d f / d z by central differences, one coordinate at a time (float64)."""
    grad = np.empty_like(z)
    flat_z = z.reshape(-1)
    flat_g = grad.reshape(-1)
    for i in range(flat_z.size):
        old = flat_z[i]
        step = h * max(1.0, abs(old))
        flat_z[i] = old + step
        up = f(z)
        flat_z[i] = old - step
        down = f(z)
        flat_z[i] = old
        flat_g[i] = (up - down) / (2 * step)
    return grad


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
def test_gradient_finite_differences(opts: Options) -> None:
    """cross_entropy_backward (and the fused gradient) equal central differences of OUR OWN
    cross_entropy: grad_output * d loss / d logits, and for 'none' d sum(g * loss) / d logits.

    Independent of the reference; a "derivative" that drops the off-diagonal softmax terms is off
    by O(p_i p_j) ~ 1e-2 here and fails.
    """
    for k, shape in enumerate([(3, 5), (2, 2, 4), (5,)]):
        z, t, kw = make_case(shape, opts, seed=400 + k)
        for g in grad_outputs(opts, shape[:-1], np.random.default_rng(k)):

            def f(x, g=g, t=t, kw=kw):
                return float(np.sum(np.asarray(g) * fs.cross_entropy(x, t, **kw)))

            if not np.isfinite(f(z)):  # e.g. every row ignored: no gradient to check
                continue
            numeric = central_difference_gradient(f, z.copy())
            analytic = fs.cross_entropy_backward(z, t, grad_output=g, **kw)
            msg = f"{opts.id} shape={shape} grad_output={g}"
            np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8, err_msg=msg)
            if np.ndim(g) == 0:
                fused = fs.cross_entropy_with_grad(z, t, **kw)[1] * g
                np.testing.assert_allclose(fused, numeric, rtol=1e-6, atol=1e-8, err_msg=msg)


def test_finite_differences_catch_a_diagonal_only_gradient() -> None:
    """Sanity check of the check itself: dropping the off-diagonal softmax terms (a classic bug)
    moves the gradient far outside the tolerance used above."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((3, 5))
    t = make_target((3, 5), Options(False, "default", "sum", 0.0, 1.0, False), rng)
    numeric = central_difference_gradient(
        lambda x: float(fs.cross_entropy(x, t, reduction="sum")), z.copy()
    )
    p = fs.softmax(z)
    # d/dz_j sum_c -t_c log p_c with J replaced by diag(p (1 - p)): -t_j (1 - p_j)
    wrong = -t * (1 - p)
    assert not np.allclose(wrong, numeric, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(p - t, numeric, rtol=1e-6, atol=1e-8)


# --------------------------------------------------------------------------- the fused function


@pytest.mark.parametrize("opts", OPTIONS, ids=OPTION_IDS)
def test_with_grad_equals_separate_calls(opts: Options) -> None:
    """The fused pass gives exactly cross_entropy's loss and cross_entropy_backward's gradient."""
    for k, shape in enumerate(SHAPES):
        z, t, kw = make_case(shape, opts, seed=500 + k)
        loss, grad = fs.cross_entropy_with_grad(z, t, **kw)
        np.testing.assert_array_equal(loss, fs.cross_entropy(z, t, **kw), strict=True)
        np.testing.assert_array_equal(grad, fs.cross_entropy_backward(z, t, **kw), strict=True)


def test_reference_empty_batch_probability_mean() -> None:
    z = np.zeros((0, 5))
    assert np.isnan(fs.cross_entropy(z, z.copy()))
    assert np.isnan(ref.cross_entropy(z, z.copy()))
    assert ref.cross_entropy_backward(z, z.copy()).shape == (0, 5)


@pytest.mark.parametrize("index_target", [True, False], ids=["idx", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "shape",
    [(4, 7), (2, 3, 5), pytest.param((64, 1000), marks=needs_jit)],
    ids=["4x7", "2x3x5", "64x1000"],
)
def test_with_grad_out_is_logits_in_place(shape, dtype, reduction, index_target) -> None:
    """``out=logits`` overwrites the logits with the gradient and returns that very array.

    Values agree with the out-of-place call to rounding, not bit for bit: when the exp pass
    writes over its own input, LLVM's runtime alias check picks the scalar loop, and the
    reassociated row sum rounds differently (float64 rows: ~1e-18 absolute on ~1e-6 entries).
    """
    opts = Options(True, "default", reduction, 0.1, 2.5, index_target)
    z, t, kw = make_case(shape, opts, seed=600, dtype=dtype)
    z0 = z.copy()
    expected_loss, expected_grad = fs.cross_entropy_with_grad(z0, t, **kw)
    loss, res = fs.cross_entropy_with_grad(z, t, out=z, **kw)
    assert res is z
    assert_loss_matches(loss, expected_loss, z0, t, kw)
    assert_grad_matches(z, expected_grad, z0, t, kw)
    # the same through cross_entropy_backward
    z2 = z0.copy()
    res2 = fs.cross_entropy_backward(z2, t, out=z2, **kw)
    assert res2 is z2
    assert_grad_matches(z2, expected_grad, z0, t, kw)


def _out_variants(shape: tuple[int, ...], dtype: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (buffer, out view into it): non-contiguous, Fortran, reversed outs."""
    big = np.full(shape[:-1] + (2 * shape[-1],), -7.0, dtype=dtype)
    fort = np.asfortranarray(np.full(shape, -7.0, dtype=dtype))
    rev_buf = np.full(shape, -7.0, dtype=dtype)
    return {
        "every_other_column": (big, big[..., ::2]),
        "fortran": (fort, fort),
        "reversed_rows": (rev_buf, rev_buf[::-1]),
    }


@pytest.mark.parametrize("fn", ["cross_entropy_backward", "cross_entropy_with_grad"])
@pytest.mark.parametrize("variant", ["every_other_column", "fortran", "reversed_rows"])
@pytest.mark.parametrize(
    "shape",
    [(4, 7), (2, 3, 5), pytest.param((64, 1000), marks=needs_jit)],
    ids=["4x7", "2x3x5", "64x1000"],
)
def test_out_non_contiguous(shape, variant, fn) -> None:
    """A non-contiguous ``out`` receives the gradient, is returned, and nothing else changes."""
    opts = Options(True, "custom", "mean", 0.1, 2.5, True)
    z, t, kw = make_case(shape, opts, seed=700)
    before = _copies(z, t)
    expected = fs.cross_entropy_backward(z, t, **kw)
    buf, out = _out_variants(shape, np.float64)[variant]
    buf_before = buf.copy()
    res = getattr(fs, fn)(z, t, out=out, **kw)
    res = res[1] if isinstance(res, tuple) else res
    assert res is out
    np.testing.assert_array_equal(out, expected, strict=True)
    untouched = np.ones(buf.shape, dtype=bool)
    if variant == "every_other_column":
        untouched[..., ::2] = False
    else:
        untouched[...] = False
    np.testing.assert_array_equal(buf[untouched], buf_before[untouched])
    _assert_unchanged(before, [z, t])


@pytest.mark.parametrize("index_target", [True, False], ids=["idx", "prob"])
def test_out_partially_overlapping_logits(index_target) -> None:
    """``out`` overlapping the logits shifted by one row still gets the right gradient."""
    opts = Options(False, "default", "sum", 0.0, 1.0, index_target)
    z0, t, kw = make_case((6, 5), opts, seed=800)
    buf = np.zeros((7, 5))
    buf[:6] = z0
    z, out = buf[:6], buf[1:]
    expected = fs.cross_entropy_backward(z0, t, **kw)
    res = fs.cross_entropy_backward(z, t, out=out, **kw)
    assert res is out
    np.testing.assert_array_equal(out, expected, strict=True)


def test_out_is_probability_target() -> None:
    """``out=target`` (same shape and dtype as the logits for probability targets) must give the
    same gradient as a separate ``out``."""
    opts = Options(False, "default", "mean", 0.0, 1.0, False)
    z, t, kw = make_case((4, 7), opts, seed=900)
    expected = fs.cross_entropy_backward(z, t.copy(), **kw)
    res = fs.cross_entropy_backward(z, t, out=t, **kw)
    assert res is t
    np.testing.assert_allclose(t, expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("fn", ["cross_entropy_backward", "cross_entropy_with_grad"])
@pytest.mark.parametrize("bad", ["shape", "dtype", "readonly", "logits_float16"])
def test_bad_out_raises_before_writing(fn, bad) -> None:
    """A wrong ``out`` (shape, dtype, read-only, or float32 for float16 logits: the result is
    float16) raises ValueError before anything is written."""
    opts = Options(True, "default", "mean", 0.1, 1.0, True)
    z, t, kw = make_case((4, 7), opts, seed=1000)
    if bad == "shape":
        out = np.full((4, 6), 3.0)
    elif bad == "dtype":
        out = np.full((4, 7), 3.0, dtype=np.float32)
    elif bad == "readonly":
        out = np.full((4, 7), 3.0)
        out.flags.writeable = False
    else:
        z = z.astype(np.float16)
        out = np.full((4, 7), 3.0, dtype=np.float32)
    before = _copies(z, t, out)
    with pytest.raises(ValueError, match="out"):
        getattr(fs, fn)(z, t, out=out, **kw)
    _assert_unchanged(before, [z, t, out])


# --------------------------------------------------------------------------- special values


@pytest.mark.parametrize("index_target", [True, False], ids=["idx", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nan_row_stays_in_its_row(reduction, index_target) -> None:
    """A NaN logit makes that row's loss and gradient NaN; the other rows are exactly what they
    are without the NaN row ('none'/'sum'), and 'mean'/'sum' totals are NaN."""
    opts = Options(True, "default", reduction, 0.1, 2.5, index_target)
    z, t, kw = make_case((5, 6), opts, seed=1100)
    if index_target:
        t[2] = 3  # make sure the NaN row is not an ignored one
    z[2, 4] = np.nan
    others = [0, 1, 3, 4]
    loss = fs.cross_entropy(z, t, **kw)
    grad = fs.cross_entropy_backward(z, t, **kw)
    assert np.all(np.isnan(grad[2]))
    assert_loss_matches(loss, ref.cross_entropy(z, t, **kw), z, t, kw)
    assert_grad_matches(grad, ref.cross_entropy_backward(z, t, **kw), z, t, kw)
    if reduction == "none":
        assert np.isnan(loss[2])
        alone = fs.cross_entropy(z[others], t[others], **kw)
        np.testing.assert_array_equal(loss[others], alone)
    else:
        assert np.isnan(loss)
    if reduction != "mean":  # 'mean' scales every row by the (shared) denominator
        np.testing.assert_array_equal(
            grad[others], fs.cross_entropy_backward(z[others], t[others], **kw)
        )
    assert np.all(np.isfinite(grad[others]))


def _masked_index_case(reduction: str, weight: bool):
    """Logits with classes 1, 4, 5 at -inf in every row; targets elsewhere (one ignored)."""
    opts = Options(weight, "default", reduction, 0.0, 2.5, True)
    z, _, kw = make_case((6, 7), opts, seed=1200)
    z[:, [1, 4, 5]] = -np.inf
    t = np.array([0, 2, -100, 3, 6, 0])
    return opts, z, t, kw


@pytest.mark.parametrize("weight", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_masked_classes_index_targets(reduction, weight) -> None:
    """-inf logits (masked classes) not targeted: finite loss, exactly zero gradient there, and the
    same loss and gradient as the problem without the masked columns (independent of the
    reference)."""
    _opts, z, t, kw = _masked_index_case(reduction, weight)
    masked = [1, 4, 5]
    keep = [0, 2, 3, 6]
    sub_t = np.array([0, 1, -100, 2, 3, 0])
    sub_kw = dict(kw, weight=kw["weight"][keep]) if weight else kw
    loss = fs.cross_entropy(z, t, **kw)
    grad = fs.cross_entropy_backward(z, t, **kw)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[:, masked], 0.0)
    np.testing.assert_allclose(loss, fs.cross_entropy(z[:, keep], sub_t, **sub_kw), rtol=1e-13)
    np.testing.assert_allclose(
        grad[:, keep],
        fs.cross_entropy_backward(z[:, keep], sub_t, **sub_kw),
        rtol=1e-13,
        atol=1e-16,
    )
    assert_loss_matches(loss, ref.cross_entropy(z, t, **kw), z, t, kw)
    assert_grad_matches(grad, ref.cross_entropy_backward(z, t, **kw), z, t, kw)


@pytest.mark.parametrize("weight", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_masked_classes_index_targets_match_torch(torch, reduction, weight) -> None:
    """torch agrees on -inf masked classes with index targets (no label smoothing)."""
    opts, z, t, kw = _masked_index_case(reduction, weight)
    loss_t, grad_t = torch_cross_entropy(torch, z, t, opts, dict(kw, ignore_index=-100), 1.0)
    assert_torch_close(fs.cross_entropy(z, t, **kw), loss_t, "loss")
    assert_torch_close(fs.cross_entropy_backward(z, t, **kw), grad_t, "grad")


@pytest.mark.parametrize("weight", [False, True], ids=["now", "w"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_masked_classes_probability_targets(reduction, weight) -> None:
    """Probability targets that are 0 where the logits are -inf: a finite loss (torch gives NaN
    there, 0 * -inf; our documented deviation), zero gradient on the masked classes, and the
    values of the problem without the masked columns."""
    opts = Options(weight, "default", reduction, 0.0, 1.0, False)
    z, t, kw = make_case((5, 6), opts, seed=1300)
    masked = [0, 3]
    keep = [1, 2, 4, 5]
    z[:, masked] = -np.inf
    t[:, masked] = 0.0
    t /= t.sum(axis=-1, keepdims=True)
    sub_kw = dict(kw, weight=kw["weight"][keep]) if weight else kw
    loss, grad = fs.cross_entropy_with_grad(z, t, **kw)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    np.testing.assert_array_equal(grad[:, masked], 0.0)
    sub_z, sub_t = z[:, keep], t[:, keep]
    np.testing.assert_allclose(loss, fs.cross_entropy(sub_z, sub_t, **sub_kw), rtol=1e-13)
    np.testing.assert_allclose(
        grad[:, keep], fs.cross_entropy_backward(sub_z, sub_t, **sub_kw), rtol=1e-13, atol=1e-16
    )
    assert_loss_matches(loss, ref.cross_entropy(z, t, **kw), z, t, kw)
    assert_grad_matches(grad, ref.cross_entropy_backward(z, t, **kw), z, t, kw)


@pytest.mark.parametrize("index_target", [True, False], ids=["idx", "prob"])
def test_inf_rows_match_reference(index_target) -> None:
    """Rows with +inf logits and all -inf rows follow the softmax limits, like the reference."""
    opts = Options(True, "default", "none", 0.0, 1.0, index_target)
    z, t, kw = make_case((4, 5), opts, seed=1400)
    z[0, [1, 3]] = np.inf
    z[2, :] = -np.inf
    z[3, 2] = np.inf
    if index_target:
        t[:] = [1, 0, 2, 2]
    with np.errstate(all="ignore"):
        assert_loss_matches(fs.cross_entropy(z, t, **kw), ref.cross_entropy(z, t, **kw), z, t, kw)
        assert_grad_matches(
            fs.cross_entropy_backward(z, t, **kw), ref.cross_entropy_backward(z, t, **kw), z, t, kw
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("index_target", [True, False], ids=["idx", "prob"])
def test_z_loss_gradient_of_an_inf_row_is_its_limit(index_target, dtype) -> None:
    """d(zl L^2)/du_j = 2 zl L p_j: +inf on the +inf entries (L = +inf, p_j = 1/k), 0 where
    p_j = 0; the cross-entropy part as without a z-loss. An all -inf row has p = 0: no z-loss
    gradient (its loss is +inf)."""
    z = np.array([[np.inf, 1.0, -2.0], [1.0, np.inf, np.inf], [-np.inf] * 3], dtype)
    t = np.array([1, 0, 2]) if index_target else np.array([[0.0, 1.0, 0.0]] * 3, dtype)
    kw = dict(z_loss=0.1, reduction="sum")
    plain = fs.cross_entropy_backward(z, t, reduction="sum")
    want = plain.astype(np.float64) + np.array([[np.inf, 0, 0], [0, np.inf, np.inf], [0, 0, 0]])
    got = fs.cross_entropy_backward(z, t, **kw)
    np.testing.assert_array_equal(got, want.astype(dtype), strict=True)
    np.testing.assert_array_equal(ref.cross_entropy_backward(z, t, **kw), got, strict=True)
    assert fs.cross_entropy(z, t, **kw) == np.inf


@pytest.mark.parametrize("in_place", [False, True], ids=["out_of_place", "in_place"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_short_rows_across_chunks_match_reference(dtype, label_smoothing, in_place) -> None:
    """Rows of fewer than 20 classes go through the kernels a chunk of rows at a time (113 rows of
    9 here): special rows on both sides of a chunk boundary fall back to the general row code
    without disturbing their neighbours, ignored rows give 0, and the gradient may overwrite the
    logits."""
    opts = Options(True, "custom", "none", label_smoothing, 2.5, True)
    z, t, kw = make_case((300, 9), opts, seed=1450, dtype=dtype)
    t[[3, 4, 112, 113, 114, 299]] = [1, 2, 0, 5, 8, 3]  # special rows below are not ignored
    z[3, 2] = np.nan
    z[112, [1, 4]] = np.inf
    z[113, :] = -np.inf
    z[114, 7] = np.inf
    z[299, 0] = -np.inf
    z0 = z.copy()
    with np.errstate(all="ignore"):
        loss_r, grad_r = ref.cross_entropy_with_grad(z0, t, **kw)
        loss, grad = fs.cross_entropy_with_grad(z, t, **kw, out=z if in_place else None)
    assert (grad is z) == in_place
    assert_loss_matches(loss, loss_r, z0, t, kw)
    assert_grad_matches(grad, grad_r, z0, t, kw)
    assert np.all(np.isnan(grad[3])) and np.isnan(loss[3])
    assert np.all(np.isfinite(grad[np.r_[0:3, 4:300]]))


# --------------------------------------------------------------------------- threads


@pytest.mark.parametrize("index_target", [True, False], ids=["idx", "prob"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@needs_jit
@pytest.mark.parametrize("shape", [(301, 211), (1500, 9)], ids=["long_rows", "short_rows"])
def test_thread_count_invariance(shape, dtype, reduction, index_target) -> None:
    """1 thread and 2 threads give bit-identical losses and gradients (above SERIAL_BELOW, so the
    parallel kernel runs with 2 threads; short rows go a chunk of rows at a time)."""

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has fewer than 2 threads")
    opts = Options(True, "default", reduction, 0.1, 2.5, index_target)
    z, t, kw = make_case(shape, opts, seed=1500, dtype=dtype)
    assert z.size > SERIAL_BELOW  # the parallel kernel runs when 2 threads are allowed
    results = {}
    old = numba.get_num_threads()
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            results[n] = (
                fs.cross_entropy(z, t, **kw),
                fs.cross_entropy_backward(z, t, **kw),
                fs.cross_entropy_with_grad(z, t, **kw),
            )
    finally:
        numba.set_num_threads(old)
    (l1, g1, (fl1, fg1)), (l2, g2, (fl2, fg2)) = results[1], results[2]
    for a, b in [(l1, l2), (g1, g2), (fl1, fl2), (fg1, fg2)]:
        np.testing.assert_array_equal(a, b, strict=True)
