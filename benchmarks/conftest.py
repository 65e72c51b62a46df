"""pytest configuration for the benchmark suite (see ``test_ops.py`` for how to run it)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "big: out-of-cache shapes (>= 4M elements); deselect with -m 'not big'"
    )


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Versions, the numba threading layer and the thread counts the numbers were taken with."""
    from fastsoftmax.bench import report

    try:
        env = report.environment()
    except Exception as exc:  # noqa: BLE001 - a broken build should fail in the tests, not here
        return [f"fastsoftmax environment unavailable: {exc!r}"]
    return report.format_header(env).splitlines()[1:]
