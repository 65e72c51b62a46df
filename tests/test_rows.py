"""Borrowed row views (``_kernels._rows.row_of``): the same rows as ``a[i]``, writable through to
the owner, and seen by numba's parallel-loop pass as views of the owner."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from conftest import needs_jit
from numba import njit, prange

from fastsoftmax._kernels._rows import row_of


@njit
def _rows_doubled(a, out):
    for i in range(a.shape[0]):
        src, dst = row_of(a, i), row_of(out, i)
        for j in range(src.shape[0]):
            dst[j] = src[j] * 2


@njit(parallel=True)
def _last_store_in_parallel_loop(a, out, k):
    # the shape of the cross-entropy gradient loop: a loop of stores, then one more store to the
    # borrowed row that nothing in the loop body reads afterwards
    for i in prange(a.shape[0]):
        g = row_of(out, i)
        for j in range(a.shape[1]):
            g[j] = a[i, j]
        g[k] -= 1.0


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
@pytest.mark.parametrize("layout", ["C", "strided"])
def test_rows_match_numpy_rows_and_write_through(dtype, layout):
    base = np.arange(7 * 12, dtype=dtype).reshape(7, 12)
    a = base if layout == "C" else base[::2, ::3]
    out = np.zeros_like(base) if layout == "C" else np.zeros_like(base)[::2, ::3]
    _rows_doubled(a, out)
    np.testing.assert_array_equal(out, a * 2, strict=True)


def test_read_only_owner_gives_read_only_rows():
    a = np.ones((3, 4))
    a.flags.writeable = False
    out = np.zeros((3, 4))
    _rows_doubled(a, out)
    np.testing.assert_array_equal(out, 2 * a)


@needs_jit
def test_last_store_to_a_borrowed_row_survives_the_parallel_loop_pass():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has fewer than 2 threads")
    a = np.arange(40 * 9, dtype=np.float64).reshape(40, 9)
    out = np.zeros_like(a)
    _last_store_in_parallel_loop(a, out, 3)
    expected = a.copy()
    expected[:, 3] -= 1.0
    np.testing.assert_array_equal(out, expected)
