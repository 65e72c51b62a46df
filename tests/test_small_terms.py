"""Logs of sums dominated by one term: logsumexp, log_softmax and the losses keep the small terms.

With m = max(u), logsumexp(u) = m + log1p(d), d = sum of exp(u_j - m) over every entry but one
maximum. Computed as m + log(1 + d), any d below half an ulp of 1 is rounded away: logsumexp of
[0, -40] would be 0 instead of 4.25e-18, and the loss of a well-classified row 0 instead of d.
Both the kernels and the reference are checked against a long-double oracle, on rows that take
each code path (short rows in chunks, one block, several blocks), with the maximum in several
places and with ties.
"""

from __future__ import annotations

import numpy as np
import pytest

import fastsoftmax as fs
from fastsoftmax import reference as ref

IMPLS = {"fast": fs, "reference": ref}
RTOL = {np.float32: 2e-6, np.float64: 2e-14}
# float32 gaps stay where exp(gap) is a normal float32 (subnormals carry few digits)
GAPS = {np.float32: [-10.0, -20.0, -40.0, -80.0], np.float64: [-20.0, -37.0, -40.0, -100.0, -700.0]}


def _row(length: int, gap: float, top: int, ties: int, dtype) -> np.ndarray:
    """A row of ``length`` entries: ``ties`` maxima of 0 starting at ``top``, the rest at ``gap``
    and a little below it."""
    x = gap - np.linspace(0.0, 1.0, length)
    x[top : top + ties] = 0.0
    return x.astype(dtype)


def _exact_log1p_rest(u: np.ndarray) -> np.longdouble:
    """log1p(sum_j exp(u_j - max) - 1) in long double, the -1 taken by leaving out one maximum."""
    u = u.astype(np.longdouble)
    top = int(np.argmax(u))
    rest = np.exp(np.delete(u, top) - u[top]).sum()
    return np.log1p(rest)


CASES = [
    (length, top, ties)
    for length, top, ties in [
        (2, 0, 1),
        (2, 1, 1),
        (7, 3, 2),
        (30, 29, 1),
        (300, 0, 1),
        (300, 257, 1),
        (600, 10, 3),
    ]
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length,top,ties", CASES)
def test_logsumexp_and_log_softmax_keep_small_terms(impl, dtype, length, top, ties):
    mod = IMPLS[impl]
    for gap in GAPS[dtype]:
        x = _row(length, gap, top, ties, dtype)
        exact = _exact_log1p_rest(x)
        assert exact > 0
        np.testing.assert_allclose(float(mod.logsumexp(x)), float(exact), rtol=RTOL[dtype], atol=0)
        lp = mod.log_softmax(x)
        np.testing.assert_allclose(
            lp[top : top + ties].astype(np.float64), -float(exact), rtol=RTOL[dtype], atol=0
        )
        # the whole batch path too: several such rows at once, shifted by a large maximum
        batch = np.stack([x, x + dtype(0.5), x]).astype(dtype)
        np.testing.assert_allclose(
            mod.logsumexp(batch)[[0, 2]].astype(np.float64), float(exact), rtol=RTOL[dtype], atol=0
        )


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("length,top,ties", CASES)
@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_loss_of_a_well_classified_row_is_log1p(impl, dtype, length, top, ties, temperature):
    """-log p_y for the class of the maximum: log1p(d) of the scaled logits, for index and
    probability targets, every loss function, also with the gradient fused."""
    mod = IMPLS[impl]
    for gap in GAPS[dtype]:
        x = _row(length, gap, top, ties, dtype)
        exact = float(_exact_log1p_rest(x.astype(np.longdouble) / temperature))
        if ties > 1:  # -log(1 / ties + ...) is not small: the oracle covers it all the same
            exact = float(
                np.log(np.longdouble(ties))
                + np.log1p(
                    np.exp(
                        np.delete(x, range(top, top + ties)).astype(np.longdouble) / temperature
                    ).sum()
                    / ties
                )
            )
        onehot = np.zeros((1, length), dtype=dtype)
        onehot[0, top] = 1
        for target in (np.array([top]), onehot):
            kw = {"temperature": temperature, "reduction": "sum"}
            got = [
                mod.cross_entropy(x[None], target, **kw),
                mod.cross_entropy_with_grad(x[None], target, **kw)[0],
                mod.cross_entropy(x[None], target, temperature=temperature, reduction="none")[0],
            ]
            for value in got:
                np.testing.assert_allclose(float(value), exact, rtol=RTOL[dtype], atol=0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_sigmoid_and_binary_loss_at_large_magnitude(impl, dtype):
    """log_sigmoid(x) = -log1p(exp(-x)) for large x, and the binary loss of a confident correct
    prediction is log1p(exp(-|x|)), not 0."""
    mod = IMPLS[impl]
    for big in GAPS[dtype]:
        x = np.array([-big], dtype=dtype)  # large positive logit
        exact = float(np.log1p(np.exp(np.longdouble(big))))
        np.testing.assert_allclose(mod.log_sigmoid(x).astype(np.float64), -exact, rtol=RTOL[dtype])
        np.testing.assert_allclose(
            mod.log_sigmoid(-x).astype(np.float64), big - exact, rtol=RTOL[dtype]
        )
        for logit, label in ((x, 1.0), (-x, 0.0)):
            loss = mod.binary_cross_entropy_with_logits(logit, np.array([label], dtype=dtype))
            np.testing.assert_allclose(float(loss), exact, rtol=RTOL[dtype], atol=0)


def test_reference_cross_entropy_does_not_overflow_where_log_softmax_is_finite():
    """log(softmax(u)) underflows to -inf once u_c - max(u) < -745; log_softmax does not."""
    x = np.array(
        [[125.73022109, -132.10486329], [640.42265044, 104.90011715], [-535.66937316, 361.59505491]]
    )
    t = np.array(
        [[0.365104165, 0.634895835], [0.164228982, 0.835771018], [0.999999962, 3.78182711e-08]]
    )
    xl = x.astype(np.longdouble)
    lse = xl.max(axis=1, keepdims=True) + np.log(
        np.exp(xl - xl.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)
    )
    exact = float((t * (lse - xl)).sum(axis=1).mean())
    assert abs(exact - 502.845676) < 1e-6
    for mod in IMPLS.values():
        np.testing.assert_allclose(mod.cross_entropy(x, t), exact, rtol=1e-14)
        loss, grad = mod.cross_entropy_with_grad(x, t)
        np.testing.assert_allclose(loss, exact, rtol=1e-14)
        assert np.all(np.isfinite(grad))
