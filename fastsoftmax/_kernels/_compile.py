"""Compile one row-loop source twice: a parallel kernel and a serial one for small inputs."""

from __future__ import annotations

from typing import Callable, NamedTuple

from numba import njit

from ._math import FASTMATH


class RowKernel(NamedTuple):
    """A row loop compiled with ``parallel=True`` (prange over rows) and without (plain loop)."""

    parallel: Callable
    serial: Callable


def row_kernel(fn: Callable) -> RowKernel:
    """Compile ``fn`` (a loop ``for i in prange(rows)``) both ways, cached on disk."""
    return RowKernel(
        parallel=njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)(fn),
        serial=njit(parallel=False, fastmath=FASTMATH, error_model="numpy", cache=True)(fn),
    )
