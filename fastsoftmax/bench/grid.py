"""The benchmark grid: ops, shapes and dtypes, how long to time them, their inputs and bytes.

Every op of :data:`OPS` runs on every (rows, classes) shape of :data:`SHAPES` (class axis last) in
every dtype of :data:`DTYPES`. :data:`SMALL`, :data:`IN_CACHE` and the big shapes (at least
:data:`BIG_ELEMENTS` elements, out of cache) are the groups the speed targets speak of.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

OPS = ("softmax", "log_softmax", "softmax_jvp", "cross_entropy_with_grad", "cross_entropy_backward")
SMALL = ((64, 10), (256, 10))
IN_CACHE = ((8192, 128), (1024, 1000))
OUT_OF_CACHE = ((4096, 4096), (256, 32000), (32, 262144))
SHAPES = SMALL + IN_CACHE + OUT_OF_CACHE
DTYPES = ("float32", "float64")

#: Cases with at least this many elements are "big": 16 MB and more in float32, out of cache.
BIG_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Case:
    """One cell of the grid: an op on a (rows, classes) array of one dtype."""

    op: str
    shape: tuple[int, int]
    dtype: str

    @property
    def shape_str(self) -> str:
        return f"{self.shape[0]}x{self.shape[1]}"

    @property
    def id(self) -> str:
        """``op|shape|dtype``: the pytest-benchmark group and the progress label."""
        return f"{self.op}|{self.shape_str}|{self.dtype}"

    @property
    def elements(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def big(self) -> bool:
        return self.elements >= BIG_ELEMENTS


@dataclass(frozen=True)
class Settings:
    """How long to time each case: ``rounds`` rounds, each a block of every implementation.

    A block is ``settle_time`` seconds of untimed calls (at least one), then samples of ``number``
    calls (``number`` chosen so that a sample lasts ``sample_time``) for ``block_time`` seconds,
    at least one and at most ``max_samples``.
    """

    name: str
    rounds: int
    block_time: float
    max_samples: int
    sample_time: float
    settle_time: float
    reference_max_elements: int | None  # bigger cases skip the reference (None: never skip)


# settle_time: PyTorch's OpenMP workers spin-wait about 5 ms after each parallel region (libgomp's
# default policy; measured as CPU time used while the caller sleeps), taking a core meanwhile
QUICK = Settings("quick", 3, 0.01, 15, 1e-3, 0.01, reference_max_elements=2_000_000)
FULL = Settings("full", 7, 0.05, 100, 2e-3, 0.02, reference_max_elements=None)


def grid(
    ops: Iterable[str] | None = None,
    shapes: Iterable[tuple[int, int]] | None = None,
    dtypes: Iterable[str] | None = None,
) -> list[Case]:
    """The cases, shape-major (then dtype, then op) so that each input array is made once."""
    ops = tuple(OPS if ops is None else ops)
    shapes = tuple(SHAPES if shapes is None else shapes)
    dtypes = tuple(DTYPES if dtypes is None else dtypes)
    for op in ops:
        if op not in OPS:
            raise ValueError(f"unknown op {op!r}; expected some of {', '.join(OPS)}")
    for dt in dtypes:
        if dt not in DTYPES:
            raise ValueError(f"unknown dtype {dt!r}; expected some of {', '.join(DTYPES)}")
    for shape in shapes:
        if len(shape) != 2 or min(shape) < 1:
            raise ValueError(f"a shape is (rows, classes) with both >= 1, got {shape!r}")
    return [Case(op, (int(r), int(c)), dt) for (r, c) in shapes for dt in dtypes for op in ops]


def parse_shape(text: str) -> tuple[int, int]:
    """``"4096x4096"`` -> (4096, 4096)."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"a shape is ROWSxCLASSES, e.g. 4096x4096; got {text!r}")
    rows, classes = (int(p) for p in parts)
    if rows < 1 or classes < 1:
        raise ValueError(f"a shape needs rows >= 1 and classes >= 1; got {text!r}")
    return rows, classes


def op_bytes(case: Case) -> int:
    """Bytes the op must move at the least: its inputs read once and its result written once.

    softmax, log_softmax: x in, result out (2 arrays); softmax_jvp: p and v in, result out (3);
    cross-entropy: logits and int64 targets in, the gradient out (the loss is a scalar).
    """
    rows, _ = case.shape
    n = case.elements * np.dtype(case.dtype).itemsize
    if case.op in ("softmax", "log_softmax"):
        return 2 * n
    if case.op == "softmax_jvp":
        return 3 * n
    return 2 * n + rows * np.dtype(np.int64).itemsize


def copy_bytes(case: Case) -> int:
    """Bytes ``np.copyto`` of the case's first input moves: read once, written once."""
    return 2 * case.elements * np.dtype(case.dtype).itemsize


@functools.lru_cache(maxsize=1)
def _logits(shape: tuple[int, int], dtype: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape, dtype=np.dtype(dtype).type) * 3).astype(dtype, copy=False)
    y = rng.integers(0, shape[1], size=shape[0], dtype=np.int64)
    return x, y


@functools.lru_cache(maxsize=1)
def _probs_tangent(shape: tuple[int, int], dtype: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    x, _ = _logits(shape, dtype, seed)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    p = (e / e.sum(axis=-1, keepdims=True)).astype(dtype, copy=False)
    v = np.random.default_rng(seed + 1).standard_normal(shape, dtype=np.dtype(dtype).type)
    return p, v


def make_inputs(case: Case, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed-seed inputs: logits ``x`` = 3 * N(0, 1), targets ``y`` uniform in [0, C),
    probabilities ``p`` = softmax(x) and a N(0, 1) tangent ``v`` for the JVP.

    The last shape's arrays are cached (the grid is shape-major); never modify them.
    """
    if case.op == "softmax_jvp":
        p, v = _probs_tangent(case.shape, case.dtype, seed)
        return {"p": p, "v": v}
    x, y = _logits(case.shape, case.dtype, seed)
    if case.op in ("softmax", "log_softmax"):
        return {"x": x}
    return {"x": x, "y": y}


def clear_inputs() -> None:
    """Drop the cached input arrays."""
    _logits.cache_clear()
    _probs_tangent.cache_clear()
