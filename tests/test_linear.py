"""linear_cross_entropy and linear_cross_entropy_with_grad, and the z-loss and softcap options.

Checked against:
- ``fastsoftmax.reference`` (the full logits materialized, the reference cross-entropy, the chain
  rule by matmuls) over option combinations, shapes, dtypes and layouts;
- PyTorch: ``F.linear_cross_entropy`` (reference and chunked paths) and autograd of
  ``F.cross_entropy(x @ W.T + b)``, with the z-loss and the softcap written in torch;
- central finite differences of our own loss (trusts no reference);
- itself with other chunk sizes (the stated bound on the dW rounding).
"""

from __future__ import annotations

import itertools
import re
from typing import Any

import numpy as np
import pytest
from conftest import assert_close
from test_bad_inputs import Case, assert_raises_alike

import fastsoftmax as fs
from fastsoftmax import reference as ref

# --------------------------------------------------------------------------- cases


def make_problem(
    batch: tuple[int, ...],
    features: int,
    classes: int,
    *,
    index: bool,
    seed: int,
    dtype: Any = np.float64,
    ignore_index: int = -100,
):
    """(x, W, b, target): every third row of an index target is ``ignore_index``; a probability
    target has class 0 exactly 0 in every other row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(batch + (features,)).astype(dtype)
    w = (rng.standard_normal((classes, features)) / np.sqrt(max(features, 1)) * 2).astype(dtype)
    b = rng.standard_normal(classes).astype(dtype)
    if index:
        t = rng.integers(0, classes, size=batch)
        t.reshape(-1)[1::3] = ignore_index
    else:
        e = np.exp(rng.standard_normal(batch + (classes,)) * 2)
        e.reshape(-1, classes)[::2, 0] = 0.0
        t = (e / e.sum(-1, keepdims=True)).astype(dtype)
    return x, w, b, t


OPTIONS = [
    dict(reduction=red, weight=wt, label_smoothing=ls, index=idx, bias=bias, ignore=ign)
    for red, wt, ls, idx, bias, ign in itertools.product(
        ("mean", "sum", "none"),
        (False, True),
        (0.0, 0.2),
        (True, False),
        (True, False),
        ("default", "custom"),
    )
    if idx or ign == "default"
]


def option_id(o: dict[str, Any]) -> str:
    return "-".join(
        [
            o["reduction"],
            "w" if o["weight"] else "now",
            f"ls{o['label_smoothing']:g}",
            "idx" if o["index"] else "prob",
            "b" if o["bias"] else "nob",
            o["ignore"],
        ]
    )


def call_args(o: dict[str, Any], batch, features, classes, seed, dtype=np.float64, **extra):
    """Positional and keyword arguments of a linear_cross_entropy call for option ``o``."""
    ignore_index = -100 if o["ignore"] == "default" else 1
    x, w, b, t = make_problem(
        batch,
        features,
        classes,
        index=o["index"],
        seed=seed,
        dtype=dtype,
        ignore_index=ignore_index,
    )
    kw: dict[str, Any] = dict(
        reduction=o["reduction"], label_smoothing=o["label_smoothing"], **extra
    )
    if o["ignore"] == "custom":
        kw["ignore_index"] = ignore_index
    if o["bias"]:
        kw["linear_bias"] = b
    if o["weight"]:
        kw["weight"] = np.random.default_rng(seed + 1).uniform(0.25, 2.0, classes)
    return (x, w, t), kw


def assert_results_close(actual, expected, rtol: float, msg: str = "") -> None:
    """Each of (loss, dx, dW, db) equal up to rtol times its largest magnitude."""
    assert len(actual) == len(expected)
    for name, a, e in zip(
        ("loss", "dx", "dW", "db")[: len(expected)], actual, expected, strict=True
    ):
        if e is None:
            assert a is None, f"{msg}: {name}"
            continue
        scale = float(np.max(np.abs(e))) if np.size(e) else 0.0
        assert_close(a, e, rtol=rtol, atol=rtol * scale, err_msg=f"{msg}: {name}")


# --------------------------------------------------------------------------- against the reference


@pytest.mark.parametrize("o", OPTIONS, ids=option_id)
def test_matches_reference(o) -> None:
    for batch, chunk in (((13,), 4), ((2, 5), None), ((0,), 3), ((), None)):
        if not o["index"] and batch == ():
            continue
        args, kw = call_args(o, batch, 6, 11, seed=len(batch), z_loss=0.01, chunk_size=chunk)
        msg = f"{option_id(o)} batch={batch}"
        expected = ref.linear_cross_entropy_with_grad(*args, **kw)
        assert_results_close(fs.linear_cross_entropy_with_grad(*args, **kw), expected, 1e-12, msg)
        assert_results_close((fs.linear_cross_entropy(*args, **kw),), expected[:1], 1e-12, msg)


@pytest.mark.parametrize("extra", [{}, {"softcap": 3.0}, {"z_loss": 1e-3, "temperature": 1.5}])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float32_stays_float32(dtype, extra) -> None:
    o = dict(
        reduction="mean", weight=True, label_smoothing=0.1, index=True, bias=True, ignore="default"
    )
    args, kw = call_args(o, (300,), 48, 700, seed=3, dtype=dtype, chunk_size=64, **extra)
    res = fs.linear_cross_entropy_with_grad(*args, **kw)
    assert [np.asarray(r).dtype for r in res] == [np.dtype(dtype)] * 4
    assert_results_close(
        res,
        ref.linear_cross_entropy_with_grad(*args, **kw),
        2e-5 if dtype == np.float32 else 1e-12,
        str(extra),
    )


def test_dtype_promotion_and_layouts() -> None:
    o = dict(
        reduction="sum", weight=False, label_smoothing=0.0, index=True, bias=True, ignore="default"
    )
    (x, w, t), kw = call_args(o, (9,), 5, 8, seed=4)
    expected = fs.linear_cross_entropy_with_grad(x, w, t, **kw)
    variants = {
        "x_fortran": (np.asfortranarray(x), w),
        "x_strided": (np.repeat(x, 2, axis=0)[::2], w),
        "w_transposed_view": (x, np.ascontiguousarray(w.T).T),
        "w_strided": (x, np.repeat(w, 2, axis=1)[:, ::2]),
    }
    for name, (xv, wv) in variants.items():
        assert_results_close(
            fs.linear_cross_entropy_with_grad(xv, wv, t, **kw), expected, 1e-13, name
        )
    ro = x.copy()
    ro.flags.writeable = False
    assert_results_close(fs.linear_cross_entropy_with_grad(ro, w, t, **kw), expected, 1e-13, "ro")
    # float32 with float64 computes in float64; float16 in float32 (float16 results when every
    # input is float16, else the promoted dtype); integers in float64
    mixed = fs.linear_cross_entropy_with_grad(x.astype(np.float32), w, t, **kw)
    assert {np.asarray(r).dtype for r in mixed} == {np.dtype(np.float64)}
    half = fs.linear_cross_entropy_with_grad(x.astype(np.float16), w.astype(np.float16), t)
    assert {np.asarray(r).dtype for r in half[:3]} == {np.dtype(np.float16)}
    ints = fs.linear_cross_entropy(
        np.ones((2, 3), dtype=np.int64), np.ones((4, 3), np.int8), np.array([0, 3])
    )
    assert ints.dtype == np.float64 and ints == pytest.approx(np.log(4))


HALF = np.dtype(np.float16)


@pytest.mark.parametrize("mod", [fs, ref], ids=["fast", "reference"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("index", [True, False])
def test_float16_in_float16_out(mod, reduction, index) -> None:
    """float16 x, linear_weight and linear_bias: loss, dx, dW and db are float16, computed in
    float32 and rounded once. dx and dW are exactly the float32 computation's rounded; the loss
    and db (accumulated in float64 by the kernel path) within 1 float16 ulp of it (float64 ->
    float16 in one rounding vs through float32)."""
    o = dict(
        reduction=reduction,
        weight=True,
        label_smoothing=0.1,
        index=index,
        bias=True,
        ignore="default",
    )
    (x, w, t), kw = call_args(
        o, (37,), 8, 50, seed=16, dtype=np.float16, chunk_size=16, z_loss=1e-3, softcap=6.0
    )
    kw["weight"] = kw["weight"].astype(np.float16)  # class weights do not set the result dtype
    res = mod.linear_cross_entropy_with_grad(x, w, t, **kw)
    assert [np.asarray(r).dtype for r in res] == [HALF] * 4
    loss = mod.linear_cross_entropy(x, w, t, **kw)
    if reduction == "none":
        assert isinstance(loss, np.ndarray) and loss.shape == (37,)
    else:
        assert type(loss) is np.float16 and type(res[0]) is np.float16
    np.testing.assert_array_equal(loss, res[0], strict=True)
    kw32 = dict(kw, linear_bias=kw["linear_bias"].astype(np.float32))
    want = mod.linear_cross_entropy_with_grad(x.astype(np.float32), w.astype(np.float32), t, **kw32)
    np.testing.assert_array_equal(res[1], want[1].astype(HALF), strict=True)
    np.testing.assert_array_equal(res[2], want[2].astype(HALF), strict=True)
    for i in (0, 3):  # the loss and db
        np.testing.assert_array_max_ulp(
            np.asarray(res[i]), np.asarray(want[i]).astype(HALF), maxulp=1
        )


def test_float16_fast_matches_reference() -> None:
    o = dict(
        reduction="mean", weight=False, label_smoothing=0.0, index=True, bias=True, ignore="default"
    )
    args, kw = call_args(o, (64,), 16, 200, seed=17, dtype=np.float16, chunk_size=24)
    got = fs.linear_cross_entropy_with_grad(*args, **kw)
    assert_results_close(got, ref.linear_cross_entropy_with_grad(*args, **kw), 4e-3, "float16")


@pytest.mark.parametrize("mod", [fs, ref], ids=["fast", "reference"])
def test_result_dtype_is_promoted_over_x_weight_and_bias(mod) -> None:
    """float16 results only when x, linear_weight and linear_bias are all float16; one float32
    (or float64, or integer) input among them gives the promoted compute dtype, as for the
    two-input JVP/VJPs."""
    x, w, b, t = make_problem((5,), 3, 4, index=True, seed=18, dtype=np.float16)
    f32, f64 = np.dtype(np.float32), np.dtype(np.float64)
    for xa, wa, ba, want in (
        (x, w, b, HALF),
        (x, w, None, HALF),
        (x, w, b.astype(np.float32), f32),
        (x.astype(np.float32), w, b, f32),
        (x, w.astype(np.float32), None, f32),
        (x, w, b.astype(f64), f64),
        (x, w.astype(np.int8), None, f64),
    ):
        res = mod.linear_cross_entropy_with_grad(xa, wa, t, linear_bias=ba)
        assert type(res[0]) is want.type
        assert [r.dtype for r in res[1:] if r is not None] == [want] * (2 if ba is None else 3)


@pytest.mark.parametrize("mod", [fs, ref], ids=["fast", "reference"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_zero_d_result_is_a_scalar(mod, dtype) -> None:
    """1-D x with reduction="none": the loss is 0-d, a NumPy scalar of the result dtype."""
    x, w, b, _ = make_problem((), 3, 4, index=True, seed=19, dtype=dtype)

    def loss_of_with_grad(*a, **k):
        return mod.linear_cross_entropy_with_grad(*a, **k)[0]

    for fn in (mod.linear_cross_entropy, loss_of_with_grad):
        loss = fn(x, w, np.array(2), linear_bias=b, reduction="none")
        assert type(loss) is np.dtype(dtype).type
        assert type(fn(x, w, np.array(2), linear_bias=b)) is np.dtype(dtype).type


def test_inputs_untouched() -> None:
    o = dict(
        reduction="mean", weight=True, label_smoothing=0.1, index=False, bias=True, ignore="default"
    )
    args, kw = call_args(o, (7,), 4, 6, seed=5, softcap=2.0, chunk_size=2)
    before = [a.copy() for a in args] + [kw["linear_bias"].copy(), kw["weight"].copy()]
    fs.linear_cross_entropy_with_grad(*args, **kw)
    for a, b in zip(list(args) + [kw["linear_bias"], kw["weight"]], before, strict=True):
        np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------- chunk sizes


@pytest.mark.parametrize("extra", [{}, {"softcap": 5.0, "z_loss": 1e-3}])
def test_chunk_size_changes_only_the_dw_rounding(extra) -> None:
    """The loss and dx do not depend on the chunk size beyond the rounding of the logits' matmul
    (which BLAS may block differently for another number of rows); dW is a sum over all N rows
    whose order changes with the chunks: any two orders are within 2 N u (|G|^T |X|)."""
    o = dict(
        reduction="mean", weight=False, label_smoothing=0.0, index=True, bias=True, ignore="default"
    )
    args, kw = call_args(o, (257,), 40, 900, seed=6, dtype=np.float32, **extra)
    x, w, t = args
    one = fs.linear_cross_entropy_with_grad(*args, **kw, chunk_size=257)
    g = ref.cross_entropy_backward(
        x.astype(np.float64) @ w.T.astype(np.float64) + kw["linear_bias"], t, **extra
    )
    u = np.finfo(np.float32).eps / 2
    bound = 2 * x.shape[0] * u * (np.abs(g).T @ np.abs(x.astype(np.float64)))
    for chunk in (1, 7, 64, 256, None):
        res = fs.linear_cross_entropy_with_grad(*args, **kw, chunk_size=chunk)
        assert_results_close(res[:2], one[:2], 1e-5, f"chunk {chunk}")
        assert np.all(np.abs(res[2].astype(np.float64) - one[2]) <= bound), f"chunk {chunk}"
        assert_results_close(res[3:], one[3:], 1e-5, f"chunk {chunk}")


def test_default_chunk_keeps_the_budget(monkeypatch) -> None:
    """With no chunk_size, each chunk's logits fit CHUNK_BYTES (counted at the matmul calls)."""
    import fastsoftmax.linear as lin

    monkeypatch.setattr(lin, "CHUNK_BYTES", 8 * 50 * 8)  # 8 rows of 50 float64 logits
    seen = []
    real = np.matmul

    def spy(a, b, out=None):
        if out is not None and out.shape[-1] == 50 and a.shape[-1] == 4:
            seen.append(out.shape[0])
        return real(a, b, out=out)

    monkeypatch.setattr(lin.np, "matmul", spy)
    x, w, b, t = make_problem((30,), 4, 50, index=True, seed=7)
    fs.linear_cross_entropy(x, w, t, linear_bias=b)
    monkeypatch.undo()
    assert seen == [8, 8, 8, 6]


# --------------------------------------------------------------------------- against torch


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(old)


def torch_linear_ce(torch, x, w, t, kw: dict[str, Any]):
    """(loss, dx, dW, db) by torch autograd of cross_entropy(u), u = x @ W.T + b, optionally
    u = c tanh(u / c), u / T, plus z_loss * logsumexp(u)^2 on the rows that count, float64."""
    F = torch.nn.functional
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    bias = kw.get("linear_bias")
    bt = None if bias is None else torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    u = F.linear(xt, wt, bt)
    c = kw.get("softcap")
    if c is not None:
        u = c * torch.tanh(u / c)
    u = u / kw.get("temperature", 1.0)
    classes = w.shape[0]
    u2 = u.reshape(-1, classes)
    index = t.dtype.kind in "iu"
    tt = torch.tensor(t.reshape(-1) if index else t.reshape(-1, classes))
    ignore = kw.get("ignore_index", -100)
    weight = kw.get("weight")
    wtt = None if weight is None else torch.tensor(weight, dtype=torch.float64)
    rows = F.cross_entropy(
        u2,
        tt,
        weight=wtt,
        reduction="none",
        ignore_index=ignore,
        label_smoothing=kw.get("label_smoothing", 0.0),
    )
    live = (tt != ignore) if index else torch.ones(u2.shape[0], dtype=torch.bool)
    rows = rows + kw.get("z_loss", 0.0) * torch.logsumexp(u2, -1) ** 2 * live
    red = kw.get("reduction", "mean")
    if red == "none":
        loss = rows.reshape(t.shape if index else t.shape[:-1])
    elif red == "sum":
        loss = rows.sum()
    else:
        denom = (wtt[tt[live]].sum() if wtt is not None else live.sum()) if index else u2.shape[0]
        loss = rows.sum() / denom
    loss.sum().backward()
    return (
        loss.detach().numpy(),
        xt.grad.numpy(),
        wt.grad.numpy(),
        None if bt is None else bt.grad.numpy(),
    )


TORCH_OPTIONS = [o for o in OPTIONS if o["ignore"] == "default"]


@pytest.mark.parametrize(
    "extra",
    [{}, {"z_loss": 0.05, "softcap": 2.5, "temperature": 0.7}],
    ids=["plain", "zloss-softcap-T"],
)
@pytest.mark.parametrize("o", TORCH_OPTIONS, ids=option_id)
def test_matches_torch_autograd(torch, o, extra) -> None:
    for batch in ((10,), (2, 3)):
        args, kw = call_args(o, batch, 5, 9, seed=8, chunk_size=4, **extra)
        expected = torch_linear_ce(torch, *args, kw)
        got = fs.linear_cross_entropy_with_grad(*args, **kw)
        assert_results_close(
            got,
            tuple(np.asarray(e, dtype=np.float64) if e is not None else None for e in expected),
            1e-10,
            f"{option_id(o)} {batch}",
        )


@pytest.mark.parametrize("options", [False, True], ids=["reference_path", "chunked_path"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_torch_linear_cross_entropy(torch, reduction, options) -> None:
    """torch.nn.functional.linear_cross_entropy itself (its chunked path: index targets, no
    label smoothing), float64, with class weights, a bias and ignored rows."""
    F = torch.nn.functional
    x, w, b, t = make_problem((40,), 16, 30, index=True, seed=9)
    weight = np.random.default_rng(0).uniform(0.5, 2.0, 30)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=8) if options else None
    loss = F.linear_cross_entropy(
        xt,
        wt,
        torch.tensor(t),
        linear_bias=bt,
        weight=torch.tensor(weight),
        reduction=reduction,
        options=opts,
    )
    loss.sum().backward()
    got = fs.linear_cross_entropy_with_grad(
        x, w, t, linear_bias=b, weight=weight, reduction=reduction, chunk_size=8
    )
    assert_results_close(
        got,
        (loss.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), bt.grad.numpy()),
        1e-10,
        reduction,
    )


@pytest.mark.parametrize("index", [True, False], ids=["index", "prob"])
@pytest.mark.parametrize("mod", [fs, ref], ids=["fast", "reference"])
def test_ignore_index_none_is_torchs_default(mod, index) -> None:
    """``ignore_index=None`` (``F.linear_cross_entropy``'s default) means -100: rows whose target
    is -100 are ignored, and every result equals the default call's."""
    x, w, b, t = make_problem((12,), 5, 7, index=index, seed=4)
    for fn in (mod.linear_cross_entropy, mod.linear_cross_entropy_with_grad):
        got = fn(x, w, t, linear_bias=b, ignore_index=None, chunk_size=5)
        expected = fn(x, w, t, linear_bias=b, chunk_size=5)
        got, expected = (r if isinstance(r, tuple) else (r,) for r in (got, expected))
        for g, e in zip(got, expected, strict=True):
            assert np.array_equal(g, e)
    if index:
        assert fs.linear_cross_entropy(x, w, t, ignore_index=None, reduction="none")[1] == 0.0


@pytest.mark.parametrize("options", [False, True], ids=["reference_path", "chunked_path"])
def test_ignore_index_none_matches_torch(torch, options) -> None:
    F = torch.nn.functional
    x, w, b, t = make_problem((30,), 6, 11, index=True, seed=5)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=8) if options else None
    loss = F.linear_cross_entropy(xt, wt, torch.tensor(t), ignore_index=None, options=opts)
    loss.backward()
    got = fs.linear_cross_entropy_with_grad(x, w, t, ignore_index=None, chunk_size=8)
    assert_results_close(
        got, (loss.detach().numpy(), xt.grad.numpy(), wt.grad.numpy(), None), 1e-10, "none"
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_float16_matches_torch_linear_cross_entropy(torch, reduction) -> None:
    """float16 x, W and b against torch's float16 F.linear_cross_entropy + backward on CPU: the
    same result dtypes, values within float16 rounding (torch's CPU matmul accumulates
    differently)."""
    F = torch.nn.functional
    x, w, b, t = make_problem((40,), 16, 30, index=True, seed=20, dtype=np.float16)
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    loss = F.linear_cross_entropy(xt, wt, torch.tensor(t), linear_bias=bt, reduction=reduction)
    loss.sum().backward()
    got = fs.linear_cross_entropy_with_grad(
        x, w, t, linear_bias=b, reduction=reduction, chunk_size=8
    )
    want = (loss.detach(), xt.grad, wt.grad, bt.grad)
    assert [str(e.dtype) for e in want] == ["torch.float16"] * 4
    assert [np.asarray(r).dtype for r in got] == [HALF] * 4
    for name, a, e in zip(("loss", "dx", "dW", "db"), got, want, strict=True):
        e = e.double().numpy()
        scale = float(np.max(np.abs(e)))
        np.testing.assert_allclose(
            np.asarray(a, np.float64), e, rtol=4e-3, atol=4e-3 * scale, err_msg=name
        )


@pytest.mark.parametrize(
    "extra",
    [{"z_loss": 0.1}, {"softcap": 1.5}, {"z_loss": 0.02, "softcap": 4.0, "label_smoothing": 0.1}],
)
@pytest.mark.parametrize("index", [True, False])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_z_loss_softcap_match_torch(torch, extra, index, reduction) -> None:
    """The plain cross_entropy family with z_loss / softcap against torch autograd: the logits are
    x with W = I and no bias."""
    rng = np.random.default_rng(10)
    z = rng.standard_normal((12, 7)) * 4
    _, _, _, t = make_problem((12,), 7, 7, index=index, seed=11)
    weight = rng.uniform(0.5, 2.0, 7)
    kw = dict(extra, reduction=reduction, weight=weight)
    loss_t, grad_t, _, _ = torch_linear_ce(torch, z, np.eye(7), t, kw)
    gout = rng.standard_normal(12) if reduction == "none" else 0.7
    assert_close(fs.cross_entropy(z, t, **kw), loss_t, rtol=1e-12, atol=1e-12)
    loss, grad = fs.cross_entropy_with_grad(z, t, **kw)
    assert_close(loss, loss_t, rtol=1e-12, atol=1e-12)
    assert_close(grad, grad_t, rtol=1e-10, atol=1e-14)
    backward = fs.cross_entropy_backward(z, t, grad_output=gout, **kw)
    if reduction != "none":
        assert_close(backward, 0.7 * grad_t, rtol=1e-10, atol=1e-14)
    else:
        zt = torch.tensor(z, requires_grad=True)
        F = torch.nn.functional
        u = zt if "softcap" not in extra else extra["softcap"] * torch.tanh(zt / extra["softcap"])
        rows = F.cross_entropy(
            u,
            torch.tensor(t),
            weight=torch.tensor(weight),
            reduction="none",
            label_smoothing=extra.get("label_smoothing", 0.0),
        )
        live = torch.tensor(t != -100) if index else torch.ones(12, dtype=torch.bool)
        rows = rows + extra.get("z_loss", 0.0) * torch.logsumexp(u, -1) ** 2 * live
        rows.backward(torch.tensor(gout))
        assert_close(backward, zt.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert_close(
        ref.cross_entropy_backward(z, t, grad_output=gout, **kw), backward, rtol=1e-12, atol=1e-15
    )


@pytest.mark.parametrize("index", [True, False])
def test_softcap_with_where(index) -> None:
    """Left-out classes get gradient 0 with a softcap too, even where their logit is NaN or inf."""
    z = np.random.default_rng(14).standard_normal((4, 6)) * 5
    z[0, 1], z[1, 2], z[2, 3] = np.nan, np.inf, -np.inf
    mask = np.isfinite(z)
    _, _, _, t = make_problem((4,), 6, 6, index=index, seed=15)
    if index:
        t = np.array([0, 1, 2, 3])
    kw = dict(softcap=3.0, z_loss=0.01, where=mask, reduction="sum")
    loss, grad = fs.cross_entropy_with_grad(z, t, **kw)
    expected = ref.cross_entropy_with_grad(z, t, **kw)
    assert_close(loss, expected[0], rtol=1e-12)
    assert_close(grad, expected[1], rtol=1e-12, atol=1e-15)
    assert np.all(grad[~mask] == 0)


# --------------------------------------------------------------------------- finite differences


def central_differences(f, a: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.empty_like(a)
    for i in np.ndindex(a.shape):
        keep = a[i]
        a[i] = keep + h
        up = f()
        a[i] = keep - h
        down = f()
        a[i] = keep
        grad[i] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"z_loss": 0.2},
        {"softcap": 1.2},
        {"z_loss": 0.05, "softcap": 2.0, "temperature": 1.7, "label_smoothing": 0.3},
    ],
)
@pytest.mark.parametrize("index", [True, False])
def test_finite_differences(extra, index) -> None:
    x, w, b, t = make_problem((6,), 3, 5, index=index, seed=12)
    kw = dict(
        extra,
        linear_bias=b,
        weight=np.array([1.0, 0.5, 2.0, 1.0, 1.5]),
        chunk_size=4,
        reduction="none",
    )

    def f():
        return float(np.sum(fs.linear_cross_entropy(x, w, t, **kw)))

    _, dx, dw, db = fs.linear_cross_entropy_with_grad(x, w, t, **kw)
    for name, arr, grad in (("dx", x, dx), ("dW", w, dw), ("db", b, db)):
        np.testing.assert_allclose(
            grad, central_differences(f, arr), rtol=1e-6, atol=1e-7, err_msg=f"{extra} {name}"
        )


# --------------------------------------------------------------------------- bad inputs

LINEAR = ["linear_cross_entropy", "linear_cross_entropy_with_grad"]


def _valid() -> tuple[list[Any], dict[str, Any]]:
    x, w, b, t = make_problem((3,), 2, 4, index=True, seed=13)
    return [x, w, t], {"linear_bias": b}


def _build(**changes):
    def build():
        args, kw = _valid()
        for key, value in changes.items():
            value = value() if callable(value) else value
            if isinstance(key, str) and key.startswith("arg"):
                args[int(key[3:])] = value
            else:
                kw[key] = value
        return args, kw

    return build


BAD = {
    "x_None": (_build(arg0=None), TypeError, "x must be an array"),
    "x_complex": (_build(arg0=lambda: np.ones((3, 2), complex)), TypeError, "complex"),
    "x_scalar": (_build(arg0=1.0), ValueError, "at least 1 dimension"),
    "w_None": (_build(arg1=None), TypeError, "linear_weight must be an array"),
    "w_1d": (_build(arg1=lambda: np.ones(2)), ValueError, "linear_weight has shape"),
    "w_features": (_build(arg1=lambda: np.ones((4, 3))), ValueError, re.escape("expected (C, 2)")),
    "w_transposed": (_build(arg1=lambda: np.ones((2, 4))), ValueError, "linear_weight has shape"),
    "w_no_classes": (
        _build(arg1=lambda: np.ones((0, 2)), linear_bias=None),
        ValueError,
        "length 0",
    ),
    "bias_shape": (_build(linear_bias=lambda: np.ones(3)), ValueError, "linear_bias has shape"),
    "bias_2d": (_build(linear_bias=lambda: np.ones((1, 4))), ValueError, "linear_bias has shape"),
    "bias_str": (_build(linear_bias=lambda: np.array(["a"] * 4)), TypeError, "dtype"),
    "target_range": (_build(arg2=lambda: np.array([0, 4, 1])), ValueError, "out of range"),
    "target_shape": (_build(arg2=lambda: np.array([0, 1])), ValueError, "class-index target"),
    "prob_target_shape": (
        _build(arg2=lambda: np.ones((3, 5)) / 5),
        ValueError,
        "probability target",
    ),
    "weight_shape": (_build(weight=lambda: np.ones(3)), ValueError, "weight has shape"),
    "weight_negative": (_build(weight=lambda: -np.ones(4)), ValueError, "negative"),
    "reduction": (_build(reduction="avg"), ValueError, "reduction"),
    "label_smoothing": (_build(label_smoothing=2.0), ValueError, "label_smoothing"),
    "temperature": (_build(temperature=0.0), ValueError, "temperature"),
    "ignore_index": (_build(ignore_index=1.5), TypeError, "ignore_index"),
    "z_loss_negative": (_build(z_loss=-0.1), ValueError, "z_loss"),
    "z_loss_nan": (_build(z_loss=float("nan")), ValueError, "z_loss"),
    "z_loss_str": (_build(z_loss="0.1"), TypeError, "z_loss"),
    "softcap_0": (_build(softcap=0.0), ValueError, "softcap"),
    "softcap_inf": (_build(softcap=float("inf")), ValueError, "softcap"),
    "softcap_bool": (_build(softcap=True), TypeError, "softcap"),
    "chunk_0": (_build(chunk_size=0), ValueError, "chunk_size"),
    "chunk_float": (_build(chunk_size=2.0), TypeError, "chunk_size"),
    "chunk_bool": (_build(chunk_size=True), TypeError, "chunk_size"),
}
CASES = [
    Case(f"{fn}-{name}", fn, build, exc, match)
    for fn in LINEAR
    for name, (build, exc, match) in BAD.items()
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input_raises_cleanly(c: Case) -> None:
    assert_raises_alike(c)
