"""Smoke run of the throughput benchmark (workers, a Dask cluster) in a file of its own, so xdist runs it apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_benchmarks import disposable_server, smoke  # noqa: F401  (a fixture)

pytestmark = pytest.mark.usefixtures("prefect_api", "disposable_server")


@pytest.mark.timeout(600)
def test_quick_run_of_the_throughput_benchmark(tmp_path: Path) -> None:
    smoke(("throughput",), tmp_path / "BENCHMARKS.md")
