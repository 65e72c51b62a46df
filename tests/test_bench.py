"""The benchmark engine (fastsoftmax._bench) and ``python -m fastsoftmax bench`` on tiny grids.

Timings are never asserted (too noisy); what is checked: the grid, the byte counts, that every
implementation timed computes the same thing as the reference, the derived numbers (GB/s, % of
copy, speedups) from the raw times, the table, the JSON and the command line.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from fastsoftmax import _bench as b
from fastsoftmax.__main__ import main

TINY = b.Settings(
    "test", min_time=0.0, min_repeats=1, max_repeats=1, sample_time=0.0, reference_max_elements=None
)


# ------------------------------------------------------------------------------------- the grid
def test_grid_is_every_op_dtype_for_each_shape_shape_major():
    cases = b.grid()
    assert len({c.id for c in cases}) == len(cases)
    assert {(c.op, c.shape, c.dtype) for c in cases} == {
        (op, shape, dtype) for op in b.OPS for shape in b.SHAPES for dtype in b.DTYPES
    }
    # shape-major in the order given: each shape's cases are contiguous, so its inputs are made once
    assert list(dict.fromkeys(c.shape for c in cases)) == list(b.SHAPES)
    per_shape = len(b.OPS) * len(b.DTYPES)
    shapes = [c.shape for c in cases]
    assert all(
        shapes.index(s) + per_shape == len(shapes) - shapes[::-1].index(s) for s in set(shapes)
    )
    assert cases[0].id == f"{b.OPS[0]}|{b.SHAPES[0][0]}x{b.SHAPES[0][1]}|{b.DTYPES[0]}"
    assert all(c.big == (c.shape[0] * c.shape[1] >= b.BIG_ELEMENTS) for c in cases)
    # a selection keeps the order it is given in, still shape-major
    sub = b.grid(ops=["log_softmax", "softmax"], shapes=[(4, 10), (3, 5)], dtypes=["float64"])
    assert [c.id for c in sub] == [
        "log_softmax|4x10|float64",
        "softmax|4x10|float64",
        "log_softmax|3x5|float64",
        "softmax|3x5|float64",
    ]


def test_grid_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown op 'softmx'"):
        b.grid(ops=["softmx"])
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        b.grid(dtypes=["float16"])
    with pytest.raises(ValueError, match="rows, classes"):
        b.grid(shapes=[(0, 3)])


@pytest.mark.parametrize(
    ("text", "shape"), [("64x10", (64, 10)), ("4096X4096", (4096, 4096)), ("3×5", (3, 5))]
)
def test_parse_shape(text, shape):
    assert b.parse_shape(text) == shape


@pytest.mark.parametrize("text", ["64", "64x", "x10", "0x10", "2x3x4", "ax3", "-1x3"])
def test_parse_shape_rejects(text):
    with pytest.raises(ValueError, match="shape"):
        b.parse_shape(text)


def test_op_bytes_counts_inputs_read_and_result_written():
    # softmax: x (rows*C) read + out written; float32 = 4 bytes
    assert b.op_bytes(b.Case("softmax", (64, 10), "float32")) == 2 * 640 * 4
    assert b.op_bytes(b.Case("log_softmax", (64, 10), "float64")) == 2 * 640 * 8
    # JVP: p and v read, result written
    assert b.op_bytes(b.Case("softmax_jvp", (3, 7), "float64")) == 3 * 21 * 8
    # cross-entropy: logits + int64 targets read, gradient written
    for op in ("cross_entropy_with_grad", "cross_entropy_backward"):
        assert b.op_bytes(b.Case(op, (3, 7), "float32")) == 2 * 21 * 4 + 3 * 8


def test_inputs_are_fixed_seed_and_of_the_case():
    case = b.Case("cross_entropy_with_grad", (5, 7), "float32")
    first = b.make_inputs(case)
    b.clear_inputs()
    again = b.make_inputs(case)
    assert first["x"].dtype == np.float32 and first["x"].shape == (5, 7)
    assert first["y"].dtype == np.int64 and first["y"].shape == (5,)
    assert np.all((first["y"] >= 0) & (first["y"] < 7))
    np.testing.assert_array_equal(first["x"], again["x"])
    np.testing.assert_array_equal(first["y"], again["y"])
    jvp = b.make_inputs(b.Case("softmax_jvp", (5, 7), "float64"))
    np.testing.assert_allclose(jvp["p"].sum(-1), 1.0, rtol=1e-12)
    assert jvp["v"].shape == (5, 7) and jvp["v"].dtype == np.float64
    b.clear_inputs()


# -------------------------------------------------------------------- what the bench times
def _to_numpy(value):
    if hasattr(value, "detach"):
        return value.detach().numpy()
    return np.asarray(value)


def _expected(case, inputs):
    if case.op == "softmax_jvp":
        p, v = inputs["p"].astype(np.float64), inputs["v"].astype(np.float64)
        return p * (v - (p * v).sum(-1, keepdims=True))  # J v with J = diag(p) - p p^T
    x = inputs["x"].astype(np.float64)
    lse = np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) + x.max(
        -1, keepdims=True
    )
    if case.op == "softmax":
        return np.exp(x - lse)
    if case.op == "log_softmax":
        return x - lse
    rows = np.arange(x.shape[0])
    grad = np.exp(x - lse)
    grad[rows, inputs["y"]] -= 1.0
    grad /= x.shape[0]
    loss = -(x - lse)[rows, inputs["y"]].mean()
    return (loss, grad) if case.op == "cross_entropy_with_grad" else grad


@pytest.mark.parametrize("op", b.OPS)
@pytest.mark.parametrize("dtype", b.DTYPES)
def test_every_implementation_computes_the_op(op, dtype):
    """Each call the bench times gives the op's value (so no baseline times something else)."""
    case = b.Case(op, (6, 300), dtype)
    inputs = b.make_inputs(case)
    expected = _expected(case, inputs)
    rtol = 2e-4 if dtype == "float32" else 1e-9
    impls = b.implementations(case, inputs)
    assert set(impls) == set(b.OP_IMPLS[op])
    for name, fn in impls.items():
        if isinstance(fn, str):
            assert name in ("scipy", "torch", "torch_aten") and fn == "not installed"
            continue
        got = fn()
        if op == "cross_entropy_with_grad":
            loss, grad = got
            np.testing.assert_allclose(float(_to_numpy(loss)), expected[0], rtol=rtol, err_msg=name)
            got, want = grad, expected[1]
        else:
            want = expected
        got = _to_numpy(got)
        assert got.dtype == np.dtype(dtype), name
        np.testing.assert_allclose(
            got, want, rtol=rtol, atol=rtol * np.abs(want).max(), err_msg=name
        )
    b.clear_inputs()


def test_reference_status():
    assert b.reference_status(b.Case("softmax_jvp", (64, 10), "float32")) is None
    assert b.reference_status(b.Case("softmax_jvp", (1024, 1000), "float32")).startswith("n/a")
    assert b.reference_status(b.Case("softmax_jvp", (2, 2000), "float32")).startswith("n/a")
    assert b.reference_status(b.Case("softmax", (4096, 4096), "float32")) is None
    assert b.reference_status(b.Case("softmax", (4096, 4096), "float32"), b.QUICK).startswith(
        "skipped"
    )
    assert b.reference_status(b.Case("softmax", (4096, 4096), "float32"), b.FULL) is None
    case = b.Case("softmax_jvp", (8192, 128), "float64")
    assert isinstance(b.implementations(case, b.make_inputs(case))["reference"], str)
    b.clear_inputs()


def test_measure_counts_calls():
    calls = []
    settings = b.Settings(
        "t",
        min_time=0.0,
        min_repeats=3,
        max_repeats=3,
        sample_time=0.0,
        reference_max_elements=None,
    )
    timing = b.measure(lambda: calls.append(1), settings)
    assert timing.repeats == 3 and timing.number == 1
    assert len(calls) == 1 + 3  # warm-up + samples
    assert 0 < timing.min <= timing.median


def test_measure_batches_short_calls():
    calls = []
    settings = b.Settings(
        "t",
        min_time=0.0,
        min_repeats=2,
        max_repeats=2,
        sample_time=1e-3,
        reference_max_elements=None,
    )
    timing = b.measure(lambda: calls.append(1), settings)
    assert timing.number > 1 and timing.repeats == 2
    assert len(calls) == 2 + 2 * timing.number  # warm-up, calibration, 2 samples of `number`


# -------------------------------------------------------------------------- run and report
@pytest.fixture(scope="module")
def tiny_results():
    cases = b.grid(ops=["softmax", "cross_entropy_with_grad"], shapes=[(4, 10)], dtypes=["float32"])
    return b.run(cases, TINY)


def test_run_derives_numbers_from_raw_times(tiny_results):
    assert [r["id"] for r in tiny_results] == [
        "softmax|4x10|float32",
        "cross_entropy_with_grad|4x10|float32",
    ]
    for r in tiny_results:
        impls = r["impls"]
        assert impls["fastsoftmax"]["status"] == "ok" and impls["fastsoftmax"]["repeats"] == 1
        assert r["bytes"] == b.op_bytes(b.Case(r["op"], tuple(r["shape"]), r["dtype"]))
        assert r["copyto"]["bytes"] == 2 * 40 * 4
        assert math.isclose(r["copyto"]["gbps"], r["copyto"]["bytes"] / r["copyto"]["median"] / 1e9)
        assert r["gbps_from"] == "fastsoftmax_out"
        assert math.isclose(r["gbps"], r["bytes"] / impls["fastsoftmax_out"]["median"] / 1e9)
        assert math.isclose(r["pct_copyto"], 100 * r["gbps"] / r["copyto"]["gbps"])
        for name, ratio in r["speedup"].items():
            assert math.isclose(ratio, impls[name]["median"] / impls["fastsoftmax"]["median"])
        assert "reference" in r["speedup"]


def test_statistic_min_derives_from_min_times():
    cases = b.grid(ops=["log_softmax"], shapes=[(3, 5)], dtypes=["float32"])
    settings = b.Settings(
        "t",
        min_time=0.0,
        min_repeats=3,
        max_repeats=3,
        sample_time=0.0,
        reference_max_elements=None,
    )
    (r,) = b.run(
        cases, settings, impls=["fastsoftmax", "fastsoftmax_out", "reference"], statistic="min"
    )
    impls = r["impls"]
    assert r["statistic"] == "min"
    assert math.isclose(r["gbps"], r["bytes"] / impls["fastsoftmax_out"]["min"] / 1e9)
    assert math.isclose(
        r["speedup"]["reference"], impls["reference"]["min"] / impls["fastsoftmax"]["min"]
    )
    assert "Times are the min per call" in b.format_tables([r])
    with pytest.raises(ValueError, match="statistic"):
        b.run(cases, settings, statistic="mean")


def test_run_restricts_implementations():
    cases = b.grid(ops=["softmax_jvp"], shapes=[(3, 5)], dtypes=["float64"])
    (r,) = b.run(cases, TINY, impls=["fastsoftmax", "reference"])
    assert set(r["impls"]) == {"fastsoftmax", "reference"}
    assert r["gbps_from"] == "fastsoftmax"
    assert set(r["speedup"]) == {"reference"}
    with pytest.raises(ValueError, match="unknown implementation"):
        b.run(cases, TINY, impls=["numpy"])


def test_without_torch_and_scipy(monkeypatch):
    """Optional baselines that are not installed are reported, not timed, and the tables still work."""
    monkeypatch.setattr(b, "torch_module", lambda: None)
    monkeypatch.setattr(b, "_scipy_special", lambda: None)
    cases = b.grid(ops=["softmax", "cross_entropy_backward"], shapes=[(3, 5)], dtypes=["float64"])
    results = b.run(cases, TINY)
    assert results[0]["impls"]["scipy"] == {"status": "not installed"}
    assert results[0]["impls"]["torch"] == {"status": "not installed"}
    assert results[1]["impls"]["torch_aten"] == {"status": "not installed"}
    assert set(results[1]["speedup"]) == {"reference"}
    text = b.format_tables(results)
    assert "speedup vs torch" not in text and "speedup vs reference" in text


def test_tables(tiny_results):
    text = b.format_tables(tiny_results)
    assert "### softmax" in text and "### cross_entropy_with_grad" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 * 3  # header, rule, one row per op
    header = table[0]
    for column in (
        "shape",
        "dtype",
        "fastsoftmax",
        "out=",
        "GB/s",
        "% copy",
        "reference",
        "vs ref",
    ):
        assert column in header
    softmax_lines = table[:3]
    assert len({len(line) for line in softmax_lines}) == 1  # aligned
    assert softmax_lines[2].startswith("| 4x10 ") and "float32" in softmax_lines[2]
    assert "speedup vs reference: median" in text


def test_format_time():
    assert b.format_time(1.234) == "1.23 s"
    assert b.format_time(0.0123) == "12.3 ms"
    assert b.format_time(0.000456) == "456 us"
    assert b.format_time(7.5e-8) == "75.0 ns"


def test_json_round_trip(tiny_results):
    env = b.environment(TINY)
    doc = json.loads(b.to_json(env, tiny_results))
    assert set(doc) == {"environment", "grid", "notes", "results"}
    assert doc["results"] == json.loads(json.dumps(tiny_results))
    assert doc["environment"]["threads"] >= 1
    assert doc["environment"]["threading_layer"]
    assert doc["grid"]["ops"] == list(b.OPS)


def test_plot(tiny_results, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    b.plot(tiny_results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_on_a_pipe_is_one_line_per_case(capsys):
    show = b.progress_printer(sys.stderr)
    case = b.Case("softmax", (64, 10), "float32")
    show(0, 2, case, "fastsoftmax")
    show(0, 2, case, "torch")
    show(1, 2, b.Case("log_softmax", (64, 10), "float32"), "fastsoftmax")
    show.done()
    assert (
        capsys.readouterr().err == "[1/2] softmax 64x10 float32\n[2/2] log_softmax 64x10 float32\n"
    )


# ----------------------------------------------------------------------------- command line
@pytest.mark.slow
def test_command_runs(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fastsoftmax",
            "bench",
            "--quick",
            "--ops",
            "softmax",
            "--shapes",
            "64x10",
            "--dtypes",
            "float32",
            "--repeats",
            "1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fastsoftmax benchmark (quick)" in proc.stdout
    assert "numba threading layer:" in proc.stdout and "threads:" in proc.stdout
    assert "### softmax" in proc.stdout
    assert any(line.startswith("| 64x10 ") for line in proc.stdout.splitlines())
    assert "[1/1] softmax 64x10 float32" in proc.stderr  # progress on stderr only
    assert "[1/1]" not in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["environment"]["mode"] == "quick"
    (r,) = doc["results"]
    assert r["id"] == "softmax|64x10|float32"
    assert {"fastsoftmax", "fastsoftmax_out", "reference", "scipy", "torch"} <= set(r["impls"])
    assert r["impls"]["fastsoftmax"]["repeats"] == 1


def test_command_in_process_writes_json_and_plot(tmp_path, capsys):
    """The same command through ``main``: one thread, a JSON file and a chart."""
    pytest.importorskip("matplotlib")
    import numba

    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    before = numba.get_num_threads()
    try:
        assert (
            main(
                [
                    "bench",
                    "--ops",
                    "log_softmax",
                    "--shapes",
                    "5x3",
                    "--dtypes",
                    "float64",
                    "--impls",
                    "fastsoftmax",
                    "--repeats",
                    "1",
                    "--threads",
                    "1",
                    "--json",
                    str(out),
                    "--plot",
                    str(png),
                ]
            )
            == 0
        )
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    text = capsys.readouterr().out
    assert "### log_softmax" in text and f"wrote {out}" in text and f"wrote {png}" in text
    (r,) = json.loads(out.read_text())["results"]
    assert r["id"] == "log_softmax|5x3|float64" and r["impls"]["fastsoftmax"]["repeats"] == 1
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_command_rejects_too_many_threads(capsys):
    import numba

    assert main(["bench", "--threads", str(numba.config.NUMBA_NUM_THREADS + 1)]) == 2
    assert "exceeds numba's limit" in capsys.readouterr().err


def test_command_rejects_bad_arguments(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--ops", "softmx"])
    assert exc.value.code == 2
    assert "unknown value 'softmx'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--shapes", "64by10"])
    assert "ROWSxCLASSES" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--quick", "--full"])


def test_plot_without_matplotlib_says_how_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(["bench", "--ops", "softmax", "--shapes", "2x3", "--plot", "x.png"]) == 1
    assert "pip install fastsoftmax[plot]" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "bench" in capsys.readouterr().out


def test_info_command(capsys):
    assert main(["info"]) == 0
    assert capsys.readouterr().out.strip()
