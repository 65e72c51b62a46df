"""``python -m fastsoftmax <command>``.

Commands
--------
bench
    Time every op of the grid (ops x shapes x dtypes, see ``fastsoftmax._bench``) against the NumPy
    reference, scipy.special and PyTorch CPU (when installed) and against np.copyto's memory
    bandwidth; print one table per op. ``--quick`` (default, about a minute on 2 cores) or
    ``--full``; ``--json FILE`` for machines, ``--plot FILE.png`` for people.
info
    Print the package's runtime information (``fastsoftmax.info()``) when this version has it.
"""

from __future__ import annotations

import argparse
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


def build_parser() -> argparse.ArgumentParser:
    from . import _bench as b

    parser = argparse.ArgumentParser(prog="python -m fastsoftmax",
                                     description="fastsoftmax command line: benchmarks and runtime info.")
    sub = parser.add_subparsers(dest="command", metavar="{bench,info}")

    bench = sub.add_parser(
        "bench", help="benchmark fastsoftmax against NumPy, scipy and PyTorch",
        description="Time each op over a grid of shapes and dtypes; print one table per op with the "
                    "time per call, GB/s, % of np.copyto bandwidth and speedups. Progress goes to "
                    "stderr, the report to stdout.")
    mode = bench.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="few repeats, the reference skipped on big shapes (default; ~1 minute)")
    mode.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the whole grid with more repeats (several minutes)")
    bench.set_defaults(mode="quick")
    bench.add_argument("--ops", type=_csv(_choice(b.OPS)), default=None,
                       help=f"comma-separated subset of: {','.join(b.OPS)}")
    bench.add_argument("--dtypes", type=_csv(_choice(b.DTYPES)), default=None,
                       help=f"comma-separated subset of: {','.join(b.DTYPES)}")
    bench.add_argument("--shapes", type=_csv(b.parse_shape), default=None,
                       help="comma-separated ROWSxCLASSES shapes (default: "
                            + ",".join(f"{r}x{c}" for r, c in b.SHAPES) + ")")
    bench.add_argument("--impls", type=_csv(_choice(list(b.IMPL_LABELS))), default=None,
                       help=f"comma-separated subset of: {','.join(b.IMPL_LABELS)}")
    bench.add_argument("--stat", choices=b.STATISTICS, default="median",
                       help="time per call the GB/s and speedups use: median (default) or min "
                            "(steadier when other processes load the machine)")
    bench.add_argument("--threads", type=_positive_int, default=None,
                       help="thread count for numba and torch (default: numba's)")
    bench.add_argument("--json", metavar="FILE", default=None, help="write all raw results as JSON")
    bench.add_argument("--plot", metavar="FILE.png", default=None,
                       help="draw the speedups (needs matplotlib: pip install fastsoftmax[plot])")
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
            print(f"error: --threads {args.threads} exceeds numba's limit of {limit} "
                  "(set NUMBA_NUM_THREADS to raise it)", file=sys.stderr)
            return 2
        numba.set_num_threads(args.threads)
    settings = b.FULL if args.mode == "full" else b.QUICK
    cases = b.grid(args.ops, args.shapes, args.dtypes)
    env = b.environment(settings)
    print(b.format_header(env), flush=True)
    print(flush=True)
    progress = b.progress_printer(sys.stderr)
    try:
        results = b.run(cases, settings, impls=args.impls, max_repeats=args.repeats,
                        statistic=args.stat, progress=progress)
    finally:
        progress.done()
    print(b.format_tables(results), flush=True)
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(b.to_json(env, results))
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
