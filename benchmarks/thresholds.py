"""Measure the two size thresholds of the kernels on this machine.

    python benchmarks/thresholds.py

1. ``fastsoftmax._runtime.SERIAL_BELOW``: below how many elements the serial kernel beats the
   parallel one (a parallel launch wakes the worker threads). Times ``softmax_kernel.serial`` and
   ``.parallel`` side by side on float32 arrays with 128 classes.
2. ``fastsoftmax._kernels.softmax.SHORT_ROW``: below how many classes the chunked short-row path
   (one long vectorized exp loop over many rows, ``short_rows``) beats the per-row loop
   (``softmax_row`` per row).
Ratios are measured side by side in one run; absolute times vary with the machine's load.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

from fastsoftmax._kernels.softmax import CHUNK, short_rows, softmax_kernel, softmax_row


@njit(cache=True)
def _chunked(x, scale, out):
    n, classes = x.shape
    rows = max(1, CHUNK // classes)
    for r0 in range(0, n, rows):
        short_rows(x, r0, min(n, r0 + rows), scale, out, False)


@njit(cache=True)
def _per_row(x, scale, out):
    for i in range(x.shape[0]):
        softmax_row(x[i], scale, out[i], None)


def _best(f, *args, budget=0.05):
    f(*args)
    best = np.inf
    stop = time.perf_counter() + budget
    while time.perf_counter() < stop or best == np.inf:
        t0 = time.perf_counter()
        f(*args)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    one = np.float32(1.0)
    print("serial vs parallel (float32, 128 classes)")
    print(f"{'elements':>10} {'serial us':>10} {'parallel us':>12} {'serial/parallel':>16}")
    for log2 in range(10, 21):
        x = rng.standard_normal((2**log2 // 128, 128)).astype(np.float32)
        out = np.empty_like(x)
        s = _best(softmax_kernel.serial, x, one, out, None)
        p = _best(softmax_kernel.parallel, x, one, out, None)
        print(f"{x.size:>10} {s * 1e6:>10.1f} {p * 1e6:>12.1f} {s / p:>16.2f}")
    print("\nchunked short rows vs per-row loop (float32, 65536 elements, serial)")
    print(f"{'classes':>8} {'chunked us':>11} {'per-row us':>11} {'per-row/chunked':>16}")
    for classes in (4, 8, 12, 16, 20, 24, 32, 48, 64, 128):
        x = rng.standard_normal((65536 // classes, classes)).astype(np.float32)
        out = np.empty_like(x)
        c = _best(_chunked, x, one, out)
        r = _best(_per_row, x, one, out)
        print(f"{classes:>8} {c * 1e6:>11.1f} {r * 1e6:>11.1f} {r / c:>16.2f}")


if __name__ == "__main__":
    main()
