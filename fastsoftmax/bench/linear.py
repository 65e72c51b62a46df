"""The LM-head benchmark of ``python -m fastsoftmax bench --lm-head``: fused linear + cross-entropy.

Forward + backward of ``cross_entropy(x @ W.T, y)`` (x: N x H float32, W: V x H, class indices y)
at language-model head shapes N x H x V:

- ``fastsoftmax``: ``fs.linear_cross_entropy_with_grad(x, W, y)`` (chunked, default budget);
- ``fastsoftmax_chunk256``: the same with ``chunk_size`` rows of 256 MiB of logits;
- ``unfused``: ``z = x @ W.T``; ``fs.cross_entropy_with_grad(z, y, out=z)``; ``z @ W``; ``z.T @ x``;
- ``matmuls``: the three products of ``unfused`` without the loss, the BLAS floor of any
  implementation that makes them with NumPy (a yardstick, as ``np.copyto`` is for bandwidth);
- ``torch``: ``F.linear_cross_entropy(x, W, y)`` + ``backward()`` (reference path, options=None);
- ``torch_chunked``: the same with ``options=torch.nn.LinearCrossEntropyOptions()``.

Each implementation runs in a fresh subprocess (``python -m fastsoftmax.bench.linear``), so one's
allocations and caches never count for another: inputs are made in float32 directly, a warm-up
on a tiny problem loads the kernels, the peak-RSS mark is reset (``/proc/self/clear_refs``), then
the first full call gives the peak extra memory (peak RSS - RSS before the call: every temporary
and the gradients dx and dW, which all of them return), the mark is reset again for the second
call (later calls: without the BLAS library's buffers, which its first large call allocates once
per process; RSS counts pages touched anew, so memory the allocator kept from the first call and
hands out again does not count either), and the calls after the first give the time. With
several rounds every implementation runs once per round, in reversed order every other round,
and the time ratios to ``fastsoftmax`` are taken per round (the machine's speed drifts between
processes).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

LM_SHAPES = ((2048, 256, 16000), (8192, 512, 32000))
QUICK_LM_SHAPES = LM_SHAPES[:1]
IMPLS = ("fastsoftmax", "fastsoftmax_chunk256", "unfused", "matmuls", "torch", "torch_chunked")
# Implementations that compute no loss: yardsticks only.
YARDSTICKS = ("matmuls",)
BIG_CHUNK_BYTES = 256 * 2**20
NOTES = {
    "fastsoftmax": "fs.linear_cross_entropy_with_grad(x, W, y)",
    "fastsoftmax_chunk256": "the same, chunk_size = rows of 256 MiB of logits",
    "unfused": "z = x @ W.T; fs.cross_entropy_with_grad(z, y, out=z); z @ W; z.T @ x",
    "matmuls": "z = x @ W.T; z @ W; z.T @ x (no loss: the BLAS floor)",
    "torch": "F.linear_cross_entropy(x, W, y).backward() (reference path)",
    "torch_chunked": (
        "F.linear_cross_entropy(x, W, y, options=LinearCrossEntropyOptions()).backward()"
    ),
}


def _inputs(n: int, h: int, v: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h), dtype=np.float32)
    w = rng.standard_normal((v, h), dtype=np.float32)
    w *= np.float32(1.0 / np.sqrt(h))
    y = rng.integers(0, v, n)
    return x, w, y


def _call(impl: str, x: np.ndarray, w: np.ndarray, y: np.ndarray):
    """A zero-argument function computing (loss, dx, dW) the way ``impl`` does (``matmuls``:
    (None, z @ W, z.T @ x) for the logits z)."""
    if impl.startswith("fastsoftmax"):
        import fastsoftmax as fs

        rows = None
        if impl == "fastsoftmax_chunk256":
            rows = max(1, BIG_CHUNK_BYTES // (w.shape[0] * x.itemsize))
        return lambda: fs.linear_cross_entropy_with_grad(x, w, y, chunk_size=rows)[:3]
    if impl == "matmuls":

        def matmuls():
            z = x @ w.T
            return None, z @ w, z.T @ x

        return matmuls
    if impl == "unfused":
        import fastsoftmax as fs

        def unfused():
            z = x @ w.T
            loss, g = fs.cross_entropy_with_grad(z, y, out=z)
            return loss, g @ w, g.T @ x

        return unfused
    import torch

    F = torch.nn.functional
    yt = torch.from_numpy(y)
    options = torch.nn.LinearCrossEntropyOptions() if impl == "torch_chunked" else None

    def torch_call():
        xt = torch.from_numpy(x).requires_grad_()
        wt = torch.from_numpy(w).requires_grad_()
        loss = F.linear_cross_entropy(xt, wt, yt, options=options)
        loss.backward()
        return loss.item(), xt.grad, wt.grad

    return torch_call


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """The peak RSS since the last reset (VmHWM), or ru_maxrss where /proc has no VmHWM."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def worker(impl: str, n: int, h: int, v: int, repeats: int, threads: int) -> dict[str, Any]:
    """Run in the subprocess: the measurement of one implementation at one shape."""
    import numba

    numba.set_num_threads(threads)
    if impl.startswith("torch"):
        import torch

        torch.set_num_threads(threads)
    _call(impl, *_inputs(64, h, 500))()  # compile / load kernels, initialize thread pools
    x, w, y = _inputs(n, h, v)
    fn = _call(impl, x, w, y)
    peaks = []
    times = []
    for k in range(repeats + 1):
        before = _rss()
        exact = _reset_peak()
        start = time.perf_counter()
        result = fn()
        elapsed = time.perf_counter() - start
        if k < 2:  # the first call and a later one
            peaks.append(_peak_rss() - before)
        if k or not repeats:
            times.append(elapsed)
        del result
    return {
        "impl": impl,
        "shape": [n, h, v],
        "times": times,
        "median": statistics.median(times),
        "min": min(times),
        "repeats": len(times),
        "peak_extra_bytes": peaks[0],
        "peak_later_bytes": peaks[-1],
        "peak_reset": exact,
        "logits_bytes": n * v * 4,
        "dw_bytes": v * h * 4,
        "dx_bytes": n * h * 4,
    }


def measure(impl: str, shape: tuple[int, int, int], repeats: int, threads: int) -> dict[str, Any]:
    """Run :func:`worker` in a fresh interpreter; an error becomes ``{"error": ...}``."""
    cmd = [
        sys.executable,
        "-m",
        "fastsoftmax.bench.linear",
        impl,
        *map(str, shape),
        str(repeats),
        str(threads),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"impl": impl, "shape": list(shape), "error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available(impl: str) -> bool:
    if not impl.startswith("torch"):
        return True
    try:
        import torch
    except ImportError:
        return False
    return hasattr(torch.nn, "LinearCrossEntropyOptions")


def _merge(records: list[dict[str, Any]], ours: list[dict[str, Any]] | None) -> dict[str, Any]:
    """One record of an implementation's rounds: all timed calls, the median peaks and the
    per-round time ratio to ``ours`` (fastsoftmax's records of the same rounds): median, least,
    greatest."""
    failed = next((r for r in records if "error" in r), None)
    if failed is not None:
        return failed
    times = [t for r in records for t in r["times"]]
    merged = dict(records[0])
    merged.update(
        times=times,
        median=statistics.median(times),
        min=min(times),
        repeats=len(times),
        rounds=len(records),
        peak_extra_bytes=statistics.median(r["peak_extra_bytes"] for r in records),
        peak_later_bytes=statistics.median(r["peak_later_bytes"] for r in records),
        peak_reset=all(r["peak_reset"] for r in records),
    )
    if ours is not None and not any("error" in r or r["median"] <= 0 for r in ours):
        ratios = [r["median"] / o["median"] for r, o in zip(records, ours, strict=True)]
        merged["time_ratio"] = [statistics.median(ratios), min(ratios), max(ratios)]
    return merged


def run(
    shapes=QUICK_LM_SHAPES,
    repeats: int = 2,
    threads: int = 2,
    impls=IMPLS,
    rounds: int = 1,
    progress=None,
) -> list[dict[str, Any]]:
    """Per shape, ``rounds`` rounds in which every available implementation runs once in a fresh
    process (in reversed order every other round); one merged record per shape and
    implementation (see :func:`_merge`)."""
    impls = [impl for impl in impls if available(impl)]
    results = []
    for shape in shapes:
        runs: dict[str, list[dict[str, Any]]] = {impl: [] for impl in impls}
        for r in range(rounds):
            for impl in impls if r % 2 == 0 else impls[::-1]:
                if progress is not None:
                    label = "x".join(map(str, shape))
                    progress(f"linear_cross_entropy {label} {impl} (round {r + 1}/{rounds})")
                runs[impl].append(measure(impl, shape, repeats, threads))
        results += [_merge(runs[impl], runs.get("fastsoftmax")) for impl in impls]
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per shape and implementation, time, peak extra memory and ratios to fastsoftmax."""
    mb = 2.0**20
    lines = [
        "## linear_cross_entropy: forward + backward, float32 (each in a fresh process)",
        "",
        "| N x H x V | implementation | median | min | time / fastsoftmax | peak extra MB: "
        "first call | later calls | memory / fastsoftmax (later calls) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for shape in dict.fromkeys(tuple(r["shape"]) for r in results):
        rows = [r for r in results if tuple(r["shape"]) == shape]
        ours = next((r for r in rows if r["impl"] == "fastsoftmax" and "error" not in r), None)
        label = "x".join(map(str, shape))
        for r in rows:
            if "error" in r:
                lines.append(f"| {label} | {r['impl']} | error: {r['error']} | | | | | |")
                continue
            ratio = r.get("time_ratio")
            t = "-" if ratio is None else f"{ratio[0]:.2f}"
            if ratio is not None and r.get("rounds", 1) > 1:
                t += f" ({ratio[1]:.2f}-{ratio[2]:.2f})"
            base = ours["peak_later_bytes"] if ours else 0  # 0 on tiny shapes: no ratio
            m = f"{r['peak_later_bytes'] / base:.2f}" if base > 0 else "-"
            lines.append(
                f"| {label} | {r['impl']} | {r['median']:.3f} s | {r['min']:.3f} s | {t} | "
                f"{r['peak_extra_bytes'] / mb:.0f} | {r['peak_later_bytes'] / mb:.0f} | {m} |"
            )
        first = rows[0]
        if "error" not in first:
            lines.append(
                f"| {label} | sizes | logits {first['logits_bytes'] / mb:.0f} MB | "
                f"dW {first['dw_bytes'] / mb:.0f} MB | dx {first['dx_bytes'] / mb:.0f} MB | | | |"
            )
    lines += [
        "",
        "time / fastsoftmax: per round, the implementation's median time over fastsoftmax's; "
        "the median over the rounds and (in brackets) the least and greatest. Peak extra: peak "
        "RSS during one call less RSS before it; the first call in a process also allocates the "
        "BLAS library's buffers, later calls reuse them (and any memory the allocator kept from "
        "the first call, which RSS does not count again).",
        "",
    ]
    lines += [f"- {k}: `{v}`" for k, v in NOTES.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    impl_arg, n_arg, h_arg, v_arg, rep_arg, thr_arg = sys.argv[1:7]
    print(
        json.dumps(worker(impl_arg, int(n_arg), int(h_arg), int(v_arg), int(rep_arg), int(thr_arg)))
    )
