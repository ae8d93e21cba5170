"""Smoke run of the throughput benchmark (workers, a Dask cluster) in a file of its own, so xdist runs it apart."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks import queued

from .test_benchmarks import smoke

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(autouse=True)
def disposable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark deploys on the session's Prefect server even where other modules left weflow deployments.

    Without this it starts a private server (seconds of CPU) because ``deploy.deploy`` removes them; here they are
    disposable: each xdist worker has its own session server, runs one module at a time, and the other modules'
    fixtures are torn down by then (no session fixture keeps a deployment).
    """
    monkeypatch.setenv(queued.DISPOSABLE, "1")


@pytest.mark.timeout(600)
def test_quick_run_of_the_throughput_benchmark(tmp_path: Path) -> None:
    smoke(("throughput",), tmp_path / "BENCHMARKS.md")
