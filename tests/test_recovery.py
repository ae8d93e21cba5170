"""Error recovery: resume a failed execution reusing what succeeded; compensation of completed sinks.

Real parts: the session's Prefect server, a DuckDB catalog file, Parquet/CSV/DuckDB sinks on disk,
the ``weflow`` console script.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from weflow import execution, parse, workflows
from weflow.cli.app import app
from weflow.core.entities import RunState
from weflow.errors import ConflictError, DefinitionError
from weflow.workflows import Scope

from .conftest import weflow_exe

pytestmark = pytest.mark.usefixtures("prefect_api")

PIPELINE = """
name: recover
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - name: expensive
    type: python
    config: {callable: "tests.resources.pynodes:counted", kwargs: {counter: "COUNTER"}}
  - {name: paid, type: filter, config: {condition: "status = 'paid'"}}
  - {name: by_region, type: aggregate, config: {by: [region], aggs: {revenue: "sum(amount)"}}}
  - name: fragile
    type: python
    config: {callable: "tests.resources.pynodes:fail_if_exists", kwargs: {marker: "MARKER"}}
  - {name: save, type: write_parquet, config: {path: "OUT"}}
connections:
  - {from: orders, to: expensive}
  - {from: expensive, to: paid}
  - {from: paid, to: by_region}
  - {from: by_region, to: fragile}
  - {from: fragile, to: save}
"""


def pipeline(tmp_path: Path) -> tuple[str, Path, Path, Path]:
    counter, marker, out = tmp_path / "calls", tmp_path / "fault", tmp_path / "report.parquet"
    text = PIPELINE.replace("COUNTER", str(counter)).replace("MARKER", str(marker)).replace("OUT", str(out))
    return text, counter, marker, out


def test_resume_reuses_succeeded_nodes_and_gives_the_clean_answer(scope: Scope, tmp_path: Path) -> None:
    text, counter, marker, out = pipeline(tmp_path)
    workflows.apply(parse(text), scope)
    marker.write_text("on")
    failed = execution.run("recover", scope)
    assert failed.execution.status is RunState.FAILED and failed.execution.error_node == "fragile"
    assert counter.read_text() == "1" and not out.exists()

    marker.unlink()  # the fault is fixed
    resumed = execution.resume(failed.execution.id, scope)
    assert resumed.ok, resumed.execution.error_message
    assert counter.read_text() == "1", "the expensive node ran again instead of being reused"
    record = scope.catalog.execution(resumed.execution.id)
    assert record.resumed_from == failed.execution.id
    states = {n.node: n.status for n in record.nodes}
    assert states["expensive"] is RunState.REUSED and states["orders"] is RunState.REUSED
    assert states["fragile"] is RunState.SUCCEEDED and states["save"] is RunState.SUCCEEDED

    clean = tmp_path / "clean.parquet"
    text_clean = text.replace("name: recover", "name: recover_clean").replace(str(out), str(clean))
    workflows.apply(parse(text_clean), scope)
    assert execution.run("recover_clean", scope).ok
    assert_frame_equal(pl.read_parquet(out).sort("region"), pl.read_parquet(clean).sort("region"))


def test_resume_from_a_node_reruns_it_and_what_follows(scope: Scope, tmp_path: Path, cli_env: dict[str, str]) -> None:
    text, counter, marker, _ = pipeline(tmp_path)
    workflows.apply(parse(text.replace("name: recover", "name: recover_from")), scope)
    marker.write_text("on")
    failed = execution.run("recover_from", scope).execution

    with pytest.raises(DefinitionError, match="from: no node 'nope'"):
        execution.resume(failed.id, scope, from_node="nope")
    marker.unlink()
    again = execution.resume(failed.id, scope, from_node="expensive")
    assert again.ok and counter.read_text() == "2"
    assert {n.node: n.status for n in again.execution.nodes}["orders"] is RunState.REUSED
    with pytest.raises(ConflictError, match="succeeded: nothing to resume"):
        execution.resume(again.execution.id, scope)

    shown = CliRunner().invoke(app, ["execution", again.execution.id])  # in this process, on the same catalog
    assert shown.exit_code == 0 and f"resumes execution {failed.id}" in shown.stdout, shown.output
    env = {**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}  # the console script: exit 1, one line
    bad = subprocess.run([weflow_exe(), "resume", "no-such-id"], capture_output=True, text=True, env=env)
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "no-such-id" in bad.stderr


def test_resume_on_the_latest_version_reuses_only_unchanged_lineage(scope: Scope, tmp_path: Path) -> None:
    text, counter, marker, _ = pipeline(tmp_path)
    workflows.apply(parse(text.replace("name: recover", "name: recover_v2")), scope)
    marker.write_text("on")
    failed = execution.run("recover_v2", scope).execution
    marker.unlink()
    changed = text.replace("name: recover", "name: recover_v2").replace("status = 'paid'", "status <> 'refunded'")
    workflows.apply(parse(changed), scope)
    result = execution.resume(failed.id, scope, latest_version=True)
    assert result.ok and result.execution.version == 2
    states = {n.node: n.status for n in result.execution.nodes}
    assert states["expensive"] is RunState.REUSED and counter.read_text() == "1"  # upstream of the change
    assert states["paid"] is RunState.SUCCEEDED  # changed: run again


COMPENSATED = """
name: compensated
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: first, type: write_parquet, config: {path: "FIRST"}}
  - {name: second, type: write_duckdb, config: {database: "DB", table: report}}
  - {name: third, type: write_csv, config: {path: "THIRD"}}
  - name: boom
    type: python
    config: {callable: "tests.resources.pynodes:fail_if_exists", kwargs: {marker: "MARKER"}}
connections:
  - {from: orders, to: first}
  - {from: first, to: second}
  - {from: second, to: third}
  - {from: third, to: boom}
"""


def test_a_later_failure_compensates_completed_sinks_newest_first(scope: Scope, tmp_path: Path) -> None:
    first, db, third, marker = (
        tmp_path / "first.parquet",
        tmp_path / "out.duckdb",
        tmp_path / "third.csv",
        tmp_path / "x",
    )
    text = COMPENSATED.replace("FIRST", str(first)).replace("DB", str(db)).replace("THIRD", str(third))
    workflows.apply(parse(text.replace("MARKER", str(marker))), scope)
    previous = pl.DataFrame({"kept": [1, 2, 3]})
    previous.write_parquet(first)
    with duckdb.connect(str(db)) as con:
        con.execute("CREATE TABLE report AS SELECT 42 AS answer")

    marker.write_text("on")
    result = execution.run("compensated", scope)
    assert result.execution.status is RunState.FAILED and result.execution.error_node == "boom"
    assert_frame_equal(pl.read_parquet(first), previous)  # restored
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT * FROM report").fetchall() == [(42,)]  # restored
    assert not third.exists()  # it did not exist before: removed
    record = scope.catalog.execution(result.execution.id)
    assert [(c.node, c.status) for c in record.compensations] == [
        ("third", "DONE"),
        ("second", "DONE"),
        ("first", "DONE"),
    ]
    assert "restored" in (record.compensations[2].detail or "")

    shown = CliRunner().invoke(app, ["execution", result.execution.id])  # `weflow execution`, in this process
    assert shown.exit_code == 0 and "compensations" in shown.stdout and "restore first.parquet" in shown.stdout

    marker.unlink()
    assert execution.run("compensated", scope).ok  # a healthy run keeps what it wrote
    assert pl.read_parquet(first).columns != ["kept"] and third.exists()


def test_a_node_can_opt_out_of_compensation(scope: Scope, tmp_path: Path) -> None:
    first, marker = tmp_path / "first.parquet", tmp_path / "x"
    text = (
        COMPENSATED.replace("name: compensated", "name: no_undo")
        .replace('config: {path: "FIRST"}}', 'config: {path: "FIRST"}, compensate: false}')
        .replace("FIRST", str(first)).replace("DB", str(tmp_path / "o.duckdb"))
        .replace("THIRD", str(tmp_path / "t.csv")).replace("MARKER", str(marker))
    )  # fmt: skip
    workflows.apply(parse(text), scope)
    marker.write_text("on")
    result = execution.run("no_undo", scope)
    assert result.execution.status is RunState.FAILED
    assert first.exists() and "first" not in {c.node for c in result.execution.compensations}
