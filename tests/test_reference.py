"""``fastsoftmax.reference`` is an independent second opinion: it shares no code with the fast path.

A helper shared by the kernels' wrappers and the reference (a denominator, a mask, a dtype
rule, a check that returns a converted argument) would make a shared mistake invisible to every
comparison test. So the reference package may import only NumPy, the standard library and its
own modules, and at most the raising-only checks named in ``ALLOWED_CHECKS`` (none today), whose
return values it must not use. It must also run with every fastsoftmax helper broken.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import numpy as np
import pytest
from conftest import COMPARISONS

import fastsoftmax as fs
import fastsoftmax._validate as validate
import fastsoftmax.binary as fast_binary
import fastsoftmax.reference as ref

PACKAGE = Path(ref.__file__).parent
SOURCES = sorted(PACKAGE.glob("*.py"))
# Modules the reference may import from outside its own package.
ALLOWED_MODULES = frozenset({"__future__", "typing", "numbers", "numpy", "numpy.typing"})
# fastsoftmax functions that only validate and raise (return nothing) that the reference may
# call, as statements; none today: the reference checks its arguments itself.
ALLOWED_CHECKS: frozenset[str] = frozenset()
PUBLIC = [name for name in fs.__all__ if name not in ("info", "warmup")]


def _imports(tree: ast.AST) -> list[tuple[int, str, list[str]]]:
    """(relative level, module, imported names) of every import statement."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(0, alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or "", [a.name for a in node.names]))
    return found


def test_reference_sources_are_found() -> None:
    names = {p.stem for p in SOURCES}
    assert {"__init__", "_checks", "softmax", "losses", "binary"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_reference_imports_nothing_from_the_fast_path(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    own = {p.stem for p in SOURCES}
    checks_used: set[str] = set()
    for level, module, names in _imports(tree):
        if level == 1:  # from . import x / from .x import y: within the reference package
            assert module.split(".")[0] in own or (not module and set(names) <= own), (
                f"{path.name}: from .{module} import {names}"
            )
        elif level > 1 or module.split(".")[0] == "fastsoftmax":
            assert set(names) <= ALLOWED_CHECKS, f"{path.name} imports {names} from {module}"
            checks_used |= set(names)
        else:
            assert module in ALLOWED_MODULES, f"{path.name} imports {module}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            assert node.id not in ("__import__", "importlib", "import_module"), path.name
    # an allowed check is called as a statement only: its return value feeds nothing
    calls_as_statements = {
        id(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id in checks_used:
                assert id(node) in calls_as_statements, f"{path.name}:{node.lineno} uses a result"


def test_reference_names_and_signatures_match_the_public_api() -> None:
    assert sorted(ref.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        fast, slow = inspect.signature(getattr(fs, name)), inspect.signature(getattr(ref, name))
        assert [(p.name, p.kind, p.default) for p in slow.parameters.values()] == [
            (p.name, p.kind, p.default) for p in fast.parameters.values()
        ], name


def _valid_calls(rng: np.random.Generator) -> dict[str, tuple[tuple, dict]]:
    """Valid arguments for every public function (float32, shape (3, 5))."""
    calls = {name: entry.make_args((3, 5), np.float32, rng) for name, entry in COMPARISONS.items()}
    x = rng.standard_normal((3, 5)).astype(np.float32)
    y = rng.random((3, 5)).astype(np.float32)
    w_lin = rng.standard_normal((4, 5)).astype(np.float32)
    t = np.array([0, 3, 1])
    idx = np.array([[0, 4], [2, 2], [1, 3]])
    calls.update(
        {
            "selective_log_softmax": ((x, idx), {}),
            "selective_log_softmax_vjp": ((x, idx, np.ones((3, 2))), {}),
            "linear_cross_entropy": ((x, w_lin, t), {"linear_bias": np.ones(4, np.float32)}),
            "linear_cross_entropy_with_grad": ((x, w_lin, t), {}),
            "sigmoid": ((x,), {}),
            "log_sigmoid": ((x,), {}),
            "binary_cross_entropy_with_logits": ((x, y), {"pos_weight": np.full(5, 2.0)}),
            "binary_cross_entropy_with_logits_backward": ((x, y), {"weight": y}),
            "binary_cross_entropy_with_logits_with_grad": ((x, y), {}),
        }
    )
    assert sorted(calls) == sorted(PUBLIC)
    return calls


def test_reference_runs_with_every_fast_helper_broken(monkeypatch) -> None:
    """Every package helper (argument checks, dtype rules, layouts, the binary checks) raises
    when called: the reference computes and rejects as before, so it calls none of them."""
    rng = np.random.default_rng(3)
    calls = _valid_calls(rng)
    expected = {name: getattr(ref, name)(*args, **kw) for name, (args, kw) in calls.items()}

    def broken(*args, **kwargs):
        raise AssertionError("the reference called a fastsoftmax helper")

    for module in (validate, fast_binary):
        for value in vars(module).values():
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                # the function object itself: names imported elsewhere see the change too
                monkeypatch.setattr(value, "__code__", broken.__code__)
    for name, (args, kw) in calls.items():
        got, want = getattr(ref, name)(*args, **kw), expected[name]
        got, want = (got, want) if isinstance(want, tuple) else ((got,), (want,))
        for g, e in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, e, err_msg=name, strict=True)
    with pytest.raises(ValueError):
        ref.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError):
        ref.softmax(np.zeros(3), temperature="1")
