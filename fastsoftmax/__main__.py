"""``python -m fastsoftmax <command>``.

Commands
--------
bench
    Time every op of the grid (ops x shapes x dtypes, see ``fastsoftmax._bench``) against the NumPy
    reference, scipy.special and PyTorch CPU (when installed) and against np.copyto's memory
    bandwidth; print one table per op. ``--quick`` (default, about a minute on 2 cores) or
    ``--full``; ``--json FILE`` for machines, ``--plot FILE.png`` for people. ``--lm-head`` adds
    fused linear + cross-entropy at language-model head shapes N x H x V (time and peak memory of
    each implementation in a fresh process, see ``fastsoftmax._bench_linear``).
info
    Print the package's runtime information (``fastsoftmax.info()``) when this version has it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


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


def build_parser() -> argparse.ArgumentParser:
    from . import _bench as b

    parser = argparse.ArgumentParser(
        prog="python -m fastsoftmax",
        description="fastsoftmax command line: benchmarks and runtime info.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{bench,info}")

    bench = sub.add_parser(
        "bench",
        help="benchmark fastsoftmax against NumPy, scipy and PyTorch",
        description="Time each op over a grid of shapes and dtypes; print one table per op with the "
        "time per call, GB/s, % of np.copyto bandwidth and speedups. Progress goes to "
        "stderr, the report to stdout.",
    )
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument(
        "--quick",
        dest="mode",
        action="store_const",
        const="quick",
        help="few repeats, the reference skipped on big shapes (default; ~1 minute)",
    )
    mode.add_argument(
        "--full",
        dest="mode",
        action="store_const",
        const="full",
        help="the whole grid with more repeats (several minutes)",
    )
    bench.set_defaults(mode="quick")
    bench.add_argument(
        "--ops",
        type=_csv(_choice(b.OPS)),
        default=None,
        help=f"comma-separated subset of: {','.join(b.OPS)}",
    )
    bench.add_argument(
        "--dtypes",
        type=_csv(_choice(b.DTYPES)),
        default=None,
        help=f"comma-separated subset of: {','.join(b.DTYPES)}",
    )
    bench.add_argument(
        "--shapes",
        type=_csv(b.parse_shape),
        default=None,
        help="comma-separated ROWSxCLASSES shapes (default: "
        + ",".join(f"{r}x{c}" for r, c in b.SHAPES)
        + ")",
    )
    bench.add_argument(
        "--impls",
        type=_csv(_choice(list(b.IMPL_LABELS))),
        default=None,
        help=f"comma-separated subset of: {','.join(b.IMPL_LABELS)}",
    )
    bench.add_argument(
        "--stat",
        choices=b.STATISTICS,
        default="median",
        help="time per call the GB/s and speedups use: median (default) or min "
        "(steadier when other processes load the machine)",
    )
    bench.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        help="thread count for numba and torch (default: numba's)",
    )
    bench.add_argument("--json", metavar="FILE", default=None, help="write all raw results as JSON")
    bench.add_argument(
        "--plot",
        metavar="FILE.png",
        default=None,
        help="draw the speedups (needs matplotlib: pip install fastsoftmax[plot])",
    )
    bench.add_argument(
        "--lm-head",
        action="store_true",
        help="also benchmark linear_cross_entropy (forward + backward) against the "
        "unfused NumPy path and torch's reference and chunked paths, time and "
        "peak memory, at 2048x256x16000 (--full: also 8192x512x32000)",
    )
    bench.add_argument(
        "--lm-shapes",
        type=_csv(_lm_shape),
        default=None,
        help="comma-separated NxHxV shapes for --lm-head",
    )
    bench.add_argument("--repeats", type=_positive_int, default=None, help=argparse.SUPPRESS)
    bench.set_defaults(func=_bench_command)

    info = sub.add_parser("info", help="print version, threading and runtime information")
    info.set_defaults(func=_info_command)
    return parser


def _bench_command(args: argparse.Namespace) -> int:
    import numba

    from . import _bench as b

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
    settings = b.FULL if args.mode == "full" else b.QUICK
    cases = b.grid(args.ops, args.shapes, args.dtypes)
    env = b.environment(settings)
    print(b.format_header(env), flush=True)
    print(flush=True)
    progress = b.progress_printer(sys.stderr)
    try:
        results = b.run(
            cases,
            settings,
            impls=args.impls,
            max_repeats=args.repeats,
            statistic=args.stat,
            progress=progress,
        )
    finally:
        progress.done()
    print(b.format_tables(results), flush=True)
    lm_results = []
    if args.lm_head or args.lm_shapes:
        from . import _bench_linear as bl

        shapes = args.lm_shapes or (bl.LM_SHAPES if args.mode == "full" else bl.QUICK_LM_SHAPES)
        lm_results = bl.run(
            shapes,
            repeats=args.repeats or (3 if args.mode == "full" else 1),
            threads=numba.get_num_threads(),
            progress=lambda label: print(label, file=sys.stderr, flush=True),
        )
        print(flush=True)
        print(bl.format_table(lm_results), flush=True)
    if args.json is not None:
        text = b.to_json(env, results)
        if lm_results:
            text = json.dumps(dict(json.loads(text), lm_head=lm_results), indent=1)
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(text)
            f.write("\n")
        print(f"\nwrote {args.json}")
    if args.plot is not None:
        b.plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _info_command(args: argparse.Namespace) -> int:
    from ._info import info

    print(info())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
