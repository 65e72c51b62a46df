"""pytest-benchmark suite over the grid of ``fastsoftmax.bench`` (the one ``python -m fastsoftmax
bench`` uses): every op x shape x dtype, each timed for fastsoftmax (allocating and ``out=``), plain
NumPy, the NumPy reference, scipy.special (softmax, log_softmax) and PyTorch CPU (when installed,
with numba's thread count), plus ``np.copyto`` of the input as the memory-bandwidth yardstick.
Each benchmark is in the group ``op|shape|dtype``, so pytest-benchmark prints one comparison table
per case.

The default ``pytest`` run skips these (``testpaths = ["tests"]`` and ``--benchmark-skip`` in
pyproject.toml). Run them with::

    pytest benchmarks --benchmark-only                    # the whole grid (476 benchmarks, long)
    pytest benchmarks --benchmark-only -m "not big"       # a quick subset: the in-cache shapes
    pytest benchmarks --benchmark-only -k "64x10 or 1024x1000"
    pytest benchmarks --benchmark-only -k "[softmax-1024x1000"   # "[op-" matches only that op
    pytest benchmarks --benchmark-only \
        -k "cross_entropy_with_grad and 4096x4096 and (fastsoftmax or torch)"
    pytest benchmarks --benchmark-only --benchmark-json=bench.json   # the raw numbers

Test ids are ``op-shape-dtype-implementation``; implementations: fastsoftmax, fastsoftmax_out
(``out=`` a preallocated array), numpy, reference, scipy, torch (autograd for the cross-entropy
ops), torch_aten (cross-entropy through the aten kernels, no autograd) and copyto (np.copyto of
the input: the memory-bandwidth yardstick). ``python -m fastsoftmax bench`` runs the same grid and
adds GB/s, % of the copy bandwidth and speedups.

``big`` marks the out-of-cache shapes (>= 4M elements: 4096x4096, 256x32000, 32x262144).
pytest-benchmark times one implementation after another, each in one stretch: for ratios taken
side by side in rounds, and the speed targets met or not, run ``python -m fastsoftmax bench``.
"""

from __future__ import annotations

import pytest

from fastsoftmax.bench import grid, peers


def _params():
    for case in grid.grid():
        marks = [pytest.mark.big] if case.big else []
        for impl in peers.OP_IMPLS[case.op]:
            yield pytest.param(
                case, impl, id=f"{case.op}-{case.shape_str}-{case.dtype}-{impl}", marks=marks
            )


@pytest.mark.parametrize(("case", "impl"), list(_params()))
def test_op(benchmark, case: grid.Case, impl: str) -> None:
    inputs = grid.make_inputs(case)  # cached for the current shape: the grid is shape-major
    fn = peers.implementations(case, inputs)[impl]
    nbytes = grid.copy_bytes(case) if impl == "copyto" else grid.op_bytes(case)
    if isinstance(fn, str):
        pytest.skip(f"{impl}: {fn}")
    benchmark.group = case.id
    benchmark.extra_info.update(op=case.op, shape=list(case.shape), dtype=case.dtype, bytes=nbytes)
    fn()  # warm-up: numba compiles or loads its cache outside the timing
    if impl == "reference" and case.big:
        benchmark.pedantic(fn, rounds=3, iterations=1)  # seconds per call: bound the run time
    else:
        benchmark(fn)
