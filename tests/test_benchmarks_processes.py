"""Smoke run of the benchmarks that start processes (a worker, new `weflow run` processes), apart from the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_benchmarks import disposable_server, smoke  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("prefect_api", "disposable_server")


@pytest.mark.timeout(600)
def test_quick_run_of_the_process_benchmarks(tmp_path: Path) -> None:
    smoke(("queued", "coldstart"), tmp_path / "BENCHMARKS.md")
