"""``fastsoftmax.info()``, ``fastsoftmax.warmup()`` and ``python -m fastsoftmax info``."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import textwrap
import weakref

import numba
import numpy as np
import pytest
from conftest import has_avx2, needs_jit

import fastsoftmax as fs
from fastsoftmax import _cache, _info, _runtime

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

KEYS = {
    "fastsoftmax": str,
    "python": str,
    "numpy": str,
    "numba": str,
    "llvmlite": str,
    "platform": str,
    "cpu": (str, type(None)),
    "threading_layer": str,
    "num_threads": int,
    "max_threads": int,
    "serial_below": int,
    "serial_only": bool,
    "cache_dir": (str, type(None)),
    "cache_dir_source": str,
    "vectorized_exp": (bool, type(None)),
    "vector_check": str,
    "tbb_library": (str, type(None)),
}


def run_python(script: str, **env: str) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )


@pytest.fixture(scope="module")
def report() -> dict:
    return fs.info()


def test_info_keys_and_types(report):
    assert isinstance(report, dict)
    assert set(report) == set(KEYS)
    for key, kind in KEYS.items():
        assert isinstance(report[key], kind), (key, report[key])


def test_info_versions(report):
    import llvmlite

    assert report["fastsoftmax"] == fs.__version__
    assert report["numpy"] == np.__version__
    assert report["numba"] == numba.__version__
    assert report["llvmlite"] == llvmlite.__version__
    assert report["python"] == platform.python_version()


def test_info_threads(report):
    # info() initialized the layer, so numba can name it and it is the one the launcher uses
    assert report["threading_layer"] == numba.threading_layer()
    assert report["threading_layer"] in ("tbb", "omp", "workqueue")
    assert report["max_threads"] == numba.config.NUMBA_NUM_THREADS
    assert 1 <= report["num_threads"] <= report["max_threads"]
    assert report["serial_below"] == _runtime.SERIAL_BELOW
    if report["threading_layer"] == "tbb":
        assert report["tbb_library"] and "tbb" in os.path.basename(report["tbb_library"])


@needs_jit
def test_info_cache_dir(report):
    if numba.config.CACHE_DIR:
        assert report["cache_dir_source"] == "NUMBA_CACHE_DIR"
        assert report["cache_dir"].startswith(os.path.abspath(numba.config.CACHE_DIR))
    else:
        assert report["cache_dir_source"] in (_cache.USER_CACHE, _cache.FALLBACK)
        assert report["cache_dir"].startswith(_cache.chosen_cache_dir().path)
    assert not report["cache_dir"].startswith(os.path.dirname(os.path.abspath(fs.__file__)))
    assert os.path.isdir(report["cache_dir"])


@needs_jit
@pytest.mark.skipif(not has_avx2(), reason="the vectorized exp targets AVX2 (ymm) or wider")
def test_info_vectorized_exp_is_active(report):
    assert report["vectorized_exp"] is True, report["vector_check"]
    assert "ymm" in report["vector_check"] or "zmm" in report["vector_check"]


def test_vector_width_parser():
    asm = textwrap.dedent("""
        vmulps  %ymm1, %ymm2, %ymm3
        vfmadd213ps     (%rax), %ymm4, %ymm0
        vmulss  %xmm1, %xmm2, %xmm3
        vaddsd  %xmm1, %xmm2, %xmm3
    """)
    assert _info._vector_width(asm) == ("ymm", 2)
    assert _info._vector_width("vmulss %xmm1, %xmm2, %xmm3\nvaddpd %xmm0, %xmm1, %xmm1") == (
        None,
        0,
    )
    assert _info._vector_width("vaddpd %zmm0, %zmm1, %zmm1\nvaddps %ymm0, %ymm1, %ymm1")[0] == "zmm"


def test_info_without_checks_is_cheap_and_says_not_checked():
    r = fs.info(check_vector=False)
    assert r["vectorized_exp"] is None and r["vector_check"] == "not checked"


@pytest.mark.slow
def test_info_before_any_parallel_kernel_says_not_yet_initialized():
    proc = run_python("""
        import fastsoftmax, numba
        r = fastsoftmax.info(initialize=False, check_vector=False)
        print(r["threading_layer"])
        try:
            numba.threading_layer()
            print("initialized")
        except ValueError:
            print("still uninitialized")
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["not", "yet", "initialized", "still", "uninitialized"]


def test_format_info_lists_every_key(report):
    text = str(report)  # Info.__str__ is format_info
    assert text == _info.format_info(report)
    lines = text.splitlines()
    assert len(lines) == len(report)
    for line, (key, value) in zip(lines, report.items(), strict=True):
        name, _, shown = line.partition(" : ")
        assert name.strip() == key
        assert shown == ("-" if value is None else str(value))


# --------------------------------------------------------------------------- warmup


def test_warmup_mask_table_matches_the_signatures():
    """``_info._MASKED`` (the functions warmup calls with ``where=``) is exactly the public
    functions that take a mask: a new masked function or a renamed keyword fails here."""
    import inspect

    takes_where = {
        name for name in fs.__all__ if "where" in inspect.signature(getattr(fs, name)).parameters
    }
    assert _info._MASKED == takes_where


def test_warmup_calls_reach_every_public_kernel_function():
    """warmup's call table names every public function but info/warmup, for every dtype rule."""
    public = set(fs.__all__) - {"info", "warmup"}
    for dtype in ("float32", "float64", "float16", "int64", "bool"):
        calls = _info._calls(np.dtype(dtype), 3, 4)
        assert public <= {name for name, _, _ in calls}, public - {name for name, _, _ in calls}
        for name, args, kwargs in calls:  # and every call is valid
            getattr(fs, name)(*args, **kwargs)


@pytest.mark.slow
@needs_jit
def test_warmup_compiles_every_kernel_both_ways():
    seconds = fs.warmup()
    assert isinstance(seconds, float) and seconds >= 0.0
    kernels = _info._row_kernels()
    assert len(kernels) >= 6  # softmax, log_softmax, logsumexp, jvp, lsvjp, jacobian, CE x2, ...
    for kernel in kernels:
        name = kernel.serial.py_func.__name__
        for variant in (kernel.serial, kernel.parallel):
            dtypes = {str(sig[0].dtype) for sig in variant.signatures}
            assert {"float32", "float64"} <= dtypes, (name, variant, dtypes)
        assert set(kernel.serial.signatures) <= set(kernel.parallel.signatures), name
    again = fs.warmup()
    assert again < 10.0  # everything is compiled now: only the calls themselves


def _read_only(value):
    if isinstance(value, np.ndarray):
        value = value.copy()
        value.flags.writeable = False
    return value


@needs_jit
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_read_only_inputs_compile_nothing_new(dtype):
    """Read-only inputs (np.broadcast_to, memory maps, arrays from other libraries) reach the
    kernels compiled for writable ones: no new compilation, the same results, inputs intact."""

    def counts():
        return {
            id(k): (len(k.serial.signatures), len(k.parallel.signatures))
            for k in _info._row_kernels()
        }

    calls = _info._calls(np.dtype(dtype), 3, 4) + _info._calls(np.dtype(dtype), 2000, 9)
    expected = [getattr(fs, name)(*args, **kwargs) for name, args, kwargs in calls]
    before = counts()
    for (name, args, kwargs), want in zip(calls, expected, strict=True):
        ro_args = tuple(_read_only(a) for a in args)
        ro_kwargs = {k: _read_only(a) for k, a in kwargs.items()}
        got = getattr(fs, name)(*ro_args, **ro_kwargs)
        for g, w in zip(
            got if isinstance(got, tuple) else (got,),
            want if isinstance(want, tuple) else (want,),
            strict=True,
        ):
            np.testing.assert_array_equal(g, w, err_msg=name, strict=True)
        for a, b in zip(
            ro_args + tuple(ro_kwargs.values()), args + tuple(kwargs.values()), strict=True
        ):
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b, err_msg=name, strict=True)
    assert counts() == before


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a)
    a.flags.writeable = False
    return a


def _read_only_calls(dtype: np.dtype) -> list[tuple[str, tuple, dict]]:
    """Calls whose read-only arrays reach the kernels by every route other than a C-contiguous
    input with the class axis last: other axes, non-contiguous views, masks, targets, weights,
    tangents and upstream gradients."""
    rng = np.random.default_rng(1)
    x = _frozen(rng.standard_normal((4, 5, 6)).astype(dtype))
    strided = rng.standard_normal((8, 12)).astype(dtype)[::2, ::2]
    strided.flags.writeable = False
    p = np.exp(x) / np.exp(x).sum(axis=0, keepdims=True)
    p.flags.writeable = False
    z = _frozen(rng.standard_normal((6, 5)).astype(dtype))
    labels = _frozen(np.arange(6) % 5)
    soft = _frozen(np.full((6, 5), 0.2, dtype))
    mask = _frozen(rng.random((6, 5)) < 0.7)
    mask_row = np.broadcast_to(np.array([True, False, True, True, True]), (6, 5))
    weight = _frozen(np.linspace(0.5, 1.5, 5).astype(dtype))
    grads = _frozen(np.linspace(0.5, 1.5, 6).astype(dtype))
    y = _frozen((rng.random((6, 5)) < 0.5).astype(dtype))
    # a column with the class axis first is C-contiguous once that axis is moved last: no copy
    col = _frozen(rng.standard_normal((5, 1)).astype(dtype))
    col_p = _frozen(np.full((5, 1), 0.2, dtype))
    col_mask = _frozen(np.array([[True], [False], [True], [True], [True]]))
    return [
        ("softmax", (_frozen(np.ones((3, 1), dtype)),), {"axis": 0}),
        ("log_softmax", (col,), {"axis": 0, "where": col_mask}),
        ("logsumexp", (col,), {"axis": 0}),
        ("softmax_jacobian", (col_p,), {"axis": 0}),
        ("softmax_jvp", (col_p, col), {"axis": 0}),
        ("log_softmax_vjp", (_frozen(np.log(col_p)), col), {"axis": 0}),
        *[
            (name, (x,), {"axis": axis})
            for name in ("softmax", "log_softmax", "logsumexp")
            for axis in (0, 1)
        ],
        ("softmax", (strided,), {}),
        ("logsumexp", (strided,), {"axis": 0}),
        ("softmax", (z,), {"where": mask}),
        ("log_softmax", (z,), {"where": mask_row}),
        ("softmax_jacobian", (p,), {"axis": 0}),
        ("softmax_jvp", (p, x), {"axis": 0}),
        ("softmax_vjp", (p, np.broadcast_to(x[:, :, :1], x.shape)), {"axis": 1}),
        ("log_softmax_vjp", (_frozen(np.log(p[:, :, 0])), x[:, :, 0]), {"axis": 0}),
        ("cross_entropy", (z, labels), {"weight": weight}),
        ("cross_entropy", (z, soft), {"where": mask_row, "reduction": "sum"}),
        ("cross_entropy_backward", (z, labels), {"reduction": "none", "grad_output": grads}),
        ("cross_entropy_with_grad", (_frozen(np.asfortranarray(z)), soft), {"where": mask}),
        ("sigmoid", (strided,), {}),
        ("log_sigmoid", (x,), {}),
        ("binary_cross_entropy_with_logits", (z, y), {"weight": weight, "pos_weight": weight}),
        (
            "binary_cross_entropy_with_logits_backward",
            (z, y),
            {"weight": mask_row.astype(dtype), "reduction": "none", "grad_output": y},
        ),
    ]


def _signature_counts() -> dict[int, tuple[int, int]]:
    return {
        id(k): (len(k.serial.signatures), len(k.parallel.signatures)) for k in _info._row_kernels()
    }


@needs_jit
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_read_only_inputs_on_every_path_compile_nothing_new(dtype):
    """Read-only arrays reaching the kernels by any route (another axis, a non-contiguous view,
    where=, targets, weights, tangents, grad_output, the binary family) use the kernels compiled
    for writable arrays and give the same results."""
    for name, args, kwargs in _read_only_calls(np.dtype(dtype)):
        writable = [np.array(a) if isinstance(a, np.ndarray) else a for a in args]
        writable_kw = {
            k: np.array(a) if isinstance(a, np.ndarray) else a for k, a in kwargs.items()
        }
        arrays = [a for a in (*args, *kwargs.values()) if isinstance(a, np.ndarray)]
        assert not all(a.flags.writeable for a in arrays), name
        want = getattr(fs, name)(*writable, **writable_kw)
        before = _signature_counts()
        got = getattr(fs, name)(*args, **kwargs)
        assert _signature_counts() == before, f"{name}{tuple(kwargs)} compiled a new signature"
        for g, w in zip(
            got if isinstance(got, tuple) else (got,),
            want if isinstance(want, tuple) else (want,),
            strict=True,
        ):
            np.testing.assert_array_equal(g, w, err_msg=name, strict=True)


def test_writable_alias_keeps_its_read_only_owner_alive():
    """The writable alias a read-only kernel input becomes holds the array it points into."""
    from fastsoftmax._validate import kernel_input

    owner = np.arange(12.0).reshape(3, 4)
    owner.flags.writeable = False
    ref = weakref.ref(owner)
    alias = kernel_input(owner)
    assert alias.flags.writeable and alias.shape == (3, 4) and np.shares_memory(alias, owner)
    del owner
    gc.collect()
    assert ref() is not None  # held through alias.base
    base = alias.base
    assert getattr(base, "owner", None) is ref()
    np.testing.assert_array_equal(alias, np.arange(12.0).reshape(3, 4))
    del alias, base
    gc.collect()
    assert ref() is None  # and released with the alias


def _byte_swapped(value):
    if isinstance(value, np.ndarray) and value.dtype.kind in "fiu":
        return value.astype(value.dtype.newbyteorder())
    return value


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
def test_byte_swapped_inputs_match_native(dtype):
    """Arrays in non-native byte order (e.g. read from big-endian files) give the native results,
    in the native dtype, for every call of warmup's table."""
    for name, args, kwargs in _info._calls(np.dtype(dtype), 5, 7):
        want = getattr(fs, name)(*args, **kwargs)
        swapped_args = tuple(_byte_swapped(a) for a in args)
        assert any(isinstance(a, np.ndarray) and not a.dtype.isnative for a in swapped_args)
        got = getattr(fs, name)(*swapped_args, **{k: _byte_swapped(a) for k, a in kwargs.items()})
        for g, w in zip(
            got if isinstance(got, tuple) else (got,),
            want if isinstance(want, tuple) else (want,),
            strict=True,
        ):
            np.testing.assert_array_equal(g, w, err_msg=name, strict=True)


def test_warmup_other_dtypes_and_single_dtype():
    assert isinstance(fs.warmup("float32"), float)
    assert isinstance(fs.warmup(dtypes=[np.float16, "int32", bool]), float)


def test_warmup_with_jit_disabled_has_nothing_to_do():
    proc = run_python(
        "import fastsoftmax; print(fastsoftmax.warmup() < 1.0)", NUMBA_DISABLE_JIT="1"
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "True", proc.stderr


@pytest.mark.slow
@needs_jit
def test_warmup_in_a_fresh_process_leaves_nothing_to_compile():
    """After warmup(), calls of every kind compile nothing more."""
    proc = run_python("""
        import fastsoftmax as fs
        from fastsoftmax import _info
        fs.warmup()
        def counts():
            return {id(k): (len(k.serial.signatures), len(k.parallel.signatures))
                    for k in _info._row_kernels()}
        before = counts()
        for dt in ("float32", "float64"):
            for rows, classes in ((3, 5), (4000, 12)):
                for name, args, kwargs in _info._calls(
                    __import__("numpy").dtype(dt), rows, classes
                ):
                    getattr(fs, name)(*args, **kwargs)
        after = counts()
        print("same" if before == after else f"compiled more: {before} -> {after}")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("same"), proc.stdout


# --------------------------------------------------------------------------- command line


@pytest.mark.slow
@pytest.mark.skipif(
    not os.path.exists(os.path.join(ROOT, "fastsoftmax", "__main__.py")),
    reason="no fastsoftmax/__main__.py yet",
)
def test_command_line_info():
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "fastsoftmax", "info"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    for key in ("threading_layer", "num_threads", "cache_dir", "vectorized_exp", "numba"):
        assert key in out, out
    assert numba.__version__ in out and fs.__version__ in out
