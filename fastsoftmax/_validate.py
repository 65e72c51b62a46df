"""Argument checks, dtype rules and the (rows, classes) layout; every error message in one place.

Used by the public functions (``fastsoftmax.reference`` has checks of its own, so that tests
compare two independent implementations of what is rejected).
"""

from __future__ import annotations

import functools
import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from ._kernels.checks import first_bad_target

REDUCTIONS = ("mean", "sum", "none")
# The default ignore_index of the cross-entropy losses (PyTorch's).
IGNORE_INDEX = -100


_HALF = np.dtype(np.float16)
_FLOAT32 = np.dtype(np.float32)
_FLOAT64 = np.dtype(np.float64)
_INT64 = np.dtype(np.int64)


def compute_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """float32/float64 stay (in native byte order); float16 computes in float32; bool and
    integers in float64."""
    if dtype.char in "fd":
        return dtype if dtype.isnative else dtype.newbyteorder("=")
    if dtype == np.float16:
        return np.dtype(np.float32)
    if dtype.kind in "biu":
        return np.dtype(np.float64)
    raise TypeError(
        f"{name} has dtype {dtype}; expected a real floating, integer or bool array "
        "(float16/32/64; longdouble, complex, object and string arrays are not supported)"
    )


def result_dtype(x: Any, arr: np.ndarray) -> np.dtype:
    """The dtype of a result computed from ``arr``, the compute-dtype array made of the input
    ``x``: float16 for a float16 input (computed in float32, as NumPy, PyTorch and JAX return
    float16), else ``arr``'s dtype."""
    if x is arr or arr.dtype.char != "f":  # no conversion (the common case), or not float32
        return arr.dtype
    dtype = x.dtype if isinstance(x, np.ndarray) else np.asarray(x).dtype
    return _HALF if dtype.char == "e" else arr.dtype


def deliver(result: np.ndarray, dtype: np.dtype, out: np.ndarray | None) -> Any:
    """What a public function returns for its computed ``result``.

    Copied into ``out`` (rounded to its dtype) and ``out`` returned when given; otherwise
    ``result`` rounded to ``dtype``, and a 0-d result as a NumPy scalar, as NumPy's reductions
    return.
    """
    if out is not None:
        if result is not out:
            np.copyto(out, result)
        return out
    if result.dtype != dtype:
        with np.errstate(over="ignore"):  # beyond the result dtype's range: +-inf, as documented
            result = result.astype(dtype)
    return result[()] if result.ndim == 0 else result


def result_scalar(value: float, dtype: np.dtype) -> Any:
    """A float64 reduced loss as a NumPy scalar of ``dtype``: +-inf, without a warning, where it
    is beyond that dtype's range (a float32 loss of huge logits)."""
    if abs(value) <= _LARGEST[dtype.char]:  # in range (not NaN): no errstate, which costs ~1.5 us
        return dtype.type(value)
    with np.errstate(over="ignore"):
        return dtype.type(value)


_LARGEST = {c: float(np.finfo(c).max) for c in "efd"}


def _filled(n: int, dtype: Any, value: float) -> np.ndarray:
    """np.full(n, value, dtype) at a third of its cost per call (it goes through np.copyto)."""
    a = np.empty(n, dtype)
    a.fill(value)
    return a


# Up to this length a vector of ones (default class weights, grad_output 1.0) is built once and
# reused: building it costs ~1 us a call, as much as a small batch's kernel takes per row block.
_SHARED_ONES_UP_TO = 1 << 16


@functools.lru_cache(maxsize=16)
def _shared_ones(n: int, dtype: np.dtype) -> np.ndarray:
    return _filled(n, dtype, 1.0)


def kernel_ones(n: int, dtype: np.dtype) -> np.ndarray:
    """A (n,) vector of ones of ``dtype`` for the kernels to read: shared between calls up to
    ``_SHARED_ONES_UP_TO`` entries, so it must never be written (the kernels write only their
    outputs) nor handed to the caller."""
    return _shared_ones(n, dtype) if n <= _SHARED_ONES_UP_TO else _filled(n, dtype, 1.0)


def plain_rows(x: Any) -> bool:
    """True when ``x`` is already a (rows, classes) kernel input, with nothing to convert or
    check: a writable C-contiguous 2-D float32/float64 ndarray in native byte order.

    The wrappers' fast paths take such inputs as they are; any other input goes the general way.
    """
    if type(x) is not np.ndarray or x.ndim != 2:
        return False
    d = x.dtype
    if not (d is _FLOAT32 or d is _FLOAT64 or (d.char in "fd" and d.isnative)):
        return False
    flags = x.flags
    return flags.c_contiguous and flags.writeable


def plain_out(out: Any, x: np.ndarray, *inputs: np.ndarray) -> bool:
    """True when ``out`` is None, or an array a kernel can write as it is for the plain input
    ``x`` (see :func:`plain_rows`): ``x``'s shape and dtype, C-contiguous, writable, and either
    ``x`` itself or sharing no memory with ``x`` and the other ``inputs``."""
    if out is None:
        return True
    if type(out) is not np.ndarray or out.shape != x.shape:
        return False
    if not (out.dtype is x.dtype or out.dtype == x.dtype):
        return False
    flags = out.flags
    if not (flags.c_contiguous and flags.writeable):
        return False
    return all(out is a or not np.may_share_memory(out, a) for a in (x, *inputs))


def plain_index_target(target: Any, rows: int) -> bool:
    """True when ``target`` is already the class-index kernel input for ``rows`` rows: a
    writable C-contiguous (rows,) int64 ndarray (its values still need the range check)."""
    if type(target) is not np.ndarray or target.dtype is not _INT64 or target.shape != (rows,):
        return False
    flags = target.flags
    return flags.c_contiguous and flags.writeable


def as_float_array(x: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    """``x`` as an ndarray of its compute dtype (or of ``dtype`` when given)."""
    if type(x) is np.ndarray and dtype is None and x.dtype.char in "fd" and x.dtype.isnative:
        return x  # the common case, kept cheap: the wrapper overhead is per call
    if x is None:
        raise TypeError(f"{name} must be an array, not None")
    arr = np.asarray(x)
    target = compute_dtype(arr.dtype, name)
    if dtype is not None:
        target = dtype
    return arr if arr.dtype == target else arr.astype(target)


def common_dtype(*arrays: Any, names: tuple[str, ...]) -> np.dtype:
    """The promoted compute dtype of several inputs (float32 with float64 gives float64)."""
    first = arrays[0]
    if all(
        type(a) is np.ndarray
        and a.dtype == first.dtype
        and a.dtype.char in "fd"
        and a.dtype.isnative
        for a in arrays
    ):
        return first.dtype  # the common case, kept cheap
    dtypes = [compute_dtype(np.asarray(a).dtype, n) for a, n in zip(arrays, names, strict=True)]
    return np.result_type(*dtypes)


def _real(value: Any, name: str, what: str = "a real number") -> float:
    """``value`` as a float; TypeError unless it is a real number (a bool is not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(
        value, (numbers.Real, np.floating, np.integer)
    ):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    return float(value)


def _integer(value: Any, name: str, what: str = "an integer") -> int:
    """``value`` as an int; TypeError unless it is an integer (a bool is not)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"{name} must be {what}, got {value!r}")
    return int(value)


def normalize_axis(axis: Any, ndim: int) -> int:
    """A valid non-negative axis for an array of ``ndim`` >= 1 dimensions."""
    if type(axis) is int and -ndim <= axis < ndim:
        return axis % ndim
    if ndim == 0:
        raise ValueError(
            "expected an array with at least 1 dimension (the class axis), got a scalar"
        )
    value = _integer(axis, "axis")
    if not -ndim <= value < ndim:
        raise np.exceptions.AxisError(value, ndim)
    return value % ndim


def check_classes(shape: tuple[int, ...], axis: int) -> int:
    """The class count along ``axis`` of cross-entropy logits: 0 classes is an error, as no
    target can be valid (the softmax family returns empty results instead)."""
    classes = shape[axis]
    if classes == 0:
        raise ValueError(
            f"the class axis (axis {axis}) has length 0; cross-entropy needs at least 1 class"
        )
    return classes


def inverse_temperature(temperature: Any) -> float:
    """1 / temperature, for a finite temperature > 0."""
    if type(temperature) is float and 0.0 < temperature < math.inf:
        return 1.0 / temperature
    t = _real(temperature, "temperature")
    if not (math.isfinite(t) and t > 0.0):
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    if not math.isfinite(1.0 / t):
        raise ValueError(f"temperature {temperature!r} is too small: 1/temperature overflows")
    return 1.0 / t


_UNIT_SCALE = {np.dtype(np.float32): np.float32(1.0), np.dtype(np.float64): np.float64(1.0)}


def scale_for(temperature: Any, dtype: np.dtype):
    """1 / temperature as a scalar of ``dtype``, finite there (float32 overflows sooner)."""
    if type(temperature) in (float, int) and temperature == 1.0:  # the default, kept cheap
        return _UNIT_SCALE[dtype]
    inv = inverse_temperature(temperature)
    scale = dtype.type(inv)
    if not np.isfinite(scale):
        raise ValueError(
            f"temperature {temperature!r} is too small for {dtype}: 1/temperature overflows"
        )
    return scale


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, name: str = "out") -> None:
    """``out`` must be a writable ndarray of exactly ``shape`` and ``dtype`` (or None)."""
    if out is None:
        return
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}; the result has shape {tuple(shape)}")
    if out.dtype != dtype:
        raise ValueError(f"{name} has dtype {out.dtype}; the result has dtype {dtype}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is read-only")


def check_same_shape(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{name_b} has shape {b.shape}; it must match {name_a}'s shape {a.shape}")


def check_reduction(reduction: Any) -> str:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_label_smoothing(label_smoothing: Any) -> float:
    # the common case, kept cheap
    if type(label_smoothing) is float and 0.0 <= label_smoothing <= 1.0:
        return label_smoothing
    eps = _real(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return eps


def check_ignore_index(ignore_index: Any) -> int:
    # the common case, kept cheap
    if type(ignore_index) is int and -(2**63) <= ignore_index < 2**63:
        return ignore_index
    value = _integer(ignore_index, "ignore_index")
    if not -(2**63) <= value < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index!r}")
    return value


def check_weight(weight: Any, classes: int, dtype: np.dtype) -> np.ndarray:
    """Class weights as a contiguous (C,) array of ``dtype``: finite and >= 0 (ones when None)."""
    if weight is None:
        return kernel_ones(classes, dtype)
    w = as_float_array(weight, "weight")
    if w.shape != (classes,):
        raise ValueError(f"weight has shape {w.shape}; expected ({classes},), one weight per class")
    if not np.all(np.isfinite(w)):
        raise ValueError("weight holds NaN or inf; class weights must be finite")
    if np.any(w < 0):
        raise ValueError(f"weight holds a negative value ({w.min()}); class weights must be >= 0")
    w = np.ascontiguousarray(w, dtype=dtype)
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weight holds a value too large for {dtype}")
    return kernel_input(w)


def check_target(
    target: Any, logits_shape: tuple[int, ...], ignore_index: int, dtype: np.dtype
) -> tuple[np.ndarray, bool]:
    """Validate a cross-entropy target; return it flattened to rows and whether it holds indices.

    Class indices: an integer array of shape logits.shape[:-1], each in [0, C) or ignore_index.
    Probabilities: a float array of logits' shape, finite.
    """
    if target is None:
        raise TypeError("target must be an array, not None")
    t = np.asarray(target)
    classes = logits_shape[-1]
    batch = logits_shape[:-1]
    if t.dtype.kind in "iu":
        if t.shape != batch:
            raise ValueError(
                f"class-index target has shape {t.shape}; expected {batch} (logits.shape[:-1])"
            )
        if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
            # beyond int64: out of range, found before the conversion below wraps it
            bad = int(np.argmax(t > np.iinfo(np.int64).max))
        else:
            flat = kernel_input(np.ascontiguousarray(t, dtype=np.int64).reshape(-1))
            bad = first_bad_target(flat, classes, ignore_index)
        if bad >= 0:
            where = tuple(int(i) for i in np.unravel_index(bad, t.shape))
            raise ValueError(
                f"target value {t[where]} at index {where} is out of range "
                f"[0, {classes}) and is not ignore_index={ignore_index}"
            )
        return flat, True
    if t.dtype.kind == "f":
        if t.shape != logits_shape:
            raise ValueError(
                f"probability target has shape {t.shape}; expected the logits' shape {logits_shape}"
            )
        t = np.ascontiguousarray(t, dtype=dtype).reshape(-1, classes)
        if not np.all(np.isfinite(t)):
            raise ValueError(
                f"probability target holds NaN or inf (or a value too large for {dtype})"
            )
        return kernel_input(t), False
    raise TypeError(
        f"target has dtype {t.dtype}; expected integer class indices or floating probabilities"
    )


def check_masked_index_target(
    t: np.ndarray, mask: np.ndarray, ignore_index: int, batch: tuple[int, ...]
) -> np.ndarray:
    """Rows masked entirely become ignored rows; a target on a left-out class is an error."""
    rows = np.arange(t.shape[0])
    live = mask.any(axis=1)
    checked = (t != ignore_index) & live
    on_masked = checked & ~mask[rows, np.where(checked, t, 0)]
    if np.any(on_masked):
        i = int(np.argmax(on_masked))
        where = tuple(int(k) for k in np.unravel_index(i, batch)) if batch else ()
        raise ValueError(f"target value {t[i]} at index {where} is a class that `where` leaves out")
    return np.where(live, t, ignore_index)


def check_grad_output(grad_output: Any, reduction: str, batch: tuple[int, ...]) -> np.ndarray:
    """grad_output as a float64 array of one entry per row (a scalar is repeated)."""
    rows = math.prod(batch)
    if type(grad_output) is float:  # the common case, kept cheap
        if grad_output == 1.0:
            return kernel_ones(rows, _FLOAT64)
        return _filled(rows, _FLOAT64, grad_output)
    g = np.asarray(grad_output)
    if g.dtype.kind not in "biuf":
        raise TypeError(f"grad_output has dtype {g.dtype}; expected a real number or array")
    if g.shape == ():
        return _filled(rows, np.float64, float(g))
    if reduction == "none" and g.shape == batch:
        return kernel_input(np.ascontiguousarray(g, dtype=np.float64).reshape(-1))
    expected = f"a scalar or an array of shape {batch}" if reduction == "none" else "a scalar"
    raise ValueError(
        f"grad_output has shape {g.shape}; with reduction={reduction!r} it must be {expected}"
    )


def check_where(where: Any, shape: tuple[int, ...], axis: int) -> np.ndarray | None:
    """A boolean mask broadcast to ``shape``, as C-contiguous (rows, classes) like the data
    (None when there is no mask, or no class to mask)."""
    if where is None:
        return None
    mask = np.asarray(where)
    if mask.dtype != np.bool_:
        raise TypeError(f"where must be a boolean array, got dtype {mask.dtype}")
    try:
        mask = np.broadcast_to(mask, shape)
    except ValueError:
        raise ValueError(
            f"where has shape {mask.shape}, which does not broadcast to {shape}"
        ) from None
    return to_rows(mask, axis) if shape[axis] else None


def product_args(
    a: Any, b: Any, names: tuple[str, str], axis: Any, temperature: Any, out: Any
) -> tuple[np.ndarray, np.ndarray, int, Any, np.dtype]:
    """Checks of the two-input derivative products (JVP/VJP): (a, b in the common compute dtype,
    axis, 1/T in that dtype, the result dtype)."""
    if (
        type(a) is np.ndarray
        and type(b) is np.ndarray
        and a.dtype == b.dtype
        and a.dtype.char in "fd"
        and a.dtype.isnative
    ):
        # the common case, kept cheap: both already in their compute and result dtype
        dtype = res_dtype = a.dtype
    else:
        dtype = common_dtype(a, b, names=names)
        a_in, b_in = a, b
        a = as_float_array(a, names[0], dtype)
        b = as_float_array(b, names[1], dtype)
        res_dtype = np.result_type(result_dtype(a_in, a), result_dtype(b_in, b))
    check_same_shape(a, b, *names)
    axis = normalize_axis(axis, a.ndim)
    scale = scale_for(temperature, dtype)
    check_out(out, a.shape, res_dtype)
    return a, b, axis, scale, res_dtype


class CrossEntropyArgs(NamedTuple):
    """The checked arguments of a cross-entropy call (see :func:`cross_entropy_args`)."""

    z: np.ndarray  # logits in their compute dtype, class axis last
    target: np.ndarray  # int64 (rows,) class indices, or (rows, C) probabilities of z's dtype
    is_index: bool
    weight: np.ndarray  # (C,) of z's dtype
    eps: float
    ignore_index: int
    reduction: str
    scale: Any  # 1 / temperature as a scalar of z's dtype
    grad_output: np.ndarray  # float64, one entry per row
    mask: np.ndarray | None  # bool (rows, C), or None


def cross_entropy_args(
    logits: Any,
    target: Any,
    weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    temperature: Any,
    grad_output: Any,
    where: Any,
) -> CrossEntropyArgs:
    """Every check of the cross-entropy family, shared by the kernels' wrappers.

    Rows masked entirely by ``where`` become ignored rows (class-index targets).
    """
    z = as_float_array(logits, "logits")
    if z.ndim == 0:
        raise ValueError("logits must have at least 1 dimension (the class axis, last)")
    classes = check_classes(z.shape, z.ndim - 1)
    reduction = check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    ignore_index = check_ignore_index(ignore_index)
    scale = scale_for(temperature, z.dtype)
    t, is_index = check_target(target, z.shape, ignore_index, z.dtype)
    w = check_weight(weight, classes, z.dtype)
    gout = check_grad_output(grad_output, reduction, z.shape[:-1])
    mask = check_where(where, z.shape, z.ndim - 1)
    if mask is not None and is_index:
        t = check_masked_index_target(t, mask, ignore_index, z.shape[:-1])
    return CrossEntropyArgs(z, t, is_index, w, eps, ignore_index, reduction, scale, gout, mask)


def check_binary_target(target: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A binary target as an array of ``dtype`` and the logits' exact ``shape``, finite."""
    y = as_float_array(target, "target", None)
    if y.shape != shape:
        raise ValueError(f"target has shape {y.shape}; it must match the logits' shape {shape}")
    if y.dtype != dtype:
        y = y.astype(dtype)
    if not np.all(np.isfinite(y)):
        raise ValueError("target holds NaN or inf")
    return y


def check_broadcast_weight(
    weight: Any, name: str, shape: tuple[int, ...], dtype: np.dtype
) -> np.ndarray | None:
    """``weight`` as an array of ``dtype`` broadcastable to ``shape``, finite and >= 0 (or None)."""
    if weight is None:
        return None
    w = as_float_array(weight, name, None)
    if w.shape != shape:
        # broadcastable to shape without changing it: trailing dims equal or 1, no extra dims
        fits = w.ndim <= len(shape) and all(
            d in (1, s) for d, s in zip(w.shape[::-1], shape[::-1], strict=False)
        )
        if not fits:
            raise ValueError(
                f"{name} has shape {w.shape}; it must broadcast to the logits' shape {shape}"
            )
    if w.dtype != dtype:
        w = w.astype(dtype)
    if not np.all((w >= 0) & (w < np.inf)):  # one pass; NaN fails both comparisons
        if not np.all(np.isfinite(w)):
            raise ValueError(f"{name} holds NaN or inf; it must be finite")
        raise ValueError(f"{name} holds a negative value ({w.min()}); it must be >= 0")
    return w


def check_elementwise_grad_output(
    grad_output: Any, reduction: str, shape: tuple[int, ...]
) -> float | np.ndarray:
    """grad_output of an elementwise loss: a float for a scalar (any reduction), else (for
    reduction "none" only) a float64 array of the logits' ``shape``."""
    if type(grad_output) is float or type(grad_output) is int:  # the common case, kept cheap
        return float(grad_output)
    g = np.asarray(grad_output)
    if g.ndim == 0:
        return float(check_grad_output(g, reduction, ())[0])
    return check_grad_output(g, reduction, shape).reshape(shape)


class BinaryArgs(NamedTuple):
    """The checked arguments of a binary cross-entropy call (see :func:`binary_args`)."""

    z: np.ndarray  # logits in their compute dtype, any shape
    target: np.ndarray  # z's shape and dtype
    weight: np.ndarray | None  # z's dtype, broadcastable to z's shape
    pos_weight: np.ndarray | None  # as weight
    reduction: str
    grad_output: float | np.ndarray  # a float, or float64 of z's shape (reduction "none")


def binary_args(
    logits: Any, target: Any, weight: Any, pos_weight: Any, reduction: Any, grad_output: Any
) -> BinaryArgs:
    """Every check of the binary cross-entropy family, in the order the errors are raised."""
    z = as_float_array(logits, "logits")
    reduction = check_reduction(reduction)
    y = check_binary_target(target, z.shape, z.dtype)
    w = check_broadcast_weight(weight, "weight", z.shape, z.dtype)
    pw = check_broadcast_weight(pos_weight, "pos_weight", z.shape, z.dtype)
    g = check_elementwise_grad_output(grad_output, reduction, z.shape)
    return BinaryArgs(z, y, w, pw, reduction, g)


def check_z_loss(z_loss: Any) -> float:
    """The z-loss coefficient: a finite real >= 0."""
    if type(z_loss) is float and 0.0 <= z_loss < math.inf:  # the common case, kept cheap
        return z_loss
    value = _real(z_loss, "z_loss")
    if not (math.isfinite(value) and value >= 0.0):
        raise ValueError(f"z_loss must be finite and >= 0, got {z_loss!r}")
    return value


def check_softcap(softcap: Any, scale: Any, dtype: np.dtype) -> tuple[float | None, Any]:
    """(softcap, the kernel's scale): None and ``scale`` without a cap; for a finite cap c > 0,
    c and c * scale as a scalar of ``dtype`` (the kernel then runs on tanh(z / c)); both must be
    normal numbers of ``dtype``."""
    if softcap is None:
        return None, scale
    cap = _real(softcap, "softcap", "None or a real number")
    if not (math.isfinite(cap) and cap > 0.0):
        raise ValueError(f"softcap must be None or finite and > 0, got {softcap!r}")
    tiny = np.finfo(dtype).tiny
    with np.errstate(over="ignore", under="ignore"):
        cap_in_dtype = dtype.type(cap)
        capped_scale = dtype.type(cap * float(scale))
    if cap_in_dtype < tiny:  # z / c with a subnormal (or zero) c loses the precision of z
        raise ValueError(
            f"softcap must be at least the smallest normal {dtype} ({tiny}), got {softcap!r}"
        )
    if not (np.isfinite(capped_scale) and capped_scale >= tiny):
        raise ValueError(
            f"softcap / temperature = {cap * float(scale)!r} is not a finite normal "
            f"positive {dtype}"
        )
    return cap, capped_scale


def check_chunk_size(chunk_size: Any) -> int | None:
    """Rows per chunk: None (chosen from the memory budget) or an integer >= 1."""
    if chunk_size is None:
        return None
    value = _integer(chunk_size, "chunk_size", "None or an integer")
    if value < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    return value


def check_linear(
    x: Any, linear_weight: Any, linear_bias: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.dtype]:
    """x (..., H), linear_weight (C, H) and linear_bias (C,) or None, in their common compute
    dtype, and the result dtype: the promoted result dtype of the inputs, as for the two-input
    products (float16 when all are float16, computed in float32; else the compute dtype)."""
    names = ("x", "linear_weight", "linear_bias")
    arrays = [a for a in (x, linear_weight, linear_bias) if a is not None]
    for a, name in zip((x, linear_weight), names[:2], strict=True):
        if a is None:
            raise TypeError(f"{name} must be an array, not None")
    dtype = common_dtype(*arrays, names=names[: len(arrays)])
    x_in, w_in = x, linear_weight
    x = as_float_array(x, "x", dtype)
    w = as_float_array(linear_weight, "linear_weight", dtype)
    res_dtype = np.result_type(result_dtype(x_in, x), result_dtype(w_in, w))
    if x.ndim == 0:
        raise ValueError("x must have at least 1 dimension (the features, last)")
    if w.ndim != 2 or w.shape[1] != x.shape[-1]:
        raise ValueError(
            f"linear_weight has shape {w.shape}; expected (C, {x.shape[-1]}): "
            "(classes, x.shape[-1]) as in torch.nn.Linear"
        )
    check_classes(w.shape, 0)
    b = None
    if linear_bias is not None:
        b = as_float_array(linear_bias, "linear_bias", dtype)
        if b.shape != (w.shape[0],):
            raise ValueError(
                f"linear_bias has shape {b.shape}; expected ({w.shape[0]},), one per class"
            )
        res_dtype = np.result_type(res_dtype, result_dtype(linear_bias, b))
    return x, w, b, res_dtype


def check_class_index(
    index: Any, logits_shape: tuple[int, ...]
) -> tuple[np.ndarray, tuple[int, ...]]:
    """Selected classes: integers of shape ``batch`` or ``batch + (K,)``, each in [0, C).

    Returns the indices as a contiguous int64 (rows, K) array and the result's shape.
    """
    if index is None:
        raise TypeError("index must be an array, not None")
    idx = np.asarray(index)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"index has dtype {idx.dtype}; expected integer class indices")
    batch, classes = logits_shape[:-1], logits_shape[-1]
    if idx.shape == batch:
        k = 1
    elif idx.shape[:-1] == batch and idx.ndim == len(batch) + 1:
        k = idx.shape[-1]
    else:
        raise ValueError(
            f"index has shape {idx.shape}; expected {batch} or {batch} + (K,) "
            "(logits.shape[:-1], optionally with a last axis of classes)"
        )
    if idx.size and not (idx.min() >= 0 and idx.max() < classes):
        bad = tuple(int(i) for i in np.argwhere((idx < 0) | (idx >= classes))[0])
        raise ValueError(f"index value {idx[bad]} at {bad} is out of range [0, {classes})")
    rows = kernel_input(np.ascontiguousarray(idx, dtype=np.int64).reshape(-1, k))
    return rows, idx.shape


class _WritableAlias:
    """A writable array interface over a read-only array's memory that keeps the array alive."""

    __slots__ = ("__array_interface__", "owner")

    def __init__(self, a: np.ndarray):
        self.owner = a
        self.__array_interface__ = {
            "version": 3,
            "shape": a.shape,
            "typestr": a.dtype.str,
            "strides": a.strides,
            "data": (a.ctypes.data, False),
        }


def kernel_input(a: np.ndarray) -> np.ndarray:
    """``a`` as a kernel input: ``a`` itself, or for a read-only ``a`` a writable alias of the
    same memory.

    numba types read-only arrays apart and compiles every kernel again for them: seconds per
    function, dtype and combination of read-only arguments, on the first call. The kernels never
    write their inputs (only ``out``, which must be writable), so a read-only input goes in as
    an alias typed like any other array. The alias's ``base`` holds ``a``, so the memory lives
    as long as the alias does.
    """
    if a.flags.writeable:
        return a
    return np.asarray(_WritableAlias(a))


def to_flat(x: np.ndarray) -> np.ndarray:
    """A C-contiguous 1-D kernel input of ``x``'s entries in C order (a view when possible)."""
    return kernel_input(np.ascontiguousarray(x).reshape(-1))


def to_rows(x: np.ndarray, axis: int) -> np.ndarray:
    """A C-contiguous (rows, classes) kernel input with ``axis`` last (a view when possible)."""
    if axis == x.ndim - 1 and x.flags.c_contiguous:
        return kernel_input(x if x.ndim == 2 else x.reshape(-1, x.shape[-1]))
    moved = np.moveaxis(x, axis, -1)
    return kernel_input(np.ascontiguousarray(moved).reshape(-1, moved.shape[-1]))


class RowsOut:
    """Where a kernel writes its result, and how it becomes the returned array.

    The kernel writes ``rows``: a C-contiguous (rows, classes) array with ``axis`` last, or for
    ``axis=None`` (elementwise kernels) a flat C-order vector of every entry. That is a view of
    ``out`` when ``out`` has the kernel's ``dtype``, its view is C-contiguous, and it either
    overlaps no input or is laid out exactly like the input it overwrites (in place); otherwise
    a fresh buffer, copied into ``out`` at the end (a float16 ``out`` is rounded from a float32
    buffer that way). ``read_late`` inputs are read after the kernel has written parts of a
    row, so ``out`` must not overlap them at all.
    """

    __slots__ = ("_axis", "_direct", "_moved_shape", "_out", "rows")

    def __init__(
        self,
        out: np.ndarray | None,
        shape: tuple[int, ...],
        dtype: np.dtype,
        axis: int | None,
        inputs: tuple[np.ndarray, ...],
        read_late: tuple[np.ndarray, ...] = (),
    ):
        self._out = out
        self._axis = axis
        self._direct = False
        last = axis is None or axis == len(shape) - 1
        if not last:
            shape = shape[:axis] + shape[axis + 1 :] + (shape[axis],)
        self._moved_shape = shape
        if axis is None:
            rows_shape = shape if len(shape) == 1 else (math.prod(shape),)
        else:
            rows_shape = shape if len(shape) == 2 else (math.prod(shape[:-1]), shape[-1])
        if out is not None and (out.dtype is dtype or out.dtype == dtype):
            moved = out if last else np.moveaxis(out, axis, -1)
            if moved.flags.c_contiguous:
                rows = moved if moved.shape == rows_shape else moved.reshape(rows_shape)
                if all(_same_or_disjoint(rows, a) for a in inputs) and not (
                    read_late and any(np.may_share_memory(rows, a) for a in read_late)
                ):
                    self.rows = rows
                    self._direct = True
                    return
        self.rows = np.empty(rows_shape, dtype=dtype)

    def result(self) -> np.ndarray:
        if self._direct:
            return self._out
        res = self.rows.reshape(self._moved_shape)
        if self._axis is not None and self._axis != res.ndim - 1:
            res = np.moveaxis(res, -1, self._axis)
        if self._out is None:
            return res
        np.copyto(self._out, res)
        return self._out


def _same_or_disjoint(rows_out: np.ndarray, rows_in: np.ndarray) -> bool:
    """True if writing ``rows_out`` element by element cannot corrupt unread ``rows_in`` entries."""
    if not np.may_share_memory(rows_out, rows_in):
        return True
    return (
        rows_out.ctypes.data == rows_in.ctypes.data
        and rows_out.strides == rows_in.strides
        and rows_out.dtype == rows_in.dtype
    )
