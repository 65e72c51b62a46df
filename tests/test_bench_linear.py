"""The LM-head benchmark (``bench --lm-head``, ``fastsoftmax.bench.linear``): every implementation
computes the same loss and gradients, the worker reports time and memory, the table and the
command-line shapes."""

from __future__ import annotations

import numpy as np
import pytest

from fastsoftmax import __main__ as cli
from fastsoftmax import reference as ref
from fastsoftmax.bench import linear as bl


@pytest.mark.parametrize("impl", [i for i in bl.IMPLS if i not in bl.YARDSTICKS])
def test_every_implementation_computes_the_same(impl) -> None:
    if not bl.available(impl):
        pytest.skip(f"{impl} not available")
    x, w, y = bl._inputs(40, 8, 300)
    loss, dx, dw = bl._call(impl, x, w, y)()
    expected = ref.linear_cross_entropy_with_grad(x, w, y)
    np.testing.assert_allclose(float(loss), expected[0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), expected[1], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(dw), expected[2], rtol=1e-4, atol=1e-7)


def test_matmuls_yardstick_makes_the_three_products() -> None:
    x, w, y = bl._inputs(40, 8, 300)
    loss, zw, ztx = bl._call("matmuls", x, w, y)()
    z = x.astype(np.float64) @ w.T.astype(np.float64)
    assert loss is None
    np.testing.assert_allclose(zw, z @ w, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ztx, z.T @ x, rtol=1e-4, atol=1e-5)


def test_big_chunk_variant_takes_fewer_chunks(monkeypatch) -> None:
    """``fastsoftmax_chunk256`` passes the rows of BIG_CHUNK_BYTES of logits as chunk_size."""
    import fastsoftmax as fs

    seen = []
    real = fs.linear_cross_entropy_with_grad

    def spy(*args, **kwargs):
        seen.append(kwargs["chunk_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(fs, "linear_cross_entropy_with_grad", spy)
    monkeypatch.setattr(bl, "BIG_CHUNK_BYTES", 300 * 4 * 7)
    x, w, y = bl._inputs(40, 8, 300)
    bl._call("fastsoftmax_chunk256", x, w, y)()
    bl._call("fastsoftmax", x, w, y)()
    assert seen == [7, None]


def test_worker_reports_time_and_memory() -> None:
    """A 64 x 8 x 40000 problem: the unfused path holds 64 x 40000 float32 logits (10 MB) in
    every call; the first call is not timed. In a fresh process, as the bench runs it (in this
    one, memory freed by earlier tests may be reused without the RSS growing)."""
    res = bl.measure("unfused", (64, 8, 40000), repeats=2, threads=1)
    assert res["repeats"] == len(res["times"]) == 2 and 0 < res["min"] <= res["median"]
    assert res["peak_extra_bytes"] >= res["logits_bytes"]
    assert res["peak_later_bytes"] >= res["logits_bytes"]


def _record(impl, times, peak=2**20, later=2**20):
    return {
        "impl": impl,
        "shape": [4, 2, 8],
        "times": times,
        "median": float(np.median(times)),
        "min": min(times),
        "repeats": len(times),
        "peak_extra_bytes": peak,
        "peak_later_bytes": later,
        "peak_reset": True,
        "logits_bytes": 128,
        "dw_bytes": 64,
        "dx_bytes": 32,
    }


def test_rounds_alternate_and_merge(monkeypatch) -> None:
    """Every round runs each implementation once, reversed every other round; the merged record
    holds all timed calls, the median peaks and the per-round ratios to fastsoftmax."""
    order = []
    speed = {"fastsoftmax": [1.0, 2.0, 1.0], "unfused": [2.0, 3.0, 4.0]}

    def fake_measure(impl, shape, repeats, threads):
        k = sum(1 for i in order if i == impl)
        order.append(impl)
        return _record(impl, [speed[impl][k]], peak=(k + 1) * 2**20, later=2**20)

    monkeypatch.setattr(bl, "measure", fake_measure)
    res = bl.run([(4, 2, 8)], repeats=1, impls=("fastsoftmax", "unfused"), rounds=3)
    assert order == ["fastsoftmax", "unfused", "unfused", "fastsoftmax", "fastsoftmax", "unfused"]
    fs_rec, unf = res
    assert unf["times"] == [2.0, 3.0, 4.0] and unf["rounds"] == 3 and unf["median"] == 3.0
    assert unf["peak_extra_bytes"] == 2 * 2**20
    assert unf["time_ratio"] == [2.0, 1.5, 4.0]
    assert fs_rec["time_ratio"] == [1.0, 1.0, 1.0]


def test_merge_keeps_an_error() -> None:
    err = {"impl": "torch", "shape": [4, 2, 8], "error": "boom"}
    assert bl._merge([_record("torch", [1.0]), err], None) is err


def test_format_table() -> None:
    ours = _record("fastsoftmax", [1.0, 1.0], later=2**20)
    ours.update(rounds=2, time_ratio=[1.0, 1.0, 1.0])
    torch_rec = _record("torch", [3.0, 2.5], peak=5 * 2**20, later=2**22)
    torch_rec.update(rounds=2, time_ratio=[2.75, 2.5, 3.0])
    fake = [ours, torch_rec, {"impl": "unfused", "shape": [4, 2, 8], "error": "boom"}]
    table = bl.format_table(fake)
    assert "| 4x2x8 | torch | 2.750 s | 2.500 s | 2.75 (2.50-3.00) | 5 | 4 | 4.00 |" in table
    assert "error: boom" in table
    ours["peak_later_bytes"] = 0  # a tiny problem whose later call grew no memory: no ratio
    assert "| 4x2x8 | torch | 2.750 s | 2.500 s | 2.75 (2.50-3.00) | 5 | 4 | - |" in (
        bl.format_table(fake)
    )


def test_lm_shapes_option() -> None:
    args = cli.build_parser().parse_args(["bench", "--lm-shapes", "8x4x100,16x2x50"])
    assert args.lm_shapes == [(8, 4, 100), (16, 2, 50)]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "--lm-shapes", "8x4"])
