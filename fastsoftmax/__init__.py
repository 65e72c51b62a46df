"""fastsoftmax: Numba-accelerated CPU kernels for softmax, its derivatives and cross-entropy."""

from .derivatives import log_softmax_vjp, softmax_jacobian, softmax_jvp, softmax_vjp
from .losses import cross_entropy, cross_entropy_backward, cross_entropy_with_grad
from .softmax import log_softmax, logsumexp, softmax

__version__ = "0.1.0"

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
    "log_softmax_vjp",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_with_grad",
]
