"""What the dask check at the public entry costs a NumPy call: fs.softmax and fs.cross_entropy
on a 64 x 10 float32 array against the same functions without the check, interleaved in one
process.

    PYTHONPATH=. python benchmarks/dask_entry_overhead.py [--with-dask]

``--with-dask`` imports dask first: the check then looks at each argument's type instead of
stopping at ``"dask" in sys.modules``.
"""

from __future__ import annotations

import argparse
import statistics
import timeit

import numpy as np

import fastsoftmax as fs
from fastsoftmax.losses import _run
from fastsoftmax.softmax import _rowwise, softmax_kernel


def softmax_without_check(x, axis=-1, *, temperature=1.0, out=None, where=None):
    """fs.softmax as it was before the dask check."""
    return _rowwise(softmax_kernel, x, axis, temperature, out, where)


def cross_entropy_without_check(
    logits,
    target,
    *,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    temperature=1.0,
    where=None,
):
    """fs.cross_entropy as it was before the dask check."""
    return _run(
        logits,
        target,
        weight,
        ignore_index,
        reduction,
        label_smoothing,
        temperature,
        1.0,
        False,
        None,
        where,
    )[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-dask", action="store_true", help="import dask first")
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    if args.with_dask:
        import dask.array  # noqa: F401
    x = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    t = np.arange(64) % 10
    pairs = {
        "softmax": (lambda: softmax_without_check(x), lambda: fs.softmax(x)),
        "cross_entropy": (
            lambda: cross_entropy_without_check(x, t),
            lambda: fs.cross_entropy(x, t),
        ),
    }
    for name, (before, after) in pairs.items():
        assert np.array_equal(before(), after())
        times: tuple[list[float], list[float]] = ([], [])
        for _ in range(args.rounds):  # interleaved, so load on the machine hits both alike
            for timer, out in zip((before, after), times, strict=True):
                out.append(timeit.timeit(timer, number=args.calls) / args.calls * 1e9)
        diffs = [b - a for a, b in zip(*times, strict=True)]
        print(
            f"{name}: {statistics.median(times[0]):.0f} ns without the check, "
            f"{statistics.median(times[1]):.0f} ns with it; difference "
            f"{statistics.median(diffs):+.0f} ns (median of {args.rounds} paired rounds)"
        )


if __name__ == "__main__":
    main()
