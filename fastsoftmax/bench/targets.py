"""The project's speed targets, checked against one run's results (float32, side by side).

Each target gives one row: what is measured, the goal, the measured value and met / not met
(``None``: the run did not measure it). Ratios are the medians over the rounds of the per-round
ratios (``report.case_result``); "least" is the smallest of those medians over the cases named.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .grid import IN_CACHE, OPS, OUT_OF_CACHE, SMALL, Case, make_inputs

DTYPE = "float32"
TINY = SMALL[0]
#: At the tiny shape: (op, peer, the largest fraction of the peer's time allowed, the aim).
TINY_TIME = (
    ("softmax", "torch", 1.0, 0.75),
    ("log_softmax", "torch", 1.0, 0.75),
    ("softmax_jvp", "torch", 1.0, 0.75),
    ("cross_entropy_with_grad", "torch_aten", 0.25, None),
)
#: Least speedup over plain NumPy of every op at the small and the out-of-cache shapes.
NUMPY_SPEEDUP = 5.0
#: In cache, softmax and log_softmax: least speedup over torch and elements per ns per core.
IN_CACHE_SPEEDUP = 2.0
IN_CACHE_ELEMENTS_PER_NS = 2.0
#: Over the whole grid: (op, peer, least median speedup, least speedup or None).
GRID_SPEEDUP = (
    ("softmax", "torch", 2.0, 1.0),
    ("log_softmax", "torch", 2.0, 1.0),
    ("softmax_jvp", "torch", 1.5, 1.0),
    ("cross_entropy_with_grad", "torch_aten", 3.0, None),
)
#: Out of cache with ``out=``: least percentage of np.copyto's throughput.
COPY_PERCENT = 85.0


def _record(results: Sequence[dict[str, Any]], op: str, shape: tuple[int, int]) -> dict | None:
    for r in results:
        if r["op"] == op and tuple(r["shape"]) == tuple(shape) and r["dtype"] == DTYPE:
            return r
    return None


def _values(results, op: str, key: Callable[[dict], float | None], shapes=None) -> list:
    """(key(record), shape) for the op's float32 records (at ``shapes`` only) where key is known."""
    pairs = []
    for r in results:
        if r["op"] == op and r["dtype"] == DTYPE:
            if shapes is None or tuple(r["shape"]) in shapes:
                value = key(r)
                if value is not None:
                    pairs.append((value, r["id"].split("|")[1]))
    return pairs


def _speedup(peer: str) -> Callable[[dict], float | None]:
    return lambda r: r["speedup"][peer]["median"] if peer in r["speedup"] else None


def _row(target: str, goal: str, measured: str | None, met: bool | None) -> dict[str, Any]:
    return {"target": target, "goal": goal, "measured": measured or "not measured", "met": met}


def _least(pairs: list[tuple[float, str]], goal: float, target: str, unit: str = "x") -> dict:
    if not pairs:
        return _row(target, f">= {goal:g}{unit}", None, None)
    value, shape = min(pairs)
    shown = f"{value:.0f}" if unit == "%" else f"{value:.2f}"
    return _row(target, f">= {goal:g}{unit}", f"{shown}{unit} (least, at {shape})", value >= goal)


def evaluate(results: Sequence[dict[str, Any]], bits: dict[str, Any] | None = None) -> list[dict]:
    """The target rows for ``results`` (and the thread-count check ``bits``, see
    :func:`check_bits`)."""
    rows = []
    label = "x".join(map(str, TINY))
    for op, peer, limit, aim in TINY_TIME:
        r = _record(results, op, TINY)
        s = r["speedup"].get(peer) if r else None
        goal = f"<= {limit:g}" + (f" (aim {aim:g})" if aim else "")
        target = f"{op} {label}: time / {peer.replace('_', ' ')}'s"
        if s is None:
            rows.append(_row(target, goal, None, None))
            continue
        t = 1.0 / s["median"]
        measured = f"{t:.2f} ({1 / s['high']:.2f}-{1 / s['low']:.2f})"
        rows.append(_row(target, goal, measured, t <= limit))
    for op in OPS:
        pairs = _values(results, op, _speedup("numpy"), set(SMALL + OUT_OF_CACHE))
        rows.append(_least(pairs, NUMPY_SPEEDUP, f"{op} vs numpy, small and out-of-cache shapes"))
    for op in ("softmax", "log_softmax"):
        pairs = _values(results, op, _speedup("torch"), set(IN_CACHE))
        rows.append(_least(pairs, IN_CACHE_SPEEDUP, f"{op} in cache vs torch"))
        pairs = _values(results, op, lambda r: r["elem_per_ns_core"], set(IN_CACHE))
        target = f"{op} in cache, elements per ns per core"
        rows.append(_least(pairs, IN_CACHE_ELEMENTS_PER_NS, target, ""))
    for op, peer, median_goal, min_goal in GRID_SPEEDUP:
        values = [v for v, _ in _values(results, op, _speedup(peer))]
        goal = f"median >= {median_goal:g}x" + (f", least >= {min_goal:g}x" if min_goal else "")
        target = f"{op} vs {peer.replace('_', ' ')}, whole grid"
        if not values:
            rows.append(_row(target, goal, None, None))
            continue
        med, low = statistics.median(values), min(values)
        met = med >= median_goal and (min_goal is None or low >= min_goal)
        rows.append(_row(target, goal, f"median {med:.2f}x, least {low:.2f}x", met))
    for op in OPS:
        pairs = _values(
            results,
            op,
            lambda r: r["pct_copyto"]["median"] if r["pct_copyto"] else None,
            set(OUT_OF_CACHE),
        )
        rows.append(_least(pairs, COPY_PERCENT, f"{op} out of cache, out=: % of np.copyto", "%"))
    if bits is not None:
        same = not bits["differing"]
        rows.append(
            _row(
                "results bit-identical for any thread count",
                f"threads {' vs '.join(map(str, bits['threads']))}: same bits",
                "identical" if same else "differ: " + ", ".join(bits["differing"]),
                same,
            )
        )
    return rows


def check_bits(shapes: Sequence[tuple[int, int]] = IN_CACHE) -> dict[str, Any] | None:
    """Run every op with one thread and with numba's thread count; which results differ in a bit.

    None when numba has a single thread (nothing to compare).
    """
    import numba

    import fastsoftmax as fs

    threads = numba.get_num_threads()
    if threads < 2:
        return None
    differing = []
    try:
        for shape in shapes:
            for op in OPS:
                inputs = make_inputs(Case(op, shape, DTYPE))
                args = [inputs[k] for k in ("p", "v", "x", "y") if k in inputs]
                results = []
                for n in (1, threads):
                    numba.set_num_threads(n)
                    out = getattr(fs, op)(*args)
                    parts = out if isinstance(out, tuple) else (out,)
                    results.append(b"".join(np.asarray(a).tobytes() for a in parts))
                if results[0] != results[1]:
                    differing.append(f"{op} {shape[0]}x{shape[1]}")
    finally:
        numba.set_num_threads(threads)
    return {"threads": [1, threads], "shapes": [list(s) for s in shapes], "differing": differing}


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    from .report import markdown

    mark = {True: "met", False: "NOT MET", None: "-"}
    cells = [[r["target"], r["goal"], r["measured"], mark[r["met"]]] for r in rows]
    met = sum(r["met"] is True for r in rows)
    measured = sum(r["met"] is not None for r in rows)
    return "\n".join(
        [
            f"## Targets ({DTYPE}, ratios side by side in this run)",
            "",
            *markdown(["target", "goal", "measured", ""], cells, left=3),
            "",
            f"{met} of {measured} measured targets met.",
        ]
    )
