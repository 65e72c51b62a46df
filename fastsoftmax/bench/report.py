"""The bench's records and what it prints: per-case JSON records, markdown tables, the header.

Derived numbers of a case, each from the per-round times of one run (see ``timing``):

- ``GB/s = bytes / t_out``: ``bytes`` what the op must read and write (``grid.op_bytes``), t_out
  the ``out=`` call (a preallocated result, like the copy's destination);
- ``elem/ns/core = elements / t_out / threads``, t_out in nanoseconds;
- ``% copy = 100 * GB/s / copy GB/s``, np.copyto of the first input timed in the same rounds;
- ``speedup over x = t_x / t_fastsoftmax`` (both allocating their result): the median over the
  rounds of the per-round ratio, and its spread (least and greatest round).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any

from .grid import BIG_ELEMENTS, OPS, SHAPES, Case, Settings, copy_bytes, op_bytes
from .peers import BASELINES, IMPL_LABELS, IMPL_NOTES, scipy_special, torch_module
from .timing import Ratio, Timing, ratio


def case_result(
    case: Case, timings: dict[str, Timing | str], statistic: str = "median", threads: int = 1
) -> dict[str, Any]:
    """The JSON record of one case: the times and the numbers derived from them."""
    nbytes, cbytes = op_bytes(case), copy_bytes(case)
    ok = {name: t for name, t in timings.items() if isinstance(t, Timing)}
    record: dict[str, Any] = {
        "op": case.op,
        "shape": list(case.shape),
        "dtype": case.dtype,
        "id": case.id,
        "big": case.big,
        "bytes": nbytes,
        "copy_bytes": cbytes,
        "statistic": statistic,
        "threads": threads,
        "impls": {
            name: {"status": "ok", **t.as_json()} if isinstance(t, Timing) else {"status": t}
            for name, t in timings.items()
        },
    }
    fast = "fastsoftmax" if "fastsoftmax" in ok else None
    bw_from = "fastsoftmax_out" if "fastsoftmax_out" in ok else fast
    record["gbps_from"] = bw_from
    record["gbps"] = record["elem_per_ns_core"] = record["pct_copyto"] = None
    if bw_from is not None:
        t_out = getattr(ok[bw_from], statistic)
        record["gbps"] = nbytes / t_out / 1e9
        record["elem_per_ns_core"] = case.elements / (t_out * 1e9) / threads
        if "copyto" in ok:
            pct = ratio(ok["copyto"], ok[bw_from], statistic)
            scale = 100.0 * nbytes / cbytes
            record["pct_copyto"] = Ratio(*(scale * v for v in asdict(pct).values())).as_json()
    record["speedup"] = {
        name: ratio(ok[name], ok[fast], statistic).as_json()
        for name in BASELINES
        if name in ok and fast
    }
    return record


# ---------------------------------------------------------------------------------- header
def environment(settings: Settings | None = None) -> dict[str, Any]:
    """Versions, threads and the numba threading layer (after one parallel launch)."""
    import numba
    import numpy as np

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
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "mode": settings.name if settings else None,
        "settings": asdict(settings) if settings else None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    if scipy_special() is not None:
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
        + (f" (torch threads: {env['torch_threads']})" if env.get("torch_threads") else "")
        + (f", OMP_WAIT_POLICY={env['omp_wait_policy']}" if env.get("omp_wait_policy") else ""),
    ]
    load, cores = env.get("load_average"), env.get("cpu_count") or 1
    if load is not None and load > 0.5 * cores:
        lines.append(
            f"warning: load average {load:g} on {cores} cores before the run: other "
            "processes compete for the cores and the times will be noisy (--stat min helps)"
        )
        if env.get("torch_threads", 0) and env["torch_threads"] > 1 and not env["omp_wait_policy"]:
            lines.append(
                "warning: PyTorch's OpenMP threads spin-wait by default and stall on busy cores "
                "(calls of microseconds then take milliseconds); rerun on a quiet machine or "
                "with OMP_WAIT_POLICY=PASSIVE (see bench --mixing)"
            )
    return "\n".join(lines)


# ---------------------------------------------------------------------------------- cells
def format_time(seconds: float) -> str:
    """3 significant digits with a unit: '812 ns', '12.3 us', '4.56 ms', '1.23 s'."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{_sig3(seconds / scale)} {unit}"
    return f"{_sig3(seconds / 1e-9)} ns"


def _sig3(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def format_ratio(r: dict[str, float] | None, unit: str = "x", digits: int = 2) -> str:
    """``2.10x (1.93-2.31)``: the median over the rounds and the spread."""
    if r is None:
        return ""
    return f"{r['median']:.{digits}f}{unit} ({r['low']:.{digits}f}-{r['high']:.{digits}f})"


def _cell(impl: dict[str, Any] | None, statistic: str = "median") -> str:
    if impl is None:
        return ""
    status = impl["status"]
    if status == "ok":
        return format_time(impl[statistic])
    return "n/a" if status.startswith("n/a") else "skip" if status.startswith("skip") else "-"


def markdown(headers: list[str], rows: list[list[str]], left: int) -> list[str]:
    """An aligned markdown table; the first ``left`` columns are left-aligned, the rest right."""
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        padded = (
            c.ljust(w) if i < left else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "| " + " | ".join(padded) + " |"

    rule = (
        "|"
        + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths))
        + "|"
    )
    return [line(headers), rule] + [line(r) for r in rows]


# ---------------------------------------------------------------------------------- tables
def _order(results: Sequence[dict[str, Any]], op: str) -> list[dict[str, Any]]:
    rank = {f"{r}x{c}": i for i, (r, c) in enumerate(SHAPES)}
    recs = [r for r in results if r["op"] == op]
    return sorted(
        recs,
        key=lambda r: (
            rank.get(r["id"].split("|")[1], len(SHAPES)),
            r["shape"][0] * r["shape"][1],
            r["dtype"],
        ),
    )


def format_tables(results: Sequence[dict[str, Any]]) -> str:
    """One markdown table per op: time per call, GB/s, elem/ns/core, % of np.copyto, speedups."""
    out = []
    for op in OPS:
        recs = _order(results, op)
        if not recs:
            continue
        present = [k for k in IMPL_LABELS if k != "copyto" and any(k in r["impls"] for r in recs)]
        headers = ["shape", "dtype"]
        for k in present:
            headers.append(IMPL_LABELS[k])
            if k == "fastsoftmax_out":
                headers += ["GB/s", "elem/ns/core", "% copy"]
            if k in BASELINES:
                headers.append("vs " + ("ref" if k == "reference" else IMPL_LABELS[k]))
        rows = []
        for r in recs:
            cells = [r["id"].split("|")[1], r["dtype"]]
            for k in present:
                cells.append(_cell(r["impls"].get(k), r["statistic"]))
                if k == "fastsoftmax_out":
                    cells.append("" if r["gbps"] is None else f"{r['gbps']:.1f}")
                    epc = r["elem_per_ns_core"]
                    cells.append("" if epc is None else f"{epc:.2f}")
                    cells.append(format_ratio(r["pct_copyto"], "%", 0))
                if k in BASELINES:
                    cells.append(format_ratio(r["speedup"].get(k)) or _cell(r["impls"].get(k)))
            rows.append(cells)
        out += [f"### {op}", "", *markdown(headers, rows, left=2), "", *_summary(recs), ""]
        notes = IMPL_NOTES[op]
        out.extend(f"- {IMPL_LABELS[k]}: `{notes[k]}`" for k in present + ["copyto"] if k in notes)
        out.append("")
    stat = results[0]["statistic"] if results else "median"
    out.append(
        f"Times are the {stat} per call over the rounds. GB/s and elem/ns/core: "
        "from the out= call; "
        "% copy: its bandwidth over np.copyto's of the same input, timed in the same rounds. "
        "vs X: X's time / fastsoftmax's time (both allocating their result; > 1: fastsoftmax is "
        "faster), the median of the per-round ratios and (in brackets) their least and greatest. "
        "n/a: not feasible; skip: skipped in --quick."
    )
    return "\n".join(out)


def _summary(recs: Sequence[dict[str, Any]]) -> list[str]:
    lines = []
    for k in BASELINES:
        values = [r["speedup"][k]["median"] for r in recs if k in r["speedup"]]
        if values:
            lines.append(
                f"speedup vs {IMPL_LABELS[k]}: median {statistics.median(values):.2f}x, "
                f"min {min(values):.2f}x, max {max(values):.2f}x over {len(values)} cases"
            )
    big = [r["pct_copyto"]["median"] for r in recs if r["big"] and r["pct_copyto"]]
    if big:
        lines.append(
            f"% of np.copyto bandwidth on big shapes (>= {BIG_ELEMENTS:,} elements): "
            f"median {statistics.median(big):.0f}%, min {min(big):.0f}%"
        )
    return lines


def to_json(env: dict[str, Any], results: Sequence[dict[str, Any]], **sections: Any) -> str:
    """The machine-readable report: ``{"environment", "grid", "notes", "results", ...sections}``."""
    doc = {
        "environment": env,
        "grid": {"ops": list(OPS), "shapes": [list(s) for s in SHAPES]},
        "notes": {
            "time": "seconds per call; round_medians/round_mins: the median/fastest sample of "
            "each round's block of samples of `number` calls",
            "statistic": "which of median/min the derived numbers use",
            "bytes": "bytes the op must read and write (inputs once, result once)",
            "gbps": "bytes / time of gbps_from (the out= call), in 1e9 bytes per second",
            "elem_per_ns_core": "elements / time of gbps_from in ns / threads",
            "pct_copyto": "100 * gbps / np.copyto's GB/s on the first input, per round: "
            "median, low, high over the rounds",
            "speedup": "peer time / fastsoftmax time (both allocating their result), per "
            "round: median, low, high over the rounds",
            "impls": IMPL_NOTES,
        },
        "results": list(results),
        **sections,
    }
    return json.dumps(doc, indent=1, allow_nan=False)


def progress_printer(stream=None) -> Callable[[int, int, Case, str], None]:
    """A progress line on ``stream`` (stderr): rewritten in place on a terminal, one per case
    otherwise."""
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
