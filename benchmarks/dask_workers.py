"""Throughput of per-token cross-entropy over on-disk logits against the number of workers of a
``distributed.LocalCluster`` (one core each), with the data and cluster of
``examples/dask_per_token_losses.py``.

    PYTHONPATH=. python benchmarks/dask_workers.py --workers 1 2

Each configuration starts its own cluster, computes once to load the kernels, then times
``--repeat`` full passes over the file (the file stays in the page cache: this measures compute
and data movement between processes, not the disk). It also reports how long one block's task
(read the slice, compute its losses) takes on a worker: when that grows with the number of
workers, the workers are not getting a core each (other load on the machine).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
import dask_per_token_losses as example  # noqa: E402  (sets NUMBA_NUM_THREADS=1 first)
from distributed import Client, get_task_stream  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tokens", type=int, default=196_608)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--block", type=int, default=8192)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--memory-limit", default="512MiB")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        logits, targets = example.write_data(directory, args.tokens, args.vocab, args.block)
        gib = os.path.getsize(logits.path) / 2**30
        print(
            f"{args.tokens} tokens x {args.vocab} classes float32 ({gib:.2f} GiB), blocks of "
            f"{args.block} tokens, {os.cpu_count()} cores"
        )
        rates = {}
        for workers in args.workers:
            with (
                example.start_cluster(workers, args.memory_limit, dashboard=False) as cluster,
                Client(cluster) as client,
            ):
                losses, _ = example.per_token_losses(logits, targets, args.block)
                client.compute(losses[: args.block], sync=True)  # kernels loaded on every worker
                client.run(lambda: None)
                times, block_times = [], []
                for _ in range(args.repeat):
                    with get_task_stream() as stream:
                        start = time.perf_counter()
                        client.compute(losses, sync=True)
                        times.append(time.perf_counter() - start)
                    block_times += [
                        sum(
                            s["stop"] - s["start"]
                            for s in task["startstops"]
                            if s["action"] == "compute"
                        )
                        for task in stream.data
                        if "_ce_block" in str(task["key"])
                    ]
            seconds = statistics.median(times)
            rates[workers] = args.tokens / seconds
            block = statistics.median(block_times)
            print(
                f"{workers} worker(s): {seconds:.3f} s median of {args.repeat} "
                f"(min {min(times):.3f}), {rates[workers] / 1e6:.3f} M tokens/s, "
                f"{gib / seconds:.2f} GiB/s; a block (read + loss) takes {block * 1e3:.1f} ms "
                f"on its worker: {args.block / block / 1e6:.3f} M tokens/s per busy worker"
            )
        base = min(rates)
        for workers, rate in rates.items():
            print(f"speed-up with {workers} worker(s): {rate / rates[base]:.2f}x")


if __name__ == "__main__":
    main()
