"""Catalog calls whose cost must not grow with history read what they read before, from bounded places.

Speed is measured by ``benchmarks/history.py``; here, that the bounded reads give the answers the
unbounded ones gave: metrics kept when executions end equal the SQL views over every execution,
a page of executions read in widening windows equals the whole ordered list's page, and a catalog
migrated with history already in it rolls that history up.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from benchmarks.history import fill
from weflow.catalog import Catalog, maintenance
from weflow.catalog.metrics import RING, hour_of
from weflow.catalog.schema import MIGRATIONS
from weflow.catalog.session import forget_migrations, path_literal, session
from weflow.core.entities import Execution, Mode, NodeExecution, RunState
from weflow.execution import history
from weflow.workflows import Scope

from .test_benchmarks import smoke
from .test_catalog_maintenance import counts

NOW = datetime.now(UTC)


def end(scope: Scope, wf_id: int, status: RunState, started: datetime | None, ms: float | None, rows: int | None,
        failures: int = 0) -> str:  # fmt: skip
    eid = str(uuid.uuid4())
    queued = Execution(eid, wf_id, "", 1, Mode.API, scope.user.id, RunState.QUEUED, created_at=started or NOW)
    scope.catalog.insert_execution(queued)
    bad = status in (RunState.FAILED, RunState.TIMED_OUT)
    nodes = [NodeExecution(eid, "orders", RunState.SUCCEEDED, 1, None, rows),
             NodeExecution(eid, "f1", status if bad else RunState.SUCCEEDED, 1, rows, None)]  # fmt: skip
    cases = [{"node": "f1", "column": "amount", "check": "ge(0)", "failure_case": "-1", "index": i}
             for i in range(failures)]  # fmt: skip
    final = Execution(eid, wf_id, "", 1, Mode.API, scope.user.id, status, started_at=started,
                      finished_at=(started or NOW) + timedelta(milliseconds=ms or 0), duration_ms=ms,
                      error_type="NodeError" if status is RunState.FAILED else None)  # fmt: skip
    scope.catalog.finish_execution(final, nodes, cases)
    return eid


def from_views(path: Path, organization_id: int, since: datetime | None = None) -> dict[str, Any]:
    """``Catalog.stats`` as the views compute it over every execution row (``since``: from the start of its hour)."""
    window = "AND started_at >= ?" if since else ""
    params = [organization_id, *([hour_of(since)] if since else [])]
    finished = "status IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED')"
    with duckdb.connect(str(path), read_only=True) as con:
        runs = con.execute(
            "SELECT workflow, count(*), count(*) FILTER (WHERE status = 'SUCCEEDED'), "
            "count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT')), max(duration_ms), sum(rows_out), "
            f"sum(contract_failures) FROM execution_metrics WHERE organization_id = ? AND {finished} {window} "
            "GROUP BY workflow ORDER BY workflow",
            params,
        ).fetchall()
        failures = con.execute(
            "SELECT m.workflow, n.node, coalesce(m.error_type, n.status), count(*) FROM node_executions n "
            f"JOIN execution_metrics m ON m.execution_id = n.execution_id WHERE m.organization_id = ? "
            f"AND m.{finished} {window.replace('started_at', 'm.started_at')} AND n.status IN ('FAILED', 'TIMED_OUT') "
            "GROUP BY ALL ORDER BY 1, 4 DESC, 2, 3",
            params,
        ).fetchall()
    out = {w: {"runs": n, "succeeded": ok, "failed": bad, "max": top, "rows_out": rows, "contract_failures": cf,
               "failures_by_node": []} for w, n, ok, bad, top, rows, cf in runs}  # fmt: skip
    for workflow, node, error_type, count in failures:
        out[workflow]["failures_by_node"].append({"node": node, "error_type": error_type, "count": count})
    return out


def comparable(stats: dict[str, Any]) -> dict[str, Any]:
    return {w: {"runs": m["runs"], "succeeded": m["succeeded"], "failed": m["failed"], "max": m["duration_ms"]["max"],
                "rows_out": m["rows_out"], "contract_failures": m["contract_failures"],
                "failures_by_node": m["failures_by_node"]} for w, m in stats.items()}  # fmt: skip


@pytest.fixture
def mixed(tmp_path: Path, settings) -> Scope:
    """A bulk history (ten workflows) plus executions ended every way the engine ends them."""
    scope = fill(settings.catalog, 600)
    wf = scope.catalog.workflow(scope.user.organization_id, "wf_01").id
    end(scope, wf, RunState.CANCELLED, None, None, None)  # never started
    end(scope, wf, RunState.TIMED_OUT, NOW - timedelta(minutes=5), 300_000.0, 7)
    end(scope, wf, RunState.FAILED, NOW - timedelta(days=40), 12.0, None, failures=3)
    end(scope, wf, RunState.SUCCEEDED, NOW - timedelta(hours=2), 99_999.0, 11)
    return scope


def test_stats_kept_when_executions_end_equal_the_views_over_every_execution(mixed: Scope) -> None:
    org = mixed.user.organization_id
    for since in (None, NOW - timedelta(hours=3), NOW - timedelta(days=7)):
        assert comparable(mixed.catalog.stats(org, since=since)) == from_views(mixed.catalog.path, org, since)
    one = mixed.catalog.stats(org, workflow="wf_01")
    assert list(one) == ["wf_01"] and one["wf_01"]["runs"] == 60 + 4
    with duckdb.connect(str(mixed.catalog.path), read_only=True) as con:
        p50, p95 = con.execute(
            "SELECT quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95) FROM workflow_executions e "
            "JOIN workflows w ON w.id = e.workflow_id WHERE w.name = 'wf_01' AND e.status <> 'RUNNING'"
        ).fetchone()  # type: ignore[misc]
    assert one["wf_01"]["duration_ms"]["p50"] == pytest.approx(p50)
    assert one["wf_01"]["duration_ms"]["p95"] == pytest.approx(p95)


def test_durations_are_kept_for_the_last_ring_of_runs(settings) -> None:
    scope = fill(settings.catalog, RING + 200, count=1)
    wf = scope.catalog.workflow(scope.user.organization_id, "wf_00").id
    last = end(scope, wf, RunState.SUCCEEDED, NOW, 5.0, 1)
    with duckdb.connect(str(settings.catalog), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM recent_durations").fetchone() == (RING,)
        kept = con.execute("SELECT quantile_cont(duration_ms, 0.5) FROM (SELECT duration_ms FROM workflow_executions "
                           f"ORDER BY finished_at DESC LIMIT {RING})").fetchone()  # fmt: skip
        assert con.execute("SELECT count(*) FROM recent_durations WHERE duration_ms = 5.0").fetchone() == (1,)
    assert scope.catalog.stats(scope.user.organization_id)["wf_00"]["duration_ms"]["p50"] == pytest.approx(kept[0])
    assert scope.catalog.execution(last).status is RunState.SUCCEEDED


def test_a_catalog_migrated_with_history_rolls_it_up(mixed: Scope) -> None:
    org, path = mixed.user.organization_id, mixed.catalog.path
    before = mixed.catalog.stats(org)
    with duckdb.connect(str(path)) as con:  # the catalog as schema version 5 left it, history included
        for table in (
            "execution_hours",
            "node_failure_hours",
            "recent_durations",
            "retention_runs",
            "backfills",  # migration 7's, applied again after 6
            "backfill_slots",
        ):
            con.execute(f"DROP TABLE {table}")
        con.execute("DELETE FROM schema_version WHERE version >= 6")
    forget_migrations()
    assert Catalog(path).stats(org) == before


def test_a_page_of_executions_equals_the_page_of_the_whole_ordered_list(settings) -> None:
    scope = fill(settings.catalog, 0, count=2)
    other = Scope.current(Catalog(settings.catalog))
    other = Scope(other.catalog, other.catalog.ensure_user("someone-else", "bob"))
    wf = scope.catalog.workflow(scope.user.organization_id, "wf_00").id
    for days in (0.1, 0.5, 3, 20, 40, 400, 2000):  # in every window: the last day, month, and beyond
        end(scope, wf, RunState.SUCCEEDED, NOW - timedelta(days=days), 1.0, 1)
    queued = Execution(str(uuid.uuid4()), wf, "", 1, Mode.API, scope.user.id, RunState.QUEUED, created_at=NOW)
    scope.catalog.insert_execution(queued)
    with duckdb.connect(str(settings.catalog), read_only=True) as con:
        every = [r[0] for r in con.execute("SELECT id FROM workflow_executions ORDER BY created_at DESC").fetchall()]
    org = scope.user.organization_id
    for limit, offset in ((1, 0), (2, 0), (3, 1), (5, 2), (50, 0), (2, 6), (3, 8)):
        page = [e.id for e in scope.catalog.executions(org, limit=limit, offset=offset)]
        assert page == every[offset : offset + limit], (limit, offset)
        assert [e.id for e in scope.catalog.executions(org, wf, limit=limit, offset=offset)] == page
    assert scope.catalog.executions(other.user.organization_id) == []
    assert [e.id for e in scope.catalog.unfinished(org)] == [queued.id]
    assert [e.id for e in history.executions(scope, "wf_00", limit=3)] == every[:3]


def metadata_blocks(path: Path) -> int:
    """The catalog's metadata in use, in blocks of 4 KiB: every ATTACH (every catalog session) reads all of it."""
    with duckdb.connect(":memory:") as con:
        con.execute(f"ATTACH {path_literal(path)} AS c (READ_ONLY)")
        row = con.execute("SELECT sum(total_blocks - free_blocks) FROM pragma_metadata_info('c')").fetchone()
    return int(row[0]) if row else 0


def test_recording_runs_one_session_at_a_time_leaves_the_catalog_as_quick_to_open(settings) -> None:
    scope = fill(settings.catalog, 0, count=1)
    wf = scope.catalog.workflow(scope.user.organization_id, "wf_00").id
    for _ in range(5):
        end(scope, wf, RunState.SUCCEEDED, NOW, 1.0, 1)
    before = metadata_blocks(settings.catalog)
    for _ in range(60):  # 120 sessions: with foreign keys declared, DuckDB 2.0.1 kept ~10 blocks more
        end(scope, wf, RunState.SUCCEEDED, NOW, 1.0, 1)
    assert metadata_blocks(settings.catalog) <= before + 1
    assert scope.catalog.workflow(scope.user.organization_id, "wf_00").execution_count == 65


def version_9_catalog(path: Path) -> None:
    """A catalog as weflow left it at schema version 9 (foreign keys declared), with runs written one session each."""
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL "
                    "DEFAULT now())")  # fmt: skip
        for number, script in enumerate(MIGRATIONS[:9], start=1):
            con.execute(script)
            con.execute("INSERT INTO schema_version (version) VALUES (?)", [number])
        con.execute("INSERT INTO organizations (name) VALUES ('acme'), ('globex')")
        con.execute("INSERT INTO users (name, organization_id) VALUES ('ada', 1), ('lin', 2)")
        con.execute("INSERT INTO workflows (organization_id, name, status, owner_id, current_version) "
                    "VALUES (1, 'w', 'ACTIVE', 1, 1)")  # fmt: skip
        con.execute("INSERT INTO workflow_versions VALUES (1, 1, '{}', 'h', 1, '', now())")
        con.execute("INSERT INTO workflow_nodes VALUES (1, 1, 'a', 'read_csv', '{}', 0, 0, NULL, NULL, NULL, NULL)")
        con.execute("INSERT INTO api_keys (user_id, lookup, secret_hash) VALUES (1, 'l', 's')")
    for i in range(40):
        with duckdb.connect(str(path)) as con:
            con.execute("INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status) "
                        "VALUES (?, 1, 1, 'API', 1, 'SUCCEEDED')", [f"e{i}"])  # fmt: skip
            con.execute("INSERT INTO node_executions (execution_id, node, status) VALUES (?, 'a', 'SUCCEEDED')",
                        [f"e{i}"])  # fmt: skip
            con.execute("UPDATE workflows SET execution_count = execution_count + 1")
    with duckdb.connect(str(path)) as con:
        con.execute("INSERT INTO execution_resumes VALUES ('e1', 'e0', 'a')")


def test_a_catalog_with_foreign_keys_migrates_without_them_keeping_every_row_and_key(tmp_path: Path) -> None:
    path = tmp_path / "weflow.duckdb"
    version_9_catalog(path)
    before, blocks = counts(path), metadata_blocks(path)
    scope = Scope(Catalog(path), Catalog(path).ensure_user("acme", "ada"))  # the first session migrates it
    assert counts(path) == before | {"schema_version": 10}
    assert metadata_blocks(path) < blocks
    with duckdb.connect(str(path), read_only=True) as con:
        kinds = {r[0] for r in con.execute("SELECT constraint_type FROM duckdb_constraints()").fetchall()}
        indexes = {r[0] for r in con.execute("SELECT index_name FROM duckdb_indexes()").fetchall()}
    assert "FOREIGN KEY" not in kinds and {"PRIMARY KEY", "UNIQUE", "CHECK", "NOT NULL"} <= kinds
    assert indexes == {"workflows_org_name", "executions_workflow"}
    assert scope.catalog.workflow(scope.user.organization_id, "w").execution_count == 40
    bob = scope.catalog.ensure_user("initech", "bob")  # the sequences go on from where they were
    assert bob.id > 2 and bob.organization_id > 2
    with session(path) as con, pytest.raises(duckdb.ConstraintException, match="e3"):
        con.execute("INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status) "
                    "VALUES ('e3', 1, 1, 'API', 1, 'QUEUED')")  # fmt: skip
    assert maintenance.check(path).problems == ()
    with session(path) as con:  # no foreign key refuses an orphan now: the check names it
        con.execute("DELETE FROM workflow_executions WHERE id = 'e5'")
    assert maintenance.check(path).problems == ("table node_executions: 1 rows whose (execution_id) has no row in "
                                                "workflow_executions",)  # fmt: skip


def test_quick_history_benchmark(tmp_path: Path) -> None:
    smoke(("history",), tmp_path / "BENCHMARKS.md")
