"""Threading layer, numba cache location, the serial-vs-parallel choice, and the one launcher.

This module is imported before any kernel module (``fastsoftmax/__init__.py`` imports ``_info``
first, which imports this) and imports no kernel itself, because two things must happen before the
first ``@njit`` runs:

- Cache location: kernels use ``cache=True`` and numba picks a kernel's cache directory when it
  is *decorated*; ``fastsoftmax._cache.install()`` (called here) adds the locator that keeps the
  package's compiled code in a per-user cache directory instead of the package directory (see
  ``_cache`` for the rules; ``NUMBA_CACHE_DIR`` still wins).
- TBB: numba prefers the TBB layer (thread- and fork-safe) but loads ``libtbb.so.12`` by soname;
  the pip ``tbb`` package puts it in ``<prefix>/lib``, which the loader only searches when the
  Python binary has that directory in its RUNPATH (pyenv, conda) and not, e.g., in a venv made
  from the system Python, where numba silently falls back to ``omp``. The library is loaded here
  with RTLD_GLOBAL unless the user asked for ``omp`` or ``workqueue``.

Launch rules (``launch``), measured with numba 0.68 on Linux:

- Inputs smaller than ``SERIAL_BELOW`` elements, or a calling thread whose
  ``numba.get_num_threads()`` is 1 (``numba.set_num_threads(1)`` or ``NUMBA_NUM_THREADS=1``),
  run the serial kernel.
- The layer is initialized by the first ``numba.get_num_threads()`` call (numba does this under
  its own locks, so threads making their first call at once agree on one layer) and read right
  after, before any parallel launch.
- ``workqueue`` aborts the process (SIGABRT) when two threads launch parallel kernels at once:
  under it parallel launches are serialized by a lock, and a thread that finds the lock taken runs
  the serial kernel instead of waiting.
- ``omp`` (GNU OpenMP): a forked child of a process that has initialized the layer is killed
  (SIGTERM, "fork() called from a process already using GNU OpenMP") when it launches a parallel
  region: such a child runs serial kernels only.
- If numba cannot load any threading layer (e.g. ``NUMBA_THREADING_LAYER=tbb`` without TBB), a
  warning is issued once and serial kernels are used.

All of this relies on ``kernel.serial`` being serial machine code: numba's cache key ignores
``parallel=`` (numba issue #6845), so the two variants must be cached under different names
(``_kernels/_compile.py``), or one would load the other's code from disk.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading
import warnings
from typing import TYPE_CHECKING

import numba

from . import _cache

if TYPE_CHECKING:
    from ._kernels._compile import RowKernel

# Below this many elements a parallel launch costs more than it saves. benchmarks/thresholds.py on
# the 2-core development machine (softmax float32, 128 classes, tbb), serial time / parallel time:
# 0.76 at 4096 elements, 1.17 at 8192, 1.46 at 16384, 1.7-2.1 from 32768 on.
SERIAL_BELOW = 8192


# --------------------------------------------------------------------------- numba cache location

_cache.install()  # before any kernel is decorated


# --------------------------------------------------------------------------------------------- TBB


def _tbb_names() -> tuple[str, ...]:
    if sys.platform.startswith("win"):
        return ("tbb12.dll",)
    if sys.platform == "darwin":
        return ("libtbb.12.dylib", "libtbb.12.*.dylib")
    return ("libtbb.so.12", "libtbb.so.12.*")


def _tbb_candidates() -> list[str]:
    """Where the pip/conda ``tbb`` package puts the library: ``<prefix>/lib`` (Library/bin on
    Windows) for this interpreter's prefixes and the user base, then the files the installed
    ``tbb`` distribution lists."""
    import site

    prefixes = [
        sys.prefix,
        sys.exec_prefix,
        sys.base_prefix,
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    ]
    if site.USER_BASE:  # None when site ran no setup (python -S)
        prefixes.append(site.USER_BASE)
    subdirs = ("Library/bin", "") if sys.platform.startswith("win") else ("lib",)
    found: list[str] = []
    for prefix in dict.fromkeys(prefixes):
        for sub in subdirs:
            for name in _tbb_names():
                found.extend(sorted(glob.glob(os.path.join(prefix, sub, name))))
    if not found:
        try:
            from importlib.metadata import PackageNotFoundError, distribution

            files = distribution("tbb").files or []
            found = [str(f.locate()) for f in files if os.path.basename(str(f)) in _tbb_names()]
        except (ImportError, PackageNotFoundError):
            pass
    return found


def _preload_tbb() -> str | None:
    """Load TBB globally so numba can pick the TBB layer; the path loaded, or None."""
    if str(numba.config.THREADING_LAYER).lower() in ("omp", "workqueue"):
        return None
    for path in _tbb_candidates():
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)  # 0 on Windows
            return path
        except OSError:
            continue
    return None


TBB_LIBRARY = _preload_tbb()


# ------------------------------------------------------------------------------------- launching

_lock = threading.Lock()  # serializes parallel launches under workqueue
_init_lock = threading.Lock()
_layer: str | None = None  # numba's threading layer, once this module has initialized it
_serial_only = False  # no layer could be loaded, or a forked child of an omp process


def _numba_layer() -> str | None:
    """numba's threading layer if numba has initialized one (in this process or its parent)."""
    try:
        return numba.threading_layer()
    except ValueError:
        return None


def _after_fork_in_child() -> None:
    global _serial_only, _lock, _init_lock
    _lock = threading.Lock()  # the parent's may have been held by another thread
    _init_lock = threading.Lock()
    if _numba_layer() == "omp":
        _serial_only = True


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _init_layer() -> str | None:
    """Initialize numba's threading layer (thread-safe inside numba) and remember its name."""
    global _layer, _serial_only
    with _init_lock:
        if _layer is None and not _serial_only:
            try:
                numba.get_num_threads()  # loads the layer and starts its threads
                _layer = numba.threading_layer()
            except ValueError as exc:  # "No threading layer could be loaded"
                _serial_only = True
                warnings.warn(
                    f"fastsoftmax: numba could not load a threading layer ({exc}); "
                    "running serial kernels",
                    RuntimeWarning,
                    stacklevel=3,
                )
    return _layer


def threading_layer() -> str | None:
    """The numba threading layer in use, or None if none has been initialized yet."""
    return _layer or _numba_layer()


def serial_only() -> bool:
    """True when this process runs serial kernels only (see the module docstring)."""
    return _serial_only


def launch(kernel: RowKernel, work: int, *args):
    """Run ``kernel`` on ``args`` serially or in parallel, whichever is safe and faster.

    ``work`` is the number of elements touched; see the module docstring for the rules.
    """
    if work < SERIAL_BELOW or _serial_only:
        return kernel.serial(*args)
    layer = _layer if _layer is not None else _init_layer()
    if layer is None or numba.get_num_threads() == 1:
        return kernel.serial(*args)
    if layer != "workqueue":
        return kernel.parallel(*args)
    lock = _lock
    if not lock.acquire(blocking=False):
        return kernel.serial(*args)
    try:
        return kernel.parallel(*args)
    finally:
        lock.release()
