"""The LM-head benchmark (``bench --lm-head``, ``fastsoftmax.bench.linear``): every implementation
computes the same loss and gradients, the worker reports time and memory, the table and the
command-line shapes."""

from __future__ import annotations

import numpy as np
import pytest

from fastsoftmax import __main__ as cli
from fastsoftmax import reference as ref
from fastsoftmax.bench import linear as bl


@pytest.mark.parametrize("impl", bl.IMPLS)
def test_every_implementation_computes_the_same(impl) -> None:
    if not bl.available(impl):
        pytest.skip(f"{impl} not available")
    x, w, y = bl._inputs(40, 8, 300)
    loss, dx, dw = bl._call(impl, x, w, y)()
    expected = ref.linear_cross_entropy_with_grad(x, w, y)
    np.testing.assert_allclose(float(loss), expected[0], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(dx), expected[1], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(dw), expected[2], rtol=1e-4, atol=1e-7)


def test_worker_reports_time_and_memory() -> None:
    """A 64 x 8 x 40000 problem: the unfused path holds 64 x 40000 float32 logits (10 MB)."""
    res = bl.worker("unfused", 64, 8, 40000, repeats=2, threads=1)
    assert res["repeats"] == 2 and 0 < res["min"] <= res["median"]
    assert res["peak_extra_bytes"] >= res["logits_bytes"]


def test_format_table() -> None:
    fake = [
        {
            "impl": impl,
            "shape": [4, 2, 8],
            "median": t,
            "min": t,
            "repeats": 1,
            "peak_extra_bytes": m,
            "peak_reset": True,
            "logits_bytes": 128,
            "dw_bytes": 64,
            "dx_bytes": 32,
        }
        for impl, t, m in (("fastsoftmax", 1.0, 2**20), ("torch", 3.0, 2**22))
    ]
    fake.append({"impl": "unfused", "shape": [4, 2, 8], "error": "boom"})
    table = bl.format_table(fake)
    assert "| 4x2x8 | torch | 3.000 s | 3.000 s | 4 | 3.00 | 4.00 |" in table
    assert "error: boom" in table


def test_lm_shapes_option() -> None:
    args = cli.build_parser().parse_args(["bench", "--lm-shapes", "8x4x100,16x2x50"])
    assert args.lm_shapes == [(8, 4, 100), (16, 2, 50)]
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["bench", "--lm-shapes", "8x4"])
