"""Compiled data checks: one pass where NumPy would need several, returning the position of the
first bad entry; the wrapper raises from it before any kernel writes."""

from __future__ import annotations

from numba import njit


@njit(error_model="numpy", cache=True)
def first_bad_target(t, classes, ignore_index):
    """Index of the first class-index target t_i outside [0, classes) and != ignore_index, or
    -1 when every target is valid (1-D int64 ``t``)."""
    for i in range(t.shape[0]):
        c = t[i]
        if (c < 0 or c >= classes) and c != ignore_index:
            return i
    return -1
