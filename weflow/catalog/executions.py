"""Executions, their node executions, contract failures, compensations and leases.

A summary mirror of Prefect's run history (DESIGN decision 7): an execution is inserted when it
starts and written once more, with every node record, in the one transaction that ends it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow as pa

from weflow.catalog import cursors
from weflow.catalog.metrics import roll_up
from weflow.catalog.rows import Columns, insert, named, where
from weflow.catalog.session import Repository
from weflow.core.cursors import Window
from weflow.core.entities import Compensation, Execution, Lease, NodeExecution, RunState
from weflow.errors import CatalogError, NotFoundError

EXECUTION = Columns(
    Execution,
    prefix="e.",
    sources={"workflow": "w.name", "resumed_from": "r.resumed_from"},
    skip=frozenset({"nodes", "compensations"}),
)
EXECUTION_FROM = (
    "workflow_executions e JOIN workflows w ON w.id = e.workflow_id "
    "LEFT JOIN execution_resumes r ON r.execution_id = e.id"
)
NODE_EXECUTION = Columns(NodeExecution, sources={"group": "fused_group"})
_COMPENSATION = Columns(Compensation, sources={"at": "done_at"})
_LEASE = Columns(Lease, prefix="l.")
# What a run writes when it ends (``finish_execution``) and what ``update_execution`` may set.
_OUTCOME = (
    "status", "flow_run_id", "started_at", "finished_at", "duration_ms", "error_type", "error_message", "error_node",
    "output",
)  # fmt: skip
_FAILURE_KEYS = {"node": "node", "column": "column_name", "check": "check_name", "failure_case": "failure_case",
                 "index": "row_index"}  # fmt: skip


_WINDOWS = (1, 31, 0)  # days of history a page is looked for in, widening; 0: all of it


def _page(
    organization_id: int, workflow_id: int | None, since: datetime | None, limit: int, offset: int
) -> tuple[str, list[Any]]:
    """One page of executions created ``since``: the page's rows chosen first, then joined to their workflows."""
    inner, params = where(
        "SELECT * FROM workflow_executions WHERE workflow_id IN (SELECT id FROM workflows WHERE organization_id = ?)",
        {"workflow_id = ?": workflow_id, "created_at >= ?": since},
    )
    inner += " ORDER BY created_at DESC LIMIT ? OFFSET ?"
    sql = (
        f"SELECT {EXECUTION.select} FROM ({inner}) e JOIN workflows w ON w.id = e.workflow_id "
        "LEFT JOIN execution_resumes r ON r.execution_id = e.id ORDER BY e.created_at DESC"
    )
    return sql, [organization_id, *params, limit, offset]


def _hold(con: duckdb.DuckDBPyConnection, execution_id: str, lease: Lease) -> None:
    con.execute(
        "INSERT OR REPLACE INTO execution_leases VALUES (?, ?, ?, ?, ?, ?)",
        [execution_id, lease.host, lease.pid, lease.process_started, lease.heartbeat_at, lease.lease_seconds],
    )


def _set(con: duckdb.DuckDBPyConnection, execution_id: str, fields: dict[str, Any]) -> None:
    """Set columns of an execution, json-encoding dict values."""
    unknown = set(fields) - set(_OUTCOME)
    if unknown:
        raise CatalogError(f"cannot set {sorted(unknown)} on an execution")
    if not fields:
        return
    cols = ", ".join(f"{k} = ?" for k in fields)
    values = [json.dumps(v) if isinstance(v, dict) else (str(v) if k == "status" else v) for k, v in fields.items()]
    con.execute(f"UPDATE workflow_executions SET {cols} WHERE id = ?", [*values, execution_id])


def _unfinished(
    con: duckdb.DuckDBPyConnection, ids: Sequence[str], organization_id: int | None
) -> dict[str, dict[str, Any]]:
    """The rows of the unfinished executions among ``ids`` (of one organization, unless None), by id.

    Looked up by primary key: a join with ``workflow_executions`` scanned every execution's id.
    """
    if not ids:
        return {}
    sql, params = where(
        f"SELECT {EXECUTION.select} FROM {EXECUTION_FROM} WHERE e.id IN ({', '.join('?' for _ in ids)}) "
        "AND e.status IN ('QUEUED', 'RUNNING')",
        {"w.organization_id = ?": organization_id},
    )
    return {row["id"]: row for row in named(con.execute(sql + " ORDER BY e.created_at", [*ids, *params]))}


def _write_failures(con: duckdb.DuckDBPyConnection, execution_id: str, failures: Sequence[dict[str, Any]]) -> None:
    table = pa.table(
        {
            "execution_id": [execution_id] * len(failures),
            "node": [f["node"] for f in failures],
            "column_name": pa.array([f.get("column") for f in failures], pa.string()),
            "check_name": pa.array([f.get("check") for f in failures], pa.string()),
            "failure_case": pa.array([f.get("failure_case") for f in failures], pa.string()),
            "row_index": pa.array([f.get("index") for f in failures], pa.int64()),
        }
    )
    insert(con, "contract_failures", table)


def _write_compensations(con: duckdb.DuckDBPyConnection, execution: Execution) -> None:
    con.execute("DELETE FROM compensations WHERE execution_id = ?", [execution.id])
    for seq, c in enumerate(execution.compensations):
        con.execute(
            "INSERT INTO compensations VALUES (?, ?, ?, ?, ?, ?, ?)",
            [execution.id, seq, c.node, c.action, c.status, c.detail, c.at or datetime.now(UTC)],
        )


def _close(con: duckdb.DuckDBPyConnection, execution: Execution, nodes: Sequence[NodeExecution], failures: int) -> None:
    """An ended execution holds no lease and counts in its workflow's counters and metrics."""
    con.execute("DELETE FROM execution_leases WHERE execution_id = ?", [execution.id])
    con.execute(
        "UPDATE workflows SET execution_count = execution_count + 1, last_executed_at = ? WHERE id = ?",
        [execution.finished_at or datetime.now(UTC), execution.workflow_id],
    )
    row = con.execute("SELECT execution_count FROM workflows WHERE id = ?", [execution.workflow_id]).fetchone()
    roll_up(con, execution, nodes, failures, row[0] if row else 1)


def _finished(con: duckdb.DuckDBPyConnection, execution_id: str) -> bool:
    row = con.execute("SELECT status FROM workflow_executions WHERE id = ?", [execution_id]).fetchone()
    return row is None or RunState(row[0]).final


class Executions(Repository):
    def insert_execution(self, execution: Execution, from_node: str | None = None, lease: Lease | None = None) -> None:
        """A new execution; one that resumes another is linked to it (``from_node``: where it restarts).

        ``lease``: the process that holds the unfinished execution (see ``weflow.leases``).
        """
        with self.transaction() as con:
            con.execute(
                "INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status, "
                "input_data, flow_run_id, created_at, started_at, timeout_seconds) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [execution.id, execution.workflow_id, execution.version, str(execution.mode),
                 execution.user_id, str(execution.status),
                 json.dumps(execution.input_data) if execution.input_data is not None else None,
                 execution.flow_run_id, execution.created_at or datetime.now(UTC), execution.started_at,
                 execution.timeout_seconds],
            )  # fmt: skip
            if execution.resumed_from is not None:
                con.execute(
                    "INSERT INTO execution_resumes VALUES (?, ?, ?)", [execution.id, execution.resumed_from, from_node]
                )
            if lease is not None:
                _hold(con, execution.id, lease)

    def update_execution(self, execution_id: str, lease: Lease | None = None, **fields: Any) -> None:
        """Set some columns of an execution (json-encodes dict values); ``lease``: its new holder."""
        with self.transaction() as con:
            _set(con, execution_id, fields)
            if lease is not None:
                _hold(con, execution_id, lease)

    def heartbeat(self, execution_ids: Sequence[str], at: datetime | None = None) -> None:
        """Renew the leases of executions still running in this process: one short session for all."""
        if not execution_ids:
            return
        marks = ", ".join("?" for _ in execution_ids)
        with self.transaction() as con:
            con.execute(
                f"UPDATE execution_leases SET heartbeat_at = ? WHERE execution_id IN ({marks})",
                [at or datetime.now(UTC), *execution_ids],
            )

    def leased(
        self, organization_id: int | None, execution_ids: Sequence[str] | None = None
    ) -> list[tuple[Execution, Lease]]:
        """Unfinished executions that a process holds, with their leases (one organization's, unless None)."""
        if execution_ids is not None and not execution_ids:
            return []
        sql = f"SELECT {_LEASE.select}, l.execution_id FROM execution_leases l"
        if execution_ids is not None:
            sql += f" WHERE l.execution_id IN ({', '.join('?' for _ in execution_ids)})"
        with self.transaction() as con:
            held = {row["execution_id"]: row for row in named(con.execute(sql, list(execution_ids or ())))}
            rows = _unfinished(con, list(held), organization_id)
        return [(EXECUTION.build(row), _LEASE.build(held[eid])) for eid, row in rows.items()]

    def finish_execution(
        self,
        execution: Execution,
        nodes: Sequence[NodeExecution],
        failures: Sequence[dict[str, Any]] = (),
        only_if_unfinished: bool = False,
        windows: Sequence[Window] = (),
    ) -> bool:
        """Write the final state, every node record, the workflow counters and its cursors in one transaction.

        ``only_if_unfinished``: a repair from outside; do nothing if the run already recorded its end.
        """
        with self.transaction() as con:
            if only_if_unfinished and _finished(con, execution.id):
                return False
            _set(con, execution.id, {k: getattr(execution, k) for k in _OUTCOME})
            con.execute("DELETE FROM node_executions WHERE execution_id = ?", [execution.id])
            if nodes:
                insert(con, "node_executions", NODE_EXECUTION.arrow(nodes), NODE_EXECUTION.names)
            if failures:
                _write_failures(con, execution.id, failures)
            if execution.compensations:
                _write_compensations(con, execution)
            cursors.record(con, execution, windows)
            if execution.status.final:
                _close(con, execution, nodes, len(failures))
        return True

    def execution(self, execution_id: str, organization_id: int | None = None) -> Execution:
        sql, params = where(f"SELECT {EXECUTION.select} FROM {EXECUTION_FROM} WHERE e.id = ?", {
            "w.organization_id = ?": organization_id})  # fmt: skip
        with self.transaction() as con:
            found = EXECUTION.one(con.execute(sql, [execution_id, *params]))
            if found is None:
                raise NotFoundError(f"no execution {execution_id!r}")
            nodes = NODE_EXECUTION.all(
                con.execute(
                    f"SELECT {NODE_EXECUTION.select} FROM node_executions WHERE execution_id = ? "
                    "ORDER BY started_at NULLS LAST, node",
                    [execution_id],
                )
            )
            undone = _COMPENSATION.all(
                con.execute(
                    f"SELECT {_COMPENSATION.select} FROM compensations WHERE execution_id = ? ORDER BY seq",
                    [execution_id],
                )
            )
        return replace(found, nodes=tuple(nodes), compensations=tuple(undone))

    def executions(
        self, organization_id: int, workflow_id: int | None = None, limit: int = 100, offset: int = 0
    ) -> list[Execution]:
        """A page of executions, most recent first.

        Read in widening windows of creation time (a day, a month, all): DuckDB skips the older row
        groups by their min/max, so a page costs the same with 1,000 or 1,000,000 executions kept.
        """
        with self.transaction() as con:
            for days in _WINDOWS:
                since = datetime.now(UTC) - timedelta(days=days) if days else None
                found = EXECUTION.all(con.execute(*_page(organization_id, workflow_id, since, limit, offset)))
                if len(found) == limit:
                    break
        return found

    def unfinished(self, organization_id: int) -> list[Execution]:
        """The organization's QUEUED and RUNNING executions, oldest first (without node records)."""
        with self.transaction() as con:
            # one column scanned, then rows by primary key: scanning every execution's row cost 2x more at 100,000
            found = con.execute("SELECT id FROM workflow_executions WHERE status IN ('QUEUED', 'RUNNING')").fetchall()
            ids = [r[0] for r in found]
            rows = _unfinished(con, ids, organization_id)
        return [EXECUTION.build(row) for row in rows.values()]

    def contract_failures(self, execution_id: str) -> list[dict[str, Any]]:
        columns = ", ".join(f'{column} AS "{key}"' for key, column in _FAILURE_KEYS.items())
        with self.transaction() as con:
            return named(
                con.execute(
                    f"SELECT {columns} FROM contract_failures WHERE execution_id = ? ORDER BY node, row_index",
                    [execution_id],
                )
            )
