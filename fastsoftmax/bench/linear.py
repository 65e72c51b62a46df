"""The LM-head benchmark of ``python -m fastsoftmax bench --lm-head``: fused linear + cross-entropy.

Forward + backward of ``cross_entropy(x @ W.T, y)`` (x: N x H float32, W: V x H, class indices y)
at language-model head shapes N x H x V, four ways:

- ``fastsoftmax``: ``fs.linear_cross_entropy_with_grad(x, W, y)`` (chunked, default budget);
- ``unfused``: ``z = x @ W.T``; ``fs.cross_entropy_with_grad(z, y, out=z)``; ``z @ W``; ``z.T @ x``;
- ``torch``: ``F.linear_cross_entropy(x, W, y)`` + ``backward()`` (reference path, options=None);
- ``torch_chunked``: the same with ``options=torch.nn.LinearCrossEntropyOptions()``.

Each implementation runs in a fresh subprocess (``python -m fastsoftmax.bench.linear``), so one's
allocations and caches never count for another: inputs are made in float32 directly, a warm-up
on a tiny problem loads the kernels, the peak-RSS mark is reset (``/proc/self/clear_refs``), then
the first full call gives the peak extra memory (peak RSS - RSS before the call: every temporary
and the gradients dx and dW, which all four return) and the next calls the time.
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
IMPLS = ("fastsoftmax", "unfused", "torch", "torch_chunked")
NOTES = {
    "fastsoftmax": "fs.linear_cross_entropy_with_grad(x, W, y)",
    "unfused": "z = x @ W.T; fs.cross_entropy_with_grad(z, y, out=z); z @ W; z.T @ x",
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
    """A zero-argument function computing (loss, dx, dW) the way ``impl`` does."""
    if impl == "fastsoftmax":
        import fastsoftmax as fs

        return lambda: fs.linear_cross_entropy_with_grad(x, w, y)[:3]
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
    before = _rss()
    exact = _reset_peak()
    start = time.perf_counter()
    result = fn()
    first = time.perf_counter() - start
    peak = _peak_rss() - before
    del result
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times = times or [first]
    return {
        "impl": impl,
        "shape": [n, h, v],
        "median": statistics.median(times),
        "min": min(times),
        "repeats": len(times),
        "peak_extra_bytes": peak,
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


def run(
    shapes=QUICK_LM_SHAPES, repeats: int = 2, threads: int = 2, impls=IMPLS, progress=None
) -> list[dict[str, Any]]:
    results = []
    for shape in shapes:
        for impl in impls:
            if not available(impl):
                continue
            if progress is not None:
                progress(f"linear_cross_entropy {'x'.join(map(str, shape))} {impl}")
            results.append(measure(impl, shape, repeats, threads))
    return results


def format_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per shape and implementation, time, peak extra memory and ratios to fastsoftmax."""
    mb = 2.0**20
    lines = [
        "## linear_cross_entropy: forward + backward, float32 (each in a fresh process)",
        "",
        "| N x H x V | implementation | median | min | peak extra MB | time / fastsoftmax "
        "| memory / fastsoftmax |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for shape in dict.fromkeys(tuple(r["shape"]) for r in results):
        rows = [r for r in results if tuple(r["shape"]) == shape]
        ours = next((r for r in rows if r["impl"] == "fastsoftmax" and "error" not in r), None)
        for r in rows:
            label = "x".join(map(str, shape))
            if "error" in r:
                lines.append(f"| {label} | {r['impl']} | error: {r['error']} | | | | |")
                continue
            t = f"{r['median'] / ours['median']:.2f}" if ours else "-"
            m = f"{r['peak_extra_bytes'] / ours['peak_extra_bytes']:.2f}" if ours else "-"
            lines.append(
                f"| {label} | {r['impl']} | {r['median']:.3f} s | {r['min']:.3f} s | "
                f"{r['peak_extra_bytes'] / mb:.0f} | {t} | {m} |"
            )
        first = rows[0]
        if "error" not in first:
            lines.append(
                f"| {'x'.join(map(str, shape))} | sizes | logits "
                f"{first['logits_bytes'] / mb:.0f} MB | dW {first['dw_bytes'] / mb:.0f} MB"
                f" | dx {first['dx_bytes'] / mb:.0f} MB | | |"
            )
    lines += [""] + [f"- {k}: `{v}`" for k, v in NOTES.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    impl_arg, n_arg, h_arg, v_arg, rep_arg, thr_arg = sys.argv[1:7]
    print(
        json.dumps(worker(impl_arg, int(n_arg), int(h_arg), int(v_arg), int(rep_arg), int(thr_arg)))
    )
