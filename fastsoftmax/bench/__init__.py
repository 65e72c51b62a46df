"""``python -m fastsoftmax bench``: fastsoftmax side by side with NumPy, scipy and PyTorch.

The parts: ``grid`` (ops, shapes, dtypes, inputs), ``peers`` (the calls compared), ``timing``
(blocks and rounds), ``report`` (records, tables, JSON), ``targets`` (the speed targets),
``overhead`` (where a small call's time goes), ``mixing`` (what sharing a process with PyTorch's
threads costs), ``linear`` (fused linear + cross-entropy) and ``plot``. This module runs them
from the command line; ``import fastsoftmax`` never imports it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from .grid import (
    DTYPES,
    FULL,
    OPS,
    QUICK,
    SHAPES,
    Case,
    Settings,
    clear_inputs,
    make_inputs,
    parse_shape,
)
from .grid import grid as make_grid  # the name `grid` stays the module's
from .peers import IMPL_LABELS, implementations, torch_module
from .report import case_result, environment, format_header, format_tables, progress_printer
from .timing import STATISTICS, compare, warm_pools

T = TypeVar("T")


def run(
    cases: Sequence[Case],
    settings: Settings = QUICK,
    *,
    impls: Iterable[str] | None = None,
    max_samples: int | None = None,
    statistic: str = "median",
    progress: Callable[[int, int, Case, str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time every case side by side (``timing.compare``); one JSON-ready record per case.

    ``impls`` restricts the implementations (keys of ``peers.IMPL_LABELS``; np.copyto, the
    bandwidth yardstick, is always timed); ``statistic`` ("median" or "min") is the time the
    derived numbers use; ``progress(i, n, case, impl)`` is called as each is calibrated.
    """
    import numba

    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {STATISTICS}, got {statistic!r}")
    wanted = set(IMPL_LABELS if impls is None else impls) | {"copyto"}
    unknown = wanted - set(IMPL_LABELS)
    if unknown:
        raise ValueError(
            f"unknown implementation(s) {sorted(unknown)}; expected some of {list(IMPL_LABELS)}"
        )
    threads = numba.get_num_threads()
    warm_pools(threads, torch_module(threads) if wanted & {"torch", "torch_aten"} else None)
    results = []
    try:
        for i, case in enumerate(cases):
            found = implementations(case, make_inputs(case), settings)
            timings: dict[str, Any] = {k: v for k, v in found.items() if k in wanted}
            fns = {k: v for k, v in timings.items() if callable(v)}

            def show(name: str, i: int = i, case: Case = case) -> None:
                if progress:
                    progress(i, len(cases), case, IMPL_LABELS[name])

            timings.update(compare(fns, settings, max_samples, show))
            results.append(case_result(case, timings, statistic, threads))
    finally:
        clear_inputs()
    return results


# ------------------------------------------------------------------------------ command line
def _csv(convert: Callable[[str], T]) -> Callable[[str], list[T]]:
    """An argparse type for comma-separated lists."""

    def parse(text: str) -> list[T]:
        items = [part.strip() for part in text.split(",") if part.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        try:
            return [convert(item) for item in items]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _choice(allowed: Sequence[str]) -> Callable[[str], str]:
    def check(item: str) -> str:
        if item not in allowed:
            raise ValueError(f"unknown value {item!r}; choose from {', '.join(allowed)}")
        return item

    return check


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _lm_shape(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise ValueError(
            f"an LM-head shape is NxHxV with each >= 1, e.g. 2048x256x16000; got {text!r}"
        )
    n, h, v = (int(p) for p in parts)
    return n, h, v


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` command to the subparsers ``sub``."""
    bench = sub.add_parser(
        "bench",
        help="benchmark fastsoftmax against NumPy, scipy and PyTorch",
        description="Time each op over a grid of shapes and dtypes side by side with its peers "
        "(rounds of blocks, one library at a time); print one table per op with the time per "
        "call, GB/s, elements per ns per core, % of np.copyto bandwidth and speedups with their "
        "spread over the rounds, then the speed targets. Progress goes to stderr, the report to "
        "stdout.",
    )
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help=f"{QUICK.rounds} rounds, the reference skipped on big shapes (default; minutes)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help=f"{FULL.rounds} rounds of longer blocks, the reference everywhere (longer)",
    )
    bench.set_defaults(mode="quick")
    bench.add_argument(
        "--ops", type=_csv(_choice(OPS)), help=f"comma-separated subset of: {','.join(OPS)}"
    )
    bench.add_argument(
        "--dtypes",
        type=_csv(_choice(DTYPES)),
        help=f"comma-separated subset of: {','.join(DTYPES)}",
    )
    bench.add_argument(
        "--shapes",
        type=_csv(parse_shape),
        help="comma-separated ROWSxCLASSES shapes (default: "
        + ",".join(f"{r}x{c}" for r, c in SHAPES)
        + ")",
    )
    bench.add_argument(
        "--impls",
        type=_csv(_choice(list(IMPL_LABELS))),
        help=f"comma-separated subset of: {','.join(IMPL_LABELS)} (np.copyto is always timed)",
    )
    bench.add_argument(
        "--stat",
        choices=STATISTICS,
        default="median",
        help="time per call of a block the derived numbers use: median (default) or min "
        "(steadier when other processes load the machine)",
    )
    bench.add_argument(
        "--threads", type=_positive_int, help="thread count for numba and torch (default: numba's)"
    )
    bench.add_argument("--rounds", type=_positive_int, help="rounds of blocks per case")
    bench.add_argument("--json", metavar="FILE", help="write all raw results as JSON")
    bench.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the speedups (needs matplotlib: pip install fastsoftmax[plot])",
    )
    bench.add_argument(
        "--overhead",
        action="store_true",
        help="also break the time of one small call (64x10, 256x10, float32, one thread) "
        "into argument checks, numba dispatch, kernel and the rest, next to torch and NumPy",
    )
    bench.add_argument(
        "--mixing",
        action="store_true",
        help="also measure what mixing numba's and torch's thread pools in one process costs "
        "(each configuration in a fresh process)",
    )
    bench.add_argument(
        "--lm-head",
        action="store_true",
        help="also benchmark linear_cross_entropy (forward + backward) against the "
        "unfused NumPy path, its three matmuls alone and torch's reference and chunked "
        "paths, time and peak memory, at 2048x256x16000 (--full: also 8192x512x32000, "
        "3 rounds; --rounds N sets the rounds)",
    )
    bench.add_argument(
        "--lm-shapes", type=_csv(_lm_shape), help="comma-separated NxHxV shapes for --lm-head"
    )
    bench.add_argument("--repeats", type=_positive_int, help=argparse.SUPPRESS)
    bench.set_defaults(func=command)
    return bench


def command(args: argparse.Namespace) -> int:
    """Run ``bench`` with the parsed ``args``; the exit status."""
    import dataclasses

    import numba

    from . import linear, mixing, overhead, plot, targets

    if args.plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("error: --plot needs matplotlib: pip install fastsoftmax[plot]", file=sys.stderr)
            return 1
    if args.threads is not None:
        limit = numba.config.NUMBA_NUM_THREADS
        if args.threads > limit:
            print(
                f"error: --threads {args.threads} exceeds numba's limit of {limit} "
                "(set NUMBA_NUM_THREADS to raise it)",
                file=sys.stderr,
            )
            return 2
        numba.set_num_threads(args.threads)
    settings = FULL if args.mode == "full" else QUICK
    if args.rounds is not None:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    cases = make_grid(args.ops, args.shapes, args.dtypes)
    env = environment(settings)
    print(format_header(env), flush=True)
    print(flush=True)
    show = progress_printer(sys.stderr)
    try:
        results = run(
            cases,
            settings,
            impls=args.impls,
            max_samples=args.repeats,
            statistic=args.stat,
            progress=show,
        )
    finally:
        show.done()  # type: ignore[attr-defined]
    print(format_tables(results), flush=True)
    sections: dict[str, Any] = {}

    def say(label: str) -> None:
        print(label, file=sys.stderr, flush=True)

    bits = targets.check_bits()
    sections["targets"] = targets.evaluate(results, bits)
    sections["thread_bits"] = bits
    print("\n" + targets.format_table(sections["targets"]), flush=True)
    if args.overhead:
        sections["overhead"] = overhead.run(settings, progress=say)
        print("\n" + overhead.format_table(sections["overhead"]), flush=True)
    if args.mixing:
        sections["mixing"] = mixing.run(progress=say)
        print("\n" + mixing.format_table(sections["mixing"]), flush=True)
    if args.lm_head or args.lm_shapes:
        full = args.mode == "full"
        shapes = args.lm_shapes or (linear.LM_SHAPES if full else linear.QUICK_LM_SHAPES)
        sections["lm_head"] = linear.run(
            shapes,
            repeats=args.repeats or (3 if full else 1),
            threads=numba.get_num_threads(),
            rounds=args.rounds or (3 if full else 1),
            progress=say,
        )
        print("\n" + linear.format_table(sections["lm_head"]), flush=True)
    if args.json is not None:
        from .report import to_json

        with open(args.json, "w", encoding="utf-8") as f:
            f.write(to_json(env, results, **sections))
            f.write("\n")
        print(f"\nwrote {args.json}")
    if args.plot is not None:
        plot.plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0
