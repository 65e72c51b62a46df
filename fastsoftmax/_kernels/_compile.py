"""Compile one row-loop source twice: a parallel kernel and a serial one for small inputs."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import NamedTuple

from numba import njit

from ._math import FASTMATH


class RowKernel(NamedTuple):
    """A row loop compiled with ``parallel=True`` (prange over rows) and without (plain loop)."""

    parallel: Callable
    serial: Callable


def _renamed(fn: Callable, suffix: str) -> Callable:
    """A copy of ``fn`` whose qualified name ends in ``suffix``.

    numba names a function's cache files after its qualified name and its cache key ignores the
    compile options (numba issue #6845): compiled twice from the same function, the serial and
    the parallel dispatcher would load each other's machine code from the disk cache.
    """
    copy = types.FunctionType(
        fn.__code__, fn.__globals__, fn.__name__ + suffix, fn.__defaults__, fn.__closure__
    )
    copy.__qualname__ = fn.__qualname__ + suffix
    copy.__module__ = fn.__module__
    copy.__doc__ = fn.__doc__
    return copy


def row_kernel(fn: Callable) -> RowKernel:
    """Compile ``fn`` (a loop ``for i in prange(rows)``) both ways, cached on disk (apart)."""
    return RowKernel(
        parallel=njit(parallel=True, fastmath=FASTMATH, error_model="numpy", cache=True)(
            _renamed(fn, "_parallel")
        ),
        serial=njit(parallel=False, fastmath=FASTMATH, error_model="numpy", cache=True)(
            _renamed(fn, "_serial")
        ),
    )
