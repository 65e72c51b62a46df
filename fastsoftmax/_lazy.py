"""The check at each public entry that hands dask arrays to the adapter ``fastsoftmax._dask``.

dask is not imported here: a dask collection is recognized by the module its type comes from,
so a call with NumPy arrays pays one type test per array argument, and ``import fastsoftmax``
never imports dask.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def dask_in(*args: Any) -> bool:
    """True if any argument is a dask collection (its type is defined in a ``dask`` module)."""
    for a in args:
        if type(a) is not np.ndarray and a is not None and type(a).__module__.startswith("dask"):
            return True
    return False


def dask_call(name: str, *args: Any, **kwargs: Any) -> Any:
    """``fastsoftmax._dask.<name>(*args, **kwargs)``: the lazy twin of the public function."""
    from . import _dask

    return getattr(_dask, name)(*args, **kwargs)
