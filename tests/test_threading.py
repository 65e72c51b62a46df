"""Thread and fork safety under every numba threading layer, each scenario in its own interpreter.

A scenario that crashes (numba's workqueue aborts on concurrent parallel launches; GNU OpenMP
kills a forked child that launches a parallel region) shows up here as a failed test with the
signal and the tail of stderr, not as a dead test run.

Scenarios (``SCENARIOS`` source text, run with ``python -c``):

- threads: 8 threads start together (a barrier) with their very first call into fastsoftmax and
  call every public kernel function, float32 and float64, on inputs above ``SERIAL_BELOW``
  elements, several rounds in different orders. Every result must equal, bit for bit, the result
  of the same call made afterwards in the main thread (rows never depend on the thread count or on
  serial vs parallel), and that result must match ``fastsoftmax.reference``.
- fork: the parent calls everything (parallel kernels), then forks with ``os.fork`` and with a
  ``multiprocessing`` fork-context process pool; the children call everything again and must exit
  0 with bit-identical results; the parent keeps working afterwards.

Each runs with ``NUMBA_THREADING_LAYER`` forced to ``tbb``, ``omp`` and ``workqueue`` (skipped when
numba cannot load that layer here) and with the layer the package picks by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from functools import cache

import numpy as np
import pytest
from conftest import needs_jit

import fastsoftmax as fs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["tbb", "omp", "workqueue"]
TIMEOUT = 600  # seconds per scenario; generous: a cold numba cache compiles for minutes

# --------------------------------------------------------------------------- the case table
# Source text shared by every scenario (and by test_soak.py): builds one call per public kernel
# function and argument-type variant, with the reference result.
CASES = r'''
import os, sys, threading, time
import numpy as np
import fastsoftmax as fs
from fastsoftmax import reference as ref

NOT_KERNELS = {"info", "warmup"}

# functions with an ``out=`` keyword (test_placement passes one), listed explicitly so that a
# renamed keyword fails the test instead of being skipped
TAKES_OUT = {"softmax", "log_softmax", "logsumexp", "softmax_jvp", "softmax_vjp",
             "log_softmax_vjp", "cross_entropy_backward", "cross_entropy_with_grad",
             "selective_log_softmax_vjp", "sigmoid", "log_sigmoid",
             "binary_cross_entropy_with_logits_backward",
             "binary_cross_entropy_with_logits_with_grad"}


def make_cases(rows, classes, dtypes=("float32", "float64"), seed=0):
    """[(label, name, args, kwargs, expected)] covering every public kernel function."""
    rng = np.random.default_rng(seed)
    cases = []
    for dt in dtypes:
        dt = np.dtype(dt)
        x = (rng.standard_normal((rows, classes)) * 3).astype(dt)
        v = rng.standard_normal((rows, classes)).astype(dt)
        z = rng.standard_normal((rows, classes))
        p64 = np.exp(z - z.max(-1, keepdims=True))
        p64 /= p64.sum(-1, keepdims=True)
        p, logp = p64.astype(dt), np.log(p64).astype(dt)
        labels = rng.integers(0, classes, rows)
        labels[::7] = -100  # ignored rows
        tdt = dt if dt in (np.float32, np.float64) else np.dtype(np.float64)  # float targets
        soft = rng.random((rows, classes)).astype(tdt)
        soft /= soft.sum(-1, keepdims=True)
        w = rng.uniform(0.5, 2.0, classes)
        mask = rng.random((rows, classes)) < 0.8
        mask[np.arange(rows), np.where(labels >= 0, labels, 0)] = True
        bt = (rng.random((rows, classes)) < 0.4).astype(tdt)
        calls = [
            ("softmax", (x,), dict(temperature=1.5)),
            ("log_softmax", (x,), {}),
            ("logsumexp", (x,), {}),
            ("softmax_jacobian", (p,), {}),
            ("softmax_jvp", (p, v), dict(temperature=2.0)),
            ("softmax_vjp", (p, v), {}),
            ("log_softmax_vjp", (logp, v), {}),
            ("cross_entropy", (x, labels), {}),
            ("cross_entropy", (x, labels), dict(weight=w, label_smoothing=0.1, reduction="none")),
            ("cross_entropy", (x, soft), dict(reduction="sum", weight=w)),
            ("cross_entropy_backward", (x, labels), dict(label_smoothing=0.05)),
            ("cross_entropy_with_grad", (x, labels), dict(weight=w)),
            ("cross_entropy_with_grad", (x, soft), {}),
            ("cross_entropy_with_grad", (x, labels), dict(z_loss=1e-3, softcap=5.0)),
            ("selective_log_softmax", (x, np.abs(labels)[:, None] % classes),
             dict(temperature=1.5)),
            ("selective_log_softmax_vjp", (x, np.abs(labels) % classes, v[:, 0]), {}),
            ("linear_cross_entropy", (x, np.eye(classes, dtype=dt)[::-1], labels),
             dict(chunk_size=3)),
            ("linear_cross_entropy_with_grad", (x, np.eye(classes, dtype=dt), soft),
             dict(softcap=5.0, linear_bias=v[0])),
            # masked forms, the binary family
            ("softmax", (x,), dict(where=mask)),
            ("cross_entropy_with_grad", (x, labels), dict(where=mask)),
            ("sigmoid", (x,), {}),
            ("log_sigmoid", (x,), {}),
            ("binary_cross_entropy_with_logits", (x, bt), dict(pos_weight=w)),
            ("binary_cross_entropy_with_logits_with_grad", (x, bt),
             dict(weight=w, reduction="sum")),
            ("binary_cross_entropy_with_logits_backward", (x, bt), {}),
        ]
        for name, args, kwargs in calls:
            expected = getattr(ref, name)(*args, **kwargs)
            label = f"{name}({dt.name}{', ' + ', '.join(sorted(kwargs)) if kwargs else ''})"
            cases.append((label, name, args, kwargs, expected))
    return cases


def covered(cases):
    return {c[1] for c in cases}


def uncovered(cases):
    return sorted(set(fs.__all__) - NOT_KERNELS - covered(cases))


def parts(r):
    return r if isinstance(r, tuple) else (r,)


def same(a, b):
    """Bit-identical results (NaN equal to NaN), same types and dtypes."""
    pa, pb = parts(a), parts(b)
    if len(pa) != len(pb):
        return False
    for u, w in zip(pa, pb):
        u, w = np.asarray(u), np.asarray(w)
        if u.dtype != w.dtype or u.shape != w.shape:
            return False
        if u.tobytes() != w.tobytes():
            return False
    return True


def check_reference(label, got, expected):
    """Kernel result within float tolerance of the NumPy reference (the message names the case)."""
    for g, e in zip(parts(got), parts(expected)):
        g, e = np.asarray(g), np.asarray(e)
        assert g.dtype == e.dtype and g.shape == e.shape, (
            label, g.dtype, e.dtype, g.shape, e.shape)
        rtol = {np.dtype(np.float16): 2e-3, np.dtype(np.float32): 2e-5}.get(e.dtype, 1e-10)
        fin = np.abs(e[np.isfinite(e)])
        atol = rtol * float(fin.max()) if fin.size else 0.0
        np.testing.assert_allclose(g, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=label)


def call(case):
    label, name, args, kwargs, expected = case
    return getattr(fs, name)(*args, **kwargs)


class LaunchCounter:
    """Counts serial and parallel kernel launches by wrapping every RowKernel the wrappers use."""

    def __init__(self):
        from fastsoftmax._kernels._compile import RowKernel
        self.lock = threading.Lock()
        self.counts = {"serial": 0, "parallel": 0}
        for mod_name, mod in list(sys.modules.items()):
            if not mod_name.startswith("fastsoftmax.") or "._kernels" in mod_name:
                continue
            for attr, value in list(vars(mod).items()):
                if isinstance(value, RowKernel):
                    setattr(mod, attr, RowKernel(parallel=self._wrap("parallel", value.parallel),
                                                 serial=self._wrap("serial", value.serial)))

    def _wrap(self, kind, fn):
        def counted(*args):
            with self.lock:
                self.counts[kind] += 1
            return fn(*args)
        return counted

    def reset(self):
        with self.lock:
            self.counts = {"serial": 0, "parallel": 0}
'''

THREADS = r"""
import numba
from fastsoftmax import _runtime
N_THREADS, ROUNDS = 8, 3
cases = make_cases(ROWS, CLASSES)
missing = uncovered(cases)
assert not missing, f"the scenario does not call {missing}"
counter = LaunchCounter()
barrier = threading.Barrier(N_THREADS)
results = [[None] * len(cases) for _ in range(N_THREADS)]
errors = []

def worker(k):
    try:
        barrier.wait()  # all threads make their very first call at once
        order = list(range(len(cases)))
        for r in range(ROUNDS):
            np.random.default_rng(100 * k + r).shuffle(order)
            for i in order:
                got = call(cases[i])
                if results[k][i] is None:
                    results[k][i] = got
                elif not same(got, results[k][i]):
                    errors.append(f"thread {k}: {cases[i][0]} changed between rounds")
    except BaseException as exc:  # report, do not die silently
        import traceback
        errors.append(f"thread {k}: {traceback.format_exc()}")

threads = [threading.Thread(target=worker, args=(k,)) for k in range(N_THREADS)]
t0 = time.perf_counter()
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.perf_counter() - t0
assert not errors, "\n".join(errors)
concurrent = dict(counter.counts)
layer = _runtime.threading_layer()
for i, case in enumerate(cases):
    sequential = call(case)
    check_reference(case[0], sequential, case[4])
    for k in range(N_THREADS):
        assert same(results[k][i], sequential), (
            f"thread {k}: {case[0]} differs from the sequential call")
print(f"layer={layer} threads={N_THREADS} calls={N_THREADS * ROUNDS * len(cases)} "
      f"cases={len(cases)} launches={concurrent} seconds={elapsed:.2f}")
if numba.get_num_threads() > 1:
    assert concurrent["parallel"] > 0, "no parallel kernel ran"
if EXPECT_LAYER:
    assert layer == EXPECT_LAYER, (layer, EXPECT_LAYER)
"""

FORK = r'''
import multiprocessing, signal
from concurrent.futures import ProcessPoolExecutor
import numba
from fastsoftmax import _runtime
cases = make_cases(ROWS, CLASSES)
missing = uncovered(cases)
assert not missing, f"the scenario does not call {missing}"
counter = LaunchCounter()
parent = [call(c) for c in cases]
for c, r in zip(cases, parent):
    check_reference(c[0], r, c[4])
layer = _runtime.threading_layer()
parent_launches = dict(counter.counts)
if numba.get_num_threads() > 1:
    assert parent_launches["parallel"] > 0, "the parent ran no parallel kernel"


def child_check(indices):
    """In a child: call the cases; the labels that differ from the parent's results, whether
    the child runs serial kernels only, and the launches these calls made."""
    before = dict(counter.counts)  # inherited from the parent
    bad = []
    for i in indices:
        got = call(cases[i])
        if not same(got, parent[i]):
            bad.append(cases[i][0])
    launches = {k: counter.counts[k] - before[k] for k in before}
    return bad, _runtime.serial_only(), launches


# 1. os.fork
pid = os.fork()
if pid == 0:
    code = 1
    try:
        bad, serial_only, launches = child_check(range(len(cases)))
        print(f"os.fork child: serial_only={serial_only} launches={launches} bad={bad}", flush=True)
        code = 0 if not bad else 3
    except BaseException:
        import traceback
        traceback.print_exc()
    finally:
        os._exit(code)
deadline = time.monotonic() + CHILD_TIMEOUT
while True:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        break
    if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise AssertionError("os.fork child hung")
    time.sleep(0.05)
code = os.waitstatus_to_exitcode(status)
assert code == 0, f"os.fork child exited with {code} (negative: killed by signal {-code})"

# 2. a multiprocessing pool of forked workers (what data-loader workers do)
ctx = multiprocessing.get_context("fork")
chunks = [list(range(i, len(cases), 3)) for i in range(3)]
with ProcessPoolExecutor(max_workers=2, mp_context=ctx) as pool:
    for bad, serial_only, launches in pool.map(child_check, chunks, timeout=CHILD_TIMEOUT):
        assert not bad, f"forked worker results differ: {bad}"
        print(f"pool worker: serial_only={serial_only} launches={launches}", flush=True)

# 3. the parent still works, in parallel
counter.reset()
for c, r in zip(cases, parent):
    assert same(call(c), r), f"parent after fork: {c[0]} differs"
if numba.get_num_threads() > 1:
    assert counter.counts["parallel"] > 0
print(f"layer={layer} cases={len(cases)} parent_launches={parent_launches}")
if EXPECT_LAYER:
    assert layer == EXPECT_LAYER, (layer, EXPECT_LAYER)
'''

# Rows x classes: 384 x 96 = 36864 elements, above SERIAL_BELOW (32768), so parallel kernels run.
ROWS, CLASSES = 384, 96


def scenario(
    body: str,
    *,
    rows: int = ROWS,
    classes: int = CLASSES,
    expect_layer: str = "",
    child_timeout: float = 300.0,
) -> str:
    """Full script text of a scenario."""
    header = (
        f"ROWS, CLASSES = {rows}, {classes}\nEXPECT_LAYER = {expect_layer!r}\n"
        f"CHILD_TIMEOUT = {child_timeout}\n"
    )
    return CASES + header + body


def run_python(
    script: str, env: dict[str, str] | None = None, timeout: float = TIMEOUT, check: bool = True
) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter; with ``check``, fail (not crash) unless it exits 0."""
    full_env = dict(os.environ)
    full_env.pop("NUMBA_THREADING_LAYER", None)
    full_env.pop("NUMBA_NUM_THREADS", None)
    full_env["PYTHONPATH"] = ROOT + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.update(env or {})
    try:
        proc = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(script)],
            env=full_env,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            cwd=ROOT,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scenario hung for {timeout} s; stderr tail:\n{(exc.stderr or b'')[-3000:]!r}")
    if check and proc.returncode != 0:
        how = (
            f"killed by signal {-proc.returncode}"
            if proc.returncode < 0
            else f"exit code {proc.returncode}"
        )
        pytest.fail(
            f"scenario failed ({how})\n--- stdout\n{proc.stdout[-3000:]}\n"
            f"--- stderr\n{proc.stderr[-6000:]}"
        )
    return proc


@cache
def layer_status(layer: str) -> str | None:
    """None if numba loads ``layer`` here with fastsoftmax imported; else why not."""
    proc = run_python(
        "import fastsoftmax, numba; numba.get_num_threads(); print(numba.threading_layer())",
        env={"NUMBA_THREADING_LAYER": layer},
        timeout=120,
        check=False,
    )
    if proc.returncode == 0 and proc.stdout.strip() == layer:
        return None
    return (proc.stdout.strip() or proc.stderr.strip().splitlines()[-1:] or ["?"])[-1]


def require_layer(layer: str | None) -> dict[str, str]:
    if layer is None:
        return {}
    reason = layer_status(layer)
    if reason is not None:
        pytest.skip(f"numba cannot load the {layer} threading layer here: {reason}")
    return {"NUMBA_THREADING_LAYER": layer}


@pytest.fixture(scope="module")
def warm_cache():
    """Compile (or load from numba's cache) every kernel once, so scenarios time only themselves."""
    run_python("import fastsoftmax; print(fastsoftmax.warmup())", timeout=1800)


# --------------------------------------------------------------------------- tests


@pytest.mark.slow
@needs_jit
@pytest.mark.parametrize("layer", LAYERS + [None], ids=LAYERS + ["package-default"])
def test_threads_call_every_op_concurrently(layer, warm_cache):
    env = require_layer(layer)
    proc = run_python(scenario(THREADS, expect_layer=layer or ""), env=env)
    print(proc.stdout)


@pytest.mark.slow
@needs_jit
@pytest.mark.parametrize("layer", LAYERS + [None], ids=LAYERS + ["package-default"])
def test_forked_children_call_ops_after_parent(layer, warm_cache):
    env = require_layer(layer)
    proc = run_python(scenario(FORK, expect_layer=layer or ""), env=env)
    print(proc.stdout)
    children = [
        ln for ln in proc.stdout.splitlines() if ln.startswith(("os.fork child", "pool worker"))
    ]
    assert len(children) == 4, proc.stdout  # the os.fork child and three pool tasks reported
    if layer == "omp":
        # GNU OpenMP cannot run a parallel region in a forked child: children must run serial
        for line in children:
            assert "serial_only=True" in line and "'parallel': 0" in line, line


@pytest.mark.slow
@needs_jit
def test_workqueue_without_the_lock_really_aborts(warm_cache):
    """The hazard is real: the same 8-thread load with the launcher's lock bypassed aborts (or the
    scenario would prove nothing). Skipped if workqueue cannot be loaded."""
    env = require_layer("workqueue")
    bypass = textwrap.dedent(r"""
        import fastsoftmax._runtime as rt
        def unsafe_launch(kernel, work, *args):  # parallel whenever large, no lock
            return kernel.parallel(*args) if work >= rt.SERIAL_BELOW else kernel.serial(*args)
        original = rt.launch
        for name, mod in list(sys.modules.items()):
            if (name.startswith("fastsoftmax.") and mod is not rt
                    and getattr(mod, "launch", None) is original):
                mod.launch = unsafe_launch
    """)
    script = scenario(THREADS).replace(
        "counter = LaunchCounter()", bypass + "counter = LaunchCounter()"
    )
    proc = run_python(script, env=env, check=False)
    assert proc.returncode != 0, "workqueue survived concurrent parallel launches without the lock"
    assert "workqueue" in proc.stderr or proc.returncode < 0, proc.stderr[-2000:]


@pytest.mark.slow
@needs_jit
def test_omp_fork_without_the_fallback_really_dies():
    """GNU OpenMP kills a forked child that launches a parallel region after the parent did;
    with the serial fallback defeated the child must die (else the fork scenario proves nothing)."""
    env = require_layer("omp")
    script = CASES + textwrap.dedent(r"""
        import numba
        from fastsoftmax import _runtime
        cases = [c for c in make_cases(384, 96, ("float32",)) if c[1] == "softmax"][:1]
        call(cases[0])
        pid = os.fork()
        if pid == 0:
            _runtime._serial_only = False  # defeat the fallback
            call(cases[0])
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        print("child exit", os.waitstatus_to_exitcode(status))
    """)
    proc = run_python(script, env=env)
    assert "child exit 0" not in proc.stdout, proc.stdout + proc.stderr


def _launches(stdout: str) -> dict[str, int]:
    import ast

    line = [ln for ln in stdout.splitlines() if ln.startswith("launches=")][-1]
    return ast.literal_eval(line.split("=", 1)[1])


SET_NUM_THREADS = r"""
import numba
cases = {c[1]: c for c in reversed(make_cases(ROWS, CLASSES, ("float32",)))}  # first case per name
cases = [cases["softmax"], cases["cross_entropy_with_grad"]]
counter = LaunchCounter()
first = [call(c) for c in cases]
for c, r in zip(cases, first):
    check_reference(c[0], r, c[4])
print(f"launches={counter.counts}")
"""


@pytest.mark.slow
@needs_jit
def test_numba_num_threads_1_runs_serial_kernels():
    proc = run_python(scenario(SET_NUM_THREADS), env={"NUMBA_NUM_THREADS": "1"})
    assert _launches(proc.stdout) == {"serial": 2, "parallel": 0}


@pytest.mark.slow
@needs_jit
def test_default_thread_count_runs_parallel_kernels():
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU: numba starts one thread")
    proc = run_python(scenario(SET_NUM_THREADS))
    assert _launches(proc.stdout) == {"serial": 0, "parallel": 2}


@pytest.mark.slow
@needs_jit
def test_set_num_threads_respected_per_thread():
    """``numba.set_num_threads(1)`` makes the calling thread run serial kernels (numba's setting is
    per thread); ``set_num_threads(2)`` brings parallel kernels back; results are bit-identical."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("one CPU: numba starts one thread")
    body = (
        SET_NUM_THREADS
        + r"""
numba.set_num_threads(1)
counter.reset()
one = [call(c) for c in cases]
assert counter.counts == {"serial": 2, "parallel": 0}, counter.counts
seen = {}
def other_thread():  # a new thread starts with numba's default thread count
    counter.reset()
    seen["result"] = [call(c) for c in cases]
    seen["counts"] = dict(counter.counts)
t = threading.Thread(target=other_thread); t.start(); t.join()
assert seen["counts"] == {"serial": 0, "parallel": 2}, seen["counts"]
numba.set_num_threads(2)
counter.reset()
two = [call(c) for c in cases]
assert counter.counts == {"serial": 0, "parallel": 2}, counter.counts
for a, b, c, d in zip(first, one, two, seen["result"]):
    assert same(a, b) and same(a, c) and same(a, d)
print("ok")
"""
    )
    proc = run_python(scenario(body))
    assert "ok" in proc.stdout


@pytest.mark.slow
@needs_jit
def test_unloadable_threading_layer_warns_and_runs_serial():
    """If numba cannot load the requested layer, calls still work (serial) after one warning."""
    body = r"""
import warnings
cases = [c for c in make_cases(ROWS, CLASSES, ("float64",)) if c[1] == "log_softmax"]
counter = LaunchCounter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(3):
        check_reference(cases[0][0], call(cases[0]), cases[0][4])
msgs = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
assert len(msgs) == 1 and "threading layer" in msgs[0], msgs
assert counter.counts == {"serial": 3, "parallel": 0}, counter.counts
from fastsoftmax import _runtime
assert _runtime.serial_only()
print("ok")
"""
    proc = run_python(scenario(body), env={"NUMBA_THREADING_LAYER": "no_such_layer"})
    assert "ok" in proc.stdout


def test_case_table_covers_every_public_kernel_function():
    """The scenarios call every public function except info/warmup (checked in-process too)."""
    ns: dict = {}
    exec(CASES, ns)
    cases = ns["make_cases"](4, 5, ("float32",))
    assert ns["uncovered"](cases) == [], "add the new public function to CASES"
    assert {"softmax", "cross_entropy_with_grad"} <= ns["covered"](cases)
    assert set(fs.__all__) - ns["NOT_KERNELS"] - ns["covered"](cases) == set()


def test_takes_out_table_matches_the_signatures():
    """``TAKES_OUT`` is exactly the public functions with an ``out=`` keyword."""
    import inspect

    ns: dict = {}
    exec(CASES, ns)
    takes_out = {
        name for name in fs.__all__ if "out" in inspect.signature(getattr(fs, name)).parameters
    }
    assert ns["TAKES_OUT"] == takes_out


# --------------------------------------------------------------------------- placement and variant
# Bit-identical results for any thread count hold only if no result depends on which compiled
# variant runs (serial and parallel are separate compilations) or on where the arrays sit: LLVM
# guards a loop that reads one array and writes another with a runtime overlap check and runs a
# scalar fallback when it fails, and a scratch buffer allocated inside a kernel lands wherever the
# allocator puts it. Placements are varied on purpose: inputs copied to varied offsets, ``out``
# right after (or before) the first input at small gaps, and freed heap holes of varied sizes
# before the call. Small shapes put ``out`` within a few vectors of the input; large ones are above
# SERIAL_BELOW. SERIAL_BELOW is lowered to 0 so that, with 2 threads, every size runs in parallel.

PLACEMENT_SHAPES = [(1, 20), (2, 25), (3, 9), (2, 40), (1500, 9), (70, 211)]
PLACEMENT_REPEATS = 16


def _placed(a, rng: np.random.Generator, out_like: bool = False):
    """``a`` copied into a bigger buffer at a random element offset; with ``out_like``, also an
    uninitialized array of ``a``'s shape and dtype in the same buffer, a few elements after or
    before the copy (returned as the pair)."""
    if not isinstance(a, np.ndarray) or a.ndim == 0:
        return (a, None) if out_like else a
    n = a.size
    buf = np.empty(2 * n + 64, a.dtype)
    gap = int(rng.integers(0, 9))
    if out_like and rng.random() < 0.5:  # out before the input
        out, copy = buf[gap : gap + n], buf[2 * gap + n : 2 * gap + 2 * n]
    else:
        copy, out = buf[gap : gap + n], buf[gap + n + gap : 2 * gap + 2 * n]
    copy = copy.reshape(a.shape)
    copy[...] = a
    return (copy, out.reshape(a.shape)) if out_like else copy


@pytest.mark.slow
@needs_jit
def test_results_do_not_depend_on_placement_or_kernel_variant(monkeypatch):
    import numba

    from fastsoftmax import _runtime

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has fewer than 2 threads")
    ns: dict = {}
    exec(CASES, ns)
    monkeypatch.setattr(_runtime, "SERIAL_BELOW", 0)
    rng = np.random.default_rng(2024)
    old = numba.get_num_threads()
    failures = []
    try:
        for shape in PLACEMENT_SHAPES:
            for label, name, args, kwargs, _ in ns["make_cases"](*shape):
                fn = getattr(fs, name)
                numba.set_num_threads(1)
                first = fn(*args, **kwargs)
                # out= where the result has the first input's shape and dtype
                takes_out = (
                    name in ns["TAKES_OUT"]
                    and isinstance(first, (np.ndarray, tuple))
                    and ns["parts"](first)[-1].shape == args[0].shape
                    and ns["parts"](first)[-1].dtype == args[0].dtype
                )
                for rep in range(PLACEMENT_REPEATS):
                    holes = [np.empty(int(rng.integers(1, 1 << 16)), np.uint8) for _ in range(4)]
                    x, out = _placed(args[0], rng, out_like=True)
                    rest = [_placed(a, rng) for a in args[1:]]
                    kw = {k: _placed(v, rng) for k, v in kwargs.items()}
                    if takes_out and rep % 4 != 3:
                        kw["out"] = out
                    del holes[::2]  # free some: scratch buffers allocated in the kernels land there
                    numba.set_num_threads(1 + rep % 2)
                    got = fn(x, *rest, **kw)
                    if not ns["same"](got, first):
                        diff = [
                            int(np.count_nonzero(np.asarray(u) != np.asarray(w)))
                            for u, w in zip(ns["parts"](got), ns["parts"](first), strict=True)
                        ]
                        failures.append(
                            f"{label} {shape} rep {rep} ({1 + rep % 2} threads, "
                            f"out={'out' in kw}): {diff} entries differ"
                        )
    finally:
        numba.set_num_threads(old)
    assert not failures, f"{len(failures)} calls differ from the first:\n" + "\n".join(
        failures[:40]
    )


# --------------------------------------------------------------------------- the launcher's rules
# In-process unit tests of fastsoftmax._runtime.launch with a fake kernel pair that says which
# variant ran (module state is restored by monkeypatch).


@pytest.fixture
def fake():
    from fastsoftmax._kernels._compile import RowKernel

    return RowKernel(parallel=lambda *a: ("parallel", a), serial=lambda *a: ("serial", a))


@pytest.fixture
def rt(monkeypatch):
    from fastsoftmax import _runtime

    for name in ("_layer", "_serial_only", "_lock", "_init_lock"):
        monkeypatch.setattr(_runtime, name, getattr(_runtime, name))
    return _runtime


def test_launch_small_inputs_run_serial(rt, fake):
    assert rt.launch(fake, rt.SERIAL_BELOW - 1, 1, 2) == ("serial", (1, 2))


def test_launch_large_inputs_run_parallel_on_a_safe_layer(rt, fake, monkeypatch):
    monkeypatch.setattr(rt, "_layer", "tbb")
    monkeypatch.setattr(rt.numba, "get_num_threads", lambda: 2)
    assert rt.launch(fake, rt.SERIAL_BELOW, 7) == ("parallel", (7,))
    monkeypatch.setattr(rt.numba, "get_num_threads", lambda: 1)  # set_num_threads(1) in this thread
    assert rt.launch(fake, rt.SERIAL_BELOW, 7) == ("serial", (7,))


def test_launch_workqueue_serializes_parallel_launches(rt, fake, monkeypatch):
    monkeypatch.setattr(rt, "_layer", "workqueue")
    monkeypatch.setattr(rt.numba, "get_num_threads", lambda: 2)
    assert rt.launch(fake, 10**6)[0] == "parallel"
    assert not rt._lock.locked()  # released after the launch
    with rt._lock:  # another thread is in a parallel launch: run serial, do not wait
        assert rt.launch(fake, 10**6)[0] == "serial"
    assert rt.launch(fake, 10**6)[0] == "parallel"
    boom = fake._replace(parallel=lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        rt.launch(boom, 10**6)
    assert not rt._lock.locked()  # released on error too


def test_launch_serial_only(rt, fake, monkeypatch):
    monkeypatch.setattr(rt, "_serial_only", True)
    assert rt.launch(fake, 10**9)[0] == "serial"
    assert rt.serial_only()


def test_first_launch_initializes_and_names_the_layer(rt, fake, monkeypatch):
    monkeypatch.setattr(rt, "_layer", None)
    monkeypatch.setattr(rt.numba, "get_num_threads", lambda: 2)
    monkeypatch.setattr(rt.numba, "threading_layer", lambda: "omp")
    assert rt.launch(fake, 10**6)[0] == "parallel"
    assert rt._layer == "omp" and rt.threading_layer() == "omp"


def test_no_loadable_layer_warns_once_then_serial(rt, fake, monkeypatch):
    def cannot_load():
        raise ValueError("No threading layer could be loaded.")

    monkeypatch.setattr(rt, "_layer", None)
    monkeypatch.setattr(rt.numba, "get_num_threads", cannot_load)
    with pytest.warns(RuntimeWarning, match="threading layer"):
        assert rt.launch(fake, 10**6)[0] == "serial"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert rt.launch(fake, 10**6)[0] == "serial"  # no second warning
    assert rt.serial_only()


@pytest.mark.parametrize(
    "layer, serial_only", [("omp", True), ("tbb", False), ("workqueue", False), (None, False)]
)
def test_fork_hook(rt, monkeypatch, layer, serial_only):
    monkeypatch.setattr(rt, "_numba_layer", lambda: layer)
    old_lock, old_init = rt._lock, rt._init_lock
    old_lock.acquire()  # held by another thread of the parent at fork time
    try:
        rt._after_fork_in_child()
    finally:
        old_lock.release()
    assert rt._serial_only is serial_only
    assert rt._lock is not old_lock and not rt._lock.locked() and rt._init_lock is not old_init


def test_numba_layer_before_and_after_initialization(rt, monkeypatch):
    def uninitialized():
        raise ValueError("Threading layer is not initialized.")

    monkeypatch.setattr(rt.numba, "threading_layer", uninitialized)
    assert rt._numba_layer() is None
    monkeypatch.setattr(rt.numba, "threading_layer", lambda: "tbb")
    assert rt._numba_layer() == "tbb"


# --------------------------------------------------------------------------- finding TBB


def _tbb_installed() -> bool:
    try:
        from importlib.metadata import distribution

        distribution("tbb")
        return True
    except Exception:
        return False


@pytest.mark.skipif(not _tbb_installed(), reason="the pip tbb package is not installed")
def test_tbb_found_by_prefix_and_by_package_metadata(monkeypatch):
    from fastsoftmax import _runtime

    by_prefix = _runtime._tbb_candidates()
    assert by_prefix and all(os.path.exists(p) for p in by_prefix)
    monkeypatch.setattr(_runtime.glob, "glob", lambda pattern: [])  # e.g. an unusual layout
    by_metadata = _runtime._tbb_candidates()
    assert by_metadata and all(os.path.exists(p) for p in by_metadata)
    assert {os.path.realpath(p) for p in by_metadata} <= {os.path.realpath(p) for p in by_prefix}


def test_tbb_not_preloaded_when_user_chose_another_layer(monkeypatch):
    from fastsoftmax import _runtime

    for layer in ("omp", "workqueue", "OMP"):
        monkeypatch.setattr(_runtime.numba.config, "THREADING_LAYER", layer)
        assert _runtime._preload_tbb() is None


@pytest.mark.skipif(not _tbb_installed(), reason="the pip tbb package is not installed")
def test_tbb_preloaded_when_asked_for_explicitly(monkeypatch):
    """NUMBA_THREADING_LAYER=tbb (or safe/threadsafe/forksafe) still needs the library loaded."""
    from fastsoftmax import _runtime

    for layer in ("tbb", "safe", "threadsafe", "forksafe", "default"):
        monkeypatch.setattr(_runtime.numba.config, "THREADING_LAYER", layer)
        assert _runtime._preload_tbb() is not None
