"""The check at each public entry that hands dask arrays to the adapter ``fastsoftmax._dask``.

dask is not imported here: a dask collection is recognized by the module its type comes from,
so a call with NumPy arrays pays one type test per array argument, and ``import fastsoftmax``
never imports dask.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_NDARRAY = np.ndarray  # a module global: one lookup per argument instead of two


def dask_in(*args: Any) -> bool:
    """True if any argument is a dask collection (its type is defined in a ``dask`` module).

    Public functions call it only once ``"dask" in sys.modules``: before dask is imported no
    argument can be a dask array, and the NumPy path then pays a dict lookup only.
    """
    for a in args:
        t = type(a)
        if t is not _NDARRAY and a is not None and t.__module__.startswith("dask"):
            return True
    return False


def dask_call(name: str, *args: Any, **kwargs: Any) -> Any:
    """``fastsoftmax._dask.<name>(*args, **kwargs)``: the lazy twin of the public function."""
    from . import _dask

    return getattr(_dask, name)(*args, **kwargs)
