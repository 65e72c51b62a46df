"""Side-by-side timing that two thread pools cannot skew.

fastsoftmax runs on numba's pool (TBB or OpenMP), PyTorch on its own OpenMP pool. Calls of the two
alternating in one process make each pay for the other's threads still spinning on the same cores,
so the bench never alternates calls. It times *blocks* (:func:`block`): ``settle_time`` of untimed
calls of one implementation (the other pool goes idle, this one wakes up), then samples of
``number`` calls of that implementation only. :func:`compare` runs ``rounds`` rounds, each a block
of every implementation, the order reversed every other round so that none always follows the
same one. A ratio (:func:`ratio`) is taken per round, from the two blocks' median sample times, and
reported as the median over the rounds with its spread (min and max over the rounds).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from .grid import Settings

#: The per-call times the derived numbers can use: the median or the minimum sample of a block.
STATISTICS = ("median", "min")


@dataclass
class Timing:
    """Seconds per call of one implementation, one entry per round: the median and the minimum
    sample of that round's block; ``samples`` samples of ``number`` calls per block."""

    medians: list[float]
    mins: list[float]
    number: int
    samples: int

    @property
    def median(self) -> float:
        """The median over the rounds of the blocks' median sample."""
        return statistics.median(self.medians)

    @property
    def min(self) -> float:
        """The fastest sample of all rounds."""
        return min(self.mins)

    def per_round(self, statistic: str) -> list[float]:
        return self.medians if statistic == "median" else self.mins

    def as_json(self) -> dict[str, Any]:
        return {
            "median": self.median,
            "min": self.min,
            "round_medians": self.medians,
            "round_mins": self.mins,
            "number": self.number,
            "samples": self.samples,
        }


@dataclass(frozen=True)
class Ratio:
    """A per-round ratio: its median over the rounds, and its least and greatest value."""

    median: float
    low: float
    high: float

    def as_json(self) -> dict[str, float]:
        return {"median": self.median, "low": self.low, "high": self.high}


def ratio(num: Timing, den: Timing, statistic: str = "median") -> Ratio:
    """``num`` time / ``den`` time, round by round (both timed in the same rounds)."""
    values = [
        a / b for a, b in zip(num.per_round(statistic), den.per_round(statistic), strict=True)
    ]
    return Ratio(statistics.median(values), min(values), max(values))


@contextmanager
def _no_gc() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def calibrate(fn: Callable[[], Any], sample_time: float) -> int:
    """Calls per sample so that a sample lasts about ``sample_time``, after a warm-up call
    (numba compiles or loads its cache, pages get touched). A short call is timed three times
    and the median taken: one call the scheduler interrupted would make samples of one call."""

    def once() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    fn()
    first = once()
    if first >= sample_time:
        return 1
    typical = statistics.median([first, once(), once()])
    return min(100_000, max(1, math.ceil(sample_time / max(typical, 1e-7))))


def block(
    fn: Callable[[], Any], number: int, settings: Settings, max_samples: int | None = None
) -> list[float]:
    """Seconds per call of each sample of one block: settle, then time (see the module doc)."""
    began = time.perf_counter()
    fn()
    while time.perf_counter() - began < settings.settle_time:
        fn()
    cap = settings.max_samples if max_samples is None else max_samples
    samples: list[float] = []
    began = time.perf_counter()
    while not samples or (len(samples) < cap and time.perf_counter() - began < settings.block_time):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number)
    return samples


def compare(
    fns: dict[str, Callable[[], Any]],
    settings: Settings,
    max_samples: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Timing]:
    """Time each of ``fns`` in ``settings.rounds`` rounds of blocks, alternating the order."""
    names = list(fns)
    timings: dict[str, Timing] = {}
    with _no_gc():
        numbers = {}
        for name in names:
            if progress:
                progress(name)
            numbers[name] = calibrate(fns[name], settings.sample_time)
            timings[name] = Timing([], [], numbers[name], 0)
        for r in range(settings.rounds):
            for name in names if r % 2 == 0 else names[::-1]:
                samples = block(fns[name], numbers[name], settings, max_samples)
                t = timings[name]
                t.medians.append(statistics.median(samples))
                t.mins.append(min(samples))
                t.samples = max(t.samples, len(samples))
    return timings


def warm_pools(threads: int, torch=None) -> None:
    """Start numba's and torch's worker threads with a parallel call of each, before any timing."""
    import fastsoftmax as fs

    x = np.zeros((threads * 64, 4096), dtype=np.float32)  # above the serial threshold
    for _ in range(3):
        fs.softmax(x)
    if torch is not None:
        xt = torch.from_numpy(x)
        for _ in range(3):
            torch.softmax(xt, -1)
