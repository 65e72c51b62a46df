"""Every cross-entropy option combined with special values (+-inf, NaN, all -inf rows, huge
magnitudes), and the binary family with its weights and special values.

Three opinions, none of them the code under test:

- ``fastsoftmax.reference`` (hypothesis properties over drawn options and logits, the package's
  tolerances from ``test_losses`` / ``test_binary``);
- PyTorch in float64 where its semantics are ours (finite logits; -inf masks with class-index
  targets and no smoothing), skipped when torch is not installed;
- :func:`exact_cross_entropy`, the definitions evaluated in ``np.longdouble`` row by row with the
  limits the README documents, for the explicit special-row table and the regression tests
  (which also say which side, kernel or reference, is wrong).

Profiles (tests/conftest.py): "ci" by default, FASTSOFTMAX_HYPOTHESIS_PROFILE=long for more.
"""

from __future__ import annotations

import itertools
import zlib
from typing import Any, NamedTuple

import numpy as np
import pytest
from conftest import COMPARISONS, assert_close, needs_jit
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_binary import RTOL as BINARY_RTOL
from test_binary import close as binary_close
from test_losses import (
    Options,
    assert_grad_matches,
    assert_loss_matches,
    assert_torch_close,
    torch,  # noqa: F401  (the module-scoped fixture: torch with one thread, or a clean skip)
    torch_cross_entropy,
)

import fastsoftmax as fs
from fastsoftmax import reference as ref

CE = COMPARISONS["cross_entropy"]
CE_BACKWARD = COMPARISONS["cross_entropy_backward"]
CE_WITH_GRAD = COMPARISONS["cross_entropy_with_grad"]

FLOAT_DTYPES = [np.dtype(np.float32), np.dtype(np.float64)]
# Huge but finite magnitudes: near the top of float32's range; far beyond exp's range in float64.
# Each exactly representable in its dtype: hypothesis rejects an array element that the cast
# changes (a float32 compares unequal to the Python float 3e38 under NumPy 1's promotion rules).
HUGE = {np.dtype(np.float32): float(np.float32(3e38)), np.dtype(np.float64): 1e30}
REDUCTIONS = ["mean", "sum", "none"]

# --------------------------------------------------------------------------- strategies

# How a drawn row of logits is made: finite values in [-30, 30], then (except "finite") special
# values at drawn positions. "masks": some -inf; "huge": +-HUGE and +-700; "posinf": some +inf;
# "nan": some NaN; "all_neginf": the whole row -inf; "mixed": any of them. ("moderate", +-100
# and +-700, is for the torch comparison, whose tolerance is not scaled by the logits.)
ROW_KINDS = ["finite", "masks", "huge", "posinf", "all_neginf", "nan", "mixed"]


def _specials(kind: str, dtype: np.dtype) -> list[float]:
    h = HUGE[dtype]
    return {
        "masks": [-np.inf],
        "huge": [h, -h, 700.0, -700.0],
        "moderate": [700.0, -700.0, 100.0, -100.0],
        "posinf": [np.inf],
        "nan": [np.nan],
        "mixed": [h, -h, 700.0, -700.0, np.inf, -np.inf, np.nan],
    }[kind]


@st.composite
def logit_rows(draw, dtype: np.dtype, rows: int, classes: int, kinds: list[str]) -> np.ndarray:
    """(rows, classes) logits of ``dtype``, each row of a kind drawn from ``kinds``."""
    x = draw(
        hnp.arrays(dtype, (rows, classes), elements=st.floats(-30, 30, width=dtype.itemsize * 8)),
        label="finite",
    )
    for i in range(rows):
        kind = draw(st.sampled_from(kinds), label=f"row {i}")
        if kind == "all_neginf":
            x[i] = -np.inf
        elif kind != "finite":
            where = draw(st.lists(st.integers(0, classes - 1), min_size=1, max_size=classes))
            for j in where:
                x[i, j] = draw(st.sampled_from(_specials(kind, dtype)))
    return x


# no subnormal weights here: a "mean" over a subnormal denominator scales the gradient by
# 1 / 5e-324 = inf, where either side's NaN or inf is as right as the other (subnormal weights
# in the loss have their own regression tests below)
nonneg_weights = st.one_of(st.just(0.0), st.just(1.0), st.floats(0.0, 3.0, allow_subnormal=False))
label_smoothings = st.one_of(st.sampled_from([0.0, 0.1, 1.0]), st.floats(0.0, 1.0))
temperatures = st.one_of(st.sampled_from([1.0, 0.5, 2.5]), st.floats(0.1, 10.0))


class Case(NamedTuple):
    """A cross-entropy call: logits, target, keyword options and a grad_output for backward."""

    z: np.ndarray
    t: np.ndarray
    kw: dict[str, Any]
    grad_output: Any

    @property
    def index_target(self) -> bool:
        return self.t.dtype.kind in "iu"


@st.composite
def ce_cases(
    draw,
    dtypes=tuple(FLOAT_DTYPES),
    kinds=tuple(ROW_KINDS),
    allow_where: bool = True,
    mask_rows_if=None,
) -> Case:
    """A cross-entropy case with every option drawn.

    Shapes: 0-5 rows (plus some 40-class rows: the long-row path), 1-24 classes. ``where`` (if
    allowed) is None, a (C,) or a (rows, C) mask; class-index targets lie on kept classes (a
    target on a left-out class is a documented ValueError) or are the ignore index. Probability
    rows sum to 1 and hold exact zeros. ``mask_rows_if(index_target, weight, eps)``: whether rows
    of kind "masks" may be drawn (defaults to yes).
    """
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    rows = draw(st.integers(0, 5))
    classes = draw(st.one_of(st.integers(1, 24), st.just(40)))
    index_target = draw(st.booleans())
    weight = draw(st.one_of(st.none(), hnp.arrays(np.float64, (classes,), elements=nonneg_weights)))
    eps = draw(label_smoothings)
    kw: dict[str, Any] = {
        "reduction": draw(st.sampled_from(REDUCTIONS)),
        "label_smoothing": eps,
        "temperature": draw(temperatures),
    }
    if weight is not None:
        kw["weight"] = weight
    ignore_index = draw(st.one_of(st.just(-100), st.integers(0, classes - 1)))
    if ignore_index != -100:
        kw["ignore_index"] = ignore_index
    kinds = list(kinds)
    if mask_rows_if is not None and not mask_rows_if(index_target, weight, eps):
        kinds = [k for k in kinds if k != "masks"]
    z = draw(logit_rows(dtype, rows, classes, kinds))

    mask = None
    if allow_where:
        mask = draw(
            st.one_of(
                st.none(), hnp.arrays(np.bool_, (classes,)), hnp.arrays(np.bool_, (rows, classes))
            )
        )
    if mask is not None:
        kw["where"] = mask
    kept = (
        np.ones((rows, classes), bool) if mask is None else np.broadcast_to(mask, (rows, classes))
    )

    if index_target:
        t = np.empty(rows, dtype=np.int64)
        for i in range(rows):
            allowed = np.flatnonzero(kept[i]).tolist() or list(range(classes))  # all masked: any
            t[i] = draw(
                st.one_of(st.sampled_from(allowed), st.sampled_from(allowed), st.just(ignore_index))
            )
    else:
        raw = draw(
            hnp.arrays(
                np.float64, (rows, classes), elements=st.one_of(st.just(0.0), st.floats(0.0, 1.0))
            )
        )
        for i in range(rows):
            if raw[i].sum() == 0:
                raw[i, draw(st.integers(0, classes - 1))] = 1.0
        t = (raw / raw.sum(axis=1, keepdims=True) if rows else raw).astype(dtype)

    if kw["reduction"] == "none" and draw(st.booleans()):
        gout: Any = draw(hnp.arrays(np.float64, (rows,), elements=st.floats(-2.0, 2.0)))
    else:
        gout = draw(st.floats(-2.0, 2.0))
    return Case(z, t, kw, gout)


# --------------------------------------------------------------------------- the exact oracle


def exact_cross_entropy(
    z,
    t,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    temperature=1.0,
    grad_output=1.0,
    where=None,
):
    """(loss, gradient) from the definitions in ``np.longdouble``, rounded to the logits' dtype.

    Per row, q are the weights of the -log p terms (PyTorch's weights, smoothing over the kept
    classes, mean denominators); -log p_c = lse(u) - u_c with lse = m + log1p(sum of the other
    exps) (tiny terms kept), and the documented limits: a NaN on a kept class gives NaN; +inf
    entries share p equally (-log p = log k there, +inf elsewhere); an all -inf row has p = 0,
    -log p = +inf. A term with q_c == 0 counts 0 (never 0 * inf); ignored and fully masked rows
    give 0 and a zero gradient, and so do left-out classes, even under a 0 / 0 'mean' (README:
    "zero gradient"), except in a NaN row, which is NaN throughout. Weights and probability
    targets are first rounded to the logits' dtype, as the functions do, so that both solve the
    same problem.
    """
    L = np.longdouble
    z = np.asarray(z)
    dtype = z.dtype
    classes = z.shape[-1]
    u_all = z.reshape(-1, classes).astype(L) / L(temperature)
    n = u_all.shape[0]
    index = np.asarray(t).dtype.kind in "iu"
    w = np.ones(classes, L) if weight is None else np.asarray(weight).astype(dtype).astype(L)
    kept = (
        np.ones((n, classes), bool)
        if where is None
        else np.broadcast_to(
            np.asarray(where).reshape(-1, classes) if np.ndim(where) > 1 else where, (n, classes)
        )
    )
    gout = np.broadcast_to(np.asarray(grad_output, dtype=L).reshape(-1), (n,))
    eps = L(label_smoothing)
    losses = np.zeros(n, L)
    grads = np.zeros((n, classes), L)
    live = np.zeros(n, bool)  # rows with terms (the 'mean' scale reaches only these)
    nan_rows = np.zeros(n, bool)
    denom = L(0) if index else L(n)
    tt = (
        np.asarray(t).reshape(-1)
        if index
        else np.asarray(t).astype(dtype).astype(L).reshape(-1, classes)
    )
    for i in range(n):
        k_i = kept[i]
        n_kept = int(k_i.sum())
        if index:
            y = int(tt[i])
            if y == ignore_index or n_kept == 0:
                continue  # ignored (or masked entirely, which ignores it): no term, no gradient
            q = np.where(k_i, eps / n_kept * w, L(0))
            q[y] += (1 - eps) * w[y]
            denom += w[y]
            live[i] = True
        else:
            if n_kept == 0:
                continue
            q = np.where(k_i, w * ((1 - eps) * tt[i] + eps / n_kept), L(0))
            live[i] = True
        u = np.where(k_i, u_all[i], L(-np.inf))
        if np.isnan(u[k_i]).any():
            losses[i] = np.nan
            grads[i] = np.nan
            nan_rows[i] = True
            continue
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            if np.isposinf(u).any():
                k = np.isposinf(u).sum()
                p = np.where(np.isposinf(u), L(1) / k, L(0))
                nlogp = np.where(np.isposinf(u), np.log(L(k)), L(np.inf))
            elif np.isneginf(u).all():
                p = np.zeros(classes, L)
                nlogp = np.full(classes, L(np.inf))
            else:
                j = int(np.argmax(u))
                e = np.exp(u - u[j])
                rest = e.sum() - e[j]  # e[j] == 1: the other terms, summed on their own scale
                lse = u[j] + np.log1p(rest)
                p = e / (1 + rest)
                nlogp = lse - u
            losses[i] = np.sum(np.where(q != 0, q * nlogp, L(0)))
        grads[i] = np.where(k_i, (p * q.sum() - q) * gout[i] / L(temperature), L(0))
    with np.errstate(over="ignore", invalid="ignore"):
        if reduction == "mean":  # 0 / 0 (no weight among the targets): NaN, as torch
            inv = L(1) / denom if denom != 0 else L(np.nan)
            grads[live] *= inv
            grads = np.where(nan_rows[:, None] | kept, grads, L(0))  # left-out classes stay 0
            loss = dtype.type(np.sum(losses) * inv)
        elif reduction == "sum":
            loss = dtype.type(np.sum(losses))
        else:
            loss = losses.astype(dtype).reshape(z.shape[:-1])
        return loss, grads.astype(dtype).reshape(z.shape)


# --------------------------------------------------------------------------- shared checks


def check_against_reference(case: Case) -> None:
    """Loss, backward (drawn grad_output) and the fused pair equal the reference; the fused pair
    equals the separate calls (bit for bit in float64, as tests/test_losses.py requires)."""
    z, t, kw, gout = case
    loss = CE.fast(z, t, **kw)
    with np.errstate(all="ignore"):  # the reference computes 0 * inf, log(0) on purpose
        loss_r = CE.reference(z, t, **kw)
        grad_r = CE_BACKWARD.reference(z, t, grad_output=gout, **kw)
        fused_r = CE_WITH_GRAD.reference(z, t, **kw)
    assert_loss_matches(loss, loss_r, z, t, kw, "cross_entropy vs reference")
    assert_grad_matches(
        CE_BACKWARD.fast(z, t, grad_output=gout, **kw),
        grad_r,
        z,
        t,
        kw,
        gout,
        "cross_entropy_backward vs reference",
    )
    fused_loss, fused_grad = CE_WITH_GRAD.fast(z, t, **kw)
    assert_loss_matches(fused_loss, fused_r[0], z, t, kw, "with_grad loss vs reference")
    assert_grad_matches(fused_grad, fused_r[1], z, t, kw, 1.0, "with_grad gradient vs reference")
    grad_1 = CE_BACKWARD.fast(z, t, grad_output=1.0, **kw)
    if z.dtype == np.float64:  # bit for bit, as tests/test_losses.py checks
        np.testing.assert_array_equal(fused_loss, loss, strict=True)
        np.testing.assert_array_equal(fused_grad, grad_1, strict=True)
    else:  # float32 exp passes that store and that only sum round differently (~1 ulp)
        assert_loss_matches(fused_loss, loss, z, t, kw, "with_grad loss vs cross_entropy")
        assert_grad_matches(fused_grad, grad_1, z, t, kw, 1.0, "with_grad vs backward")


def check_against_exact(fn, case: Case, side: str) -> None:
    """``fn`` (fastsoftmax or the reference module) gives the longdouble oracle's loss and
    gradient (backward with the case's grad_output, and the fused pair), within the package's
    tolerances."""
    z, t, kw, gout = case
    want_loss, want_grad = exact_cross_entropy(z, t, grad_output=gout, **kw)
    with np.errstate(all="ignore"):
        loss = fn.cross_entropy(z, t, **kw)
        grad = fn.cross_entropy_backward(z, t, grad_output=gout, **kw)
        fused_loss, fused_grad = fn.cross_entropy_with_grad(z, t, **kw)
    assert_loss_matches(loss, want_loss, z, t, kw, f"{side} loss vs exact")
    assert_grad_matches(grad, want_grad, z, t, kw, gout, f"{side} gradient vs exact")
    assert_loss_matches(fused_loss, want_loss, z, t, kw, f"{side} with_grad loss vs exact")
    want_grad_1 = exact_cross_entropy(z, t, **kw)[1]
    assert_grad_matches(
        fused_grad, want_grad_1, z, t, kw, 1.0, f"{side} with_grad gradient vs exact"
    )


# --------------------------------------------------------------------------- properties: softmax CE


@given(ce_cases())
def test_cross_entropy_options_with_special_values_match_reference(case: Case) -> None:
    """Every option drawn together with special rows: the kernels equal the reference."""
    check_against_reference(case)


@given(ce_cases(kinds=("finite", "huge", "masks", "all_neginf", "mixed"), allow_where=False))
def test_cross_entropy_no_mask_specials_match_reference(case: Case) -> None:
    """The same without ``where`` and without NaN/+inf rows: rows of -inf and huge magnitudes
    meet every weight/ignore_index/smoothing/temperature/reduction combination more often."""
    check_against_reference(case)


def _torch_masks_agree(index_target: bool, weight, eps: float) -> bool:
    """-inf logits mean the same to torch only for class indices without smoothing and with
    positive weights (else torch computes 0 * -inf = NaN, a documented difference)."""
    return index_target and eps == 0.0 and (weight is None or bool(np.all(weight > 0)))


@given(
    ce_cases(
        dtypes=(np.dtype(np.float64),),
        kinds=("finite", "moderate", "masks"),
        allow_where=False,
        mask_rows_if=_torch_masks_agree,
    )
)
def test_cross_entropy_matches_torch_where_semantics_agree(torch, case: Case) -> None:  # noqa: F811
    """float64 F.cross_entropy(z / T, ...) forward and autograd backward, every option drawn,
    on finite logits (up to +-700) and on -inf masks where torch means the same."""
    z, t, kw, gout = case
    # a row drawn all -inf (every position masked): torch's log_softmax is NaN there, ours -inf
    # (a documented difference)
    assume(not np.isneginf(z).all(axis=-1).any())
    kw = {"ignore_index": -100, **kw}
    opts = Options(
        weight="weight" in kw,
        ignore="default",
        reduction=kw["reduction"],
        label_smoothing=kw["label_smoothing"],
        temperature=kw["temperature"],
        index_target=case.index_target,
    )  # only index_target is read by the helper
    loss_t, grad_t = torch_cross_entropy(torch, z, t, opts, kw, gout)
    assert_torch_close(fs.cross_entropy(z, t, **kw), loss_t, "loss vs torch")
    assert_torch_close(
        fs.cross_entropy_backward(z, t, grad_output=gout, **kw), grad_t, "gradient vs torch"
    )


# --------------------------------------------------------------------------- properties: binary


@st.composite
def bce_cases(draw, dtypes=tuple(FLOAT_DTYPES), specials: bool = True):
    """(x, y, kwargs, grad_output): logits with special values, targets in [0, 1] with exact 0s
    and 1s, weight / pos_weight None, scalar, per-column, per-row or full (zeros included)."""
    dtype = np.dtype(draw(st.sampled_from(dtypes)))
    shape = draw(st.sampled_from([(0,), (1,), (7,), (3, 5), (2, 3, 4), (2, 40)]))
    finite = st.floats(-30, 30, width=dtype.itemsize * 8)
    if specials:
        h = HUGE[dtype]
        special = st.sampled_from([h, -h, 700.0, -700.0, np.inf, -np.inf, np.nan])
        elements = st.one_of(finite, finite, finite, special)
    else:
        elements = st.one_of(finite, st.sampled_from([100.0, -100.0, 700.0, -700.0]))
    x = draw(hnp.arrays(dtype, shape, elements=elements))
    y = draw(
        hnp.arrays(
            dtype,
            shape,
            elements=st.one_of(
                st.sampled_from([0.0, 1.0]), st.floats(0.0, 1.0, width=dtype.itemsize * 8)
            ),
        )
    )

    def weight_shapes():
        return st.sampled_from([None, (), (1,), shape[-1:], shape[:-1] + (1,), shape])

    kw: dict[str, Any] = {"reduction": draw(st.sampled_from(REDUCTIONS))}
    for name in ("weight", "pos_weight"):
        wshape = draw(weight_shapes(), label=name)
        if wshape is not None:
            kw[name] = draw(hnp.arrays(np.float64, wshape, elements=nonneg_weights))
    if dtype == np.float32:
        # float32 element losses are computed in float32, as PyTorch does: an element whose loss
        # w pw |x| exceeds the float32 range is inf there, where the float64 reference is finite
        scale = np.abs(np.where(np.isfinite(x), x, 0.0)).astype(np.float64)
        for name in ("weight", "pos_weight"):
            scale = scale * np.max(kw.get(name, 1.0), initial=1.0)
        assume(np.all(scale < np.finfo(np.float32).max / 2))
    if kw["reduction"] == "none" and draw(st.booleans()):
        gout: Any = draw(hnp.arrays(np.float64, shape, elements=st.floats(-2.0, 2.0)))
    else:
        gout = draw(st.floats(-2.0, 2.0))
    return x, y, kw, gout


def bce_gradient_scale(x, y, kw, grad_output) -> float:
    """The size of the two terms a BCE gradient entry is the difference of:
    |grad_output| / denominator * max(w (pw y + 1 - y)).

    An entry ``coef (sigmoid(x) (a + b) - a)`` with sigmoid(x) ~ y cancels, so it is only known to
    ``ulp * this`` (``test_binary.close`` scales by max|expected| instead, which is itself tiny
    when every entry cancels, e.g. every y = 1 and every x > 17 in float32).
    """
    if x.size == 0:
        return 0.0
    w = np.broadcast_to(np.asarray(kw.get("weight", 1.0), dtype=np.float64), x.shape)
    pw = np.broadcast_to(np.asarray(kw.get("pos_weight", 1.0), dtype=np.float64), x.shape)
    y = np.asarray(y, dtype=np.float64)
    coef = float(np.max(np.abs(grad_output))) / (x.size if kw["reduction"] == "mean" else 1)
    return coef * float(np.max(w * (pw * y + 1.0 - y)))


def assert_bce_grad_close(actual, expected, x, y, kw, grad_output, msg: str) -> None:
    """BCE gradients: NaN/inf in the same places, finite entries within the binary tests' rtol
    relative and rtol * :func:`bce_gradient_scale` absolute."""
    rtol = BINARY_RTOL[np.asarray(expected).dtype]
    atol = rtol * max(
        bce_gradient_scale(x, y, kw, grad_output),
        float(np.max(np.abs(expected[np.isfinite(expected)]), initial=0.0)),
    )
    assert_close(actual, expected, rtol=rtol, atol=atol, err_msg=msg)


@given(bce_cases())
def test_binary_family_with_special_values_matches_reference(case) -> None:
    """sigmoid, log_sigmoid, BCE with logits (+ backward, fused) equal the reference with
    weight/pos_weight/reduction drawn and +-inf, NaN, huge logits; fused == separate calls."""
    x, y, kw, gout = case
    for name in ("sigmoid", "log_sigmoid"):
        binary_close(getattr(fs, name)(x), getattr(ref, name)(x), scale_atol=False, msg=name)
    loss = fs.binary_cross_entropy_with_logits(x, y, **kw)
    with np.errstate(all="ignore"):
        loss_r = ref.binary_cross_entropy_with_logits(x, y, **kw)
        grad_r = ref.binary_cross_entropy_with_logits_backward(x, y, grad_output=gout, **kw)
        fused_r = ref.binary_cross_entropy_with_logits_with_grad(x, y, **kw)
    binary_close(loss, loss_r, msg="bce")
    assert_bce_grad_close(
        fs.binary_cross_entropy_with_logits_backward(x, y, grad_output=gout, **kw),
        grad_r,
        x,
        y,
        kw,
        gout,
        "bce backward",
    )
    fused = fs.binary_cross_entropy_with_logits_with_grad(x, y, **kw)
    binary_close(fused[0], fused_r[0], msg="bce with_grad loss")
    assert_bce_grad_close(fused[1], fused_r[1], x, y, kw, 1.0, "bce with_grad gradient")
    np.testing.assert_array_equal(fused[0], loss, strict=True)
    np.testing.assert_array_equal(
        fused[1],
        fs.binary_cross_entropy_with_logits_backward(x, y, grad_output=1.0, **kw),
        strict=True,
    )


@given(bce_cases(dtypes=(np.dtype(np.float64),), specials=False))
def test_binary_matches_torch_on_finite_logits(torch, case) -> None:  # noqa: F811
    """float64 F.binary_cross_entropy_with_logits and its autograd gradient (finite logits:
    infinite ones are a documented difference)."""
    x, y, kw, gout = case
    F = torch.nn.functional
    tx = torch.tensor(x, requires_grad=True)
    tw = {k: torch.tensor(v) for k, v in kw.items() if k != "reduction"}
    tloss = F.binary_cross_entropy_with_logits(tx, torch.tensor(y), reduction=kw["reduction"], **tw)
    tloss.backward(torch.as_tensor(gout, dtype=torch.float64).expand_as(tloss))
    assert_torch_close(
        fs.binary_cross_entropy_with_logits(x, y, **kw), tloss.detach().numpy(), "bce loss vs torch"
    )
    assert_torch_close(
        fs.binary_cross_entropy_with_logits_backward(x, y, grad_output=gout, **kw),
        tx.grad.numpy(),
        "bce gradient vs torch",
    )


# --------------------------------------------------------------------------- special-row table

# One combination per line; together they use every option: weights with zeros, a custom
# ignore_index, smoothing 0 / 0.1 / 1, temperatures 0.5 / 2.5, ``where`` masks, both targets.
TABLE_OPTIONS = {
    "idx-plain": dict(index=True),
    "idx-w0-ls0.1-T0.5": dict(index=True, weight=True, label_smoothing=0.1, temperature=0.5),
    "idx-ign-ls1-T2.5": dict(index=True, ignore=True, label_smoothing=1.0, temperature=2.5),
    "idx-w0-ign-ls1": dict(index=True, weight=True, ignore=True, label_smoothing=1.0),
    "idx-where-ls0.1": dict(index=True, where=True, label_smoothing=0.1, temperature=2.5),
    "prob-plain": dict(index=False),
    "prob-w0-ls0.1-T0.5": dict(index=False, weight=True, label_smoothing=0.1, temperature=0.5),
    "prob-ls1-T2.5": dict(index=False, label_smoothing=1.0, temperature=2.5),
    "prob-where-w0-ls0.1": dict(index=False, where=True, weight=True, label_smoothing=0.1),
}
SPECIAL_ROWS = ["all_neginf", "posinf", "two_posinf", "nan", "neginf_target", "huge"]


def special_row_case(option: str, special: str, reduction: str, dtype=np.float64) -> Case:
    """A (5, 6) case: row 2 is ``special``, row 3 is ignored (index targets), the other rows
    finite; weights hold a zero (class 5), ``where`` leaves out class 4 (and all of row 4)."""
    o = TABLE_OPTIONS[option]
    rng = np.random.default_rng(zlib.crc32(f"{option}/{special}/{reduction}".encode()))
    z = (rng.standard_normal((5, 6)) * 3).astype(dtype)
    row = z[2]
    if special == "all_neginf":
        row[:] = -np.inf
    elif special == "posinf":
        row[1] = np.inf
    elif special == "two_posinf":
        row[[0, 3]] = np.inf
    elif special == "nan":
        row[3] = np.nan
    elif special == "neginf_target":
        row[[1, 5]] = -np.inf
    elif special == "huge":
        row[[0, 2]] = [HUGE[np.dtype(dtype)], -HUGE[np.dtype(dtype)]]
    kw: dict[str, Any] = {
        "reduction": reduction,
        "label_smoothing": o.get("label_smoothing", 0.0),
        "temperature": o.get("temperature", 1.0),
    }
    if o.get("weight"):
        kw["weight"] = np.array([0.5, 1.0, 2.0, 1.5, 1.0, 0.0])
    ignore = 3 if o.get("ignore") else -100
    if o.get("ignore"):
        kw["ignore_index"] = ignore
    if o.get("where"):
        mask = np.ones((5, 6), bool)
        mask[:, 4] = False
        mask[4] = False
        kw["where"] = mask
    if o["index"]:
        t = np.array([0, 2, 1, ignore, 5], dtype=np.int64)  # row 2 targets class 1
    else:
        t = rng.random((5, 6))
        t[:, 4] = 0.0
        t[2, 2] = 0.0
        t = (t / t.sum(axis=1, keepdims=True)).astype(dtype)
    gout = np.linspace(-1.5, 2.0, 5) if reduction == "none" else 0.7
    return Case(z, t, kw, gout)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("special", SPECIAL_ROWS)
@pytest.mark.parametrize("option", list(TABLE_OPTIONS))
def test_special_rows_every_option_kernel_exact(option, special, reduction, dtype) -> None:
    """Each special row with each option and reduction: the kernels give the exact limits."""
    check_against_exact(fs, special_row_case(option, special, reduction, dtype), "fastsoftmax")


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("special", SPECIAL_ROWS)
@pytest.mark.parametrize("option", list(TABLE_OPTIONS))
def test_special_rows_every_option_reference_exact(option, special, reduction) -> None:
    """The reference gives the same exact limits (it is only a second opinion if it is right).
    float64 only: the reference computes cross-entropy in float64 for float32 input too."""
    check_against_exact(ref, special_row_case(option, special, reduction), "reference")


@pytest.mark.slow
@needs_jit
@pytest.mark.parametrize("classes", [9, 300], ids=["short_rows", "long_rows"])
@pytest.mark.parametrize("option", list(TABLE_OPTIONS))
def test_special_rows_in_large_arrays(option, classes) -> None:
    """Special rows scattered through 2000 x 9 / 64 x 300 arrays (the parallel kernels, short rows
    in chunks): the kernels equal the exact oracle."""
    rows = 2000 if classes == 9 else 64
    rng = np.random.default_rng(classes)
    base = special_row_case(option, "nan", "none")
    z = rng.standard_normal((rows, classes)) * 3
    z[5, 2] = np.nan
    z[6] = -np.inf
    z[7, [1, 3]] = np.inf
    z[rows - 1, 0] = 1e30
    z[rows - 2, :4] = -np.inf
    kw = dict(base.kw)
    if "weight" in kw:
        kw["weight"] = rng.uniform(0, 2, classes) * (np.arange(classes) % 4 != 0)
    if "where" in kw:
        mask = rng.random((rows, classes)) < 0.8
        mask[:, 1] = True
        kw["where"] = mask
    if base.index_target:
        t = rng.integers(0, classes, rows)
        t[::7] = kw.get("ignore_index", -100)
        t[[5, 6, 7, rows - 1, rows - 2]] = [1, 1, 1, 1, 5]
        if "where" in kw:  # a target on a left-out class is a ValueError: move it to class 1
            ignored = t == kw.get("ignore_index", -100)
            t = np.where(ignored | kw["where"][np.arange(rows), np.clip(t, 0, None)], t, 1)
    else:
        t = rng.random((rows, classes)) * (rng.random((rows, classes)) < 0.7)
        t[:, 1] += 0.1
        t /= t.sum(axis=1, keepdims=True)
    for reduction in REDUCTIONS:
        kwr = dict(kw, reduction=reduction)
        gout = np.linspace(-1, 1, rows) if reduction == "none" else 1.3
        check_against_exact(fs, Case(z, t, kwr, gout), "fastsoftmax")


# --------------------------------------------------------------------------- regressions
# Minimal reproducers of the failures these properties found (each expected value from the math).


def test_all_neginf_row_full_smoothing_sum() -> None:
    """An all -inf row has loss +inf (README), not NaN; its gradient is the
    finite limit p * sum(q) - q with p = 0, q = 1/3 on every class (eps = 1, C = 3)."""
    z = np.full((1, 3), -np.inf)
    for side in (fs, ref):
        assert side.cross_entropy(z, [0], label_smoothing=1.0, reduction="sum") == np.inf
        grad = side.cross_entropy_backward(z, [0], label_smoothing=1.0, reduction="sum")
        np.testing.assert_allclose(grad, np.full((1, 3), -1 / 3), rtol=1e-15)
        loss, grad = side.cross_entropy_with_grad(z, [0], label_smoothing=1.0, reduction="none")
        np.testing.assert_array_equal(loss, [np.inf])
        np.testing.assert_allclose(grad, np.full((1, 3), -1 / 3), rtol=1e-15)


def test_zero_weight_target_on_posinf_row_counts_zero() -> None:
    """A +inf row whose target class has weight 0: the target term is 0 * (-log 0) and counts 0
    (README: zero-weight terms count 0, not NaN), so the loss is 0, not NaN."""
    z = np.array([[np.inf, 0.0]])
    kw = dict(weight=np.array([1.0, 0.0]), reduction="sum")
    for side in (fs, ref):
        assert side.cross_entropy(z, [1], **kw) == 0.0, side.__name__
        np.testing.assert_array_equal(side.cross_entropy_backward(z, [1], **kw), [[0.0, 0.0]])


def test_zero_weight_target_at_neginf_logit_counts_zero() -> None:
    """The same in a finite row: target class at -inf with weight 0 gives 0 * inf, counted 0.
    The other class takes all the probability: loss 0, gradient 0."""
    z = np.array([[0.0, -np.inf]])
    kw = dict(weight=np.array([1.0, 0.0]), reduction="sum")
    for side in (fs, ref):
        assert side.cross_entropy(z, [1], **kw) == 0.0, side.__name__
        np.testing.assert_array_equal(side.cross_entropy_backward(z, [1], **kw), [[0.0, 0.0]])


def test_smoothing_over_zero_weight_class_at_neginf() -> None:
    """Label smoothing with a zero-weight class at -inf: that smoothing term counts 0, so the
    loss is finite: q = (0.9 + 0.1/3, 0.1/3, 0) (eps / C per class, C = 3), -log p = lse - z with
    lse = log(1 + e): loss = (0.9 + 0.1/3) lse + 0.1/3 (lse - 1)."""
    z = np.array([[0.0, 1.0, -np.inf]])
    kw = dict(weight=np.array([1.0, 1.0, 0.0]), label_smoothing=0.1, reduction="sum")
    lse = np.log1p(np.e)
    expected = (0.9 + 0.1 / 3) * lse + 0.1 / 3 * (lse - 1.0)
    for side in (fs, ref):
        np.testing.assert_allclose(
            side.cross_entropy(z, [0], **kw), expected, rtol=1e-14, err_msg=side.__name__
        )


def test_all_neginf_row_zero_weight_target_counts_zero() -> None:
    """An all -inf row whose only positive-q term has weight 0: loss 0 (nothing is counted)."""
    z = np.full((1, 3), -np.inf)
    kw = dict(weight=np.array([1.0, 0.0, 1.0]), reduction="none")
    for side in (fs, ref):
        np.testing.assert_array_equal(
            side.cross_entropy(z, [1], **kw), [0.0], err_msg=side.__name__
        )


def test_float32_huge_logits_with_weights_and_smoothing() -> None:
    """float32 logits near the top of the range, equal in a row: p = 1/2 each, loss
    (0.9 * 2 + 0.05 * 4) * log 2 = 2 log 2 (weights 2). sum_c w_c z_c overflows float32."""
    z = np.array([[3e38, 3e38]], dtype=np.float32)
    kw = dict(weight=np.array([2.0, 2.0]), label_smoothing=0.1, reduction="sum")
    for side in (fs, ref):
        np.testing.assert_allclose(
            side.cross_entropy(z, [0], **kw),
            np.float32(2 * np.log(2)),
            rtol=2e-6,
            err_msg=side.__name__,
        )


def test_large_gap_loss_is_the_gap_not_inf() -> None:
    """A logit gap of 800 (float64): -log p_0 = 800 + log1p(exp(-800)) = 800, finite
    (log(softmax) underflows to log(0) = -inf; log_softmax does not)."""
    z = np.array([[0.0, 800.0]])
    for side in (fs, ref):
        np.testing.assert_allclose(
            side.cross_entropy(z, [0], reduction="sum"), 800.0, rtol=1e-15, err_msg=side.__name__
        )
        np.testing.assert_allclose(
            side.cross_entropy(z, np.array([[1.0, 0.0]]), reduction="sum"),
            800.0,
            rtol=1e-15,
            err_msg=side.__name__,
        )


def test_tiny_loss_keeps_relative_accuracy() -> None:
    """Per-row loss log1p(exp(-40)) = 4.248e-18 (z = [0, -40], target 0): logsumexp as
    m + log(1 + tiny) rounds it to 0; m + log1p(tiny) keeps it (DESIGN: the reference is exact
    where the math allows)."""
    z = np.array([[0.0, -40.0]])
    expected = np.log1p(np.exp(-40.0))
    np.testing.assert_allclose(ref.cross_entropy(z, [0], reduction="none"), [expected], rtol=1e-14)


@pytest.mark.parametrize("softcap", [None, 50.0], ids=["plain", "softcap"])
@pytest.mark.parametrize("how", ["ignore_index", "where"])
def test_ignored_nan_row_gives_zero(how, softcap) -> None:
    """A NaN row whose target is ignore_index (or that ``where`` masks entirely) takes no part
    ("rows whose target is ignore_index give 0", fastsoftmax.losses): loss 0 and gradient 0
    there, and the mean is that of the other row. (With a softcap the chain factor
    1 / cosh(z / c)^2 is NaN there: the fast path gave 0 / NaN = NaN.)"""
    z = np.array([[np.nan, 0.0], [1.0, 2.0]])
    t = np.array([-100, 1]) if how == "ignore_index" else np.array([0, 1])
    where = None if how == "ignore_index" else np.array([[False, False], [True, True]])
    kw = dict(softcap=softcap, where=where)
    u = np.array([1.0, 2.0]) if softcap is None else softcap * np.tanh(np.array([1, 2]) / softcap)
    other = np.log1p(np.exp(u[0] - u[1]))  # -log softmax(u)[1]
    for side in (fs, ref):
        loss, grad = side.cross_entropy_with_grad(z, t, reduction="none", **kw)
        np.testing.assert_allclose(loss, [0.0, other], rtol=1e-15, err_msg=side.__name__)
        np.testing.assert_array_equal(grad[0], [0.0, 0.0], err_msg=side.__name__)
        np.testing.assert_allclose(
            side.cross_entropy(z, t, **kw), other, rtol=1e-15, err_msg=side.__name__
        )


def test_float32_huge_logits_smoothing_without_weights() -> None:
    """float32 row [h, h, h, 0], h = float32(3e38), target 0, smoothing 0.1: p = 1/3 on the h's,
    -log p_3 = h + log 3, so loss = 0.9 log 3 + 0.025 (3 log 3 + h + log 3) = 0.025 h + log 3,
    finite. (sum_c z_c = 3h overflows a float32 accumulator.)"""
    h = np.float32(3e38)
    z = np.array([[h, h, h, 0.0]], dtype=np.float32)
    expected = 0.025 * float(h) + np.log(3.0)
    for side in (fs, ref):
        np.testing.assert_allclose(
            side.cross_entropy(z, [0], label_smoothing=0.1, reduction="sum"),
            np.float32(expected),
            rtol=2e-6,
            err_msg=side.__name__,
        )


def test_left_out_classes_keep_zero_gradient_under_zero_mean_denominator() -> None:
    """'mean' whose only target has weight 0 is 0 / 0: NaN loss and NaN gradient on the kept
    classes (as torch), but a class left out by ``where`` still has gradient 0 (README: "zero
    gradient"; the function does not depend on it)."""
    z = np.array([[0.0, 1.0, 2.0]])
    for side, eps in itertools.product((fs, ref), (0.0, 0.1)):
        kw = dict(
            weight=np.array([1.0, 0.0, 1.0]),
            where=np.array([[True, True, False]]),
            label_smoothing=eps,
        )
        with np.errstate(all="ignore"):
            loss = side.cross_entropy(z, [1], **kw)
            grad = side.cross_entropy_backward(z, [1], **kw)
        assert np.isnan(loss), side.__name__
        assert np.all(np.isnan(grad[0, :2])), side.__name__
        assert grad[0, 2] == 0.0, f"{side.__name__} eps={eps}: left-out class gradient {grad[0, 2]}"


def test_bce_float32_mean_of_huge_losses() -> None:
    """Seven float32 logits x = float32(3e38) with target 0: each loss is softplus(x) = x, so the
    mean is x itself, finite (a float32 running sum overflows to inf)."""
    x = np.full(7, 3e38, dtype=np.float32)
    y = np.zeros(7, dtype=np.float32)
    for side in (fs, ref):
        loss = side.binary_cross_entropy_with_logits(x, y)
        assert loss == np.float32(3e38), f"{side.__name__}: {loss}"
        assert side.binary_cross_entropy_with_logits_with_grad(x, y)[0] == np.float32(3e38)


def test_subnormal_weight_smoothing_term_at_neginf() -> None:
    """Weights (1, 5e-324) with smoothing 0.1, class 1 at -inf: q_1 = 0.05 * 5e-324 is > 0 in
    exact arithmetic (it underflows to 0 in float64), and -log p_1 = +inf, so the loss is +inf:
    in a finite row [0, -inf] and in an all -inf row alike (never 0 from a dropped term, never
    NaN from 0 * inf). Low stakes (a subnormal weight), but the same guard as for an all -inf
    row (test_all_neginf_row_full_smoothing_sum)."""
    kw = dict(weight=np.array([1.0, 5e-324]), label_smoothing=0.1, reduction="none")
    for z in (np.array([[0.0, -np.inf]]), np.full((1, 2), -np.inf)):
        for side in (fs, ref):
            with np.errstate(all="ignore"):
                loss = side.cross_entropy(z, [0], **kw)
            np.testing.assert_array_equal(loss, [np.inf], err_msg=f"{side.__name__} z={z}")


@pytest.mark.parametrize("impl", [fs, ref], ids=["fast", "reference"])
def test_reduced_loss_beyond_the_float32_range_is_inf_without_a_warning(impl) -> None:
    """A float32 loss whose float64 total exceeds the float32 range is +inf (found with warnings
    as errors: the cast to float32 warned); per-element losses alike."""
    z = np.array([[3e38, 0.0]], dtype=np.float32)  # / T = 0.5: a logit gap of 6e38
    t = np.array([[0.0, 1.0]], dtype=np.float32)
    for reduction in ("mean", "sum", "none"):
        loss = impl.cross_entropy(z, t, temperature=0.5, reduction=reduction)
        assert np.all(np.isposinf(loss)) and np.asarray(loss).dtype == np.float32
    x = np.full(3, 3e38, dtype=np.float32)
    for reduction in ("mean", "sum", "none"):
        loss = impl.binary_cross_entropy_with_logits(
            x, np.zeros(3, np.float32), weight=np.float32(2.0), reduction=reduction
        )
        assert np.all(np.isposinf(loss)) and np.asarray(loss).dtype == np.float32


@pytest.mark.parametrize("impl", [fs, ref], ids=["fast", "reference"])
def test_softcap_of_logits_beyond_the_float32_range_without_a_warning(impl) -> None:
    """z / c beyond the float32 range (z = 3e38, c = 0.5) caps to u = c / T without a warning
    (the fast path's division warned): the loss and gradient of u = [c, 0, 0] / T."""
    z = np.array([[3e38, 0.0, 0.0]], dtype=np.float32)
    loss, grad = impl.cross_entropy_with_grad(z, np.array([1]), softcap=0.5, temperature=2.0)
    u = np.array([0.25, 0.0, 0.0])
    logp = u - np.log(np.exp(u).sum())
    np.testing.assert_allclose(loss, -logp[1], rtol=2e-6)
    # d/dz of c tanh(z / c) / T is 0 at z = 3e38 (saturated) and 1 / T at z = 0
    want = (np.exp(logp) - [0.0, 1.0, 0.0]) * [0.0, 0.5, 0.5]
    np.testing.assert_allclose(grad[0], want, rtol=2e-6, atol=1e-7)
