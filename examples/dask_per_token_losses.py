"""Per-token cross-entropy of an on-disk logits array larger than a worker's memory, on a
``distributed.LocalCluster``.

The logits (tokens x vocabulary, float32) are written to a ``.npy`` file and read by the workers
block by block through ``dask.array.from_array``: each worker holds a few blocks at a time, never
the whole array, which is larger than the memory limit given to each worker. ``fs.cross_entropy``
sees a dask array and returns a lazy one; the per-token losses and their mean are computed on the
cluster and checked against the NumPy call on the first block.

    pip install -e ".[dask]"
    python examples/dask_per_token_losses.py                       # 768 MiB of logits, ~30 s
    python examples/dask_per_token_losses.py --tokens 1048576 --memory-limit 1GiB   # 4 GiB

The cluster's dashboard address is printed: open it to watch the blocks stream through (the
dashboard needs bokeh: ``pip install "dask[diagnostics]"``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import tempfile
import time
from dataclasses import dataclass

# One numba thread per process, one worker per core: adding workers adds cores. Set before numba
# is imported, here and in the workers (spawned processes inherit it and import this file first).
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import dask.array as da  # noqa: E402
import numpy as np  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import fastsoftmax as fs  # noqa: E402


@dataclass(frozen=True)
class NpyFile:
    """A ``.npy`` file that dask reads by slices: it pickles as its path, and each worker maps
    the file and copies out only the slice a block needs (as a zarr array would)."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        return np.array(np.load(self.path, mmap_mode="r")[index])


def write_data(
    directory: str, tokens: int, vocab: int, block: int, seed: int = 0
) -> tuple[NpyFile, NpyFile]:
    """Random float32 logits (tokens, vocab) and int64 targets (tokens,), written block by
    block so that this process never holds the whole array either."""
    rng = np.random.default_rng(seed)
    files = []
    for name, shape, dtype in (
        ("logits", (tokens, vocab), np.float32),
        ("targets", (tokens,), np.int64),
    ):
        path = os.path.join(directory, f"{name}.npy")
        out = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        for start in range(0, tokens, block):
            stop = min(tokens, start + block)
            if name == "logits":
                out[start:stop] = rng.standard_normal((stop - start, vocab), dtype=np.float32) * 3
            else:
                out[start:stop] = rng.integers(0, vocab, stop - start)
        out.flush()
        del out
        files.append(NpyFile(path, shape, np.dtype(dtype)))
    return files[0], files[1]


def start_cluster(workers: int, memory_limit: str, dashboard: bool = True) -> LocalCluster:
    """Worker processes on 127.0.0.1 with one thread each."""
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0" if dashboard else None,
        memory_limit=memory_limit,
        silence_logs=40,
    )


def per_token_losses(logits_file: NpyFile, targets_file: NpyFile, block: int):
    """The lazy per-token losses and their mean, from the files."""
    logits = da.from_array(logits_file, chunks=(block, logits_file.shape[1]))
    targets = da.from_array(targets_file, chunks=(block,))
    return fs.cross_entropy(logits, targets, reduction="none"), fs.cross_entropy(logits, targets)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=196_608)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--block", type=int, default=8192, help="tokens per dask block")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-limit", default="512MiB", help="per worker")
    parser.add_argument("--dir", default=None, help="where to write the data (default: a temp dir)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        logits_file, targets_file = write_data(directory, args.tokens, args.vocab, args.block)
        size = os.path.getsize(logits_file.path)
        print(
            f"logits on disk: {logits_file.shape} float32, {size / 2**20:.0f} MiB; "
            f"{args.workers} workers with memory_limit={args.memory_limit} each"
        )
        with start_cluster(args.workers, args.memory_limit) as cluster, Client(cluster) as client:
            served = importlib.util.find_spec("bokeh") is not None
            print(
                f"dashboard: {cluster.dashboard_link}"
                + ("" if served else " (not served without bokeh: pip install 'dask[diagnostics]')")
            )
            losses, mean = per_token_losses(logits_file, targets_file, args.block)
            start = time.perf_counter()
            losses, mean = client.compute([losses, mean], sync=True)
            seconds = time.perf_counter() - start

        first = slice(0, min(args.block, args.tokens))
        expected = fs.cross_entropy(logits_file[first], targets_file[first], reduction="none")
        assert np.array_equal(losses[first], expected), "differs from the NumPy call"
        assert np.isclose(mean, losses.astype(np.float64).mean(), rtol=1e-6)
        print(
            f"per-token losses: {losses.shape}, mean {mean:.6f}, equal to the NumPy call "
            f"on the first block"
        )
        print(
            f"{seconds:.2f} s: {args.tokens / seconds / 1e6:.2f} M tokens/s, "
            f"{size / seconds / 2**30:.2f} GiB/s of logits"
        )
    return {"tokens_per_s": args.tokens / seconds, "seconds": seconds, "mean": float(mean)}


if __name__ == "__main__":
    main()
