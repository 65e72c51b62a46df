"""examples/train_digits.py: it learns, reaches the accuracy the README states, and the fast and
reference backends train identically (to float64 rounding)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import needs_jit

pytest.importorskip("sklearn", reason="the example needs scikit-learn (the 'examples' extra)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train_digits.py")


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("train_digits", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_digits"] = module  # dataclasses look the module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("train_digits", None)


def quiet(*args, **kwargs):
    pass


def test_short_run_learns_and_backends_agree(example):
    res = example.main(["--epochs", "3", "--dtype", "float64", "--backend", "both"], log=quiet)
    fast, ref = res["fast"], res["reference"]
    assert len(fast.losses) == 3 and len(fast.batch_losses) == 3 * 43  # 1347 images / 32
    # same initialization, same minibatches: the losses agree to float64 rounding
    np.testing.assert_allclose(fast.batch_losses, ref.batch_losses, rtol=1e-11)
    assert res["max_rel_diff"] < 1e-11
    assert fast.test_accuracy == ref.test_accuracy
    # it learns: the loss falls from ~log(10) and accuracy is far above chance (0.1)
    assert fast.batch_losses[0] > 1.5 and fast.losses[-1] < 0.5 * fast.losses[0]
    assert fast.test_accuracy[-1] > 0.8


@needs_jit
def test_default_run_reaches_stated_accuracy(example):
    """The README's command: 30 epochs, float32, fixed seed -> test accuracy >= 0.96."""
    res = example.main([], log=quiet)
    assert res["fast"].test_accuracy[-1] >= 0.96
    assert "reference" not in res


def test_float32_close_to_float64(example):
    r32 = example.main(["--epochs", "2", "--dtype", "float32"], log=quiet)["fast"]
    r64 = example.main(["--epochs", "2", "--dtype", "float64"], log=quiet)["fast"]
    np.testing.assert_allclose(r32.batch_losses, r64.batch_losses, rtol=1e-4)


@pytest.mark.slow
def test_command_line_output():
    out = subprocess.run(
        [sys.executable, SCRIPT, "--epochs", "2", "--batch-size", "64", "--backend", "reference"],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    ).stdout
    lines = out.splitlines()
    epochs = [
        line for line in lines if line.startswith("[reference]") and line.split()[1].isdigit()
    ]
    assert len(epochs) == 2
    assert "final test accuracy" in out
    assert "batch 64" in lines[0]
