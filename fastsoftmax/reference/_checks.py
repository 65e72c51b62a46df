"""The reference's own argument checks and dtype rules, written apart from fastsoftmax._validate.

They reject what the public functions reject, with the same exception classes (TypeError for
a wrong kind of argument, ValueError for a wrong value or shape, numpy's AxisError for an axis
out of range), so that a test of "raises alike" compares two independent implementations.

Dtype rules: float16, float32 and float64 inputs give results of their own dtype, ints and
bools float64 results (as ``np.exp`` would); float16 is computed in float32 and rounded once.
Several inputs give the promoted result dtype of each (``np.result_type``).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

_FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_INT64 = np.iinfo(np.int64)


def result_dtype_of(dtype: np.dtype, name: str) -> np.dtype:
    """The dtype of a result computed from an input of ``dtype``."""
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    native = dtype.newbyteorder("=")
    if native in _FLOATS:
        return native
    raise TypeError(f"{name} has dtype {dtype}; expected float16/32/64, integers or bools")


def compute_dtype_of(result: np.dtype) -> np.dtype:
    """The dtype a result of dtype ``result`` is computed in (float32 for float16)."""
    return np.dtype(np.float32) if result == np.float16 else result


def as_array(x: Any, name: str) -> tuple[np.ndarray, np.dtype]:
    """(``x`` as an array of its compute dtype, the result dtype)."""
    if x is None:
        raise TypeError(f"{name} must be an array, not None")
    a = np.asarray(x)
    result = result_dtype_of(a.dtype, name)
    return a.astype(compute_dtype_of(result)), result


def as_arrays(named: dict[str, Any]) -> tuple[list[np.ndarray], np.dtype]:
    """Several inputs in their common compute dtype, and their promoted result dtype."""
    arrays, results = [], []
    for name, x in named.items():
        a, r = as_array(x, name)
        arrays.append(a)
        results.append(r)
    result = np.result_type(*results)
    compute = compute_dtype_of(result)
    return [a.astype(compute) for a in arrays], result


def class_axis(axis: Any, ndim: int) -> int:
    """``axis`` as a non-negative axis of an array of ``ndim`` >= 1 dimensions."""
    if ndim == 0:
        raise ValueError("a scalar has no class axis: at least 1 dimension is needed")
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise np.exceptions.AxisError(int(axis), ndim)
    return int(axis) % ndim


def real_number(value: Any, name: str) -> float:
    """``value`` as a float; TypeError unless it is a real number (bools are not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    return float(value)


def inverse_temperature(temperature: Any, dtype: np.dtype) -> float:
    """1 / T for a finite T > 0 whose inverse is finite in ``dtype``."""
    t = real_number(temperature, "temperature")
    if not (np.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    with np.errstate(over="ignore", divide="ignore"):
        inv = 1.0 / t
        if not np.isfinite(dtype.type(inv)):
            raise ValueError(f"temperature {temperature!r} is too small: 1 / T overflows {dtype}")
    return inv


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """``out`` is None or a writable ndarray of exactly ``shape`` and ``dtype``."""
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, not the result's {shape}")
    if out.dtype != dtype:
        raise ValueError(f"out has dtype {out.dtype}, not the result's {dtype}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")


def class_mask(where: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """``where`` as a boolean array of ``shape`` (None stays None)."""
    if where is None:
        return None
    mask = np.asarray(where)
    if mask.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, not {mask.dtype}")
    if not broadcasts_to(mask.shape, shape):
        raise ValueError(f"where of shape {mask.shape} does not broadcast to {shape}")
    return np.broadcast_to(mask, shape)


def broadcasts_to(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` without changing it."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


def check_reduction(reduction: Any) -> None:
    """``reduction`` is "mean", "sum" or "none"."""
    if not isinstance(reduction, str) or reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def nonnegative(value: Any, name: str, upper: float = np.inf) -> float:
    """A real number in [0, upper] (finite when ``upper`` is inf)."""
    x = real_number(value, name)
    if not (0 <= x <= upper and np.isfinite(x)):
        raise ValueError(f"{name} must be in [0, {upper}] and finite, got {value!r}")
    return x


def check_ignore_index(ignore_index: Any) -> int:
    """``ignore_index`` as an int: an integer (not a bool) that fits in int64."""
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(
        ignore_index, (int, np.integer)
    ):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    if not _INT64.min <= int(ignore_index) <= _INT64.max:
        raise ValueError(f"ignore_index must be an int64, got {ignore_index!r}")
    return int(ignore_index)


def softcap_value(softcap: Any, inv_t: float, dtype: np.dtype) -> float | None:
    """The cap c (None for no cap): finite, and c and c / T normal positive numbers of
    ``dtype``."""
    if softcap is None:
        return None
    if isinstance(softcap, (bool, np.bool_)) or not isinstance(softcap, numbers.Real):
        raise TypeError(f"softcap must be None or a real number, got {softcap!r}")
    c = float(softcap)
    if not (np.isfinite(c) and c > 0):
        raise ValueError(f"softcap must be finite and > 0, got {softcap!r}")
    smallest = float(np.finfo(dtype).tiny)
    if c < smallest:
        raise ValueError(f"softcap {softcap!r} is below the smallest normal {dtype}")
    if not (smallest <= c * inv_t <= float(np.finfo(dtype).max)):
        raise ValueError(f"softcap / temperature = {c * inv_t!r} is not a normal positive {dtype}")
    return c


def check_chunk_size(chunk_size: Any) -> None:
    """``chunk_size`` is None or an integer >= 1 (the reference has no chunks: it is only
    checked)."""
    if chunk_size is None:
        return
    if isinstance(chunk_size, (bool, np.bool_)) or not isinstance(chunk_size, (int, np.integer)):
        raise TypeError(f"chunk_size must be None or an integer, got {chunk_size!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size!r}")


def finite_in(a: np.ndarray, dtype: np.dtype, name: str, nonneg: bool = False) -> np.ndarray:
    """``a`` rounded to ``dtype`` (then float64): finite there, and >= 0 when ``nonneg``."""
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} holds NaN or inf")
    if nonneg and np.any(a < 0):
        raise ValueError(f"{name} holds a negative value")
    with np.errstate(over="ignore"):
        rounded = a.astype(dtype)
    if not np.all(np.isfinite(rounded)):
        raise ValueError(f"{name} holds a value too large for {dtype}")
    return rounded.astype(np.float64)


def upstream(grad_output: Any, reduction: str, shape: tuple[int, ...]) -> np.ndarray:
    """grad_output as float64 of ``shape``: a scalar repeated, or for reduction "none" an array
    of exactly ``shape``."""
    g = np.asarray(grad_output)
    if g.dtype.kind not in "biuf":
        raise TypeError(f"grad_output must be real numbers, got dtype {g.dtype}")
    if g.ndim and not (reduction == "none" and g.shape == shape):
        raise ValueError(f"grad_output has shape {g.shape}: for {reduction!r}, not a scalar")
    return np.broadcast_to(g.astype(np.float64), shape)


def index_array(index: Any, name: str) -> np.ndarray:
    """``index`` as an integer array (TypeError for None or another dtype)."""
    if index is None:
        raise TypeError(f"{name} must be an array, not None")
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"{name} has dtype {idx.dtype}; integers expected")
    return idx


def check_in_range(idx: np.ndarray, classes: int, name: str, allowed: int | None = None) -> None:
    """Every entry in [0, classes), or equal to ``allowed``."""
    bad = (idx < 0) | (idx >= classes)
    if allowed is not None:
        bad &= idx != allowed
    if np.any(bad):
        at = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} value {idx[at]} at index {at} is out of range [0, {classes})")
