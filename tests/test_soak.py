"""Soak: many mixed calls in one process, resident memory flat, results still right at the end.

One interpreter (a subprocess, so its resident set is its own) makes ``CALLS`` calls drawn at
random from a table of cases: every public kernel function, float16/float32/float64/int inputs,
shapes from one row of 3 classes to 4-D batches, above and below the parallel threshold,
``out=`` buffers, weights, ignored labels, probability targets, masks. It records the resident set
size (``/proc/self/statm``) after warm-up (20% of the calls) and at the end: growth must stay under
``MAX_GROWTH_MB``. Every 997th call and, at the end, every case is checked against
``fastsoftmax.reference`` and bit for bit against its first result.

100,000 calls by default (about 10 s on the 2-core development machine);
``FASTSOFTMAX_SOAK_CALLS=1000000`` runs a longer soak.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import needs_jit
from test_threading import CASES, ROOT

# subprocess scenarios: coverage does not see them anyway, and they take half a minute
pytestmark = [needs_jit, pytest.mark.slow]

CALLS = int(os.environ.get("FASTSOFTMAX_SOAK_CALLS", "100000"))
MAX_GROWTH_MB = 20.0

SOAK = r"""
import gc, json, resource
PAGE = os.sysconf("SC_PAGE_SIZE")

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20

cases = []
# (rows, classes): tiny, typical (the Jacobian above the parallel threshold), wide rows, and
# 344 x 96 = 33024 elements, above SERIAL_BELOW (no Jacobian there: 25 MB per call)
for seed, (rows, classes) in enumerate([(1, 3), (7, 10), (64, 33), (8, 1000), (344, 96)]):
    cases += [c for c in make_cases(rows, classes, ("float32", "float64"), seed=seed)
              if rows * classes <= 4096 or c[1] != "softmax_jacobian"]
cases += make_cases(5, 7, ("float16", "int32", "bool"), seed=10)
missing = uncovered(cases)
assert not missing, missing

# N-D inputs, another axis, out= buffers
rng = np.random.default_rng(99)
x3 = rng.standard_normal((4, 6, 9)).astype(np.float32)
p3 = fs.softmax(x3, axis=1)
extra = [
    ("softmax", (x3,), dict(axis=1)),
    ("log_softmax", (x3,), dict(axis=0, temperature=0.5)),
    ("logsumexp", (x3,), dict(axis=1, keepdims=True)),
    ("softmax_jvp", (p3, x3), dict(axis=1)),
    ("softmax_jacobian", (p3,), dict(axis=1)),
]
for name, args, kwargs in extra:
    cases.append(
        (f"{name}(3-D, {kwargs})", name, args, kwargs, getattr(ref, name)(*args, **kwargs))
    )
out_cases = []
for label, name, args, kwargs, expected in list(cases):
    with_out = ("softmax", "log_softmax", "softmax_vjp", "cross_entropy_with_grad")
    if name in with_out and "where" not in kwargs:
        target = expected[1] if isinstance(expected, tuple) else expected
        if isinstance(target, np.ndarray) and target.size <= 40000:
            buf = np.empty_like(target)
            out_cases.append((label + " out=", name, args, dict(kwargs, out=buf), expected))
cases += out_cases

first = [None] * len(cases)
checks = 0

def run_case(i, check):
    global checks
    label, name, args, kwargs, expected = cases[i]
    got = getattr(fs, name)(*args, **kwargs)
    if check:
        check_reference(label, got, expected)
        checks += 1
    snapshot = tuple(np.array(p, copy=True) for p in parts(got))  # out= buffers are reused
    if first[i] is None:
        first[i] = snapshot
    elif check:
        assert same(snapshot, first[i]), f"{label}: result changed during the soak"

for i in range(len(cases)):  # warm-up: every case once (compiles, fills numba's caches)
    run_case(i, True)

order = np.random.default_rng(2024).integers(0, len(cases), size=CALLS)
gc.collect()
samples = {}
t0 = time.perf_counter()
warm = CALLS // 5
for n, i in enumerate(order, start=1):
    run_case(int(i), n % 997 == 0)
    if n == warm:
        gc.collect()
        samples["warm"] = rss_mb()
    if n % (CALLS // 10) == 0:
        samples[n] = rss_mb()
elapsed = time.perf_counter() - t0
gc.collect()
samples["end"] = rss_mb()
for i in range(len(cases)):
    run_case(i, True)
print(json.dumps({
    "calls": CALLS, "cases": len(cases), "seconds": elapsed, "checks": checks,
    "rss_warm_mb": samples["warm"], "rss_end_mb": samples["end"],
    "growth_mb": samples["end"] - samples["warm"],
    "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "rss_trace_mb": {str(k): round(v, 1) for k, v in samples.items()},
}))
"""


def test_soak_memory_flat_and_results_right():
    script = CASES + f"CALLS = {CALLS}\n" + SOAK
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    assert proc.returncode == 0, (
        f"soak failed (exit {proc.returncode})\n{proc.stdout[-2000:]}\n{proc.stderr[-5000:]}"
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(report)
    assert report["calls"] == CALLS
    assert report["growth_mb"] < MAX_GROWTH_MB, report
