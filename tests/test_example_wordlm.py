"""examples/train_wordlm.py: the word-level LM learns, and the fused step needs less memory."""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np
import pytest

SCRIPT = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "train_wordlm.py"
)


@pytest.mark.slow
def test_short_run_learns_with_less_memory():
    spec = importlib.util.spec_from_file_location("train_wordlm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_wordlm"] = module
    try:
        spec.loader.exec_module(module)
        res = module.main(
            ["--steps", "40", "--batch", "256", "--chunk-size", "32"], log=lambda *a: None
        )
    finally:
        sys.modules.pop("train_wordlm", None)
    first, last = np.mean(res["losses"][:5]), np.mean(res["losses"][-5:])
    assert first > 0.95 * np.log(res["vocab"])  # starts near the uniform guess
    assert last < first - 1.5  # and learns
    assert res["val_loss"] < first
    assert res["mem_unfused"] >= 256 * res["vocab"] * 4 > 0.5 * res["mem_fused"]  # logits
    assert res["mem_fused"] < 0.5 * res["mem_unfused"]
