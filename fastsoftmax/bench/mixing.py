"""What mixing numba's and PyTorch's thread pools in one process costs (``bench --mixing``).

Each configuration runs in a fresh interpreter (``python -m fastsoftmax.bench.mixing``) so that
its environment (``OMP_WAIT_POLICY``) and thread counts hold from the start. There, for each
timed call (fastsoftmax and torch softmax, float32, at :data:`MID`, where both run in parallel,
and at :data:`SMALL`, serial in both) and each predecessor (the same call, or the other library's
parallel call at :data:`MID`): ``LEAD_TIME`` seconds of the predecessor, then the timed call once
("first") and for ``BLOCK_TIME`` seconds (its median); rounds alternate the order. The "torch
only" configuration never imports fastsoftmax: torch on its own, as in a separate process.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

MID = (1024, 1000)
SMALL = (64, 10)
LEAD_TIME = 0.02
BLOCK_TIME = 0.02
ROUNDS = 5
#: name -> (environment overrides, torch threads: None for numba's, import fastsoftmax)
CONFIGS = {
    "default": ({}, None, True),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, None, True),
    "OMP_WAIT_POLICY=ACTIVE": ({"OMP_WAIT_POLICY": "ACTIVE"}, None, True),
    "torch.set_num_threads(1)": ({}, 1, True),
    "torch only (no fastsoftmax)": ({}, None, False),
    "torch only, OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, None, False),
}


def _calls(torch_threads: int | None, with_fastsoftmax: bool) -> dict[str, Callable[[], Any]]:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    mid = rng.standard_normal(MID, dtype=np.float32)
    small = rng.standard_normal(SMALL, dtype=np.float32)
    calls: dict[str, Callable[[], Any]] = {}
    if with_fastsoftmax:
        import numba

        import fastsoftmax as fs

        torch.set_num_threads(torch_threads or numba.get_num_threads())
        calls["fastsoftmax mid"] = lambda: fs.softmax(mid)
        calls["fastsoftmax small"] = lambda: fs.softmax(small)
    elif torch_threads:
        torch.set_num_threads(torch_threads)
    mid_t, small_t = torch.from_numpy(mid), torch.from_numpy(small)
    calls["torch mid"] = lambda: torch.softmax(mid_t, -1)
    calls["torch small"] = lambda: torch.softmax(small_t, -1)
    return calls


def _for(seconds: float, fn: Callable[[], Any]) -> list[float]:
    times = []
    began = time.perf_counter()
    while not times or time.perf_counter() - began < seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def worker(config: str) -> list[dict[str, Any]]:
    """Run in the subprocess: every (timed call, predecessor) pair of one configuration."""
    _, torch_threads, with_fs = CONFIGS[config]
    calls = _calls(torch_threads, with_fs)
    for fn in calls.values():
        _for(0.05, fn)
    pairs = []
    for timed in calls:
        lib = timed.split()[0]
        other = "torch mid" if lib == "fastsoftmax" else "fastsoftmax mid"
        pairs += [(timed, timed)] + ([(timed, other)] if other in calls else [])
    firsts: dict[tuple, list[float]] = {p: [] for p in pairs}
    blocks: dict[tuple, list[float]] = {p: [] for p in pairs}
    for r in range(ROUNDS):
        for timed, before in pairs if r % 2 == 0 else pairs[::-1]:
            _for(LEAD_TIME, calls[before])
            times = _for(BLOCK_TIME, calls[timed])
            firsts[(timed, before)].append(times[0])
            blocks[(timed, before)].append(statistics.median(times[1:] or times))
    return [
        {
            "config": config,
            "timed": timed,
            "after": before,
            "first": statistics.median(firsts[(timed, before)]),
            "median": statistics.median(blocks[(timed, before)]),
        }
        for timed, before in pairs
    ]


def run(progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """:func:`worker` for every configuration of :data:`CONFIGS`, each in a fresh process."""
    rows = []
    for config, (env, _, _) in CONFIGS.items():
        if progress:
            progress(f"mixing: {config}")
        cmd = [sys.executable, "-m", "fastsoftmax.bench.mixing", config]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env={**os.environ, **env}, check=False
        )
        if proc.returncode != 0:
            tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"config": config, "error": tail})
            continue
        rows.extend(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    from .report import format_time, markdown

    cells = []
    for r in rows:
        if "error" in r:
            cells.append([r["config"], "error: " + r["error"], "", "", ""])
            continue
        after = "itself" if r["after"] == r["timed"] else r["after"]
        cells.append(
            [r["config"], r["timed"], after, format_time(r["median"]), format_time(r["first"])]
        )
    shapes = f"mid = {MID[0]}x{MID[1]}, small = {SMALL[0]}x{SMALL[1]}, float32 softmax"
    return "\n".join(
        [
            "## Mixing thread pools: a call's time after its own library or after the other",
            "",
            *markdown(["configuration", "timed call", "after", "median", "first call"], cells, 3),
            "",
            f"{shapes}; median: per call over {BLOCK_TIME * 1e3:g} ms of calls right after "
            f"{LEAD_TIME * 1e3:g} ms of the predecessor, median over {ROUNDS} rounds; first "
            "call: the first of those calls.",
        ]
    )


if __name__ == "__main__":
    print(json.dumps(worker(sys.argv[1])))
