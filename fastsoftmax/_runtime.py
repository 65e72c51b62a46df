"""Threading layer, the serial-vs-parallel choice, and the one place kernels are launched.

- Threading layer: numba prefers TBB, but finds the pip package's ``libtbb.so.12`` only when it is
  already loaded; it is loaded here (RTLD_GLOBAL) before the first parallel launch, unless
  ``NUMBA_THREADING_LAYER`` is set by the user.
- ``workqueue`` (numba's fallback) aborts the process when two threads launch parallel kernels at
  once: parallel launches are then serialized by a lock, and a thread that finds the lock taken
  runs the serial kernel instead of waiting.
- ``omp`` (GNU OpenMP) kills a forked child that launches a parallel region after the parent did:
  after a fork, the child runs serial kernels only.
- Inputs smaller than ``SERIAL_BELOW`` elements run the serial kernel (no thread wake-up).
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading

import numba

from ._kernels._compile import RowKernel

# Below this many elements a parallel launch costs more than it saves: on the 2-core development
# machine the crossover of the softmax kernel (float32) was between 16k and 64k elements
# (benchmarks/test_threshold.py reproduces the measurement).
SERIAL_BELOW = 32768


def _preload_tbb() -> str | None:
    """Load the pip ``tbb`` package's library globally so numba can pick the TBB layer."""
    if os.environ.get("NUMBA_THREADING_LAYER"):
        return None
    prefixes = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.dirname(sys.executable))}
    for prefix in prefixes:
        for path in sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*"))):
            try:
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                return path
            except OSError:
                continue
    return None


TBB_LIBRARY = _preload_tbb()

_lock = threading.Lock()
_layer: str | None = None  # known after the first parallel launch
_serial_only = False  # set in a forked child of a process that used the omp layer


def _after_fork_in_child() -> None:
    global _serial_only, _lock
    _lock = threading.Lock()
    if _layer == "omp":
        _serial_only = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def threading_layer() -> str | None:
    """The numba threading layer in use, or None before the first parallel launch."""
    return _layer


def launch(kernel: RowKernel, work: int, *args):
    """Run ``kernel`` on ``args`` serially or in parallel, whichever is safe and faster."""
    global _layer
    if work < SERIAL_BELOW or _serial_only or numba.get_num_threads() == 1:
        return kernel.serial(*args)
    if _layer is not None and _layer != "workqueue":
        return kernel.parallel(*args)
    # workqueue (or not yet known): one parallel launch at a time; others run serially
    if not _lock.acquire(blocking=False):
        return kernel.serial(*args)
    try:
        result = kernel.parallel(*args)
        if _layer is None:
            _layer = numba.threading_layer()
        return result
    finally:
        _lock.release()
