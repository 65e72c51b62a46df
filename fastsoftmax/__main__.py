"""``python -m fastsoftmax <command>``.

Commands
--------
bench
    Time every op of the grid (ops x shapes x dtypes, see ``fastsoftmax.bench``) side by side
    with plain NumPy, the NumPy reference, scipy.special and PyTorch CPU (when installed) and
    against np.copyto's memory bandwidth; print one table per op and the speed targets met or
    not. ``--quick`` (default) or ``--full``; ``--json FILE`` for machines, ``--plot FILE.png`` for
    people; ``--overhead`` breaks a small call's time down, ``--mixing`` measures what sharing a
    process with PyTorch's threads costs, ``--lm-head`` adds fused linear + cross-entropy at
    language-model head shapes.
info
    Print the package's runtime information (``fastsoftmax.info()``) when this version has it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from .bench import add_parser

    parser = argparse.ArgumentParser(
        prog="python -m fastsoftmax",
        description="fastsoftmax command line: benchmarks and runtime info.",
    )
    sub = parser.add_subparsers(dest="command", metavar="{bench,info}")
    add_parser(sub)
    info = sub.add_parser("info", help="print version, threading and runtime information")
    info.set_defaults(func=_info_command)
    return parser


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
