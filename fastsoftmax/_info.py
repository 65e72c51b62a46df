"""``info()``: what the package runs on; ``warmup()``: compile every kernel before first use.

``python -m fastsoftmax info`` prints ``info()``: the returned mapping's ``str()`` is the
formatted report (``format_info``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import platform
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numba
import numpy as np

# _runtime sets up numba's cache location and TBB; kernel modules are imported after it (lazily)
from . import _cache, _runtime


class Info(dict):
    """The dict returned by :func:`info`; ``str()`` gives the formatted report."""

    def __str__(self) -> str:
        return format_info(self)


# ----------------------------------------------------------------------------------- the report


def _version(module: str) -> str | None:
    try:
        return importlib.import_module(module).__version__
    except (ImportError, AttributeError):
        return None


def _kernel_modules() -> list[Any]:
    from . import _kernels

    return [
        importlib.import_module(f"{_kernels.__name__}.{m.name}")
        for m in pkgutil.iter_modules(_kernels.__path__)
        if not m.name.startswith("__")
    ]


def _row_kernels() -> list[Any]:
    """Every RowKernel (serial + parallel dispatcher pair) defined in ``fastsoftmax._kernels``."""
    from ._kernels._compile import RowKernel

    found: dict[int, Any] = {}
    for module in _kernel_modules():
        for value in vars(module).values():
            if isinstance(value, RowKernel):
                found[id(value)] = value
    return list(found.values())


def _cache_dir() -> tuple[str | None, str]:
    """(directory where numba caches the kernels, which rule chose it), read from the cache
    locator numba chose for the softmax kernel."""
    if numba.config.DISABLE_JIT:
        return None, "JIT disabled (NUMBA_DISABLE_JIT)"
    from ._kernels.softmax import softmax_kernel

    cache = getattr(softmax_kernel.serial, "_cache", None)  # numba's FunctionCache
    locator = getattr(getattr(cache, "_impl", None), "locator", None)
    if locator is None:
        return None, "unknown"
    path = os.path.abspath(locator.get_cache_path())
    if isinstance(locator, _cache.PackageCacheLocator):
        chosen = _cache.chosen_cache_dir()
        return path, chosen.source if chosen else "unknown"
    name = type(locator).__name__
    return path, "NUMBA_CACHE_DIR" if name.lstrip(
        "_"
    ) == "UserProvidedCacheLocator" else f"numba's {name}"


_VECTOR_OP = re.compile(r"^\s*v\w+p[sd]\s.*%([yz]mm)\d+", re.MULTILINE)  # packed float AVX op


def _vector_width(asm: str) -> tuple[str | None, int]:
    """(widest vector register used by packed float instructions, how many such instructions)."""
    regs = _VECTOR_OP.findall(asm)
    if not regs:
        return None, 0
    return ("zmm" if "zmm" in regs else "ymm"), len(regs)


def _check_vectorized() -> tuple[bool | None, str]:
    """Whether the exp loops compile to packed AVX code here, and how that was found out.

    Code loaded from numba's disk cache cannot be inspected, so the float32 softmax kernel is
    inspected only if it was compiled in this process; otherwise a small loop over the package's
    ``vexp`` is compiled (not cached) with the kernels' fastmath flags and inspected.
    """
    if numba.config.DISABLE_JIT:
        return False, "JIT disabled"
    from ._kernels.softmax import softmax_kernel

    kernel = softmax_kernel.serial
    for sig, cres in list(kernel.overloads.items()):
        if getattr(sig[0], "dtype", None) != numba.float32:
            continue
        if getattr(cres.library, "_disable_inspection", True):  # loaded from the disk cache
            break
        reg, count = _vector_width(kernel.inspect_asm(sig))
        return (
            reg is not None,
            f"softmax float32 kernel: {count} packed {reg or 'vector'} instructions",
        )
    try:
        from ._kernels import _math

        fastmath = _math.FASTMATH
        vexp = _math.vexp

        @numba.njit(fastmath=fastmath, cache=False)
        def probe(x, out):
            for j in range(x.shape[0]):
                out[j] = vexp(x[j])

        x = np.linspace(-5.0, 5.0, 64, dtype=np.float32)
        out = np.empty_like(x)
        probe(x, out)
        if not np.allclose(out, np.exp(x), rtol=1e-6):
            return False, "probe loop over vexp(float32) gave wrong values"
        reg, count = _vector_width(probe.inspect_asm(probe.signatures[0]))
    except Exception as exc:  # the probe is diagnostics, never a failure of info()
        return None, f"check failed: {type(exc).__name__}: {exc}"
    what = f"{count} packed {reg or 'vector'} instructions"
    return reg is not None, f"probe loop over vexp(float32): {what}"


def _host_cpu() -> str | None:
    try:
        import llvmlite.binding as llvm

        return llvm.get_host_cpu_name()
    except Exception:
        return None


def _loaded_tbb() -> str | None:
    """Path of the TBB library mapped into this process (Linux /proc), else what was preloaded."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split(maxsplit=5)[-1].strip()
                if os.path.basename(path).startswith("libtbb.so"):
                    return path
    except OSError:
        pass
    return _runtime.TBB_LIBRARY


def info(*, initialize: bool = True, check_vector: bool = True) -> Info:
    """Versions, threading layer, thread count, numba cache directory and vectorization status.

    Parameters
    ----------
    initialize : bool
        Initialize numba's threading layer if no parallel kernel has run yet (what the first
        large call would do) so the layer can be reported; with False an uninitialized layer is
        reported as ``"not yet initialized"``. Note: under the ``omp`` layer a process that has
        initialized it runs only serial kernels in forked children.
    check_vector : bool
        Find out whether the exp loops compile to packed vector code (inspects the float32 softmax
        kernel if it was compiled in this process, else compiles a small uncached probe loop,
        ~0.5 s). With False, ``vectorized_exp`` is None.

    Returns
    -------
    Info
        A dict (``str()`` of it is the formatted report) with keys ``fastsoftmax``, ``python``,
        ``numpy``, ``numba``, ``llvmlite`` (versions), ``platform``, ``cpu`` (LLVM host CPU name),
        ``threading_layer``, ``num_threads`` (``numba.get_num_threads()`` of the calling thread),
        ``max_threads`` (``NUMBA_NUM_THREADS``), ``serial_below`` (elements below which kernels
        run serially), ``serial_only``, ``cache_dir`` (where numba caches the compiled kernels:
        by default ``<user cache dir>/fastsoftmax/<version>-<sources hash>/numba-<version>/...``,
        never the package directory), ``cache_dir_source`` (``"user cache directory"``,
        ``"NUMBA_CACHE_DIR"`` or ``"temporary fallback (...)"``), ``vectorized_exp``,
        ``vector_check`` and ``tbb_library`` (path of the loaded TBB library or None).
    """
    from . import __version__

    if initialize:
        _runtime._init_layer()
    layer = _runtime.threading_layer()
    cache_dir, cache_source = _cache_dir()
    vectorized, how = _check_vectorized() if check_vector else (None, "not checked")
    return Info(
        fastsoftmax=__version__,
        python=platform.python_version(),
        numpy=np.__version__,
        numba=numba.__version__,
        llvmlite=_version("llvmlite"),
        platform=f"{sys.platform}-{platform.machine()}",
        cpu=_host_cpu(),
        threading_layer=layer if layer is not None else "not yet initialized",
        num_threads=numba.get_num_threads()
        if layer is not None
        else numba.config.NUMBA_NUM_THREADS,
        max_threads=numba.config.NUMBA_NUM_THREADS,
        serial_below=_runtime.SERIAL_BELOW,
        serial_only=_runtime.serial_only(),
        cache_dir=cache_dir,
        cache_dir_source=cache_source,
        vectorized_exp=vectorized,
        vector_check=how,
        tbb_library=_loaded_tbb(),
    )


def format_info(data: Mapping[str, Any] | None = None) -> str:
    """The report printed by ``python -m fastsoftmax info``: one ``key : value`` line per entry."""
    data = info() if data is None else data
    width = max(len(k) for k in data)
    return "\n".join(f"{k:<{width}} : {'-' if v is None else v}" for k, v in data.items())


# ------------------------------------------------------------------------------------------ warmup

# Public functions that take a ``where=`` mask, listed explicitly: if one of them loses or renames
# the keyword, warmup() (and the tests that call it) fail with a TypeError instead of skipping it.
_MASKED = frozenset(
    {"softmax", "log_softmax", "cross_entropy", "cross_entropy_backward", "cross_entropy_with_grad"}
)


def _calls(dtype: np.dtype, rows: int, classes: int) -> list[tuple[str, tuple, dict]]:
    """(public name, args, kwargs) reaching every kernel and argument-type variant for ``dtype``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, classes)).astype(dtype)
    z = rng.standard_normal((rows, classes))
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    p /= p.sum(axis=-1, keepdims=True)
    probs = p.astype(dtype)
    logp = np.log(p).astype(dtype)
    labels = np.arange(rows) % classes
    target_dtype = dtype if dtype in (np.float32, np.float64) else np.dtype(np.float64)
    soft = p.astype(target_dtype)
    ce_kw = {"weight": np.linspace(0.5, 1.5, classes), "label_smoothing": 0.1}
    calls: list[tuple[str, tuple, dict]] = [
        ("softmax", (x,), {}),
        ("log_softmax", (x,), {}),
        ("logsumexp", (x,), {}),
        ("softmax_jacobian", (probs,), {}),
        ("softmax_jvp", (probs, x), {}),
        ("softmax_vjp", (probs, x), {}),
        ("log_softmax_vjp", (logp, x), {}),
        ("cross_entropy", (x, labels), {}),
        ("cross_entropy", (x, labels), dict(reduction="none", **ce_kw)),
        ("cross_entropy", (x, soft), {}),
        ("cross_entropy", (x, soft), dict(reduction="sum", **ce_kw)),
        ("cross_entropy_backward", (x, labels), {}),
        ("cross_entropy_backward", (x, soft), {}),
        ("cross_entropy_with_grad", (x, labels), {}),
        ("cross_entropy_with_grad", (x, soft), {}),
        ("cross_entropy_with_grad", (x, labels), dict(z_loss=1e-4, softcap=30.0)),
        ("selective_log_softmax", (x, labels), {}),
        ("selective_log_softmax_vjp", (x, labels, labels.astype(dtype)), {}),
        ("linear_cross_entropy", (x, np.eye(classes, dtype=dtype), labels), {}),
        (
            "linear_cross_entropy_with_grad",
            (x, np.eye(classes, dtype=dtype), labels),
            dict(ce_kw, z_loss=1e-4),
        ),
        (
            "linear_cross_entropy_with_grad",
            (x, np.eye(classes, dtype=dtype), soft),
            dict(softcap=30.0),
        ),
    ]
    # masked variants (where=): the label's class always kept
    mask = rng.random((rows, classes)) < 0.7
    mask[np.arange(rows), labels] = True
    calls += [
        (name, args, dict(kwargs, where=mask))
        for name, args, kwargs in list(calls)
        if name in _MASKED
    ]
    # the binary (sigmoid) family, elementwise
    bce_kw = {
        "weight": np.linspace(0.5, 1.5, classes),
        "pos_weight": np.linspace(1.0, 2.0, classes),
    }
    binary_target = (rng.random((rows, classes)) < 0.5).astype(target_dtype)
    calls += [
        ("sigmoid", (x,), {}),
        ("log_sigmoid", (x,), {}),
        ("binary_cross_entropy_with_logits", (x, binary_target), {}),
        ("binary_cross_entropy_with_logits", (x, binary_target), dict(reduction="none", **bce_kw)),
        ("binary_cross_entropy_with_logits_backward", (x, binary_target), {}),
        ("binary_cross_entropy_with_logits_with_grad", (x, binary_target), {}),
        (
            "binary_cross_entropy_with_logits_with_grad",
            (x, binary_target),
            dict(reduction="sum", **bce_kw),
        ),
    ]
    return calls


def warmup(dtypes: Iterable[Any] = ("float32", "float64")) -> float:
    """Compile every kernel, serial and parallel, for inputs of ``dtypes``; the seconds taken.

    Calls each public function on a tiny input (serial kernels) and on one of more than
    ``SERIAL_BELOW`` elements (parallel kernels, when the launcher would use them) of each dtype,
    then compiles the parallel twin of every serial kernel signature seen, so a later change of
    thread count cannot stall either. Compiled code comes from numba's disk cache when present:
    on the 2-core development machine about 1 s from a warm cache, about 2 minutes from an empty
    one. A service that must not stall on its first request calls this at start-up.

    Parameters
    ----------
    dtypes : iterable of dtype-like
        Input dtypes to prepare (e.g. "float32", np.float64, "float16"); float16 inputs run the
        float32 kernels and integer/bool inputs the float64 ones.

    Returns
    -------
    float
        Wall-clock seconds.
    """
    import fastsoftmax

    start = time.perf_counter()
    if numba.config.DISABLE_JIT:  # nothing to compile
        return time.perf_counter() - start
    if isinstance(dtypes, (str, np.dtype, type)):
        dtypes = (dtypes,)
    for dt in dtypes:
        dtype = np.dtype(dt)
        # tiny (serial kernels) and large enough for the parallel kernels, jacobian included
        for rows, classes in ((2, 3), (_runtime.SERIAL_BELOW // 16 + 1, 16)):
            for name, args, kwargs in _calls(dtype, rows, classes):
                getattr(fastsoftmax, name)(*args, **kwargs)
    for kernel in _row_kernels():
        for sig in list(kernel.serial.signatures):
            if sig not in kernel.parallel.signatures:
                kernel.parallel.compile(sig)
    return time.perf_counter() - start
