"""Every in-place twin of a kernel loop compiles to packed AVX code.

LLVM vectorizes a loop that reads ``x`` and writes ``out`` only behind a runtime check that the
two do not overlap; called in place (``out`` is ``x``) that check fails and the scalar loop runs,
5-10x slower. So the kernels compare data pointers and, in place, run a twin of the loop that
reads and writes through one array. Each twin is compiled here as the kernels call it in place,
in float32, and its machine code must hold packed ymm (or zmm) instructions.

Code loaded from numba's disk cache cannot be inspected, and a function compiled afresh inlines
only helpers compiled in the same process: the probes run in a subprocess with an empty cache
directory, so everything they call is compiled there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
from conftest import has_avx2, needs_jit

from fastsoftmax import _info

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Each probe makes the in-place call that the kernel named in its key makes.
EXP_PASSES = [
    "_exp_sum",
    "_exp_store_exact",
    "_exp_store_plain",
    "_exp_inplace_exact",
    "_exp_inplace_plain",
]
EXP_PASS_KEYS = [
    f"{name}[{dtype},{mask}]"
    for dtype in ("float32", "float64")
    for mask in ("all", "mask")
    for name in EXP_PASSES
]

PROBES = f"EXP_PASSES = {EXP_PASSES!r}\n" + textwrap.dedent("""
    import json
    import numpy as np
    from numba import njit

    from fastsoftmax._kernels import _math, binary, derivatives, softmax

    @njit
    def exps_over_x(x, shift, scale):  # log_softmax and cross-entropy rows, out = x
        return _math._exp_inplace_exact(x, shift, scale, x, None)

    @njit
    def plain_exps_over_x(x, shift, scale):  # softmax rows, out = x
        return _math._exp_inplace_plain(x, shift, scale, x, None)

    @njit
    def log_softmax_store(x, m, scale, lse):  # log_softmax, out = x
        softmax._shifted_store_inplace(x, m, scale, lse, None)

    @njit
    def jvp_over_p(p, v, dot, scale):  # softmax_jvp / softmax_vjp, out = probs
        derivatives._jvp_row_inplace(p, v, dot, scale, True)

    @njit
    def jvp_over_v(p, v, dot, scale):  # softmax_jvp / softmax_vjp, out = tangent
        derivatives._jvp_row_inplace(v, p, dot, scale, False)

    @njit
    def log_softmax_vjp_over_logp(logp, g, total, scale):  # log_softmax_vjp, out = log_probs
        derivatives._log_softmax_vjp_row_inplace(logp, g, total, scale, True)

    @njit
    def log_softmax_vjp_over_g(logp, g, total, scale):  # log_softmax_vjp, out = cotangent
        derivatives._log_softmax_vjp_row_inplace(g, logp, total, scale, False)

    @njit
    def sigmoid_over_x(x):  # sigmoid, out = x
        binary.sigmoid_inplace(x, False)

    @njit
    def log_sigmoid_over_x(x):  # log_sigmoid, out = x
        binary.sigmoid_inplace(x, True)

    @njit
    def bce_grad_over_x(x, t, w, pw, c, loss):  # binary cross-entropy gradient, out = logits
        binary.bce_grad_inplace(x, t, w, pw, c, loss)

    f32 = np.float32
    a = np.linspace(-3.0, 3.0, 1000).astype(f32)
    b = np.linspace(1.0, -1.0, 1000).astype(f32)
    one = f32(1.0)
    t, w = (b > 0).astype(f32), np.ones_like(a)
    calls = {
        "exps_over_x": (exps_over_x, (a.copy(), f32(3.0), one)),
        "plain_exps_over_x": (plain_exps_over_x, (a.copy(), f32(3.0), one)),
        "log_softmax_store": (log_softmax_store, (a.copy(), f32(3.0), one, f32(0.5))),
        "jvp_over_p": (jvp_over_p, (a.copy(), b, f32(0.1), one)),
        "jvp_over_v": (jvp_over_v, (a, b.copy(), f32(0.1), one)),
        "log_softmax_vjp_over_logp": (log_softmax_vjp_over_logp, (a.copy(), b, f32(0.1), one)),
        "log_softmax_vjp_over_g": (log_softmax_vjp_over_g, (a, b.copy(), f32(0.1), one)),
        "sigmoid_over_x": (sigmoid_over_x, (a.copy(),)),
        "log_sigmoid_over_x": (log_sigmoid_over_x, (a.copy(),)),
        "bce_grad_over_x": (
            bce_grad_over_x,
            (a.copy(), t, w, w, one, np.empty_like(a)),
        ),
    }
    asm = {}
    for name, (probe, args) in calls.items():
        probe(*args)
        asm[name] = probe.inspect_asm(probe.signatures[0])
    # every exp pass as the row kernels call it, in both dtypes, with and without a mask
    for dtype in (np.float32, np.float64):
        row = np.linspace(-3.0, 3.0, 1000).astype(dtype)
        for mask in (None, row > 0):
            for name in EXP_PASSES:
                row_pass = getattr(_math, name)
                row_pass(row.copy(), dtype(3.0), dtype(1.0), row.copy(), mask)
                key = f"{name}[{np.dtype(dtype).name},{'mask' if mask is not None else 'all'}]"
                asm[key] = row_pass.inspect_asm(row_pass.signatures[-1])
    print(json.dumps(asm))
""")

NAMES = [
    "exps_over_x",
    "plain_exps_over_x",
    "log_softmax_store",
    "jvp_over_p",
    "jvp_over_v",
    "log_softmax_vjp_over_logp",
    "log_softmax_vjp_over_g",
    "sigmoid_over_x",
    "log_sigmoid_over_x",
    "bce_grad_over_x",
]


pytestmark = [
    needs_jit,
    pytest.mark.slow,
    pytest.mark.skipif(not has_avx2(), reason="the kernels are vectorized for AVX2 (ymm) or wider"),
]


@pytest.fixture(scope="module")
def probe_asm(tmp_path_factory) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env["NUMBA_CACHE_DIR"] = str(tmp_path_factory.mktemp("numba-cache"))
    proc = subprocess.run(
        [sys.executable, "-c", PROBES], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_every_probe_is_listed(probe_asm):
    assert sorted(probe_asm) == sorted(NAMES + EXP_PASS_KEYS)


@pytest.mark.parametrize("name", NAMES)
def test_in_place_twin_is_vectorized(probe_asm, name):
    reg, count = _info._vector_width(probe_asm[name])
    assert reg in ("ymm", "zmm"), f"{name}: no packed ymm/zmm instruction in its machine code"
    assert count >= 4, f"{name}: only {count} packed instructions"


# Packed FMAs: the exp's polynomial (5 Horner steps in float32) and its reduction run on vectors.
# A helper that LLVM does not inline is a call in the loop, and the loop stays scalar: on an
# AVX-512 host the exact passes (log_softmax, cross-entropy, logsumexp) and every masked pass
# ran their exps one at a time, 5-6x slower, while a loose "some packed instruction" check passed
# on the float64 partial sums alone.
MIN_PACKED_FMAS = 8


@pytest.mark.skipif(not has_avx2(fma=True), reason="counts FMA instructions")
@pytest.mark.parametrize("key", EXP_PASS_KEYS)
def test_exp_pass_computes_its_exps_on_vectors(probe_asm, key):
    packed = len(re.findall(r"\bvfn?madd\w*p[sd]\b", probe_asm[key]))
    assert packed >= MIN_PACKED_FMAS, f"{key}: {packed} packed FMA instructions, the exp is scalar"
