"""The benchmark package (fastsoftmax.bench) and ``python -m fastsoftmax bench`` on tiny grids.

Timings are never asserted (too noisy); what is checked: the grid, the byte counts, that every
call the bench times computes the op, the block-and-round timing, the numbers derived from the
raw times, the targets report, the overhead recording, the tables, the JSON and the command line.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import subprocess
import sys

import numpy as np
import pytest
from conftest import needs_jit

from fastsoftmax import bench
from fastsoftmax.__main__ import main
from fastsoftmax.bench import grid as g
from fastsoftmax.bench import mixing, overhead, peers, report, targets, timing

TINY = g.Settings(
    "test",
    rounds=2,
    block_time=0.0,
    max_samples=1,
    sample_time=0.0,
    settle_time=0.0,
    reference_max_elements=None,
)


# ------------------------------------------------------------------------------------- the grid
def test_grid_is_every_op_dtype_for_each_shape_shape_major():
    cases = g.grid()
    assert len({c.id for c in cases}) == len(cases)
    assert {(c.op, c.shape, c.dtype) for c in cases} == {
        (op, shape, dtype) for op in g.OPS for shape in g.SHAPES for dtype in g.DTYPES
    }
    assert list(dict.fromkeys(c.shape for c in cases)) == list(g.SHAPES)
    per_shape = len(g.OPS) * len(g.DTYPES)
    shapes = [c.shape for c in cases]
    assert all(
        shapes.index(s) + per_shape == len(shapes) - shapes[::-1].index(s) for s in set(shapes)
    )
    assert all(c.big == (c.shape[0] * c.shape[1] >= g.BIG_ELEMENTS) for c in cases)
    # the groups the targets speak of are in the grid, and the out-of-cache ones are big
    assert set(g.SMALL + g.IN_CACHE + g.OUT_OF_CACHE) <= set(g.SHAPES)
    assert all(g.Case("softmax", s, "float32").big for s in g.OUT_OF_CACHE)
    assert not any(g.Case("softmax", s, "float32").big for s in g.SMALL + g.IN_CACHE)
    sub = g.grid(ops=["log_softmax", "softmax"], shapes=[(4, 10), (3, 5)], dtypes=["float64"])
    assert [c.id for c in sub] == [
        "log_softmax|4x10|float64",
        "softmax|4x10|float64",
        "log_softmax|3x5|float64",
        "softmax|3x5|float64",
    ]


def test_grid_rejects_unknown_names():
    with pytest.raises(ValueError, match="unknown op 'softmx'"):
        g.grid(ops=["softmx"])
    with pytest.raises(ValueError, match="unknown dtype 'float16'"):
        g.grid(dtypes=["float16"])
    with pytest.raises(ValueError, match="rows, classes"):
        g.grid(shapes=[(0, 3)])


@pytest.mark.parametrize(
    ("text", "shape"), [("64x10", (64, 10)), ("4096X4096", (4096, 4096)), ("3×5", (3, 5))]
)
def test_parse_shape(text, shape):
    assert g.parse_shape(text) == shape


@pytest.mark.parametrize("text", ["64", "64x", "x10", "0x10", "2x3x4", "ax3", "-1x3"])
def test_parse_shape_rejects(text):
    with pytest.raises(ValueError, match="shape"):
        g.parse_shape(text)


def test_op_bytes_counts_inputs_read_and_result_written():
    assert g.op_bytes(g.Case("softmax", (64, 10), "float32")) == 2 * 640 * 4
    assert g.op_bytes(g.Case("log_softmax", (64, 10), "float64")) == 2 * 640 * 8
    assert g.op_bytes(g.Case("softmax_jvp", (3, 7), "float64")) == 3 * 21 * 8
    for op in ("cross_entropy_with_grad", "cross_entropy_backward"):
        assert g.op_bytes(g.Case(op, (3, 7), "float32")) == 2 * 21 * 4 + 3 * 8
    assert g.copy_bytes(g.Case("softmax_jvp", (3, 7), "float32")) == 2 * 21 * 4


def test_inputs_are_fixed_seed_and_of_the_case():
    case = g.Case("cross_entropy_with_grad", (5, 7), "float32")
    first = g.make_inputs(case)
    g.clear_inputs()
    again = g.make_inputs(case)
    assert first["x"].dtype == np.float32 and first["x"].shape == (5, 7)
    assert first["y"].dtype == np.int64 and first["y"].shape == (5,)
    assert np.all((first["y"] >= 0) & (first["y"] < 7))
    np.testing.assert_array_equal(first["x"], again["x"])
    np.testing.assert_array_equal(first["y"], again["y"])
    jvp = g.make_inputs(g.Case("softmax_jvp", (5, 7), "float64"))
    np.testing.assert_allclose(jvp["p"].sum(-1), 1.0, rtol=1e-12)
    assert jvp["v"].shape == (5, 7) and jvp["v"].dtype == np.float64
    g.clear_inputs()


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
    m = x.max(-1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(-1, keepdims=True)) + m
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


@pytest.mark.parametrize("op", g.OPS)
@pytest.mark.parametrize("dtype", g.DTYPES)
def test_every_implementation_computes_the_op(op, dtype):
    """Each call the bench times gives the op's value (so no peer times something else)."""
    case = g.Case(op, (6, 300), dtype)
    inputs = g.make_inputs(case)
    expected = _expected(case, inputs)
    rtol = 2e-4 if dtype == "float32" else 1e-9
    impls = peers.implementations(case, inputs)
    assert set(impls) == set(peers.OP_IMPLS[op])
    for name, fn in impls.items():
        if isinstance(fn, str):
            assert name in ("scipy", "torch", "torch_aten") and fn == "not installed"
            continue
        if name == "copyto":
            assert fn() is None
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
    g.clear_inputs()


def test_reference_status():
    assert peers.reference_status(g.Case("softmax_jvp", (64, 10), "float32")) is None
    assert peers.reference_status(g.Case("softmax_jvp", (1024, 1000), "float32")).startswith("n/a")
    assert peers.reference_status(g.Case("softmax_jvp", (2, 2000), "float32")).startswith("n/a")
    big = g.Case("softmax", (4096, 4096), "float32")
    assert peers.reference_status(big) is None
    assert peers.reference_status(big, g.QUICK).startswith("skipped")
    assert peers.reference_status(big, g.FULL) is None


# --------------------------------------------------------------------------------- timing
def test_calibrate_batches_short_calls():
    calls = []
    number = timing.calibrate(lambda: calls.append(1), 1e-3)
    assert number > 1 and len(calls) == 1 + 3  # warm-up + three timed calls
    calls.clear()
    assert timing.calibrate(lambda: calls.append(1), 0.0) == 1
    assert len(calls) == 2  # a call as long as a sample is timed once


def test_block_settles_then_samples():
    calls = []
    settings = dataclasses.replace(TINY, max_samples=3, block_time=10.0)
    samples = timing.block(lambda: calls.append(1), 4, settings)
    assert len(samples) == 3  # capped by max_samples
    assert len(calls) == 1 + 3 * 4  # one settling call (settle_time 0), then 3 samples of 4
    assert all(s > 0 for s in samples)


def test_compare_runs_rounds_of_blocks_alternating_the_order():
    log = []
    fns = {name: (lambda name=name: log.append(name)) for name in ("a", "b", "c")}
    settings = dataclasses.replace(TINY, rounds=3)
    result = timing.compare(fns, settings)
    assert set(result) == {"a", "b", "c"}
    assert all(len(t.medians) == len(t.mins) == 3 for t in result.values())
    # calibration: 2 calls each (sample_time 0); then per block: 1 settling call + 1 sample of
    # `number` (1) call
    blocks = log[6:]
    order = [blocks[i] for i in range(0, len(blocks), 2)]
    assert order == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]


def test_ratio_is_taken_per_round():
    num = timing.Timing(medians=[4.0, 9.0, 2.0], mins=[2.0, 3.0, 1.0], number=1, samples=1)
    den = timing.Timing(medians=[2.0, 3.0, 2.0], mins=[1.0, 1.0, 1.0], number=1, samples=1)
    r = timing.ratio(num, den)
    assert (r.median, r.low, r.high) == (2.0, 1.0, 3.0)
    assert timing.ratio(num, den, "min").median == 2.0
    assert num.median == 4.0 and num.min == 1.0


# -------------------------------------------------------------------------- run and report
@pytest.fixture(scope="module")
def tiny_results():
    cases = g.grid(ops=["softmax", "cross_entropy_with_grad"], shapes=[(4, 10)], dtypes=["float32"])
    return bench.run(cases, TINY)


def test_run_derives_numbers_from_raw_times(tiny_results):
    assert [r["id"] for r in tiny_results] == [
        "softmax|4x10|float32",
        "cross_entropy_with_grad|4x10|float32",
    ]
    for r in tiny_results:
        impls = r["impls"]
        out, copy = impls["fastsoftmax_out"], impls["copyto"]
        assert len(out["round_medians"]) == TINY.rounds
        assert out["median"] == statistics.median(out["round_medians"])
        assert r["gbps_from"] == "fastsoftmax_out"
        assert math.isclose(r["gbps"], r["bytes"] / out["median"] / 1e9)
        assert math.isclose(
            r["elem_per_ns_core"],
            r["shape"][0] * r["shape"][1] / out["median"] / 1e9 / r["threads"],
        )
        pct = [
            100 * (r["bytes"] / o) / (r["copy_bytes"] / c)
            for o, c in zip(out["round_medians"], copy["round_medians"], strict=True)
        ]
        assert math.isclose(r["pct_copyto"]["median"], statistics.median(pct))
        assert math.isclose(r["pct_copyto"]["low"], min(pct))
        for name, ratio in r["speedup"].items():
            rounds = [
                a / b
                for a, b in zip(
                    impls[name]["round_medians"], impls["fastsoftmax"]["round_medians"], strict=True
                )
            ]
            assert math.isclose(ratio["median"], statistics.median(rounds))
            assert math.isclose(ratio["high"], max(rounds))
        assert {"numpy", "reference"} <= set(r["speedup"])


def test_statistic_min_derives_from_min_times():
    cases = g.grid(ops=["log_softmax"], shapes=[(3, 5)], dtypes=["float32"])
    settings = dataclasses.replace(TINY, max_samples=3, block_time=1.0)
    (r,) = bench.run(
        cases, settings, impls=["fastsoftmax", "fastsoftmax_out", "reference"], statistic="min"
    )
    impls = r["impls"]
    assert r["statistic"] == "min"
    assert math.isclose(r["gbps"], r["bytes"] / impls["fastsoftmax_out"]["min"] / 1e9)
    rounds = [
        a / b
        for a, b in zip(
            impls["reference"]["round_mins"], impls["fastsoftmax"]["round_mins"], strict=True
        )
    ]
    assert math.isclose(r["speedup"]["reference"]["median"], statistics.median(rounds))
    assert "Times are the min per call" in report.format_tables([r])
    with pytest.raises(ValueError, match="statistic"):
        bench.run(cases, settings, statistic="mean")


def test_run_restricts_implementations_but_always_times_the_copy():
    cases = g.grid(ops=["softmax_jvp"], shapes=[(3, 5)], dtypes=["float64"])
    (r,) = bench.run(cases, TINY, impls=["fastsoftmax", "reference"])
    assert set(r["impls"]) == {"fastsoftmax", "reference", "copyto"}
    assert r["gbps_from"] == "fastsoftmax"
    assert set(r["speedup"]) == {"reference"}
    with pytest.raises(ValueError, match="unknown implementation"):
        bench.run(cases, TINY, impls=["numpyy"])


def test_without_torch_and_scipy(monkeypatch):
    """Peers that are not installed are reported, not timed, and the tables still work."""
    monkeypatch.setattr(peers, "torch_module", lambda threads=None: None)
    monkeypatch.setattr(bench, "torch_module", lambda threads=None: None)
    monkeypatch.setattr(peers, "scipy_special", lambda: None)
    cases = g.grid(ops=["softmax", "cross_entropy_backward"], shapes=[(3, 5)], dtypes=["float64"])
    results = bench.run(cases, TINY)
    assert results[0]["impls"]["scipy"] == {"status": "not installed"}
    assert results[0]["impls"]["torch"] == {"status": "not installed"}
    assert results[1]["impls"]["torch_aten"] == {"status": "not installed"}
    assert set(results[1]["speedup"]) == {"numpy", "reference"}
    text = report.format_tables(results)
    assert "speedup vs torch" not in text and "speedup vs reference" in text


def test_tables(tiny_results):
    text = report.format_tables(tiny_results)
    assert "### softmax" in text and "### cross_entropy_with_grad" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 * 3  # header, rule, one row per op
    for column in ("shape", "fastsoftmax", "out=", "GB/s", "elem/ns/core", "% copy", "vs numpy"):
        assert column in table[0]
    assert len({len(line) for line in table[:3]}) == 1  # aligned
    assert table[2].startswith("| 4x10 ") and "float32" in table[2]
    assert "speedup vs numpy: median" in text


def test_format_time_and_ratio():
    assert report.format_time(1.234) == "1.23 s"
    assert report.format_time(0.0123) == "12.3 ms"
    assert report.format_time(0.000456) == "456 us"
    assert report.format_time(7.5e-8) == "75.0 ns"
    assert report.format_ratio({"median": 2.0, "low": 1.5, "high": 2.25}) == "2.00x (1.50-2.25)"
    assert report.format_ratio(None) == ""


def test_json_round_trip(tiny_results):
    env = report.environment(TINY)
    doc = json.loads(report.to_json(env, tiny_results, targets=[{"target": "t"}]))
    assert set(doc) == {"environment", "grid", "notes", "results", "targets"}
    assert doc["results"] == json.loads(json.dumps(tiny_results))
    assert doc["environment"]["threads"] >= 1
    assert doc["environment"]["threading_layer"]
    assert doc["grid"]["ops"] == list(g.OPS)


def test_plot(tiny_results, tmp_path):
    pytest.importorskip("matplotlib")
    from fastsoftmax.bench import plot

    path = tmp_path / "bench.png"
    plot.plot(tiny_results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_on_a_pipe_is_one_line_per_case(capsys):
    show = report.progress_printer(sys.stderr)
    case = g.Case("softmax", (64, 10), "float32")
    show(0, 2, case, "fastsoftmax")
    show(0, 2, case, "torch")
    show(1, 2, g.Case("log_softmax", (64, 10), "float32"), "fastsoftmax")
    show.done()
    assert (
        capsys.readouterr().err == "[1/2] softmax 64x10 float32\n[2/2] log_softmax 64x10 float32\n"
    )


# -------------------------------------------------------------------------------- targets
def _fake_results(factor: float) -> list[dict]:
    """Records of every float32 case whose every ratio and throughput is ``factor``."""
    ratio = {"median": factor, "low": factor, "high": factor}
    return [
        {
            "op": c.op,
            "shape": list(c.shape),
            "dtype": c.dtype,
            "id": c.id,
            "big": c.big,
            "speedup": dict.fromkeys(peers.BASELINES, ratio),
            "elem_per_ns_core": factor,
            "pct_copyto": {k: 100 * v for k, v in ratio.items()},
        }
        for c in g.grid(dtypes=[targets.DTYPE])
    ]


def test_targets_are_met_by_a_fast_run_and_missed_by_a_slow_one():
    fast = targets.evaluate(_fake_results(1e3), {"threads": [1, 2], "differing": []})
    slow = targets.evaluate(_fake_results(1e-3), {"threads": [1, 2], "differing": ["softmax"]})
    assert [r["target"] for r in fast] == [r["target"] for r in slow]
    assert all(r["met"] is True for r in fast)
    assert all(r["met"] is False for r in slow)
    table = targets.format_table(slow)
    assert f"0 of {len(slow)} measured targets met" in table and "NOT MET" in table


def test_targets_without_measurements():
    rows = targets.evaluate([], None)
    assert rows and all(r["met"] is None and r["measured"] == "not measured" for r in rows)


@needs_jit
def test_check_bits_finds_a_result_that_depends_on_the_thread_count(monkeypatch):
    import numba

    import fastsoftmax as fs

    if numba.get_num_threads() < 2:
        pytest.skip("needs two numba threads")
    assert targets.check_bits([(512, 40)])["differing"] == []  # above the serial threshold
    real = fs.softmax
    monkeypatch.setattr(fs, "softmax", lambda x: real(x) + numba.get_num_threads())
    assert targets.check_bits([(512, 40)])["differing"] == ["softmax 512x40"]


# ------------------------------------------------------------------------------- overhead
@needs_jit
def test_overhead_breakdown_records_checks_and_the_kernel():
    import fastsoftmax._validate as v

    before = dict(vars(v))
    row = overhead.breakdown("softmax", g.SMALL[0], TINY)
    assert dict(vars(v)) == before  # the recording's patches are undone
    assert row["validate_calls"] and all(name in before for name in row["validate_calls"])
    for column in ("validate", "kernel", "public", "numpy"):
        assert row[column] > 0, column
    assert math.isclose(
        row["rest"], row["public"] - row["validate"] - row["dispatch"] - row["kernel"]
    )
    table = overhead.format_table([row])
    assert "| softmax " in table and "validate" in table


def test_overhead_recording_sees_one_launch_per_op():
    for op in overhead.OVERHEAD_OPS:
        case = g.Case(op, g.SMALL[0], overhead.DTYPE)
        public = peers.implementations(case, g.make_inputs(case))["fastsoftmax"]
        with overhead._recording() as (checks, launches):
            public()
        assert len(launches) == 1 and checks, op


# --------------------------------------------------------------------------------- mixing
def test_mixing_table():
    rows = [
        {
            "config": "default",
            "timed": "torch mid",
            "after": "torch mid",
            "first": 2e-3,
            "median": 1e-3,
        },
        {
            "config": "default",
            "timed": "torch mid",
            "after": "fastsoftmax mid",
            "first": 3e-3,
            "median": 1e-3,
        },
        {"config": "torch only", "error": "boom"},
    ]
    text = mixing.format_table(rows)
    assert "| default " in text and "itself" in text and "error: boom" in text


@pytest.mark.slow
@needs_jit
def test_mixing_runs_every_configuration():
    pytest.importorskip("torch")
    rows = mixing.run()
    assert {r["config"] for r in rows} == set(mixing.CONFIGS)
    assert all("error" not in r and r["median"] > 0 for r in rows)


# ----------------------------------------------------------------------------- command line
@pytest.mark.slow
def test_import_fastsoftmax_does_not_import_the_bench():
    code = "import sys, fastsoftmax; print(sorted(m for m in sys.modules if 'bench' in m))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


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
            "--rounds",
            "2",
            "--repeats",
            "1",
            "--overhead",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "fastsoftmax benchmark (quick)" in proc.stdout
    assert "numba threading layer:" in proc.stdout and "threads:" in proc.stdout
    assert "### softmax" in proc.stdout and "## Targets" in proc.stdout
    assert "## Per-call overhead" in proc.stdout
    assert any(line.startswith("| 64x10 ") for line in proc.stdout.splitlines())
    assert "[1/1] softmax 64x10 float32" in proc.stderr  # progress on stderr only
    assert "[1/1]" not in proc.stdout
    doc = json.loads(out.read_text())
    assert doc["environment"]["mode"] == "quick"
    (r,) = doc["results"]
    assert r["id"] == "softmax|64x10|float32"
    assert {"fastsoftmax", "fastsoftmax_out", "numpy", "reference", "copyto"} <= set(r["impls"])
    assert len(r["impls"]["fastsoftmax"]["round_medians"]) == 2
    assert len(doc["overhead"]) == len(overhead.OVERHEAD_OPS) * len(g.SMALL)
    assert {t["target"] for t in doc["targets"]} >= {"results bit-identical for any thread count"}


def test_command_in_process_writes_json_and_plot(tmp_path, capsys):
    """The same command through ``main``: one thread, a JSON file and a chart."""
    pytest.importorskip("matplotlib")
    import numba

    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    before = numba.get_num_threads()
    args = ["bench", "--ops", "log_softmax", "--shapes", "5x3", "--dtypes", "float64", "--impls",
            "fastsoftmax", "--rounds", "1", "--repeats", "1", "--threads", "1", "--json",
            str(out), "--plot", str(png)]  # fmt: skip
    try:
        assert main(args) == 0
        assert numba.get_num_threads() == 1
    finally:
        numba.set_num_threads(before)
    text = capsys.readouterr().out
    assert "### log_softmax" in text and f"wrote {out}" in text and f"wrote {png}" in text
    doc = json.loads(out.read_text())
    (r,) = doc["results"]
    assert r["id"] == "log_softmax|5x3|float64"
    assert len(r["impls"]["fastsoftmax"]["round_medians"]) == 1
    assert doc["thread_bits"] is None  # one thread: nothing to compare
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
    with pytest.raises(SystemExit):
        main(["bench", "--rounds", "0"])


def test_command_options_parse():
    from fastsoftmax.__main__ import build_parser

    args = build_parser().parse_args(["bench", "--overhead", "--mixing", "--rounds", "4"])
    assert args.overhead and args.mixing and args.rounds == 4
    assert not build_parser().parse_args(["bench"]).overhead


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
