"""Smoke run of every benchmark in quick mode: the report has rows and positive ratios, never timings."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from benchmarks import queued
from benchmarks.__main__ import BENCHMARKS, main
from benchmarks.harness import ratio_text

pytestmark = pytest.mark.usefixtures("prefect_api")


def tables(markdown: str) -> dict[str, list[dict[str, str]]]:
    """The rows of each ``## name: title`` section's table, as header -> cell."""
    found: dict[str, list[dict[str, str]]] = {}
    for part in re.split(r"^## ", markdown, flags=re.MULTILINE)[1:]:
        name = part.split(":", 1)[0]
        text = part.splitlines()
        start = next(i for i, line in enumerate(text) if line.startswith("|"))
        # the table only: a profile tree after it has lines starting with "|" too
        lines = list(itertools.takewhile(lambda line: line.startswith("|"), text[start:]))
        header = [c.strip() for c in lines[0].strip("|").split("|")]
        found[name] = [
            dict(zip(header, (c.strip() for c in line.strip("|").split("|")), strict=True)) for line in lines[2:]
        ]
    return found


PROCESS_BENCHMARKS = (
    "queued",
    "coldstart",
    "throughput",
    "profiles",
    "hot",
)  # run apart by tests/test_benchmarks_processes.py, _throughput.py, _profiles.py and _hot.py (xdist balances files)
OWN_SMOKE_TESTS = (
    "recording",  # tests/test_batched_recording.py
    "history",  # tests/test_catalog_cost.py
    "maintenance",  # tests/test_catalog_maintenance.py
    "peers",  # tests/test_peers.py
)  # each smoke-run by the test file of what it measures, with checks of its own rows


@pytest.fixture
def disposable_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """For the process benchmarks' modules: the benchmark deploys on the session's Prefect server even where
    other modules left weflow deployments.

    Without this it starts a private server (seconds of CPU) because ``deploy.deploy`` removes them; here they are
    disposable: each xdist worker has its own session server, runs one module at a time, and the other modules'
    fixtures are torn down by then (no session fixture keeps a deployment).
    """
    monkeypatch.setenv(queued.DISPOSABLE, "1")


def smoke(names: tuple[str, ...], out: Path) -> None:
    """A quick run of ``names``: the report has the machine facts and, per benchmark, rows with positive ratios."""
    assert main(["--quick", "--out", str(out), *(a for n in names for a in ("--only", n))]) == 0
    text = out.read_text()
    for fact in ("machine", "python", "date", "versions"):
        assert f"| {fact} |" in text
    for package in ("prefect", "polars", "duckdb", "pandera", "weflow"):
        assert package in text
    found = tables(text)
    assert set(found) == set(names)
    for name, rows in found.items():
        assert rows, f"{name} has no rows"
        shown = []
        for row in rows:
            assert row["benchmark"] and row["weflow"] != "—"
            # "—": no such baseline, or a difference of noisy timings at or below zero (quick sizes)
            shown += [v for k, v in row.items() if k.startswith("weflow / ") and v != "—"]
        assert shown, f"{name} shows no ratio"
        assert all(float(r) > 0 for r in shown), (name, shown)


@pytest.mark.timeout(600)
def test_quick_run_writes_a_table_per_benchmark(tmp_path: Path) -> None:
    smoke(tuple(n for n in BENCHMARKS if n not in PROCESS_BENCHMARKS + OWN_SMOKE_TESTS), tmp_path / "BENCHMARKS.md")


def test_a_tiny_ratio_is_printed_as_itself_not_as_zero() -> None:
    assert [ratio_text(v) for v in (0.0043, 0.5, 12.34, 345.0, None)] == ["0.0043", "0.50", "12.3", "345", "—"]
