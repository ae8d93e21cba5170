"""Smoke run of the hot-path benchmark (a weflow worker, a process worker, a task worker, `weflow serve`), apart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks import hot

from .test_benchmarks import disposable_server, smoke, tables  # noqa: F401  (disposable_server: a fixture)

pytestmark = pytest.mark.usefixtures("prefect_api", "disposable_server")


def _children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        if stat and int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
            found.add(int(entry.name))
    return found


@pytest.mark.timeout(600)
def test_quick_run_of_the_hot_benchmark_stops_what_it_started(tmp_path: Path) -> None:
    before = _children(os.getpid())
    smoke(("hot",), tmp_path / "BENCHMARKS.md")
    rows = {row["benchmark"]: row for row in tables((tmp_path / "BENCHMARKS.md").read_text())["hot"]}
    for trigger in hot.TRIGGERS.values():
        assert rows[f"{trigger}: p50"]["weflow / " + hot.TASK] != "—"
    assert any(label.startswith(f"{hot.QUICK_BATCH} queued runs, 1 weflow worker: runs") for label in rows)
    limited = f"{hot.QUICK_BATCH} queued runs, 1 weflow worker, workflow limit {hot.RUN_LIMIT}: runs"
    assert any(label.startswith(limited) for label in rows)  # the same batch of a workflow with a concurrency limit
    assert _children(os.getpid()) <= before  # the workers, the task worker and `weflow serve` are gone
