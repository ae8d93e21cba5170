"""Metrics over finished executions, and the alert deliveries that watch them."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from weflow.catalog.rows import Columns, named, where
from weflow.catalog.session import Repository
from weflow.core.entities import AlertDelivery
from weflow.errors import CatalogError

_DELIVERY = Columns(AlertDelivery)
_FINISHED = "m.status IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED')"
_RUNS = (
    "SELECT workflow, count(*) AS runs, count(*) FILTER (WHERE status = 'SUCCEEDED') AS succeeded, "
    "count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT')) AS failed, "
    "quantile_cont(duration_ms, 0.5) AS p50, quantile_cont(duration_ms, 0.95) AS p95, max(duration_ms) AS top, "
    "sum(rows_out) AS rows_out, sum(contract_failures) AS contract_failures FROM execution_metrics m WHERE {where} "
    "GROUP BY workflow ORDER BY workflow"
)
_FAILURES = (
    "SELECT m.workflow, n.node, coalesce(m.error_type, n.status) AS error_type, count(*) AS count "
    "FROM node_executions n JOIN execution_metrics m ON m.execution_id = n.execution_id WHERE {where} "
    "AND n.status IN ('FAILED', 'TIMED_OUT') GROUP BY ALL ORDER BY 1, 4 DESC, 2"
)


def _summary(run: dict[str, Any]) -> dict[str, Any]:
    total, ok = run["runs"], run["succeeded"]
    return {
        "runs": total, "succeeded": ok, "failed": run["failed"], "success_rate": ok / total if total else None,
        "duration_ms": {"p50": run["p50"], "p95": run["p95"], "max": run["top"]}, "rows_out": run["rows_out"],
        "contract_failures": run["contract_failures"], "failures_by_node": [],
    }  # fmt: skip


class Metrics(Repository):
    def stats(self, organization_id: int, workflow: str | None = None, since: datetime | None = None) -> dict[str, Any]:
        """Per-workflow metrics over finished executions (from the ``execution_metrics`` view)."""
        condition, params = where(f"m.organization_id = ? AND {_FINISHED}", {
            "m.workflow = ?": workflow, "m.started_at >= ?": since})  # fmt: skip
        params = [organization_id, *params]
        with self.transaction() as con:
            runs = named(con.execute(_RUNS.format(where=condition), params))
            failures = named(con.execute(_FAILURES.format(where=condition), params))
        out = {run["workflow"]: _summary(run) for run in runs}
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
