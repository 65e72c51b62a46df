"""Train a small word-level language model in plain NumPy with ``linear_cross_entropy_with_grad``.

The text is NumPy's own documentation (the docstrings of numpy, numpy.linalg, numpy.fft,
numpy.random, numpy.ma and numpy.polynomial: ~1.5 MB, ~470k tokens, a vocabulary of ~6000 words
and symbols), so nothing is downloaded. The model predicts the next token from the previous
``--context`` tokens: embeddings (V x E) concatenated -> tanh hidden layer -> LM head (V x H)::

    loss, dh, dW_head, db_head = fs.linear_cross_entropy_with_grad(
        h, W_head, y, linear_bias=b_head, chunk_size=...)

which never holds the batch x V logits: only one chunk of them. ``--unfused`` computes the same
step the plain way (``z = h @ W.T + b``; ``fs.cross_entropy_with_grad(z, y, out=z)``; two
matmuls). At the end the script prints the peak NumPy memory (tracemalloc) of one loss + gradient
step both ways::

    python examples/train_wordlm.py                 # ~30 s on 2 cores
    python examples/train_wordlm.py --steps 50 --batch 256 --chunk-size 64
"""

from __future__ import annotations

import argparse
import collections
import inspect
import re
import time
import tracemalloc

import numpy as np

import fastsoftmax as fs


def load_tokens() -> tuple[np.ndarray, list[str]]:
    """NumPy's docstrings, lower-cased and split into words, numbers and single symbols."""
    docs = []
    for mod in (np, np.linalg, np.fft, np.random, np.ma, np.polynomial):
        for name in sorted(dir(mod)):
            if not name.startswith("_"):
                doc = inspect.getdoc(getattr(mod, name, None))
                if doc:
                    docs.append(doc)
    words = re.findall(r"[a-z]+|[0-9]+|[^\sa-z0-9]", "\n".join(docs).lower())
    vocab = [w for w, _ in collections.Counter(words).most_common()]
    index = {w: i for i, w in enumerate(vocab)}
    return np.array([index[w] for w in words], dtype=np.int64), vocab


class WordLM:
    """Embeddings -> tanh hidden -> LM head, with Adam."""

    def __init__(self, vocab: int, context: int, embed: int, hidden: int, rng: np.random.Generator):
        f32 = np.float32
        self.p = {
            "E": (rng.standard_normal((vocab, embed)) * 0.1).astype(f32),
            "W1": (
                rng.standard_normal((context * embed, hidden)) / np.sqrt(context * embed)
            ).astype(f32),
            "b1": np.zeros(hidden, f32),
            "W": (rng.standard_normal((vocab, hidden)) / np.sqrt(hidden)).astype(f32),  # (V, H)
            "b": np.zeros(vocab, f32),
        }
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0

    def hidden(self, ctx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = self.p["E"][ctx].reshape(ctx.shape[0], -1)
        return e, np.tanh(e @ self.p["W1"] + self.p["b1"])

    def step(self, ctx: np.ndarray, y: np.ndarray, loss_and_grads, lr: float) -> float:
        e, h = self.hidden(ctx)
        loss, dh, dW, db = loss_and_grads(h, self.p["W"], y, self.p["b"])
        da = dh * (1 - h * h)
        de = (da @ self.p["W1"].T).reshape(ctx.shape + (-1,))
        dE = np.zeros_like(self.p["E"])
        np.add.at(dE, ctx, de)
        grads = {"E": dE, "W1": e.T @ da, "b1": da.sum(0), "W": dW, "b": db}
        self.t += 1
        for k, g in grads.items():  # Adam
            self.m[k] = 0.9 * self.m[k] + 0.1 * g
            self.v[k] = 0.999 * self.v[k] + 0.001 * g * g
            mhat = self.m[k] / (1 - 0.9**self.t)
            vhat = self.v[k] / (1 - 0.999**self.t)
            self.p[k] -= (lr * mhat / (np.sqrt(vhat) + 1e-8)).astype(np.float32)
        return float(loss)


def fused(chunk_size: int):
    def loss_and_grads(h, W, y, b):
        return fs.linear_cross_entropy_with_grad(h, W, y, linear_bias=b, chunk_size=chunk_size)

    return loss_and_grads


def unfused(h, W, y, b):
    z = h @ W.T + b  # the batch x V logits
    loss, g = fs.cross_entropy_with_grad(z, y, out=z)
    return loss, g @ W, g.T @ h, g.sum(0)


def peak_bytes(fn, *args) -> int:
    """Peak NumPy allocation (tracemalloc) of one call."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    fn(*args)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak


def main(argv=None, log=print) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--context", type=int, default=4)
    ap.add_argument("--embed", type=int, default=32)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--chunk-size", type=int, default=128, help="rows of logits per chunk")
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--unfused", action="store_true", help="train with the unfused loss instead")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    tokens, vocab = load_tokens()
    rng = np.random.default_rng(args.seed)
    split = int(0.9 * len(tokens))
    model = WordLM(len(vocab), args.context, args.embed, args.hidden, rng)
    loss_fn = unfused if args.unfused else fused(args.chunk_size)
    log(
        f"{len(tokens)} tokens, vocabulary {len(vocab)}, batch {args.batch}, "
        f"context {args.context}, "
        f"{'unfused' if args.unfused else f'fused (chunks of {args.chunk_size} rows)'}"
    )

    def batch(lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
        starts = rng.integers(lo, hi - args.context - 1, args.batch)
        ctx = tokens[starts[:, None] + np.arange(args.context)]
        return ctx, tokens[starts + args.context]

    losses = []
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        losses.append(model.step(*batch(0, split), loss_fn, args.lr))
        if step % 50 == 0 or step == 1:
            log(f"step {step:4d}  train loss {np.mean(losses[-50:]):.3f}")
    seconds = time.perf_counter() - start
    ctx, y = batch(split, len(tokens))
    _, h = model.hidden(ctx)
    val = float(fs.linear_cross_entropy(h, model.p["W"], y, linear_bias=model.p["b"]))
    log(f"validation loss {val:.3f} (uniform guess: {np.log(len(vocab)):.3f}); {seconds:.1f} s")

    W, b = model.p["W"], model.p["b"]
    mem_fused = peak_bytes(fused(args.chunk_size), h, W, y, b)
    mem_unfused = peak_bytes(unfused, h, W, y, b)
    logits_mb = h.shape[0] * W.shape[0] * 4 / 2**20
    log(
        f"peak NumPy memory of one loss + gradient step: fused {mem_fused / 2**20:.1f} MB, "
        f"unfused {mem_unfused / 2**20:.1f} MB (the logits alone: {logits_mb:.1f} MB)"
    )
    return {
        "losses": losses,
        "val_loss": val,
        "vocab": len(vocab),
        "mem_fused": mem_fused,
        "mem_unfused": mem_unfused,
    }


if __name__ == "__main__":
    main()
