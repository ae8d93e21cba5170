"""The catalog on real DuckDB files: versions, no-op saves, diff, rollback, delete, concurrency."""

from __future__ import annotations

import multiprocessing
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from weflow import DefinitionError, NotFoundError, parse, workflows
from weflow.catalog import Catalog
from weflow.catalog.rows import Columns, insert
from weflow.catalog.schema import MIGRATIONS
from weflow.core import document
from weflow.core.entities import Compensation, Execution, Lease, Mode, NodeExecution, RunState
from weflow.workflows import Scope

from .conftest import REPO

SALES = (REPO / "data/workflows/daily_sales.yaml").read_text()


def edited(text: str, old: str, new: str) -> str:
    assert old in text
    return text.replace(old, new)


def test_apply_creates_version_one_and_tables(scope: Scope) -> None:
    result = workflows.apply(parse(SALES), scope, "first")
    assert (result.created, result.version.number) == (True, 1)
    wf = result.workflow
    assert (wf.name, wf.status, wf.is_active, wf.execution_count) == ("daily_sales", "ACTIVE", True, 0)
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        assert con.execute("SELECT max(version) FROM schema_version").fetchone() == (len(MIGRATIONS),)
        nodes = con.execute("SELECT name, type FROM workflow_nodes ORDER BY name").fetchall()
        assert ("paid", "filter") in nodes and len(nodes) == 5
        conns = con.execute("SELECT count(*) FROM workflow_node_connections").fetchone()
        assert conns == (4,)
        org = con.execute(
            "SELECT o.name, u.name FROM workflows w JOIN users u ON u.id = w.owner_id "
            "JOIN organizations o ON o.id = w.organization_id"
        ).fetchone()
        assert org == ("acme", "ada")


def test_noop_save_makes_no_version_and_change_does(scope: Scope) -> None:
    workflows.apply(parse(SALES), scope)
    again = workflows.apply(parse(SALES), scope)
    assert (again.created, again.version.number) == (False, 1)
    changed = workflows.apply(parse(edited(SALES, "status = 'paid'", "status = 'refunded'")), scope, "refunds")
    assert (changed.created, changed.version.number) == (True, 2)
    versions = workflows.versions("daily_sales", scope)
    assert [(v.number, v.message) for v in versions] == [(1, ""), (2, "refunds")]
    assert versions[0].content_hash != versions[1].content_hash
    assert workflows.get("daily_sales", scope).current_version == 2


def test_diff_names_changed_nodes_keys_connections_and_schedule(scope: Scope) -> None:
    workflows.apply(parse(SALES), scope)
    text = edited(SALES, "status = 'paid'", "status = 'refunded'")
    text = edited(text, '"0 6 * * *"', '"0 7 * * *"')
    text = edited(text, "{ge: 0}", "{ge: 1}")
    text = edited(text, "  - {from: ranked, to: report}\n", "  - {from: by_region, to: report}\n")
    workflows.apply(parse(text), scope)
    d = workflows.diff("daily_sales", 1, 2, scope)
    changed = {c.node: c.fields for c in d.nodes_changed}
    assert changed == {"paid": ("config.condition",), "orders": ("contract",)}
    assert d.contracts_changed == ("orders",)
    assert d.connections_added == ("by_region -> report",)
    assert d.connections_removed == ("ranked -> report",)
    assert d.schedule == (("0 6 * * *",), ("0 7 * * *",))
    assert "~ schedule: 0 6 * * * -> 0 7 * * *" in d.lines()
    assert workflows.diff("daily_sales", 2, 2, scope).empty


def test_rollback_makes_a_new_version_equal_to_the_old(scope: Scope) -> None:
    first = workflows.apply(parse(SALES), scope).version
    workflows.apply(parse(edited(SALES, "status = 'paid'", "status = 'refunded'")), scope)
    result = workflows.rollback("daily_sales", 1, scope)
    assert (result.created, result.version.number) == (True, 3)
    assert result.version.content_hash == first.content_hash
    assert workflows.export("daily_sales", scope) == workflows.export("daily_sales", scope, 1)
    assert workflows.rollback("daily_sales", 3, scope).created is False
    with pytest.raises(NotFoundError, match="no version 9"):
        workflows.rollback("daily_sales", 9, scope)


def test_refused_definition_leaves_the_catalog_unchanged(scope: Scope) -> None:
    workflows.apply(parse(SALES), scope)
    before = scope.catalog.path.read_bytes()
    bad = edited(SALES, "type: filter", "type: filtr")
    with pytest.raises(DefinitionError, match=r"nodes\[1\]\.type"):
        workflows.apply(parse(bad), scope)
    assert workflows.get("daily_sales", scope).current_version == 1
    assert len(workflows.versions("daily_sales", scope)) == 1
    assert scope.catalog.path.read_bytes() == before


def test_apply_many_is_all_or_nothing(scope: Scope) -> None:
    good = parse(SALES)
    other = parse(edited(SALES, "name: daily_sales", "name: other"))
    clash = parse(edited(SALES, "name: daily_sales", "name: third"))
    workflows.apply_many([good, other], scope)
    assert {w.name for w in workflows.list_workflows(scope)} == {"daily_sales", "other"}
    broken = other.model_copy(update={"nodes": (*other.nodes[:1], other.nodes[1].model_copy(update={"type": "x"}))})
    with pytest.raises(DefinitionError):
        workflows.apply_many([clash, broken], scope)
    assert {w.name for w in workflows.list_workflows(scope)} == {"daily_sales", "other"}


def test_names_are_unique_per_organization_only(scope: Scope, settings) -> None:
    workflows.apply(parse(SALES), scope)
    other_user = scope.catalog.ensure_user("globex", "bob")
    other = Scope(scope.catalog, other_user)
    assert workflows.list_workflows(other) == []
    with pytest.raises(NotFoundError):
        workflows.get("daily_sales", other)
    mine = workflows.apply(parse(SALES), other).workflow
    assert mine.organization_id != workflows.get("daily_sales", scope).organization_id


def test_soft_delete_keeps_history_and_purge_removes_it(scope: Scope) -> None:
    wf = workflows.apply(parse(SALES), scope).workflow
    workflows.delete("daily_sales", scope)
    assert workflows.list_workflows(scope) == []
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM workflow_versions WHERE workflow_id = ?", [wf.id]).fetchone() == (1,)
    again = workflows.apply(parse(SALES), scope).workflow
    assert again.id != wf.id and again.current_version == 1
    workflows.delete("daily_sales", scope, purge=True)
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM workflow_versions WHERE workflow_id = ?", [again.id]).fetchone() == (
            0,
        )


def test_list_filters_by_status(scope: Scope) -> None:
    workflows.apply(parse(SALES), scope)
    workflows.apply(
        parse(edited(SALES, "name: daily_sales\n", "name: draft_one\n").replace("status: ACTIVE\n", "")), scope
    )
    assert [w.name for w in workflows.list_workflows(scope, "ACTIVE")] == ["daily_sales"]
    assert [w.name for w in workflows.list_workflows(scope, "DRAFT")] == ["draft_one"]


def test_a_version_is_read_back_with_its_workflow_and_bad_lookups_name_what_is_missing(scope: Scope) -> None:
    workflows.apply(parse(SALES), scope)
    workflows.apply(parse(edited(SALES, "status = 'paid'", "status = 'refunded'")), scope)
    assert workflows.version("daily_sales", scope, 1).number == 1
    assert "status = 'refunded'" in str(workflows.export("daily_sales", scope))  # current version by default
    assert "status = 'paid'" in str(workflows.export("daily_sales", scope, 1))
    with pytest.raises(NotFoundError, match=r"workflow 'daily_sales' has no version 3 \(versions 1-2\)"):
        workflows.version("daily_sales", scope, 3)
    with pytest.raises(NotFoundError, match="no workflow named 'nope'"):
        workflows.version("nope", scope)
    listed = workflows.list_workflows(scope)[0]
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        stored = con.execute("SELECT created_at, updated_at FROM workflows WHERE name = 'daily_sales'").fetchone()
    assert (listed.created_at, listed.updated_at) == stored  # the same instants, time-zone aware
    assert listed.created_at.utcoffset() is not None and listed.updated_at > listed.created_at


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "future.duckdb"
    with duckdb.connect(str(path)) as con:
        con.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ)")
        con.execute("INSERT INTO schema_version VALUES (99, now())")
    from weflow.errors import CatalogError

    with pytest.raises(CatalogError, match="newer than this weflow"):
        Catalog(path).organizations()


# --- property: diff and rollback --------------------------------------------------------

conditions = st.sampled_from(["amount > 0", "status = 'paid'", "amount < 100", "region = 'north'"])


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(conditions, min_size=1, max_size=4), st.data())
def test_property_versions_diff_and_rollback(scope: Scope, history: list[str], data: st.DataObject) -> None:
    name = f"p{abs(hash((tuple(history), id(data)))) % 10**8}"
    texts = [edited(SALES, "status = 'paid'", c).replace("name: daily_sales", f"name: {name}") for c in history]
    made = 0
    for i, text in enumerate(texts):
        result = workflows.apply(parse(text), scope)
        changed = i == 0 or texts[i] != texts[i - 1]
        assert result.created == changed
        made += changed
    stored = workflows.versions(name, scope)
    assert len(stored) == made
    a, b = data.draw(st.integers(1, made)), data.draw(st.integers(1, made))
    d = workflows.diff(name, a, b, scope)
    assert d.empty == (stored[a - 1].content_hash == stored[b - 1].content_hash)
    if not d.empty:
        assert [c.node for c in d.nodes_changed] == ["paid"]
    target = data.draw(st.integers(1, made))
    workflows.rollback(name, target, scope)
    assert document.content_hash(workflows.version(name, scope).definition) == stored[target - 1].content_hash


# --- four processes writing at once ------------------------------------------------------


def _writer(path: str, worker: int, count: int) -> int:
    from weflow import config, parse, workflows
    from weflow.catalog import Catalog
    from weflow.workflows import Scope

    with config.using(data_roots=(REPO,)):
        scope = Scope(Catalog(path), Catalog(path).ensure_user("acme", f"w{worker}"))
        for i in range(count):
            workflows.apply(parse(SALES.replace("name: daily_sales", f"name: w{worker}_{i}")), scope)
            workflows.list_workflows(scope)
    return count


def test_four_processes_write_at_once_and_lose_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.duckdb")
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(4) as pool:
        done = pool.starmap(_writer, [(path, w, 15) for w in range(4)])
    assert done == [15] * 4
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM workflows").fetchone() == (60,)
        assert con.execute("SELECT count(*) FROM workflow_versions").fetchone() == (60,)
        assert con.execute("SELECT count(DISTINCT name) FROM users").fetchone() == (4,)


def test_purge_removes_webhook_tokens_too(scope: Scope) -> None:
    from weflow.catalog import auth

    wf = workflows.apply(parse(SALES), scope).workflow
    auth.create_hook(scope.catalog, wf, scope.user)
    workflows.delete("daily_sales", scope, purge=True)
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM webhook_tokens").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM workflows").fetchone() == (0,)


# --- records read and written by column name, the columns derived from the dataclasses ------


@dataclass(frozen=True)
class _Probe:
    name: str
    state: RunState
    count: int | None = None
    seen: datetime | None = None
    doc: dict[str, Any] | None = None


def test_columns_come_from_the_dataclass_and_rows_are_read_by_name() -> None:
    probe = Columns(_Probe, sources={"doc": "document"})
    assert probe.names == ["name", "state", "count", "seen", "document"]
    at = datetime(2026, 12, 1, 9, 30, 0, 123456, tzinfo=UTC)
    records = [_Probe("a", RunState.FAILED, 3, at, {"k": [1]}), _Probe("b", RunState.SUCCEEDED)]
    with duckdb.connect() as con:
        con.execute(
            "CREATE TABLE probes (document JSON, seen TIMESTAMPTZ, count INTEGER, state VARCHAR, name VARCHAR)"
        )  # columns in another order than the fields: nothing is read by position
        insert(con, "probes", probe.arrow(records), probe.names)
        assert probe.all(con.execute(f"SELECT 1 AS extra, {probe.select} FROM probes ORDER BY name")) == records
        assert probe.one(con.execute(f"SELECT {probe.select} FROM probes WHERE name = 'x'")) is None


def test_an_execution_reads_back_every_field_it_was_written_with(scope: Scope) -> None:
    catalog = scope.catalog
    wf = workflows.apply(parse(SALES), scope).workflow
    at = datetime(2026, 12, 1, 9, 0, 0, 250000, tzinfo=UTC)
    first = Execution("e-first", wf.id, wf.name, 1, Mode.MANUAL, scope.user.id, RunState.QUEUED, created_at=at)
    catalog.insert_execution(first)
    queued = replace(first, id="e-second", mode=Mode.API, input_data={"day": "2026-12-01"}, flow_run_id="fr-1",
                     created_at=at + timedelta(seconds=1), timeout_seconds=30.0, resumed_from="e-first")  # fmt: skip
    lease = Lease("host-a", 4242, 987654, at + timedelta(seconds=2), 15.0)
    catalog.insert_execution(queued, from_node="paid", lease=lease)
    assert catalog.leased(scope.user.organization_id) == [(queued, lease)]
    node = NodeExecution("e-second", "paid", RunState.FAILED, 2, 10, 4, at, at + timedelta(seconds=3), 3000.5,
                         "boom", {"failures": 1}, "load+paid", "runs/paid.parquet")  # fmt: skip
    ended = replace(queued, status=RunState.FAILED, started_at=at, finished_at=at + timedelta(seconds=4),
                    duration_ms=4000.0, error_type="ContractError", error_message="1 failure", error_node="paid",
                    output={"rows": 4}, compensations=(Compensation("load", "undo", "DONE", "ok", at),))  # fmt: skip
    failure = {"node": "paid", "column": "amount", "check": "ge(0)", "failure_case": "-1", "index": 7}
    assert catalog.finish_execution(ended, [node, replace(node, node="load", started_at=None)], [failure])
    assert catalog.execution("e-second") == replace(ended, nodes=(node, replace(node, node="load", started_at=None)))
    assert catalog.executions(scope.user.organization_id) == [replace(ended, compensations=()), first]
    assert catalog.contract_failures("e-second") == [failure]
    assert catalog.leased(None) == []
