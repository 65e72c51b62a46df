"""fastsoftmax: Numba-accelerated CPU kernels for softmax, its derivatives and cross-entropy."""

# before the imports: the kernels' cache directory is keyed by it (fastsoftmax/_cache.py)
__version__ = "0.1.0"

# first: _info imports _runtime, which installs the numba cache locator and loads TBB before
# any kernel module is imported (numba fixes the cache directory at decoration)
from ._info import info, warmup  # isort: skip
from .binary import (
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_backward,
    binary_cross_entropy_with_logits_with_grad,
    log_sigmoid,
    sigmoid,
)
from .derivatives import log_softmax_vjp, softmax_jacobian, softmax_jvp, softmax_vjp
from .linear import linear_cross_entropy, linear_cross_entropy_with_grad
from .losses import cross_entropy, cross_entropy_backward, cross_entropy_with_grad
from .selective import selective_log_softmax, selective_log_softmax_vjp
from .softmax import log_softmax, logsumexp, softmax

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
    "log_softmax_vjp",
    "selective_log_softmax",
    "selective_log_softmax_vjp",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "sigmoid",
    "log_sigmoid",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward",
    "binary_cross_entropy_with_logits_with_grad",
    "info",
    "warmup",
]
