"""Metrics over execution records: SQL views in the catalog, `weflow stats`, Prometheus text."""

from __future__ import annotations

import json
import subprocess
import uuid
from datetime import UTC, datetime, timedelta

import duckdb
import pytest

from weflow import parse, workflows
from weflow.api.metrics import render
from weflow.core.entities import Execution, Mode, NodeExecution, RunState
from weflow.workflows import Scope

from .conftest import REPO, weflow_exe


def record(scope: Scope, wf_id: int, status: RunState, ms: float, rows: int, started: datetime) -> str:
    """An execution as the engine records it: the QUEUED row, then its end with node records."""
    eid = str(uuid.uuid4())
    e = Execution(eid, wf_id, "daily_sales", 1, Mode.CRON, scope.user.id, RunState.QUEUED, created_at=started)
    scope.catalog.insert_execution(e)
    failed = status is not RunState.SUCCEEDED
    nodes = [
        NodeExecution(eid, "orders", RunState.FAILED if failed else RunState.SUCCEEDED, 1, None, rows),
        NodeExecution(eid, "paid", RunState.SKIPPED if failed else RunState.SUCCEEDED, 0 if failed else 1),
    ]
    final = Execution(
        eid, wf_id, "daily_sales", 1, Mode.CRON, scope.user.id, status, started_at=started,
        finished_at=started + timedelta(milliseconds=ms), duration_ms=ms,
        error_type="ContractError" if failed else None,
    )  # fmt: skip
    cases = [{"node": "orders", "column": "amount", "check": "ge(0)", "failure_case": "-1", "index": 3}]
    scope.catalog.finish_execution(final, nodes, cases if failed else [])
    return eid


@pytest.fixture
def history(scope: Scope) -> Scope:
    wf = workflows.apply(parse((REPO / "data/workflows/daily_sales.yaml").read_text()), scope).workflow
    now = datetime.now(UTC)
    for i, ms in enumerate([100.0, 200.0, 300.0, 400.0]):
        record(scope, wf.id, RunState.SUCCEEDED, ms, 10, now - timedelta(hours=i))
    record(scope, wf.id, RunState.FAILED, 50.0, 5, now - timedelta(days=3))
    return scope


def test_stats_per_workflow_and_window(history: Scope) -> None:
    org = history.user.organization_id
    everything = history.catalog.stats(org)["daily_sales"]
    assert (everything["runs"], everything["succeeded"], everything["failed"]) == (5, 4, 1)
    assert everything["success_rate"] == pytest.approx(0.8)
    assert everything["duration_ms"]["max"] == 400.0 and everything["duration_ms"]["p50"] == 200.0
    assert everything["rows_out"] == 45 and everything["contract_failures"] == 1
    assert everything["failures_by_node"] == [{"node": "orders", "error_type": "ContractError", "count": 1}]
    recent = history.catalog.stats(org, since=datetime.now(UTC) - timedelta(days=1))["daily_sales"]
    assert (recent["runs"], recent["success_rate"], recent["failures_by_node"]) == (4, 1.0, [])
    assert history.catalog.stats(org, workflow="nope") == {}


def test_views_are_queryable_from_duckdb(history: Scope) -> None:
    with duckdb.connect(str(history.catalog.path), read_only=True) as con:
        row = con.execute("SELECT runs, succeeded, failed, max_ms FROM workflow_stats WHERE workflow = 'daily_sales'")
        assert row.fetchone() == (5, 4, 1, 400.0)
        assert con.execute("SELECT node, failures FROM node_failures").fetchall() == [("orders", 1)]
        assert con.execute("SELECT count(*) FROM execution_metrics WHERE mode = 'CRON'").fetchone() == (5,)


def test_weflow_stats_cli(history: Scope, cli_env: dict[str, str]) -> None:
    env = {**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}

    def weflow(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([weflow_exe(), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60)

    found = json.loads(weflow("stats", "--since", "2d", "-f", "json").stdout)
    assert found["daily_sales"]["runs"] == 4
    assert "80%" in weflow("stats", "daily_sales").stdout
    bad = weflow("stats", "--since", "yesterday")
    assert bad.returncode == 1 and "--since 'yesterday'" in bad.stderr


def test_prometheus_text(history: Scope) -> None:
    text = render(history.catalog.stats(history.user.organization_id))
    assert "# TYPE weflow_executions_total counter" in text
    assert 'weflow_executions_total{workflow="daily_sales",outcome="succeeded"} 4' in text
    assert 'weflow_execution_duration_milliseconds{workflow="daily_sales",quantile="0.95"}' in text
    assert 'weflow_node_failures_total{workflow="daily_sales",node="orders",error_type="ContractError"} 1' in text
    assert render({'we"ird': {**history.catalog.stats(history.user.organization_id)["daily_sales"]}}).count(
        'workflow="we\\"ird"'
    )
