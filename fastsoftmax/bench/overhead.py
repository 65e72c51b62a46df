"""Where the time of one small call goes (``bench --overhead``), one thread, float32.

For each op at the ``grid.SMALL`` shapes one public call is recorded: the
``fastsoftmax._validate`` functions the wrapper calls (with their arguments) and the row kernel it
launches (with its arguments). Then, timed side by side in rounds of blocks (``timing.compare``):

- validate: those ``_validate`` calls replayed (argument checks, dtype and layout handling, the
  result's allocation and delivery);
- kernel: the serial kernel alone, called ``KERNEL_CALLS`` times from a compiled loop;
- dispatch: ``kernel.serial(*args)`` called from Python, less the kernel alone (numba's type
  matching and unboxing);
- rest: the whole public call less the three above (the wrapper's own Python, ``launch``);
- the whole public call, and PyTorch, its aten calls (cross-entropy) and plain NumPy.

Each is the fastest sample over the rounds (a sample: many calls in a row).
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .grid import SMALL, Case, Settings, make_inputs
from .peers import implementations, torch_module
from .timing import compare

OVERHEAD_OPS = ("softmax", "log_softmax", "softmax_jvp", "cross_entropy_with_grad")
DTYPE = "float32"
#: Kernel calls per call of the compiled loop that times the kernel alone.
KERNEL_CALLS = 100
COLUMNS = ("validate", "dispatch", "kernel", "rest", "public", "torch", "torch_aten", "numpy")


@contextmanager
def _recording() -> Iterator[tuple[list, list]]:
    """Record the outermost ``_validate`` calls and the kernel launches made inside the block."""
    import fastsoftmax._runtime as rt
    import fastsoftmax._validate as v

    checks: list[tuple[Callable, tuple, dict]] = []
    launches: list[tuple[Any, tuple]] = []
    depth = [0]

    def wrap(fn: Callable) -> Callable:
        def recorded(*args, **kwargs):
            if depth[0] == 0:
                checks.append((fn, args, kwargs))
            depth[0] += 1
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1

        return recorded

    def launch(kernel, work, *args):
        launches.append((kernel, args))
        return rt.launch(kernel, work, *args)

    originals = {
        name: obj
        for name, obj in vars(v).items()
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == v.__name__
    }
    callers = [
        mod
        for name, mod in list(sys.modules.items())
        if name.startswith("fastsoftmax.")
        and mod is not rt
        and getattr(mod, "launch", None) is rt.launch
    ]
    for name, obj in originals.items():
        setattr(v, name, wrap(obj))
    for mod in callers:
        mod.launch = launch
    try:
        yield checks, launches
    finally:
        for name, obj in originals.items():
            setattr(v, name, obj)
        for mod in callers:
            mod.launch = rt.launch


def _kernel_loop(kernel: Callable, nargs: int) -> Callable:
    """A compiled ``loop(count, *args)`` calling ``kernel(*args)`` ``count`` times."""
    import numba

    names = ", ".join(f"a{i}" for i in range(nargs))
    namespace = {"kernel": kernel}
    exec(  # a fixed arity: numba compiles calls with a known number of arguments
        f"def loop(count, {names}):\n    for _ in range(count):\n        kernel({names})\n",
        namespace,
    )
    return numba.njit(cache=False)(namespace["loop"])


def breakdown(op: str, shape: tuple[int, int], settings: Settings) -> dict[str, Any]:
    """Seconds per call of each column of :data:`COLUMNS` for ``op`` at ``shape`` (one thread)."""
    case = Case(op, shape, DTYPE)
    inputs = make_inputs(case)
    peers = implementations(case, inputs)
    public = peers["fastsoftmax"]
    with _recording() as (checks, launches):
        public()
    if len(launches) != 1:
        raise RuntimeError(f"{op} launched {len(launches)} kernels, expected one")
    kernel, args = launches[0]
    loop = _kernel_loop(kernel.serial, len(args))

    def validate():
        for fn, a, k in checks:
            fn(*a, **k)

    fns = {
        "validate": validate,
        "python_kernel": lambda: kernel.serial(*args),
        "kernel_loop": lambda: loop(KERNEL_CALLS, *args),
        "public": public,
    }
    fns.update({k: peers[k] for k in ("torch", "torch_aten", "numpy") if callable(peers.get(k))})
    # the fastest sample: these calls do the same work every time, and on shared cores the
    # slower samples are the ones the scheduler interrupted
    t = {name: timing.min for name, timing in compare(fns, settings).items()}
    kernel_alone = t.pop("kernel_loop") / KERNEL_CALLS
    row = {
        "op": op,
        "shape": list(shape),
        "dtype": DTYPE,
        "validate": t.pop("validate"),
        "dispatch": t.pop("python_kernel") - kernel_alone,
        "kernel": kernel_alone,
        "public": t.pop("public"),
        "validate_calls": [fn.__name__ for fn, _, _ in checks],
        **t,
    }
    row["rest"] = row["public"] - row["validate"] - row["dispatch"] - row["kernel"]
    return row


def run(settings: Settings, progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """:func:`breakdown` of every op of :data:`OVERHEAD_OPS` at every small shape, one thread."""
    import numba

    before = numba.get_num_threads()
    torch = torch_module(1)
    numba.set_num_threads(1)
    try:
        rows = []
        for shape in SMALL:
            for op in OVERHEAD_OPS:
                if progress:
                    progress(f"overhead {op} {shape[0]}x{shape[1]}")
                rows.append(breakdown(op, shape, settings))
        return rows
    finally:
        numba.set_num_threads(before)
        if torch is not None:
            torch.set_num_threads(before)


def format_table(rows: list[dict[str, Any]]) -> str:
    from .report import format_time, markdown

    headers = ["op", "shape", *(c.replace("_", " ") for c in COLUMNS)]
    cells = [
        [r["op"], "x".join(map(str, r["shape"]))]
        + [format_time(r[c]) if r.get(c, 0) > 0 else ("" if c not in r else "~0") for c in COLUMNS]
        for r in rows
    ]
    return "\n".join(
        [
            f"## Per-call overhead, {DTYPE}, one thread (fastest sample, per call)",
            "",
            *markdown(headers, cells, left=2),
            "",
            "validate: the fastsoftmax._validate calls the wrapper makes, replayed; kernel: the "
            "serial row kernel from a compiled loop; dispatch: the same kernel called from Python, "
            "less the kernel; rest: the public call less these three; public: the whole call "
            "(allocating); torch aten: log_softmax + nll_loss forward and backward "
            "without autograd.",
        ]
    )
