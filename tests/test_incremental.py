"""Incremental loads (issue 21 item 4): a source reads only rows above its cursor; a SUCCEEDED run moves it.

Real DuckDB files and Parquet files under a temp data root, runs in this process against the
session's Prefect server; the source grows between runs and the sink's content is what is checked.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from weflow import config, cursors, execution, parse, workflows
from weflow.catalog.cursors import Cursors
from weflow.cli import app as cli_app
from weflow.core.entities import Mode, RunState
from weflow.errors import DefinitionError, NotFoundError
from weflow.workflows import Scope

from . import postgres

pytestmark = pytest.mark.usefixtures("prefect_api")

FROM_DUCKDB = """
name: orders_in
nodes:
  - name: src
    type: read_duckdb
    config: {database: SRC, query: "SELECT id, amount FROM orders -- the shop's table"}
    incremental: {cursor: id}
  - name: sink
    type: write_duckdb
    config: {database: DST, table: loaded, mode: append}
connections:
  - {from: src, to: sink}
"""

FROM_PARQUET = """
name: events_in
nodes:
  - name: src
    type: read_parquet
    config: {path: SRC}
    incremental: {cursor: updated_at}
    contract: {columns: {amount: {checks: {ge: 0}}}}
  - name: sink
    type: write_duckdb
    config: {database: DST, table: loaded, mode: append}
connections:
  - {from: src, to: sink}
"""


def _orders(path: Path, ids: range) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE IF NOT EXISTS orders (id BIGINT, amount DOUBLE)")
        con.execute("INSERT INTO orders SELECT i, i * 1.5 FROM range(?, ?) t(i)", [ids.start, ids.stop])


def _loaded(path: Path) -> list[int]:
    with duckdb.connect(str(path), read_only=True) as con:
        return [r[0] for r in con.execute("SELECT id FROM loaded ORDER BY id").fetchall()]


def _apply(scope: Scope, text: str, **paths: Path) -> str:
    for key, value in paths.items():
        text = text.replace(key, str(value))
    return workflows.apply(parse(text), scope).workflow.name


def _cursor(scope: Scope, name: str, node: str = "src") -> str | None:
    found = {s.node: s.cursor for s in cursors.listed(scope, name)}[node]
    return found.value if found else None


def test_a_growing_table_is_loaded_once_row_by_row_and_reset_and_full_refresh_read_again(
    scope: Scope, tmp_path: Path
) -> None:
    src, dst = tmp_path / "shop.duckdb", tmp_path / "lake.duckdb"
    _orders(src, range(1, 4))
    name = _apply(scope, FROM_DUCKDB, SRC=src, DST=dst)
    first = execution.run(name, scope)
    assert first.ok, first.execution.error_message
    assert _loaded(dst) == [1, 2, 3] and _cursor(scope, name) == "3"
    _orders(src, range(4, 6))
    second = execution.run(name, scope)
    assert second.ok and _loaded(dst) == [1, 2, 3, 4, 5]
    assert next(n for n in second.execution.nodes if n.node == "src").rows_out == 2  # only the new rows were read
    third = execution.run(name, scope)  # nothing new: nothing loaded, the cursor stays
    assert third.ok and _loaded(dst) == [1, 2, 3, 4, 5] and _cursor(scope, name) == "5"
    _orders(src, range(6, 8))
    fourth = execution.run(name, scope)
    assert fourth.ok and _loaded(dst) == list(range(1, 8))  # each row exactly once over four runs
    shown = cursors.listed(scope, name)[0].cursor
    assert shown is not None
    assert (shown.column, shown.kind, shown.execution_id) == ("id", "integer", fourth.execution.id)

    moved = cursors.reset(scope, name, "src", "5")  # the next run reads 6 and 7 again
    assert moved is not None and (moved.value, moved.execution_id) == ("5", None)
    assert execution.run(name, scope).ok
    assert _loaded(dst) == [1, 2, 3, 4, 5, 6, 6, 7, 7]
    full = execution.run(name, scope, full_refresh=True)  # every row, whatever the cursor
    assert full.ok and next(n for n in full.execution.nodes if n.node == "src").rows_out == 7
    assert _cursor(scope, name) == "7"  # a full refresh moves the cursor forward only
    assert cursors.reset(scope, name, "src") is None and _cursor(scope, name) is None  # cleared: all rows next time


def test_a_run_that_fails_after_reading_moves_nothing_and_its_rows_are_read_again(scope: Scope, tmp_path: Path) -> None:
    src, dst = tmp_path / "events.parquet", tmp_path / "lake.duckdb"
    t0 = datetime(2026, 5, 1, 12, 0)
    rows = [{"id": i, "updated_at": t0 + timedelta(hours=i), "amount": float(i)} for i in range(1, 4)]
    pl.DataFrame(rows).write_parquet(src)
    name = _apply(scope, FROM_PARQUET, SRC=src, DST=dst)
    assert execution.run(name, scope).ok
    assert _loaded(dst) == [1, 2, 3] and _cursor(scope, name) == "2026-05-01T15:00:00"

    bad = [*rows, *({"id": i, "updated_at": t0 + timedelta(hours=i), "amount": -1.0} for i in (4, 5))]
    pl.DataFrame(bad).write_parquet(src)
    failed = execution.run(name, scope)  # the contract fails after the new rows were read
    assert failed.execution.status is RunState.FAILED and "amount" in (failed.execution.error_message or "")
    assert _loaded(dst) == [1, 2, 3] and _cursor(scope, name) == "2026-05-01T15:00:00"  # nothing committed

    fixed = [{**r, "amount": abs(r["amount"])} for r in bad]
    fixed.append({"id": 6, "updated_at": t0 + timedelta(hours=6), "amount": 6.0})
    pl.DataFrame(fixed).write_parquet(src)
    again = execution.run(name, scope)
    assert again.ok and _loaded(dst) == [1, 2, 3, 4, 5, 6]  # the failed run's rows, once
    assert _cursor(scope, name) == "2026-05-01T18:00:00"


def test_a_resumed_run_reads_from_its_own_start(scope: Scope, tmp_path: Path) -> None:
    src, dst = tmp_path / "events.parquet", tmp_path / "lake.duckdb"
    t0 = datetime(2026, 5, 1)
    pl.DataFrame({"id": [1], "updated_at": [t0], "amount": [1.0]}).write_parquet(src)
    name = _apply(scope, FROM_PARQUET, SRC=src, DST=dst)
    assert execution.run(name, scope).ok
    more = {"id": [1, 2, 3], "updated_at": [t0, t0 + timedelta(days=1), t0 + timedelta(days=2)]}
    pl.DataFrame({**more, "amount": [1.0, -2.0, 3.0]}).write_parquet(src)
    failed = execution.run(name, scope)
    assert failed.execution.status is RunState.FAILED
    reset_to = (t0 + timedelta(days=1)).isoformat()
    cursors.reset(scope, name, "src", reset_to)  # a newer cursor than the failed run's start
    pl.DataFrame({**more, "amount": [1.0, 2.0, 3.0]}).write_parquet(src)
    resumed = execution.resume(failed.execution.id, scope)
    assert resumed.ok, resumed.execution.error_message
    assert _loaded(dst) == [1, 2, 3]  # read from the failed run's start (after id 1), not from the reset value
    assert _cursor(scope, name) == (t0 + timedelta(days=2)).isoformat()


def test_a_backfill_run_reads_everything_and_moves_no_cursor(scope: Scope, tmp_path: Path) -> None:
    src, dst = tmp_path / "shop.duckdb", tmp_path / "lake.duckdb"
    _orders(src, range(1, 3))
    name = _apply(scope, FROM_DUCKDB, SRC=src, DST=dst)
    definition, queued = execution.new_execution(scope, name, mode=Mode.API, input_data=None, timeout=None)
    store = Cursors(scope.catalog.path)
    with store.transaction() as con:  # the slot a backfill wrote for this run
        con.execute(
            "INSERT INTO backfill_slots VALUES (?, '2026-01-01', '2026-01-02', 'b1', 'QUEUED', ?, NULL)",
            [queued.workflow_id, queued.id],
        )
    assert {w.mode for w in store.windows(queued, {"src": "id"}).values()} == {"backfill"}
    result = execution.execute(definition, queued, scope=scope)
    assert result.ok and _loaded(dst) == [1, 2] and _cursor(scope, name) is None


@pytest.mark.parametrize(
    ("node", "where"),
    [
        ("{name: src, type: read_csv, config: {path: x.csv}, incremental: {cursor: 1x}}", "incremental.cursor"),
        ("{name: src, type: read_csv, config: {path: x.csv}, incremental: {column: id}}", "incremental.column"),
        ("{name: src, type: read_csv, config: {path: x.csv}, incremental: id}", "nodes[0].incremental"),
        ("{name: src, type: http_json, config: {url: 'http://x'}, incremental: {cursor: id}}", "nodes[0].incremental"),
    ],
)
def test_a_bad_incremental_block_is_refused_at_apply_with_its_path(scope: Scope, node: str, where: str) -> None:
    with pytest.raises(DefinitionError) as refused:
        workflows.apply(parse(f"name: bad_inc\nnodes:\n  - {node}\n"), scope)
    assert f"nodes[0].{where.removeprefix('nodes[0].')}: " in str(refused.value), str(refused.value)
    with pytest.raises(NotFoundError):
        workflows.get("bad_inc", scope)  # nothing stored


def test_a_cursor_column_that_cannot_be_one_fails_the_run_with_one_line(scope: Scope, tmp_path: Path) -> None:
    (tmp_path / "people.csv").write_text("id,name,seen\n1,ada,2026-01-01\n")
    text = f"""
name: people_in
nodes:
  - {{name: src, type: read_csv, config: {{path: {tmp_path / "people.csv"}}}, incremental: {{cursor: CURSOR}}}}
"""
    refusals = (("seen", "is String; a cursor must be an integer, date or timestamp"), ("nope", "no column"))
    for column, wanted in refusals:
        name = workflows.apply(parse(text.replace("CURSOR", column)), scope).workflow.name
        result = execution.run(name, scope)
        assert result.execution.status is RunState.FAILED
        assert "incremental.cursor" in (result.execution.error_message or "")
        assert wanted in (result.execution.error_message or "")
        assert _cursor(scope, name) is None


def test_resetting_refuses_unknown_workflows_nodes_and_values_of_another_kind(scope: Scope, tmp_path: Path) -> None:
    src, dst = tmp_path / "shop.duckdb", tmp_path / "lake.duckdb"
    _orders(src, range(1, 3))
    name = _apply(scope, FROM_DUCKDB, SRC=src, DST=dst)
    with pytest.raises(NotFoundError):
        cursors.listed(scope, "nope")
    with pytest.raises(cursors.CursorError, match=r"no incremental source 'sink' \(incremental sources: src\)"):
        cursors.reset(scope, name, "sink", "3")
    with pytest.raises(cursors.CursorError, match=r"--to: 'abc' is not an integer, a date or a timestamp"):
        cursors.reset(scope, name, "src", "abc")
    assert execution.run(name, scope).ok  # the cursor is an integer now
    with pytest.raises(cursors.CursorError, match=r"--to: '2026-01-01' is not an integer \(e.g. 42\)"):
        cursors.reset(scope, name, "src", "2026-01-01")
    assert _cursor(scope, name) == "2"  # unchanged
    other = Scope(scope.catalog, scope.catalog.ensure_user("someone-else", "bob"))  # another organization
    for call in (lambda: cursors.listed(other, name), lambda: cursors.reset(other, name, "src")):
        with pytest.raises(NotFoundError):
            call()
    assert _cursor(scope, name) == "2"
    workflow_id = workflows.get(name, scope).id
    workflows.delete(name, scope, purge=True)  # a purge leaves no cursor and no run window behind
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM cursors WHERE workflow_id = ?", [workflow_id]).fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM execution_cursors").fetchone() == (0,)


def _cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "argv", ["weflow", *args])
    with pytest.raises(SystemExit) as ended:
        cli_app.run()
    captured = capsys.readouterr()
    return int(ended.value.code or 0), captured.out, captured.err


def test_the_cursors_command_shows_and_resets(
    scope: Scope, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = tmp_path / "shop.duckdb", tmp_path / "lake.duckdb"
    _orders(src, range(1, 4))
    name = _apply(scope, FROM_DUCKDB, SRC=src, DST=dst)
    ran = execution.run(name, scope)
    code, out, _ = _cli(capsys, monkeypatch, "cursors", name, "-f", "json")
    assert code == 0 and '"value": "3"' in out and ran.execution.id in out
    code, out, _ = _cli(capsys, monkeypatch, "cursors", name)
    assert code == 0 and "src" in out and "id" in out and ran.execution.id[:8] in out
    code, out, _ = _cli(capsys, monkeypatch, "cursors", "reset", name, "src", "--to", "1")
    assert code == 0 and "cursor 1 (integer)" in out and _cursor(scope, name) == "1"
    for args, wanted in (
        (("cursors", "reset", name, "src", "--to", "x1"), "--to: 'x1' is not an integer"),
        (("cursors", "reset", name, "sink"), "no incremental source 'sink'"),
        (("cursors", "nope"), "nope"),
        (("cursors", "reset", name), "name the node"),
    ):
        code, out, err = _cli(capsys, monkeypatch, *args)
        assert code != 0 and wanted in err and len(err.strip().splitlines()) == 1, (args, err)
    assert _cursor(scope, name) == "1"
    code, out, err = _cli(capsys, monkeypatch, "run", name, "--full-refresh", "-f", "json")
    assert code == 0, err  # every row again, not only those above the cursor (2, 3); the cursor moves forward
    assert _loaded(dst) == [1, 1, 2, 2, 3, 3] and _cursor(scope, name) == "3"


def test_the_incremental_types_are_the_ones_the_engine_narrows() -> None:
    from weflow.core.model import INCREMENTAL_TYPES
    from weflow.nodes import incremental
    from weflow.nodes.registry import node_types

    types = node_types()
    assert incremental.QUERY_TYPES | incremental.SCAN_TYPES == INCREMENTAL_TYPES
    assert all(types[t].kind == "source" for t in INCREMENTAL_TYPES)
    assert all("query" in types[t].config.model_fields for t in incremental.QUERY_TYPES)


def test_a_queued_run_marked_full_refresh_reads_every_row(scope: Scope, tmp_path: Path) -> None:
    src, dst = tmp_path / "shop.duckdb", tmp_path / "lake.duckdb"
    _orders(src, range(1, 4))
    name = _apply(scope, FROM_DUCKDB, SRC=src, DST=dst)
    cursors.reset(scope, name, "src", "2")
    definition, queued = execution.new_execution(scope, name, mode=Mode.API, input_data=None, timeout=None)
    cursors.mark_full_refresh(scope, queued, definition)  # what submit does for full_refresh before handing it on
    assert execution.execute(definition, queued, scope=scope).ok
    assert _loaded(dst) == [1, 2, 3] and _cursor(scope, name) == "3"


@pytest.fixture(scope="module")
def pg_uri() -> Iterator[str]:
    """A throwaway PostgreSQL server (tests/postgres.py) for this module's one PostgreSQL test."""
    with postgres.running("shop") as url:
        yield url.replace("postgresql+asyncpg://", "postgresql://")


@pytest.mark.postgres
def test_a_growing_postgres_table_is_loaded_once_filtered_by_postgres(
    scope: Scope, tmp_path: Path, pg_uri: str
) -> None:
    import adbc_driver_postgresql.dbapi as pg

    def insert(*ids: int) -> None:
        with pg.connect(pg_uri) as con, con.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS events (id int, at timestamptz)")
            for i in ids:
                cur.execute(f"INSERT INTO events VALUES ({i}, timestamptz '2026-05-01 00:00+00' + interval '{i} hour')")
            con.commit()

    dst = tmp_path / "lake.duckdb"
    text = f"""
name: pg_events
nodes:
  - name: src
    type: read_postgres
    config: {{connection: "{pg_uri}", query: "SELECT id, at FROM events"}}
    incremental: {{cursor: at}}
  - {{name: sink, type: write_duckdb, config: {{database: {dst}, table: loaded, mode: append}}}}
connections: [{{from: src, to: sink}}]
"""
    with config.using(outbound_allow=("127.0.0.1/32",)):
        name = workflows.apply(parse(text), scope).workflow.name
        insert(1, 2)
        assert execution.run(name, scope).ok
        insert(3)
        second = execution.run(name, scope)
        assert second.ok, second.execution.error_message
    assert _loaded(dst) == [1, 2, 3]
    assert next(n for n in second.execution.nodes if n.node == "src").rows_out == 1  # PostgreSQL sent only the new row
    assert _cursor(scope, name) == "2026-05-01T03:00:00+00:00"


def test_a_query_source_is_filtered_by_the_database_not_after_it(scope: Scope, tmp_path: Path) -> None:
    src, dst = tmp_path / "shop.duckdb", tmp_path / "lake.duckdb"
    _orders(src, range(1, 6))
    poisoned = "SELECT id, CASE WHEN id <= 3 THEN error('an old row was read') ELSE amount END AS amount FROM orders"
    name = _apply(scope, FROM_DUCKDB.replace("SELECT id, amount FROM orders", poisoned), SRC=src, DST=dst)
    cursors.reset(scope, name, "src", "3")  # a cursor before any run: its kind is the value's (integer)
    result = execution.run(name, scope)  # rows 1-3 would raise if DuckDB computed them
    assert result.ok, result.execution.error_message
    assert _loaded(dst) == [4, 5] and _cursor(scope, name) == "5"
