"""The peers benchmark (issue 20) on tiny data: weflow and hand-written Prefect always, each other peer
whose environment exists in ``.peers/`` (the tests never build one); its answer check and its errors.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from benchmarks import peers, tpch
from benchmarks.peers import envs, runner

pytestmark = pytest.mark.usefixtures("prefect_api")

TINY = tpch.CACHE / "sf0.01"


@pytest.mark.timeout(300)
def test_quick_run_measures_weflow_prefect_and_every_built_peer() -> None:
    built = [p for p in envs.PEERS if envs.ready(p)]
    before = sorted(envs.ENVS.glob("*/.installed")) if envs.ENVS.exists() else []

    section = peers.run(quick=True)  # checks every answer against DuckDB's before reporting

    assert (sorted(envs.ENVS.glob("*/.installed")) if envs.ENVS.exists() else []) == before  # nothing built
    labels = [row.label for row in section.rows]
    assert "Q05, whole process (cold)" in labels and labels[-1].startswith("trivial chain, per node")
    for row in section.rows:
        assert row.weflow.median > 0 or "per node" in row.label, row.label
        assert row.baselines["hand-written Prefect"] is not None, row.label
        for peer in envs.PEERS:
            assert (row.baselines[runner.NAMES[peer]] is not None) == (peer in built), (row.label, peer)
    peak = next(r for r in section.rows if r.label == "Q01, peak RSS of the process")
    assert peak.weflow.unit == "MB" and peak.ratio("hand-written Prefect") is not None
    missing = [runner.NAMES[p] for p in envs.PEERS if p not in built]
    assert all(name in " ".join(section.notes) for name in missing)
    markdown = section.to_markdown()
    assert "| Q10 |" in markdown and "lines of code (plain count)" in markdown


def test_lines_of_code_are_counted_per_query_without_imports_or_comments() -> None:
    # weflow: the definition file's non-blank, non-comment lines
    q01 = (tpch.DEFINITIONS / "q01.yaml").read_text().splitlines()
    assert runner.lines_of_code("weflow", "q01") == sum(1 for x in q01 if x.strip() and not x.startswith("#"))
    # a peer: its marked blocks, including the shared ones that name the query (Prefect's read task)
    counts = {f: runner.lines_of_code(f, "q03") for f in runner.FRAMEWORKS}
    assert all(count > 10 for count in counts.values()), counts
    assert runner.lines_of_code("prefect", "q01") < runner.lines_of_code("prefect", "q03")
    assert runner.code_lines("import x\n\n# note\n  # indented note\nx = 1\n") == 2


def correct_answers(folder: Path, csv: Path, chains: tuple[int, int]) -> None:
    for query in runner.QUERIES:
        tpch.with_polars(query, TINY).write_parquet(folder / f"{query}.parquet")
    for n in chains:
        pl.read_csv(csv).write_parquet(folder / f"chain{n}.parquet")


def test_a_wrong_answer_fails_the_check_naming_the_query_and_framework(tmp_path: Path) -> None:
    csv = peers.tiny_csv(tmp_path)
    folder = tmp_path / "hamilton"
    folder.mkdir()
    correct_answers(folder, csv, (2, 3))
    runner.verify_answers(["hamilton"], TINY, csv, (2, 3), tmp_path)  # the right answers pass

    wrong = pl.read_parquet(folder / "q03.parquet").with_columns(pl.col("revenue") * 2)
    wrong.write_parquet(folder / "q03.parquet")
    with pytest.raises(AssertionError, match="q03: Hamilton vs DuckDB SQL"):
        runner.verify_answers(["hamilton"], TINY, csv, (2, 3), tmp_path)

    correct_answers(folder, csv, (2, 3))
    pl.read_csv(csv).head(1).write_parquet(folder / "chain3.parquet")
    with pytest.raises(AssertionError, match="chain3: Hamilton changed the frame"):
        runner.verify_answers(["hamilton"], TINY, csv, (2, 3), tmp_path)


def test_a_framework_without_an_environment_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"no environment for nope in \.peers/nope"):
        runner.measure("nope", TINY, peers.tiny_csv(tmp_path), ["q01"])


def test_a_failing_child_reports_the_framework_the_job_and_its_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"(?s)peers: prefect q99 failed:.*unknown job 'q99': one of q01"):
        runner.measure("prefect", TINY, peers.tiny_csv(tmp_path), ["q99"])
