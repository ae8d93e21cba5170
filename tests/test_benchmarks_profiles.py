"""Smoke run of the profiles benchmark (in-process runs, `weflow run` processes, pyinstrument) in a file of its own."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks.__main__ import kept_sections

from .test_benchmarks import smoke

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.mark.timeout(600)
def test_quick_run_of_the_profiles_benchmark_shows_where_the_time_goes(tmp_path: Path) -> None:
    out = tmp_path / "BENCHMARKS.md"
    smoke(("profiles",), out)
    trees = re.findall(r"<summary>(.+?)</summary>\s+```text\n(.+?)```", out.read_text(), flags=re.DOTALL)
    assert len(trees) == 5
    weflow_q06 = next(tree for title, tree in trees if title.startswith("weflow: TPC-H"))
    raw_q06 = next(tree for title, tree in trees if title.startswith("raw Prefect"))
    cold = next(tree for title, tree in trees if "`weflow run daily_sales`" in title)
    assert "execute  weflow/execution/lifecycle.py" in weflow_q06 and "run_flow_async" in weflow_q06
    assert "run_raw_tpch" in raw_q06 and "weflow/" not in raw_q06
    assert "run_  " in cold and "weflow/cli/app.py" in cold  # the CLI command, imports included
    listing = next(tree for title, tree in trees if "listings" in title)
    assert "list_workflows  weflow/workflows.py" in listing and "session  weflow/catalog/session.py" in listing


def test_a_partial_run_keeps_the_other_sections_of_a_full_report_marked_with_their_run(tmp_path: Path) -> None:
    report = tmp_path / "BENCHMARKS.md"
    head = "# Benchmarks\n\n| | |\n|---|---|\n| date | 2026-01-02 03:04 UTC |\n| commit | abc1234 |\n"
    sections = "## catalog: definitions\n\ncatalog text\n\n## tpch: TPC-H\n\ntpch text\n\n## nope: not ours\n\nx\n"
    report.write_text(head + "| mode | full |\n\n" + sections)
    kept = kept_sections(report, ["tpch"])
    assert list(kept) == ["catalog"]  # tpch is being rerun; `nope` is no benchmark of ours
    assert kept["catalog"].startswith("## catalog: definitions\n\n_Measured in an earlier run: date 2026-01-02")
    assert "commit abc1234" in kept["catalog"] and "catalog text" in kept["catalog"]
    report.write_text(head + "| mode | quick (smoke sizes, not meaningful numbers) |\n\n" + sections)
    assert kept_sections(report, ["tpch"]) == {}  # smoke numbers are never carried over
    assert kept_sections(tmp_path / "missing.md", ["tpch"]) == {}
