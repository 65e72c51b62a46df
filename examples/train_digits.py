"""Train a small MLP on scikit-learn's handwritten digits with fastsoftmax's fused cross-entropy.

A plain-NumPy network 64 -> 128 (ReLU) -> 10, trained with minibatch Adam (written out below).
The loss and its gradient come from ONE call per minibatch, with the gradient written over the
logits buffer (no extra allocation)::

    loss, dlogits = fs.cross_entropy_with_grad(logits, y, out=logits)

The digits data (1797 8x8 images) ships inside scikit-learn: nothing is downloaded. Needs
``pip install scikit-learn`` (or ``pip install -e ".[examples]"``)::

    python examples/train_digits.py                       # fastsoftmax kernels
    python examples/train_digits.py --backend reference   # the same loop on fastsoftmax.reference
    python examples/train_digits.py --backend both --dtype float64   # both, compared

With the default seed the test accuracy ends above 0.96. Both backends see the same
initialization and the same minibatches, so in float64 their losses agree to rounding.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from dataclasses import dataclass, field

import numpy as np

import fastsoftmax
import fastsoftmax.reference

BACKENDS = {"fast": fastsoftmax, "reference": fastsoftmax.reference}


def load_data(seed: int, dtype: np.dtype):
    """Digits scaled to [0, 1], split 75% / 25% (stratified, fixed seed)."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:  # pragma: no cover - depends on the environment
        sys.exit(
            "this example needs scikit-learn: pip install scikit-learn "
            '(or pip install -e ".[examples]")'
        )
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(dtype)
    return train_test_split(X, y.astype(np.int64), test_size=0.25, stratify=y, random_state=seed)


class MLP:
    """64 -> hidden (ReLU) -> 10, He-initialized, with its Adam state."""

    def __init__(
        self, n_in: int, n_hidden: int, n_out: int, rng: np.random.Generator, dtype: np.dtype
    ):
        self.params = {
            "W1": (rng.standard_normal((n_in, n_hidden)) * np.sqrt(2.0 / n_in)).astype(dtype),
            "b1": np.zeros(n_hidden, dtype=dtype),
            "W2": (rng.standard_normal((n_hidden, n_out)) * np.sqrt(2.0 / n_hidden)).astype(dtype),
            "b2": np.zeros(n_out, dtype=dtype),
        }
        self.m = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.params.items()}
        self.t = 0

    def logits(self, X: np.ndarray) -> np.ndarray:
        p = self.params
        return np.maximum(X @ p["W1"] + p["b1"], 0) @ p["W2"] + p["b2"]

    def adam_step(
        self, grads: dict, lr: float, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8
    ) -> None:
        self.t += 1
        c1 = 1.0 - beta1**self.t
        c2 = 1.0 - beta2**self.t
        for k, g in grads.items():
            m, v = self.m[k], self.v[k]
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * g * g
            self.params[k] -= lr * (m / c1) / (np.sqrt(v / c2) + eps)


@dataclass
class Run:
    """What one training run produced."""

    backend: str
    losses: list = field(default_factory=list)  # mean training loss per epoch
    batch_losses: list = field(default_factory=list)  # every minibatch loss, in order
    train_accuracy: list = field(default_factory=list)
    test_accuracy: list = field(default_factory=list)
    seconds: float = 0.0  # the whole training loop
    loss_seconds: float = 0.0  # inside cross_entropy_with_grad only


def train(
    backend: str,
    data,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    dtype: np.dtype,
    log=print,
) -> Run:
    ce_with_grad = BACKENDS[backend].cross_entropy_with_grad
    X_train, X_test, y_train, y_test = data
    rng = np.random.default_rng(seed)
    model = MLP(X_train.shape[1], 128, 10, rng, dtype)
    p = model.params
    run = Run(backend)
    n = X_train.shape[0]
    log(f"[{backend}] epoch   loss    train acc  test acc   time (loss fn)")
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        loss_time = 0.0
        order = rng.permutation(n)
        total = 0.0
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            xb, yb = X_train[idx], y_train[idx]
            # forward
            h_pre = xb @ p["W1"] + p["b1"]
            h = np.maximum(h_pre, 0)
            logits = h @ p["W2"] + p["b2"]
            # loss (mean over the batch) and d loss / d logits, written over the logits
            t1 = time.perf_counter()
            loss, dlogits = ce_with_grad(logits, yb, out=logits)
            loss_time += time.perf_counter() - t1
            run.batch_losses.append(float(loss))
            total += float(loss) * len(idx)
            # backward
            dh = dlogits @ p["W2"].T
            dh[h_pre <= 0] = 0
            grads = {
                "W1": xb.T @ dh,
                "b1": dh.sum(axis=0),
                "W2": h.T @ dlogits,
                "b2": dlogits.sum(axis=0),
            }
            model.adam_step(grads, lr)
        run.losses.append(total / n)
        run.train_accuracy.append(float(np.mean(np.argmax(model.logits(X_train), 1) == y_train)))
        run.test_accuracy.append(float(np.mean(np.argmax(model.logits(X_test), 1) == y_test)))
        run.loss_seconds += loss_time
        log(
            f"[{backend}] {epoch:5d}  {run.losses[-1]:.5f}  {run.train_accuracy[-1]:9.4f}"
            f"  {run.test_accuracy[-1]:8.4f}  {time.perf_counter() - t0:6.3f}s"
            f" ({loss_time * 1e3:.1f} ms)"
        )
    run.seconds = time.perf_counter() - start
    log(
        f"[{backend}] final test accuracy {run.test_accuracy[-1]:.4f}; "
        f"training {run.seconds:.3f}s, of which {run.loss_seconds:.3f}s in cross_entropy_with_grad"
    )
    return run


def compare(fast: Run, reference: Run, log=print) -> float:
    """Print how far apart the two runs are; return the largest relative batch-loss difference."""
    a, b = np.array(fast.batch_losses), np.array(reference.batch_losses)
    worst = float(np.max(np.abs(a - b) / np.abs(b)))
    log(
        f"largest relative difference between the batch losses: {worst:.2e} "
        f"over {len(a)} minibatches"
    )
    log(
        f"time in the loss function: fast {fast.loss_seconds:.3f}s, reference "
        f"{reference.loss_seconds:.3f}s ({reference.loss_seconds / fast.loss_seconds:.1f}x); "
        f"whole loop: fast {fast.seconds:.3f}s, reference {reference.seconds:.3f}s"
    )
    return worst


def _single_threaded_blas():
    """One BLAS thread: these matrices are tiny, and idle BLAS threads spinning between calls
    slow everything else down (3x on a 2-core machine). threadpoolctl comes with scikit-learn."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--backend", choices=["fast", "reference", "both"], default="fast")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None, log=print) -> dict:
    """Run the example; return {backend: Run} (and "max_rel_diff" with --backend both)."""
    args = parse_args(argv)
    dtype = np.dtype(args.dtype)
    data = load_data(args.seed, dtype)
    log(
        f"digits: {len(data[0])} train / {len(data[1])} test images; MLP 64-128-10, Adam "
        f"lr={args.lr}, batch {args.batch_size}, {args.dtype}"
    )
    fastsoftmax.cross_entropy_with_grad(np.zeros((2, 10), dtype), np.zeros(2, np.int64))  # compile
    backends = ["fast", "reference"] if args.backend == "both" else [args.backend]
    results = {}
    with _single_threaded_blas():
        for backend in backends:
            results[backend] = train(
                backend,
                data,
                epochs=args.epochs,
                batch_size=args.batch_size,
                lr=args.lr,
                seed=args.seed,
                dtype=dtype,
                log=log,
            )
    if args.backend == "both":
        results["max_rel_diff"] = compare(results["fast"], results["reference"], log=log)
    return results


if __name__ == "__main__":
    main()
