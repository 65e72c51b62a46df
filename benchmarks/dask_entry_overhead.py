"""What the dask check at the public entry costs a NumPy call: fs.softmax on a 64 x 10 float32
array against the same function without the check, interleaved in one process.

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
from fastsoftmax.softmax import _rowwise, softmax_rows


def softmax_without_check(x, axis=-1, *, temperature=1.0, out=None, where=None):
    """fs.softmax as it was before the dask check."""
    return _rowwise(softmax_rows, x, axis, temperature, out, where)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--with-dask", action="store_true", help="import dask first")
    parser.add_argument("--rounds", type=int, default=201)
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    if args.with_dask:
        import dask.array  # noqa: F401
    x = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    assert np.array_equal(fs.softmax(x), softmax_without_check(x))
    timers = {"without check": timeit.Timer(lambda: softmax_without_check(x)),
              "fs.softmax": timeit.Timer(lambda: fs.softmax(x))}
    times: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(args.rounds):  # interleaved, so load on the machine hits both alike
        for name, timer in timers.items():
            times[name].append(timer.timeit(args.calls) / args.calls * 1e9)
    medians = {name: statistics.median(t) for name, t in times.items()}
    diffs = [b - a for a, b in zip(times["without check"], times["fs.softmax"])]
    for name, m in medians.items():
        print(f"{name:>14}: {m:8.0f} ns per call (median of {args.rounds} rounds)")
    print(f"{'difference':>14}: {statistics.median(diffs):8.0f} ns (median of paired rounds)")


if __name__ == "__main__":
    main()
