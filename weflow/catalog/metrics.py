"""Metrics over finished executions, and the alert deliveries that watch them.

Metrics are counted when an execution ends (``roll_up``, in the transaction that ends it), per
workflow and UTC hour, so reading them costs the same with 100 or 1,000,000 executions recorded
(a query over the execution rows took 4x longer at 100,000). Durations are kept for the last
``RING`` finished runs of each workflow: the quantiles are over those. Retention does not touch
these counts: ``weflow stats`` keeps counting pruned runs, as Prometheus counters must.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import duckdb

from weflow.catalog.rows import Columns, named, where
from weflow.catalog.session import Repository
from weflow.core.entities import AlertDelivery, Execution, NodeExecution, RunState
from weflow.errors import CatalogError

_DELIVERY = Columns(AlertDelivery)
RING = 1000  # durations kept per workflow for the p50/p95
NEVER = datetime(1970, 1, 1, tzinfo=UTC)  # the hour of an execution that never started
_COUNTED = {RunState.SUCCEEDED, RunState.FAILED, RunState.TIMED_OUT, RunState.CANCELLED}
_FAILED = {RunState.FAILED, RunState.TIMED_OUT}
_JOIN = "JOIN workflows w ON w.id = {t}.workflow_id WHERE w.organization_id = ?"
_RUNS = (
    "SELECT w.name AS workflow, sum(h.runs) AS runs, sum(h.succeeded) AS succeeded, sum(h.failed) AS failed, "
    "max(h.max_ms) AS top, sum(h.rows_out) AS rows_out, sum(h.contract_failures) AS contract_failures "
    "FROM execution_hours h {where} GROUP BY w.name ORDER BY w.name"
)
_QUANTILES = (
    "SELECT w.name AS workflow, quantile_cont(d.duration_ms, 0.5) AS p50, quantile_cont(d.duration_ms, 0.95) AS p95 "
    "FROM recent_durations d {where} GROUP BY w.name"
)
_FAILURES = (
    "SELECT w.name AS workflow, f.node, f.error_type, sum(f.failures) AS count "
    "FROM node_failure_hours f {where} GROUP BY ALL ORDER BY 1, 4 DESC, 2, 3"
)
_ADD_RUN = (
    "INSERT INTO execution_hours VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET runs = runs + 1, "
    "succeeded = succeeded + excluded.succeeded, failed = failed + excluded.failed, "
    "rows_out = CASE WHEN rows_out IS NULL THEN excluded.rows_out "
    "WHEN excluded.rows_out IS NULL THEN rows_out ELSE rows_out + excluded.rows_out END, "
    "contract_failures = contract_failures + excluded.contract_failures, max_ms = greatest(max_ms, excluded.max_ms)"
)
_ADD_FAILURE = (
    "INSERT INTO node_failure_hours VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT DO UPDATE SET failures = failures + excluded.failures"
)


def hour_of(at: datetime | None) -> datetime:
    """The UTC hour an execution is counted in (``NEVER`` when it never started)."""
    return NEVER if at is None else at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def roll_up(
    con: duckdb.DuckDBPyConnection, execution: Execution, nodes: Sequence[NodeExecution], failures: int, number: int
) -> None:
    """Count an ended execution in its workflow's metrics; ``number``: its place in the workflow's execution count."""
    if execution.status not in _COUNTED:
        return
    hour = hour_of(execution.started_at)
    outs = [n.rows_out for n in nodes if n.rows_out is not None]
    counts = [int(execution.status is RunState.SUCCEEDED), int(execution.status in _FAILED),
              sum(outs) if outs else None, failures, execution.duration_ms]  # fmt: skip
    con.execute(_ADD_RUN, [execution.workflow_id, hour, 1, *counts])
    broken = Counter((n.node, execution.error_type or str(n.status)) for n in nodes if n.status in _FAILED)
    for (node, error_type), count in sorted(broken.items()):
        con.execute(_ADD_FAILURE, [execution.workflow_id, hour, node, error_type, count])
    con.execute(
        "INSERT OR REPLACE INTO recent_durations VALUES (?, ?, ?, ?)",
        [execution.workflow_id, (number - 1) % RING, execution.started_at, execution.duration_ms],
    )


def _summary(run: dict[str, Any], quantiles: dict[str, Any]) -> dict[str, Any]:
    total, ok = run["runs"], run["succeeded"]
    return {
        "runs": total, "succeeded": ok, "failed": run["failed"], "success_rate": ok / total if total else None,
        "duration_ms": {"p50": quantiles.get("p50"), "p95": quantiles.get("p95"), "max": run["top"]},
        "rows_out": run["rows_out"], "contract_failures": run["contract_failures"], "failures_by_node": [],
    }  # fmt: skip


class Metrics(Repository):
    def stats(self, organization_id: int, workflow: str | None = None, since: datetime | None = None) -> dict[str, Any]:
        """Per-workflow metrics over finished executions; ``since`` counts from the start of its UTC hour.

        Durations: the quantiles of the last ``RING`` runs (of those that started ``since``), the max of all.
        """
        hour = hour_of(since) if since else None

        def scoped(sql: str, alias: str, at: str, value: Any) -> tuple[str, list[Any]]:
            condition, params = where(_JOIN.format(t=alias), {"w.name = ?": workflow, f"{alias}.{at} >= ?": value})
            return sql.format(where=condition), [organization_id, *params]

        with self.transaction() as con:
            runs = named(con.execute(*scoped(_RUNS, "h", "hour", hour)))
            durations = named(con.execute(*scoped(_QUANTILES, "d", "started_at", since)))
            failures = named(con.execute(*scoped(_FAILURES, "f", "hour", hour)))
        spread = {q.pop("workflow"): q for q in durations}
        out = {run["workflow"]: _summary(run, spread.get(run["workflow"], {})) for run in runs}
        for failure in failures:
            out[failure.pop("workflow")]["failures_by_node"].append(failure)
        return out

    def claim_alert(self, delivery: AlertDelivery) -> bool:
        """Record an alert about to be sent; False if this rule already fired for this subject."""
        with self.transaction() as con:
            inserted = con.execute(
                "INSERT INTO alert_deliveries (workflow_id, subject, rule, kind, target, status, attempts, payload) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?) ON CONFLICT DO NOTHING RETURNING subject",
                [delivery.workflow_id, delivery.subject, delivery.rule, delivery.kind, delivery.target,
                 delivery.status, json.dumps(delivery.payload, default=str)],
            ).fetchall()  # fmt: skip
        return bool(inserted)

    def update_alert(self, subject: str, rule: str, **fields: Any) -> None:
        allowed = {"status", "attempts", "last_error", "delivered_at"}
        if set(fields) - allowed:
            raise CatalogError(f"cannot set {sorted(set(fields) - allowed)} on an alert delivery")
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as con:
            con.execute(
                f"UPDATE alert_deliveries SET {cols} WHERE subject = ? AND rule = ?", [*fields.values(), subject, rule]
            )

    def alert_deliveries(self, workflow_id: int | None = None, subject: str | None = None) -> list[AlertDelivery]:
        sql, params = where(f"SELECT {_DELIVERY.select} FROM alert_deliveries WHERE true", {
            "workflow_id = ?": workflow_id, "subject = ?": subject})  # fmt: skip
        with self.transaction() as con:
            return _DELIVERY.all(con.execute(sql + " ORDER BY created_at, rule", params))
