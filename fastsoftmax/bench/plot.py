"""The bench's chart: fastsoftmax's speedup per shape and dtype, one panel per op."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .grid import OPS


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
        vals = [r["speedup"][k]["median"] for k in keys if k in r["speedup"]]
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
