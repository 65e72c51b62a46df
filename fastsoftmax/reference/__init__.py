"""Pure-NumPy twins of every public function: same signatures, textbook formulas, own checks.

Slow and obviously right, and a second opinion only because nothing is shared with the fast
path: like bottleneck's ``slow`` functions, the twins import nothing from the rest of
fastsoftmax (tests/test_reference.py enforces it). Each derives every number from the formulas
in NumPy and checks its arguments itself, raising the same exception classes as the public
functions (its messages are its own).

- softmax = exp(u - m) / sum(exp(u - m)), u = x / T (-inf where ``where`` is False), m = max(u);
  with d = sum(exp(u - m)) - 1, taken as the sum over every entry but one maximum (whose term is
  exactly 1, so a term like exp(-40) is kept instead of rounded away by 1 + d):
  logsumexp = m + log1p(d) and log_softmax = (u - m) - log1p(d), never log(softmax). Rows
  without a finite maximum take softmax's limits (NaN rows NaN, +inf entries share the
  probability, all -inf rows 0); an empty class axis gives empty results (logsumexp -inf).
- The Jacobian diag(p) - p p^T per row; the JVP/VJPs as ``np.einsum`` over the full Jacobian
  (I - 1 p^T for log_softmax), divided by T.
- Cross-entropy as -sum(s w log_softmax(u)) + zl logsumexp(u)^2 with PyTorch's weights,
  ignore_index, label smoothing and "mean" denominators, and its gradient
  softmax(u) (sum(q) + 2 zl logsumexp(u)) - q (``losses``); linear cross-entropy on the full
  logits ``x @ W.T + b``; selective log-softmax from the full log_softmax; the binary family
  (``binary``).

Dtypes: float32 and float64 stay; float16 is computed in float32 and rounded to float16; ints
and bools give float64; several inputs give ``np.result_type`` of those. The losses compute in
float64 and round once. 0-d results are NumPy scalars; ``out=`` receives the rounded result.
"""

from .binary import (
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_backward,
    binary_cross_entropy_with_logits_with_grad,
    log_sigmoid,
    sigmoid,
)
from .derivatives import log_softmax_vjp, softmax_jacobian, softmax_jvp, softmax_vjp
from .losses import (
    cross_entropy,
    cross_entropy_backward,
    cross_entropy_with_grad,
    linear_cross_entropy,
    linear_cross_entropy_with_grad,
)
from .selective import selective_log_softmax, selective_log_softmax_vjp
from .softmax import log_softmax, logsumexp, softmax

__all__ = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_backward",
    "binary_cross_entropy_with_logits_with_grad",
    "cross_entropy",
    "cross_entropy_backward",
    "cross_entropy_with_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_with_grad",
    "log_sigmoid",
    "log_softmax",
    "log_softmax_vjp",
    "logsumexp",
    "selective_log_softmax",
    "selective_log_softmax_vjp",
    "sigmoid",
    "softmax",
    "softmax_jacobian",
    "softmax_jvp",
    "softmax_vjp",
]
