"""The benchmark engine behind ``python -m fastsoftmax bench`` and ``benchmarks/``.

One grid drives both: every op in :data:`OPS` on every shape in :data:`SHAPES` (rows x classes,
class axis last) in every dtype of :data:`DTYPES`. For each case :func:`implementations` gives the
calls to compare: fastsoftmax (as users call it, allocating its result, and with ``out=``),
``fastsoftmax.reference``, ``scipy.special`` where it has the op, and PyTorch CPU when importable
(its thread count set to numba's). ``np.copyto`` of the same bytes, measured in the same run, is
the memory-bandwidth yardstick.

Timing (:func:`measure`): one warm-up call (numba compiles or loads its cache), then samples timed
with ``time.perf_counter`` until ``min_time`` has passed or ``max_repeats`` samples were taken; a
sample batches ``number`` calls when one call is shorter than ``sample_time``. Reported: the
median and the minimum time per call.

Derived numbers for each case, with t_x the median time of implementation x (or its minimum,
``statistic="min"``, steadier on a loaded machine):

- ``GB/s = bytes / t_out`` where ``bytes`` is what the op must read and write (:func:`op_bytes`)
  and t_out is the ``out=`` call (a preallocated result, like the copy's destination);
- ``% copy = 100 * GB/s / copy GB/s`` with ``copy GB/s = 2 * x.nbytes / t_copyto``;
- ``speedup over x = t_x / t_fastsoftmax`` (both allocating their result).
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

OPS = ("softmax", "log_softmax", "softmax_jvp", "cross_entropy_with_grad", "cross_entropy_backward")
SHAPES = ((64, 10), (8192, 128), (1024, 1000), (4096, 4096), (256, 32000), (32, 262144))
DTYPES = ("float32", "float64")

#: Cases with at least this many elements are "big": 32 MB and more in float32, out of cache.
BIG_ELEMENTS = 4_000_000
#: The reference JVP builds the C x C Jacobian of every row: only where rows * C * C is below this.
JVP_REFERENCE_LIMIT = 30_000_000

#: Implementation keys (JSON) and the short labels the tables use.
IMPL_LABELS = {
    "fastsoftmax": "fastsoftmax",
    "fastsoftmax_out": "out=",
    "reference": "reference",
    "scipy": "scipy",
    "torch": "torch",
    "torch_aten": "torch aten",
}
#: What each implementation runs, per op (shown under the tables and stored in the JSON).
IMPL_NOTES = {
    "softmax": {
        "fastsoftmax": "fs.softmax(x)",
        "fastsoftmax_out": "fs.softmax(x, out=buf)",
        "reference": "fastsoftmax.reference.softmax(x)",
        "scipy": "scipy.special.softmax(x, axis=-1)",
        "torch": "torch.softmax(x, -1)",
    },
    "log_softmax": {
        "fastsoftmax": "fs.log_softmax(x)",
        "fastsoftmax_out": "fs.log_softmax(x, out=buf)",
        "reference": "fastsoftmax.reference.log_softmax(x)",
        "scipy": "scipy.special.log_softmax(x, axis=-1)",
        "torch": "torch.log_softmax(x, -1)",
    },
    "softmax_jvp": {
        "fastsoftmax": "fs.softmax_jvp(p, v)",
        "fastsoftmax_out": "fs.softmax_jvp(p, v, out=buf)",
        "reference": "fastsoftmax.reference.softmax_jvp(p, v) (full C x C Jacobian + einsum)",
        "torch": "torch.ops.aten._softmax_backward_data(v, p, -1, dtype)",
    },
    "cross_entropy_with_grad": {
        "fastsoftmax": "fs.cross_entropy_with_grad(z, y)",
        "fastsoftmax_out": "fs.cross_entropy_with_grad(z, y, out=buf)",
        "reference": "fastsoftmax.reference.cross_entropy_with_grad(z, y)",
        "torch": "F.cross_entropy(z.requires_grad_(), y); loss.backward()",
        "torch_aten": "aten._log_softmax + nll_loss_forward + nll_loss_backward"
        " + _log_softmax_backward_data (no autograd)",
    },
    "cross_entropy_backward": {
        "fastsoftmax": "fs.cross_entropy_backward(z, y)",
        "fastsoftmax_out": "fs.cross_entropy_backward(z, y, out=buf)",
        "reference": "fastsoftmax.reference.cross_entropy_backward(z, y)",
        "torch": "loss.backward(retain_graph=True) of F.cross_entropy (forward done beforehand)",
        "torch_aten": "aten.nll_loss_backward + _log_softmax_backward_data from the saved log_softmax",
    },
}
#: The implementations each op has (scipy.special has only softmax and log_softmax).
OP_IMPLS = {op: tuple(notes) for op, notes in IMPL_NOTES.items()}
#: The per-call times the derived numbers can use.
STATISTICS = ("median", "min")
#: The baselines a speedup is reported against, in table order.
BASELINES = ("reference", "scipy", "torch", "torch_aten")


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
    """How long to time each implementation of a case."""

    name: str
    min_time: float  # seconds of samples per implementation (after the warm-up)
    min_repeats: int  # at least this many samples
    max_repeats: int  # at most this many samples
    sample_time: float  # batch calls so that one sample lasts at least this long
    reference_max_elements: int | None  # bigger cases skip the reference (None: never skip)


QUICK = Settings(
    "quick",
    min_time=0.03,
    min_repeats=1,
    max_repeats=15,
    sample_time=1e-3,
    reference_max_elements=2_000_000,
)
FULL = Settings(
    "full",
    min_time=0.2,
    min_repeats=5,
    max_repeats=200,
    sample_time=2e-3,
    reference_max_elements=None,
)


@dataclass
class Timing:
    """Seconds per call: median and minimum over ``repeats`` samples of ``number`` calls each."""

    median: float
    min: float
    repeats: int
    number: int


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


# --------------------------------------------------------------------------------------- inputs
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


# ------------------------------------------------------------------------------ implementations
def torch_module():
    """``torch`` with its thread count set to numba's, or None when it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    import numba

    if torch.get_num_threads() != numba.get_num_threads():
        torch.set_num_threads(numba.get_num_threads())
    return torch


def _scipy_special():
    try:
        import scipy.special
    except ImportError:
        return None
    return scipy.special


def reference_status(case: Case, settings: Settings | None = None) -> str | None:
    """Why the reference is not timed on ``case`` (None when it is)."""
    rows, classes = case.shape
    if case.op == "softmax_jvp" and (
        classes > 1000 or rows * classes * classes > JVP_REFERENCE_LIMIT
    ):
        return "n/a: C x C Jacobians too big"
    if (
        settings is not None
        and settings.reference_max_elements is not None
        and case.elements > settings.reference_max_elements
    ):
        return f"skipped in --{settings.name} (use --full)"
    return None


def implementations(
    case: Case, inputs: dict[str, np.ndarray], settings: Settings | None = None
) -> dict[str, Callable[[], Any] | str]:
    """The calls to time for ``case``: key -> zero-argument callable, or a string saying why not.

    Keys are those of :data:`IMPL_LABELS` that apply to the op (scipy has only softmax and
    log_softmax; ``torch_aten`` exists for the cross-entropy ops).
    """
    import fastsoftmax as fs
    import fastsoftmax.reference as ref

    op = case.op
    impls: dict[str, Callable[[], Any] | str] = {}
    ref_status = reference_status(case, settings)
    sp = _scipy_special()
    torch = torch_module()

    if op in ("softmax", "log_softmax"):
        x = inputs["x"]
        buf = np.empty_like(x)
        fast, slow = getattr(fs, op), getattr(ref, op)
        impls["fastsoftmax"] = lambda: fast(x)
        impls["fastsoftmax_out"] = lambda: fast(x, out=buf)
        impls["reference"] = ref_status or (lambda: slow(x))
        if sp is None:
            impls["scipy"] = "not installed"
        else:
            sp_fn = getattr(sp, op)
            impls["scipy"] = lambda: sp_fn(x, axis=-1)
        if torch is None:
            impls["torch"] = "not installed"
        else:
            xt = torch.from_numpy(x)
            t_fn = getattr(torch, op)
            impls["torch"] = lambda: t_fn(xt, -1)
    elif op == "softmax_jvp":
        p, v = inputs["p"], inputs["v"]
        buf = np.empty_like(p)
        impls["fastsoftmax"] = lambda: fs.softmax_jvp(p, v)
        impls["fastsoftmax_out"] = lambda: fs.softmax_jvp(p, v, out=buf)
        impls["reference"] = ref_status or (lambda: ref.softmax_jvp(p, v))
        if torch is None:
            impls["torch"] = "not installed"
        else:
            pt, vt = torch.from_numpy(p), torch.from_numpy(v)
            backward = torch.ops.aten._softmax_backward_data
            impls["torch"] = lambda: backward(vt, pt, -1, pt.dtype)
    else:
        x, y = inputs["x"], inputs["y"]
        buf = np.empty_like(x)
        fast, slow = getattr(fs, op), getattr(ref, op)
        impls["fastsoftmax"] = lambda: fast(x, y)
        impls["fastsoftmax_out"] = lambda: fast(x, y, out=buf)
        impls["reference"] = ref_status or (lambda: slow(x, y))
        if torch is None:
            impls["torch"] = impls["torch_aten"] = "not installed"
        else:
            impls.update(_torch_cross_entropy(torch, op, x, y))
    return impls


def _torch_cross_entropy(torch, op: str, x: np.ndarray, y: np.ndarray) -> dict[str, Callable]:
    """PyTorch's two ways to the cross-entropy gradient: autograd, and the aten kernels it runs."""
    import torch.nn.functional as F

    aten = torch.ops.aten
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    one = torch.ones((), dtype=xt.dtype)
    mean, ignore = 1, -100  # aten's Reduction::Mean, F.cross_entropy's default ignore_index

    if op == "cross_entropy_with_grad":

        def autograd():
            z = xt.detach().requires_grad_(True)
            loss = F.cross_entropy(z, yt)
            loss.backward()
            return loss, z.grad

        def no_autograd():
            logp = aten._log_softmax(xt, 1, False)
            loss, total_weight = aten.nll_loss_forward(logp, yt, None, mean, ignore)
            grad_logp = aten.nll_loss_backward(one, logp, yt, None, mean, ignore, total_weight)
            return loss, aten._log_softmax_backward_data(grad_logp, logp, 1, xt.dtype)

        return {"torch": autograd, "torch_aten": no_autograd}

    # cross_entropy_backward: the forward (and what it saves) happens once, outside the timing
    z = xt.detach().requires_grad_(True)
    loss = F.cross_entropy(z, yt)
    logp = aten._log_softmax(xt, 1, False)
    _, total_weight = aten.nll_loss_forward(logp, yt, None, mean, ignore)

    def autograd_backward():
        z.grad = None
        loss.backward(retain_graph=True)
        return z.grad

    def aten_backward():
        grad_logp = aten.nll_loss_backward(one, logp, yt, None, mean, ignore, total_weight)
        return aten._log_softmax_backward_data(grad_logp, logp, 1, xt.dtype)

    return {"torch": autograd_backward, "torch_aten": aten_backward}


def copy_yardstick(x: np.ndarray) -> Callable[[], None]:
    """``np.copyto`` of an array of ``x``'s size into a preallocated one: 2 * x.nbytes moved."""
    dst = np.empty_like(x)
    return lambda: np.copyto(dst, x)


# -------------------------------------------------------------------------------------- timing
def measure(fn: Callable[[], Any], settings: Settings, max_repeats: int | None = None) -> Timing:
    """Time ``fn``: a warm-up call, then samples until ``settings.min_time`` has passed (and at
    least ``min_repeats`` were taken) or ``max_repeats`` (or the ``max_repeats`` argument) is reached.
    """
    cap = settings.max_repeats if max_repeats is None else max_repeats
    gc_enabled = gc.isenabled()
    gc.disable()
    try:
        fn()  # warm-up: numba compiles (or loads its cache), pages get touched
        start = time.perf_counter()
        fn()
        first = time.perf_counter() - start
        number = 1
        if first < settings.sample_time:
            number = min(100_000, math.ceil(settings.sample_time / max(first, 1e-7)))
        samples = [first] if number == 1 else []
        began = time.perf_counter()
        least = min(settings.min_repeats, cap)
        while len(samples) < cap and (
            len(samples) < least or time.perf_counter() - began < settings.min_time
        ):
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - start) / number)
    finally:
        if gc_enabled:
            gc.enable()
    return Timing(
        median=statistics.median(samples), min=min(samples), repeats=len(samples), number=number
    )


def run(
    cases: Sequence[Case],
    settings: Settings = QUICK,
    *,
    impls: Iterable[str] | None = None,
    max_repeats: int | None = None,
    statistic: str = "median",
    progress: Callable[[int, int, Case, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time every case; return one JSON-ready dict per case (see :func:`case_result`).

    ``impls`` restricts the implementations (keys of :data:`IMPL_LABELS`); ``statistic`` ("median"
    or "min") is the time the derived numbers use; ``progress(i, n, case, impl)`` is called before
    each timing.
    """
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    wanted = set(IMPL_LABELS if impls is None else impls)
    unknown = wanted - set(IMPL_LABELS)
    if unknown:
        raise ValueError(
            f"unknown implementation(s) {sorted(unknown)}; expected some of {list(IMPL_LABELS)}"
        )
    results = []
    copies: dict[tuple[tuple[int, int], str], Timing] = {}
    try:
        for i, case in enumerate(cases):
            inputs = make_inputs(case)
            key = (case.shape, case.dtype)
            if key not in copies:
                if progress:
                    progress(i, len(cases), case, "np.copyto")
                x, _ = _logits(case.shape, case.dtype, 0)
                copies[key] = measure(copy_yardstick(x), settings, max_repeats)
            timings: dict[str, Timing | str] = {}
            for name, fn in implementations(case, inputs, settings).items():
                if name not in wanted:
                    continue
                if isinstance(fn, str):
                    timings[name] = fn
                    continue
                if progress:
                    progress(i, len(cases), case, IMPL_LABELS[name])
                timings[name] = measure(fn, settings, max_repeats)
            results.append(case_result(case, timings, copies[key], statistic))
    finally:
        clear_inputs()
    return results


def case_result(
    case: Case, timings: dict[str, Timing | str], copy: Timing, statistic: str = "median"
) -> dict[str, Any]:
    """The JSON record of one case: times, GB/s, % of the copy bandwidth and speedups, the derived
    numbers computed from each implementation's ``statistic`` time (median or min)."""
    nbytes = op_bytes(case)
    copy_bytes = 2 * case.elements * np.dtype(case.dtype).itemsize
    record: dict[str, Any] = {
        "op": case.op,
        "shape": list(case.shape),
        "dtype": case.dtype,
        "id": case.id,
        "big": case.big,
        "bytes": nbytes,
        "statistic": statistic,
        "impls": {
            name: ({"status": "ok", **asdict(t)} if isinstance(t, Timing) else {"status": t})
            for name, t in timings.items()
        },
        "copyto": {
            "bytes": copy_bytes,
            "gbps": copy_bytes / getattr(copy, statistic) / 1e9,
            **asdict(copy),
        },
    }
    ok = {name: getattr(t, statistic) for name, t in timings.items() if isinstance(t, Timing)}
    bw_from = (
        "fastsoftmax_out"
        if "fastsoftmax_out" in ok
        else "fastsoftmax"
        if "fastsoftmax" in ok
        else None
    )
    fast = "fastsoftmax" if "fastsoftmax" in ok else bw_from
    record["gbps"] = nbytes / ok[bw_from] / 1e9 if bw_from else None
    record["gbps_from"] = bw_from
    record["pct_copyto"] = 100.0 * record["gbps"] / record["copyto"]["gbps"] if bw_from else None
    record["speedup"] = {name: ok[name] / ok[fast] for name in BASELINES if name in ok and fast}
    return record


# ------------------------------------------------------------------------------------- report
def environment(settings: Settings | None = None) -> dict[str, Any]:
    """Versions, threads and the numba threading layer (after one parallel launch)."""
    import numba

    import fastsoftmax as fs

    # one parallel kernel first: numba picks its threading layer at the first parallel launch
    fs.softmax(np.zeros((64, 4096), dtype=np.float32))
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "none (only serial kernels ran)"
    info: dict[str, Any] = {
        "fastsoftmax": fs.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "scipy": None,
        "torch": None,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "load_average": _load_average(),
        "threading_layer": layer,
        "threads": numba.get_num_threads(),
        "torch_threads": None,
        "mode": settings.name if settings else None,
        "settings": asdict(settings) if settings else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    sp = _scipy_special()
    if sp is not None:
        import scipy

        info["scipy"] = scipy.__version__
    torch = torch_module()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def _load_average() -> float | None:
    """The 1-minute load average (other processes competing for the cores), where known."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_header(env: dict[str, Any]) -> str:
    versions = "  ".join(
        f"{k} {env[k]}" for k in ("fastsoftmax", "numpy", "numba", "scipy", "torch") if env.get(k)
    )
    lines = [
        f"fastsoftmax benchmark ({env.get('mode') or 'custom'})",
        f"versions: {versions}  python {env['python']}",
        f"cpu: {env['cpu']} ({env['cpu_count']} logical cores), {env['platform']}",
        f"numba threading layer: {env['threading_layer']}, threads: {env['threads']}"
        + (f" (torch threads: {env['torch_threads']})" if env.get("torch_threads") else ""),
    ]
    load, cores = env.get("load_average"), env.get("cpu_count") or 1
    if load is not None and load > 0.5 * cores:
        lines.append(
            f"warning: load average {load:g} on {cores} cores before the run: other "
            "processes compete for the cores and the times will be noisy (--stat min helps)"
        )
    return "\n".join(lines)


def format_time(seconds: float) -> str:
    """3 significant digits with a unit: '812 ns', '12.3 us', '4.56 ms', '1.23 s'."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{_sig3(seconds / scale)} {unit}"
    return f"{_sig3(seconds / 1e-9)} ns"


def _sig3(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _cell(impl: dict[str, Any] | None, statistic: str = "median") -> str:
    if impl is None:
        return ""
    if impl["status"] == "ok":
        return format_time(impl[statistic])
    return (
        "n/a"
        if impl["status"].startswith("n/a")
        else "skip"
        if impl["status"].startswith("skip")
        else "-"
    )


def _ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def _markdown(headers: list[str], rows: list[list[str]], left: int) -> list[str]:
    """An aligned markdown table; the first ``left`` columns are left-aligned, the rest right."""
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells):
        return (
            "| "
            + " | ".join(
                c.ljust(w) if i < left else c.rjust(w)
                for i, (c, w) in enumerate(zip(cells, widths, strict=True))
            )
            + " |"
        )

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 2)) if i < left else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
        )
        + "|"
    )
    return [line(headers), rule] + [line(r) for r in rows]


def format_tables(results: Sequence[dict[str, Any]]) -> str:
    """One markdown table per op: time per call (median), GB/s, % of np.copyto, speedups."""
    shape_rank = {f"{r}x{c}": i for i, (r, c) in enumerate(SHAPES)}
    out = []
    for op in OPS:
        recs = [r for r in results if r["op"] == op]
        if not recs:
            continue
        recs.sort(
            key=lambda r: (
                shape_rank.get(r["id"].split("|")[1], len(SHAPES)),
                r["shape"][0] * r["shape"][1],
                r["dtype"],
            )
        )
        present = [k for k in IMPL_LABELS if any(k in r["impls"] for r in recs)]
        headers = ["shape", "dtype"]
        for k in present:
            headers.append(IMPL_LABELS[k])
            if k == "fastsoftmax_out":
                headers += ["GB/s", "% copy"]
            if k in BASELINES:
                headers.append("vs " + ("ref" if k == "reference" else IMPL_LABELS[k]))
        rows = []
        for r in recs:
            cells = [r["id"].split("|")[1], r["dtype"]]
            for k in present:
                cells.append(_cell(r["impls"].get(k), r["statistic"]))
                if k == "fastsoftmax_out":
                    cells.append("" if r["gbps"] is None else f"{r['gbps']:.1f}")
                    cells.append("" if r["pct_copyto"] is None else f"{r['pct_copyto']:.0f}%")
                if k in BASELINES:
                    cells.append(_ratio(r["speedup"].get(k)) or _cell(r["impls"].get(k)))
            rows.append(cells)
        out.append(f"### {op}")
        out.append("")
        out.extend(_markdown(headers, rows, left=2))
        out.append("")
        out.extend(_summary(recs))
        notes = IMPL_NOTES[op]
        out.append("")
        out.extend(f"- {IMPL_LABELS[k]}: `{notes[k]}`" for k in present if k in notes)
        out.append("")
    stat = results[0]["statistic"] if results else "median"
    out.append(
        f"Times are the {stat} per call. GB/s: bytes the op must read and write over the time of "
        "the out= call; % copy: that over np.copyto's bandwidth on the same arrays in this run. "
        "vs X: X's time / fastsoftmax's time (both allocating their result); > 1 means "
        "fastsoftmax is faster. n/a: not feasible; skip: skipped in --quick."
    )
    return "\n".join(out)


def _summary(recs: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for k in BASELINES:
        values = [r["speedup"][k] for r in recs if k in r["speedup"]]
        if values:
            lines.append(
                f"speedup vs {IMPL_LABELS[k]}: median {statistics.median(values):.2f}x, "
                f"min {min(values):.2f}x, max {max(values):.2f}x over {len(values)} cases"
            )
    big = [r["pct_copyto"] for r in recs if r["big"] and r["pct_copyto"] is not None]
    if big:
        lines.append(
            f"% of np.copyto bandwidth on big shapes (>= {BIG_ELEMENTS:,} elements): "
            f"median {statistics.median(big):.0f}%, min {min(big):.0f}%"
        )
    return lines


def to_json(env: dict[str, Any], results: Sequence[dict[str, Any]]) -> str:
    """The machine-readable report: ``{"environment", "grid", "notes", "results"}``."""
    doc = {
        "environment": env,
        "grid": {"ops": list(OPS), "shapes": [list(s) for s in SHAPES], "dtypes": list(DTYPES)},
        "notes": {
            "time": "seconds per call: median and min over repeats samples of number calls",
            "statistic": "which of median/min the derived numbers (gbps, pct_copyto, speedup) use",
            "bytes": "bytes the op must read and write (inputs once, result once)",
            "gbps": "bytes / time of gbps_from (the out= call), in 1e9 bytes per second",
            "pct_copyto": "100 * gbps / copyto.gbps (np.copyto of the input into a preallocated array)",
            "speedup": "baseline time / fastsoftmax time (both allocating their result)",
            "impls": IMPL_NOTES,
        },
        "results": list(results),
    }
    return json.dumps(doc, indent=1, allow_nan=False)


def plot(results: Sequence[dict[str, Any]], path: str) -> None:
    """Bar chart of fastsoftmax's speedup per shape and dtype, one panel per op (log scale).

    The baseline is PyTorch (its faster variant for cross-entropy) when it was timed, else the
    NumPy reference. Needs matplotlib (``pip install fastsoftmax[plot]``).
    """
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import FixedLocator, NullFormatter
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("--plot needs matplotlib: pip install fastsoftmax[plot]") from exc
    uses_torch = any("torch" in r["speedup"] or "torch_aten" in r["speedup"] for r in results)
    keys = ("torch", "torch_aten") if uses_torch else ("reference",)
    base = "PyTorch CPU (its faster variant)" if uses_torch else "the NumPy reference"
    ops = [op for op in OPS if any(r["op"] == op for r in results)]
    bars = {}  # op -> dtype -> [(shape, speedup)]
    for r in results:
        vals = [r["speedup"][k] for k in keys if k in r["speedup"]]
        if vals:
            bars.setdefault(r["op"], {}).setdefault(r["dtype"], []).append(
                (r["id"].split("|")[1], min(vals))
            )
    values = [v for per_dt in bars.values() for pairs in per_dt.values() for _, v in pairs] or [1.0]
    low, high = min(min(values), 0.5) / 1.5, max(max(values), 2.0) * 1.5
    ticks = [m * 10.0**e for e in range(-3, 5) for m in (1, 2, 5) if low <= m * 10.0**e <= high]

    fig = Figure(figsize=(10, 0.6 + 2.4 * max(1, len(ops))), layout="constrained")
    fig.suptitle(f"fastsoftmax speedup over {base} (time ratio, > 1: fastsoftmax is faster)")
    axes = fig.subplots(len(ops), 1, squeeze=False, sharey=True)[:, 0]
    for ax, op in zip(axes, ops, strict=True):
        shapes = list(dict.fromkeys(r["id"].split("|")[1] for r in results if r["op"] == op))
        per_dtype = bars.get(op, {})
        width = 0.8 / max(1, len(per_dtype))
        for j, (dt, pairs) in enumerate(per_dtype.items()):
            xs = [shapes.index(s) + (j - (len(per_dtype) - 1) / 2) * width for s, _ in pairs]
            ys = [v for _, v in pairs]
            # bars grow from 1 (equal speed): up when fastsoftmax is faster, down when slower
            drawn = ax.bar(xs, [y - 1.0 for y in ys], bottom=1.0, width=width, label=dt)
            ax.bar_label(
                drawn,
                labels=[f"{y:.0f}" if y >= 100 else f"{y:.2g}" for y in ys],
                fontsize="x-small",
            )
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_yscale("log")
        ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(FixedLocator(ticks))
        ax.yaxis.set_major_formatter(lambda v, _: f"{v:g}x")
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(range(len(shapes)), shapes)
        ax.set_title(op, fontsize="medium")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = [], []
    for ax in axes:  # one legend for the figure: the dtypes are the same in every panel
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    fig.savefig(path, dpi=120)


def progress_printer(stream=None) -> Callable[[int, int, Case, str], None]:
    """A progress line on ``stream`` (stderr): rewritten in place on a terminal, one per case otherwise."""
    stream = sys.stderr if stream is None else stream
    tty = hasattr(stream, "isatty") and stream.isatty()
    state = {"last": -1, "width": 0}

    def show(i: int, n: int, case: Case, impl: str) -> None:
        label = f"[{i + 1}/{n}] {case.op} {case.shape_str} {case.dtype}"
        if tty:
            text = f"{label}: {impl}"
            stream.write("\r" + text.ljust(state["width"]))
            state["width"] = len(text)
            stream.flush()
        elif i != state["last"]:
            stream.write(label + "\n")
            stream.flush()
        state["last"] = i

    def done() -> None:
        if tty and state["width"]:
            stream.write("\r" + " " * state["width"] + "\r")
            stream.flush()

    show.done = done  # type: ignore[attr-defined]
    return show
