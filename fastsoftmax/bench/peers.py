"""What the bench times for a case: fastsoftmax and its peers, each as a zero-argument call.

Peers: plain NumPy (the textbook expression), ``fastsoftmax.reference``, ``scipy.special`` (softmax
and log_softmax only), PyTorch CPU (its public call, and for cross-entropy the private aten kernels
that autograd runs, without autograd), and ``np.copyto`` of the first input into a preallocated
array: the memory-bandwidth yardstick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .grid import Case, Settings

#: Implementation keys (JSON) and the short labels the tables use.
IMPL_LABELS = {
    "fastsoftmax": "fastsoftmax",
    "fastsoftmax_out": "out=",
    "numpy": "numpy",
    "reference": "reference",
    "scipy": "scipy",
    "torch": "torch",
    "torch_aten": "torch aten",
    "copyto": "np.copyto",
}
#: The peers a speedup is reported against, in table order.
BASELINES = ("numpy", "reference", "scipy", "torch", "torch_aten")
_CE_ATEN = (
    "aten._log_softmax + nll_loss_forward + nll_loss_backward + _log_softmax_backward_data"
    " (no autograd)"
)
#: What each implementation runs, per op (shown under the tables and stored in the JSON).
IMPL_NOTES = {
    "softmax": {
        "fastsoftmax": "fs.softmax(x)",
        "fastsoftmax_out": "fs.softmax(x, out=buf)",
        "numpy": "e = np.exp(x - x.max(-1, keepdims=True)); e / e.sum(-1, keepdims=True)",
        "reference": "fastsoftmax.reference.softmax(x)",
        "scipy": "scipy.special.softmax(x, axis=-1)",
        "torch": "torch.softmax(x, -1)",
    },
    "log_softmax": {
        "fastsoftmax": "fs.log_softmax(x)",
        "fastsoftmax_out": "fs.log_softmax(x, out=buf)",
        "numpy": "s = x - x.max(-1, keepdims=True); s - np.log(np.exp(s).sum(-1, keepdims=True))",
        "reference": "fastsoftmax.reference.log_softmax(x)",
        "scipy": "scipy.special.log_softmax(x, axis=-1)",
        "torch": "torch.log_softmax(x, -1)",
    },
    "softmax_jvp": {
        "fastsoftmax": "fs.softmax_jvp(p, v)",
        "fastsoftmax_out": "fs.softmax_jvp(p, v, out=buf)",
        "numpy": "pv = p * v; pv - p * pv.sum(-1, keepdims=True)",
        "reference": "fastsoftmax.reference.softmax_jvp(p, v) (full C x C Jacobian + einsum)",
        "torch": "torch.ops.aten._softmax_backward_data(v, p, -1, dtype)",
    },
    "cross_entropy_with_grad": {
        "fastsoftmax": "fs.cross_entropy_with_grad(z, y)",
        "fastsoftmax_out": "fs.cross_entropy_with_grad(z, y, out=buf)",
        "numpy": "log_softmax as above; loss = -logp[rows, y].mean(); "
        "g = exp(logp); g[rows, y] -= 1; g / n",
        "reference": "fastsoftmax.reference.cross_entropy_with_grad(z, y)",
        "torch": "F.cross_entropy(z.requires_grad_(), y); loss.backward()",
        "torch_aten": _CE_ATEN,
    },
    "cross_entropy_backward": {
        "fastsoftmax": "fs.cross_entropy_backward(z, y)",
        "fastsoftmax_out": "fs.cross_entropy_backward(z, y, out=buf)",
        "numpy": "g = softmax(z) as above; g[rows, y] -= 1; g / n",
        "reference": "fastsoftmax.reference.cross_entropy_backward(z, y)",
        "torch": "loss.backward(retain_graph=True) of F.cross_entropy (forward done beforehand)",
        "torch_aten": (
            "aten.nll_loss_backward + _log_softmax_backward_data from the saved log_softmax"
        ),
    },
}
for _notes in IMPL_NOTES.values():
    _notes["copyto"] = "np.copyto(buf, first input)"
#: The implementations each op has (scipy.special has only softmax and log_softmax).
OP_IMPLS = {op: tuple(notes) for op, notes in IMPL_NOTES.items()}


def torch_module(threads: int | None = None):
    """``torch`` with ``threads`` intra-op threads (default: numba's), or None if not installed."""
    try:
        import torch
    except ImportError:
        return None
    if threads is None:
        import numba

        threads = numba.get_num_threads()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return torch


def scipy_special():
    try:
        import scipy.special
    except ImportError:
        return None
    return scipy.special


#: The reference JVP builds the C x C Jacobian of every row: only where rows * C * C is below this.
JVP_REFERENCE_LIMIT = 30_000_000


def reference_status(case: Case, settings: Settings | None = None) -> str | None:
    """Why the reference is not timed on ``case`` (None when it is)."""
    rows, classes = case.shape
    if case.op == "softmax_jvp" and (
        classes > 1000 or rows * classes * classes > JVP_REFERENCE_LIMIT
    ):
        return "n/a: C x C Jacobians too big"
    limit = None if settings is None else settings.reference_max_elements
    if limit is not None and case.elements > limit:
        return f"skipped in --{settings.name} (use --full)"
    return None


# ------------------------------------------------------------------------------- plain NumPy
def _np_log_softmax(x: np.ndarray) -> np.ndarray:
    s = x - x.max(-1, keepdims=True)
    return s - np.log(np.exp(s).sum(-1, keepdims=True))


def _np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_jvp(p: np.ndarray, v: np.ndarray) -> np.ndarray:
    pv = p * v
    return pv - p * pv.sum(-1, keepdims=True)


def _np_cross_entropy_with_grad(x: np.ndarray, y: np.ndarray) -> tuple[Any, np.ndarray]:
    rows = np.arange(x.shape[0])
    logp = _np_log_softmax(x)
    loss = -logp[rows, y].mean()
    grad = np.exp(logp)
    grad[rows, y] -= 1
    grad /= x.shape[0]
    return loss, grad


def _np_cross_entropy_backward(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    grad = _np_softmax(x)
    grad[np.arange(x.shape[0]), y] -= 1
    grad /= x.shape[0]
    return grad


_NUMPY = {
    "softmax": _np_softmax,
    "log_softmax": _np_log_softmax,
    "softmax_jvp": _np_jvp,
    "cross_entropy_with_grad": _np_cross_entropy_with_grad,
    "cross_entropy_backward": _np_cross_entropy_backward,
}


# --------------------------------------------------------------------------------- the table
def implementations(
    case: Case, inputs: dict[str, np.ndarray], settings: Settings | None = None
) -> dict[str, Callable[[], Any] | str]:
    """The calls to time for ``case``: key -> zero-argument callable, or a string saying why not.

    Keys are those of :data:`OP_IMPLS` for the op.
    """
    import fastsoftmax as fs
    import fastsoftmax.reference as ref

    op = case.op
    args = tuple(inputs[k] for k in ("p", "v") if k in inputs) or tuple(
        inputs[k] for k in ("x", "y") if k in inputs
    )
    first = args[0]
    buf, copy_buf = np.empty_like(first), np.empty_like(first)
    fast, slow, plain = getattr(fs, op), getattr(ref, op), _NUMPY[op]
    impls: dict[str, Callable[[], Any] | str] = {
        "fastsoftmax": lambda: fast(*args),
        "fastsoftmax_out": lambda: fast(*args, out=buf),
        "numpy": lambda: plain(*args),
        "reference": reference_status(case, settings) or (lambda: slow(*args)),
    }
    if "scipy" in OP_IMPLS[op]:
        sp = scipy_special()
        sp_fn = None if sp is None else getattr(sp, op)
        impls["scipy"] = "not installed" if sp_fn is None else (lambda: sp_fn(first, axis=-1))
    torch = torch_module()
    for name, fn in _torch_calls(torch, op, args).items():
        impls[name] = fn
    impls["copyto"] = lambda: np.copyto(copy_buf, first)
    return impls


def _torch_calls(torch, op: str, args: tuple[np.ndarray, ...]) -> dict[str, Callable | str]:
    """PyTorch's calls for ``op`` (for cross-entropy: autograd, and the aten kernels it runs)."""
    names = [k for k in ("torch", "torch_aten") if k in OP_IMPLS[op]]
    if torch is None:
        return dict.fromkeys(names, "not installed")
    tensors = [torch.from_numpy(a) for a in args]
    if op in ("softmax", "log_softmax"):
        (xt,) = tensors
        t_fn = getattr(torch, op)
        return {"torch": lambda: t_fn(xt, -1)}
    if op == "softmax_jvp":
        pt, vt = tensors
        backward = torch.ops.aten._softmax_backward_data
        return {"torch": lambda: backward(vt, pt, -1, pt.dtype)}
    return _torch_cross_entropy(torch, op, *tensors)


#: aten's Reduction::Mean and F.cross_entropy's default ignore_index
_MEAN, _IGNORE = 1, -100


def _aten_cross_entropy_with_grad(torch, xt, yt) -> Callable[[], Any]:
    """aten's log_softmax + nll_loss forward and backward, called directly (no autograd)."""
    aten = torch.ops.aten
    one = torch.ones((), dtype=xt.dtype)

    def no_autograd():
        logp = aten._log_softmax(xt, 1, False)
        loss, total_weight = aten.nll_loss_forward(logp, yt, None, _MEAN, _IGNORE)
        grad_logp = aten.nll_loss_backward(one, logp, yt, None, _MEAN, _IGNORE, total_weight)
        return loss, aten._log_softmax_backward_data(grad_logp, logp, 1, xt.dtype)

    return no_autograd


def _torch_cross_entropy(torch, op: str, xt, yt) -> dict[str, Callable]:
    import torch.nn.functional as F

    if op == "cross_entropy_with_grad":

        def autograd():
            z = xt.detach().requires_grad_(True)
            loss = F.cross_entropy(z, yt)
            loss.backward()
            return loss, z.grad

        return {"torch": autograd, "torch_aten": _aten_cross_entropy_with_grad(torch, xt, yt)}

    # cross_entropy_backward: the forward (and what it saves) happens once, outside the timing
    aten = torch.ops.aten
    one = torch.ones((), dtype=xt.dtype)
    z = xt.detach().requires_grad_(True)
    loss = F.cross_entropy(z, yt)
    logp = aten._log_softmax(xt, 1, False)
    _, total_weight = aten.nll_loss_forward(logp, yt, None, _MEAN, _IGNORE)

    def autograd_backward():
        z.grad = None
        loss.backward(retain_graph=True)
        return z.grad

    def aten_backward():
        grad_logp = aten.nll_loss_backward(one, logp, yt, None, _MEAN, _IGNORE, total_weight)
        return aten._log_softmax_backward_data(grad_logp, logp, 1, xt.dtype)

    return {"torch": autograd_backward, "torch_aten": aten_backward}
