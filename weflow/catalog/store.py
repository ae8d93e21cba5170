"""The catalog: workflows, versions, owners and execution records in one DuckDB file."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from weflow.catalog.session import session
from weflow.core.document import content_hash, from_data
from weflow.core.entities import (
    AlertDelivery,
    Compensation,
    Execution,
    Lease,
    Mode,
    NodeExecution,
    Organization,
    RunState,
    Status,
    User,
    Version,
    Workflow,
)
from weflow.core.model import Definition
from weflow.errors import CatalogError, NotFoundError

# Timestamps are read as epoch microseconds (`_when`, `_at`): DuckDB's conversion of a TIMESTAMPTZ to a Python
# datetime goes through the session time zone per value and was 4/5 of listing 10,000 workflows.
_WORKFLOW_COLUMNS = (
    "id, name, description, status, configuration, is_active, execution_count, epoch_us(last_executed_at), "
    "owner_id, organization_id, epoch_us(created_at), epoch_us(updated_at), current_version, epoch_us(deleted_at)"
)
_EXECUTION_COLUMNS = (
    "e.id, e.workflow_id, w.name, e.version, e.mode, e.user_id, e.status, e.input_data, e.flow_run_id, "
    "epoch_us(e.created_at), epoch_us(e.started_at), epoch_us(e.finished_at), e.duration_ms, e.error_type, "
    "e.error_message, e.error_node, e.output, e.timeout_seconds, r.resumed_from"
)
_EXECUTION_FROM = (
    "workflow_executions e JOIN workflows w ON w.id = e.workflow_id "
    "LEFT JOIN execution_resumes r ON r.execution_id = e.id"
)
_NODE_EXECUTION_COLUMNS = (
    "execution_id, node, status, attempts, rows_in, rows_out, started_at, finished_at, duration_ms, "
    "error, contract, fused_group, output_path"
)


def _now() -> datetime:
    return datetime.now(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _when(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


def _at(microseconds: int | None) -> datetime | None:
    return None if microseconds is None else _when(microseconds)


_STATUS = {s.value: s for s in Status}


def _workflow(row: Sequence[Any], configuration: dict[str, Any] | None = None) -> Workflow:
    """``configuration``: the row's JSON already parsed (``Catalog.workflows`` parses a page at once)."""
    return Workflow(
        id=row[0], name=row[1], description=row[2], status=_STATUS[row[3]],
        configuration=json.loads(row[4]) if configuration is None else configuration,
        is_active=row[5], execution_count=row[6],
        last_executed_at=_at(row[7]), owner_id=row[8], organization_id=row[9], created_at=_when(row[10]),
        updated_at=_when(row[11]), current_version=row[12], deleted_at=_at(row[13]),
    )  # fmt: skip


def _execution(
    row: Sequence[Any], nodes: tuple[NodeExecution, ...] = (), compensations: tuple[Compensation, ...] = ()
) -> Execution:
    return Execution(
        id=row[0], workflow_id=row[1], workflow=row[2], version=row[3], mode=Mode(row[4]),
        user_id=row[5], status=RunState(row[6]),
        input_data=json.loads(row[7]) if row[7] is not None else None, flow_run_id=row[8],
        created_at=_when(row[9]), started_at=_at(row[10]), finished_at=_at(row[11]), duration_ms=row[12],
        error_type=row[13], error_message=row[14], error_node=row[15],
        output=json.loads(row[16]) if row[16] is not None else None, timeout_seconds=row[17],
        resumed_from=row[18], nodes=nodes, compensations=compensations,
    )  # fmt: skip


def _node_execution(row: Sequence[Any]) -> NodeExecution:
    return NodeExecution(
        execution_id=row[0], node=row[1], status=RunState(row[2]), attempts=row[3], rows_in=row[4],
        rows_out=row[5], started_at=row[6], finished_at=row[7], duration_ms=row[8], error=row[9],
        contract=json.loads(row[10]) if row[10] is not None else None, group=row[11],
        output_path=row[12],
    )  # fmt: skip


def _hold(con: duckdb.DuckDBPyConnection, execution_id: str, lease: Lease) -> None:
    con.execute(
        "INSERT OR REPLACE INTO execution_leases VALUES (?, ?, ?, ?, ?, ?)",
        [execution_id, lease.host, lease.pid, lease.process_started, lease.heartbeat_at, lease.lease_seconds],
    )


@dataclass(frozen=True)
class SaveResult:
    workflow: Workflow
    version: Version
    created: bool  # False when the save changed nothing and no version was made


class Catalog:
    """Repository over the catalog file; each method is one short transaction."""

    def __init__(self, path: str | Path, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"Catalog({str(self.path)!r})"

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A raw transaction, for batching several operations in one session."""
        with session(self.path, self.lock_timeout) as con:
            yield con

    # --- owners ---------------------------------------------------------------

    def ensure_user(self, organization: str, user: str, con: duckdb.DuckDBPyConnection | None = None) -> User:
        """The user (and its organization), created if missing."""
        if con is None:
            with self.transaction() as con:
                return self.ensure_user(organization, user, con)
        con.execute("INSERT INTO organizations (name) VALUES (?) ON CONFLICT DO NOTHING", [organization])
        org = con.execute("SELECT id FROM organizations WHERE name = ?", [organization]).fetchone()
        assert org is not None
        con.execute("INSERT INTO users (name, organization_id) VALUES (?, ?) ON CONFLICT DO NOTHING", [user, org[0]])
        row = con.execute(
            "SELECT id, name, organization_id, created_at FROM users WHERE organization_id = ? AND name = ?",
            [org[0], user],
        ).fetchone()
        assert row is not None
        return User(*row)

    def user(self, user_id: int) -> User:
        with self.transaction() as con:
            row = con.execute(
                "SELECT id, name, organization_id, created_at FROM users WHERE id = ?", [user_id]
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no user with id {user_id}")
        return User(*row)

    def organizations(self) -> list[Organization]:
        with self.transaction() as con:
            rows = con.execute("SELECT id, name, created_at FROM organizations ORDER BY id").fetchall()
        return [Organization(*r) for r in rows]

    # --- workflows and versions -----------------------------------------------

    def find_workflow(self, con: duckdb.DuckDBPyConnection, organization_id: int, name: str) -> Workflow | None:
        row = con.execute(
            f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE organization_id = ? AND name = ? AND deleted_at IS NULL",
            [organization_id, name],
        ).fetchone()
        return _workflow(row) if row else None

    def _existing(self, con: duckdb.DuckDBPyConnection, organization_id: int, name: str) -> Workflow:
        found = self.find_workflow(con, organization_id, name)
        if found is None:
            raise NotFoundError(f"no workflow named {name!r}")
        return found

    def workflow(self, organization_id: int, name: str) -> Workflow:
        with self.transaction() as con:
            return self._existing(con, organization_id, name)

    def workflow_by_id(self, organization_id: int, workflow_id: int) -> Workflow:
        with self.transaction() as con:
            row = con.execute(
                f"SELECT {_WORKFLOW_COLUMNS} FROM workflows "
                "WHERE organization_id = ? AND id = ? AND deleted_at IS NULL",
                [organization_id, workflow_id],
            ).fetchone()
        if row is None:
            raise NotFoundError(f"no workflow with id {workflow_id}")
        return _workflow(row)

    def save(
        self,
        definition: Definition,
        user: User,
        message: str = "",
        con: duckdb.DuckDBPyConnection | None = None,
    ) -> SaveResult:
        """Store a checked definition; a new version only if its content changed."""
        if con is None:
            with self.transaction() as con:
                return self.save(definition, user, message, con)
        digest = content_hash(definition)
        now = _now()
        existing = self.find_workflow(con, user.organization_id, definition.name)
        if existing is not None:
            current = self._version(con, existing.id, existing.current_version)
            if current.content_hash == digest:
                return SaveResult(existing, current, created=False)
            number = existing.current_version + 1
            con.execute(
                "UPDATE workflows SET description = ?, status = ?, configuration = ?, is_active = ?, "
                "updated_at = ?, current_version = ? WHERE id = ?",
                [definition.description, definition.status, json.dumps(definition.configuration),
                 definition.status != "ARCHIVED", now, number, existing.id],
            )  # fmt: skip
            workflow_id = existing.id
        else:
            number = 1
            row = con.execute(
                "INSERT INTO workflows (organization_id, name, description, status, configuration, "
                "is_active, owner_id, created_at, updated_at, current_version) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING id",
                [user.organization_id, definition.name, definition.description, definition.status,
                 json.dumps(definition.configuration), definition.status != "ARCHIVED", user.id, now, now],
            ).fetchone()  # fmt: skip
            assert row is not None
            workflow_id = row[0]
        document = definition.to_document()
        con.execute(
            "INSERT INTO workflow_versions (workflow_id, number, definition, content_hash, author_id, "
            "message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [workflow_id, number, json.dumps(document), digest, user.id, message, now],
        )
        self._insert_graph(con, workflow_id, number, definition)
        stored = Workflow(
            id=workflow_id, name=definition.name, description=definition.description,
            status=Status(definition.status), configuration=dict(definition.configuration),
            is_active=definition.status != "ARCHIVED",
            execution_count=existing.execution_count if existing else 0,
            last_executed_at=existing.last_executed_at if existing else None,
            owner_id=existing.owner_id if existing else user.id, organization_id=user.organization_id,
            created_at=existing.created_at if existing else now, updated_at=now, current_version=number,
        )  # fmt: skip
        version = Version(workflow_id, number, definition, digest, user.id, message, now)
        return SaveResult(stored, version, created=True)

    def _insert_graph(
        self, con: duckdb.DuckDBPyConnection, workflow_id: int, number: int, definition: Definition
    ) -> None:
        nodes = pa.table(
            {
                "workflow_id": pa.array([workflow_id] * len(definition.nodes), pa.int32()),
                "version": pa.array([number] * len(definition.nodes), pa.int32()),
                "name": [n.name for n in definition.nodes],
                "type": [n.type for n in definition.nodes],
                "config": [json.dumps(n.config) for n in definition.nodes],
                "retries": pa.array([n.retries for n in definition.nodes], pa.int32()),
                "retry_delay_seconds": [float(n.retry_delay_seconds) for n in definition.nodes],
                "timeout_seconds": pa.array([n.timeout_seconds for n in definition.nodes], pa.float64()),
                "contract": [
                    n.contract.model_dump_json(exclude_defaults=True) if n.contract else None for n in definition.nodes
                ],
                "position_x": pa.array([n.position.x if n.position else None for n in definition.nodes], pa.float64()),
                "position_y": pa.array([n.position.y if n.position else None for n in definition.nodes], pa.float64()),
            }
        )
        con.register("_weflow_nodes", nodes)
        con.execute("INSERT INTO workflow_nodes SELECT * FROM _weflow_nodes")
        con.unregister("_weflow_nodes")
        if definition.connections:
            conns = pa.table(
                {
                    "workflow_id": pa.array([workflow_id] * len(definition.connections), pa.int32()),
                    "version": pa.array([number] * len(definition.connections), pa.int32()),
                    "idx": pa.array(range(len(definition.connections)), pa.int32()),
                    "source_node": [c.from_.node for c in definition.connections],
                    "source_port": [c.from_.port or "out" for c in definition.connections],
                    "target_node": [c.to.node for c in definition.connections],
                    "target_port": pa.array([c.to.port for c in definition.connections], pa.string()),
                }
            )
            con.register("_weflow_conns", conns)
            con.execute("INSERT INTO workflow_node_connections SELECT * FROM _weflow_conns")
            con.unregister("_weflow_conns")

    def _version(self, con: duckdb.DuckDBPyConnection, workflow_id: int, number: int) -> Version:
        row = con.execute(
            "SELECT workflow_id, number, definition, content_hash, author_id, message, created_at "
            "FROM workflow_versions WHERE workflow_id = ? AND number = ?",
            [workflow_id, number],
        ).fetchone()
        if row is None:
            raise NotFoundError(f"workflow id {workflow_id} has no version {number}")
        return Version(row[0], row[1], from_data(json.loads(row[2])), row[3], row[4], row[5], row[6])

    def version(self, workflow: Workflow, number: int | None = None) -> Version:
        with self.transaction() as con:
            return self._version(con, workflow.id, number or workflow.current_version)

    def workflow_version(self, organization_id: int, name: str, number: int | None = None) -> tuple[Workflow, Version]:
        """A workflow and one of its versions (the current one by default), in one session."""
        with self.transaction() as con:
            found = self._existing(con, organization_id, name)
            if number is not None and not 1 <= number <= found.current_version:
                raise NotFoundError(f"workflow {name!r} has no version {number} (versions 1-{found.current_version})")
            return found, self._version(con, found.id, number or found.current_version)

    def versions(self, workflow: Workflow) -> list[Version]:
        with self.transaction() as con:
            rows = con.execute(
                "SELECT workflow_id, number, definition, content_hash, author_id, message, created_at "
                "FROM workflow_versions WHERE workflow_id = ? ORDER BY number",
                [workflow.id],
            ).fetchall()
        return [Version(r[0], r[1], from_data(json.loads(r[2])), r[3], r[4], r[5], r[6]) for r in rows]

    def workflows(
        self,
        organization_id: int,
        status: Status | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Workflow]:
        sql = f"SELECT {_WORKFLOW_COLUMNS} FROM workflows WHERE organization_id = ? AND deleted_at IS NULL"
        params: list[Any] = [organization_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(str(status))
        sql += " ORDER BY name LIMIT ? OFFSET ?"
        params += [limit if limit is not None else 2**62, offset]
        with self.transaction() as con:
            rows = con.execute(sql, params).fetchall()
        # one json.loads for the page's configurations: per-row calls were a quarter of listing 10,000
        configurations = json.loads("[" + ",".join(r[4] for r in rows) + "]")
        return [_workflow(r, c) for r, c in zip(rows, configurations, strict=True)]

    def delete(self, workflow: Workflow, purge: bool = False) -> None:
        """Soft delete (history kept) or purge every row of the workflow.

        DuckDB checks a foreign key against rows deleted earlier in the same transaction as
        if they were still there, so a purge deletes children and parents in separate
        transactions; the first one also soft-deletes, so every step leaves a consistent state.
        """
        with self.transaction() as con:
            con.execute("UPDATE workflows SET deleted_at = ?, is_active = false WHERE id = ?", [_now(), workflow.id])
            if not purge:
                return
            ids = "SELECT id FROM workflow_executions WHERE workflow_id = ?"
            for table in (
                "contract_failures", "node_executions", "compensations", "execution_resumes", "execution_leases",
            ):  # fmt: skip
                con.execute(f"DELETE FROM {table} WHERE execution_id IN ({ids})", [workflow.id])
            for table in ("workflow_nodes", "workflow_node_connections", "webhook_tokens", "alert_deliveries"):
                con.execute(f"DELETE FROM {table} WHERE workflow_id = ?", [workflow.id])
        with self.transaction() as con:
            for table in ("workflow_executions", "workflow_versions"):
                con.execute(f"DELETE FROM {table} WHERE workflow_id = ?", [workflow.id])
        with self.transaction() as con:
            con.execute("DELETE FROM workflows WHERE id = ?", [workflow.id])

    # --- executions -------------------------------------------------------------

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
                 execution.flow_run_id, execution.created_at or _now(), execution.started_at,
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
        allowed = {
            "status", "flow_run_id", "started_at", "finished_at", "duration_ms", "error_type",
            "error_message", "error_node", "output",
        }  # fmt: skip
        unknown = set(fields) - allowed
        if unknown:
            raise CatalogError(f"cannot set {sorted(unknown)} on an execution")
        cols = ", ".join(f"{k} = ?" for k in fields)
        values = [json.dumps(v) if isinstance(v, dict) else (str(v) if k == "status" else v) for k, v in fields.items()]
        with self.transaction() as con:
            if fields:
                con.execute(f"UPDATE workflow_executions SET {cols} WHERE id = ?", [*values, execution_id])
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
                [at or _now(), *execution_ids],
            )

    def leased(
        self, organization_id: int | None, execution_ids: Sequence[str] | None = None
    ) -> list[tuple[Execution, Lease]]:
        """Unfinished executions that a process holds, with their leases (one organization's, unless None)."""
        sql = (
            "SELECT l.host, l.pid, l.process_started, epoch_us(l.heartbeat_at), l.lease_seconds, "
            f"{_EXECUTION_COLUMNS} FROM execution_leases l JOIN {_EXECUTION_FROM} ON e.id = l.execution_id "
            "WHERE e.status IN ('QUEUED', 'RUNNING')"
        )
        params: list[Any] = []
        if organization_id is not None:
            sql += " AND w.organization_id = ?"
            params.append(organization_id)
        if execution_ids is not None:
            if not execution_ids:
                return []
            sql += f" AND l.execution_id IN ({', '.join('?' for _ in execution_ids)})"
            params.extend(execution_ids)
        with self.transaction() as con:
            rows = con.execute(sql, params).fetchall()
        return [(_execution(r[5:]), Lease(r[0], r[1], r[2], _when(r[3]), r[4])) for r in rows]

    def finish_execution(
        self,
        execution: Execution,
        nodes: Sequence[NodeExecution],
        failures: Sequence[dict[str, Any]] = (),
        only_if_unfinished: bool = False,
    ) -> bool:
        """Write the final state, every node record and the workflow counters in one transaction.

        ``only_if_unfinished``: a repair from outside; do nothing if the run already recorded its end.
        """
        with self.transaction() as con:
            if only_if_unfinished:
                row = con.execute("SELECT status FROM workflow_executions WHERE id = ?", [execution.id]).fetchone()
                if row is None or RunState(row[0]).final:
                    return False
            con.execute(
                "UPDATE workflow_executions SET status = ?, started_at = ?, finished_at = ?, duration_ms = ?, "
                "error_type = ?, error_message = ?, error_node = ?, output = ?, flow_run_id = ? WHERE id = ?",
                [str(execution.status), execution.started_at, execution.finished_at, execution.duration_ms,
                 execution.error_type, execution.error_message, execution.error_node,
                 json.dumps(execution.output) if execution.output is not None else None,
                 execution.flow_run_id, execution.id],
            )  # fmt: skip
            con.execute("DELETE FROM node_executions WHERE execution_id = ?", [execution.id])
            if nodes:
                table = pa.table(
                    {
                        "execution_id": [n.execution_id for n in nodes],
                        "node": [n.node for n in nodes],
                        "status": [str(n.status) for n in nodes],
                        "attempts": pa.array([n.attempts for n in nodes], pa.int32()),
                        "rows_in": pa.array([n.rows_in for n in nodes], pa.int64()),
                        "rows_out": pa.array([n.rows_out for n in nodes], pa.int64()),
                        "started_at": pa.array([n.started_at for n in nodes], pa.timestamp("us", "UTC")),
                        "finished_at": pa.array([n.finished_at for n in nodes], pa.timestamp("us", "UTC")),
                        "duration_ms": pa.array([n.duration_ms for n in nodes], pa.float64()),
                        "error": pa.array([n.error for n in nodes], pa.string()),
                        "contract": pa.array(
                            [json.dumps(n.contract) if n.contract is not None else None for n in nodes], pa.string()
                        ),
                        "fused_group": pa.array([n.group for n in nodes], pa.string()),
                        "output_path": pa.array([n.output_path for n in nodes], pa.string()),
                    }
                )
                con.register("_weflow_node_runs", table)
                con.execute(f"INSERT INTO node_executions ({_NODE_EXECUTION_COLUMNS}) SELECT * FROM _weflow_node_runs")
                con.unregister("_weflow_node_runs")
            if failures:
                table = pa.table(
                    {
                        "execution_id": [execution.id] * len(failures),
                        "node": [f["node"] for f in failures],
                        "column_name": pa.array([f.get("column") for f in failures], pa.string()),
                        "check_name": pa.array([f.get("check") for f in failures], pa.string()),
                        "failure_case": pa.array([f.get("failure_case") for f in failures], pa.string()),
                        "row_index": pa.array([f.get("index") for f in failures], pa.int64()),
                    }
                )
                con.register("_weflow_failures", table)
                con.execute("INSERT INTO contract_failures SELECT * FROM _weflow_failures")
                con.unregister("_weflow_failures")
            if execution.compensations:
                con.execute("DELETE FROM compensations WHERE execution_id = ?", [execution.id])
                for seq, c in enumerate(execution.compensations):
                    con.execute(
                        "INSERT INTO compensations VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [execution.id, seq, c.node, c.action, c.status, c.detail, c.at or _now()],
                    )
            if execution.status.final:
                con.execute("DELETE FROM execution_leases WHERE execution_id = ?", [execution.id])
                con.execute(
                    "UPDATE workflows SET execution_count = execution_count + 1, last_executed_at = ? WHERE id = ?",
                    [execution.finished_at or _now(), execution.workflow_id],
                )
        return True

    def execution(self, execution_id: str, organization_id: int | None = None) -> Execution:
        with self.transaction() as con:
            sql = f"SELECT {_EXECUTION_COLUMNS} FROM {_EXECUTION_FROM} WHERE e.id = ?"
            params: list[Any] = [execution_id]
            if organization_id is not None:
                sql += " AND w.organization_id = ?"
                params.append(organization_id)
            row = con.execute(sql, params).fetchone()
            if row is None:
                raise NotFoundError(f"no execution {execution_id!r}")
            nodes = con.execute(
                f"SELECT {_NODE_EXECUTION_COLUMNS} FROM node_executions WHERE execution_id = ? "
                "ORDER BY started_at NULLS LAST, node",
                [execution_id],
            ).fetchall()
            undone = con.execute(
                "SELECT node, action, status, detail, done_at FROM compensations WHERE execution_id = ? ORDER BY seq",
                [execution_id],
            ).fetchall()
        return _execution(row, tuple(_node_execution(n) for n in nodes), tuple(Compensation(*c) for c in undone))

    def executions(
        self, organization_id: int, workflow_id: int | None = None, limit: int = 100, offset: int = 0
    ) -> list[Execution]:
        sql = f"SELECT {_EXECUTION_COLUMNS} FROM {_EXECUTION_FROM} WHERE w.organization_id = ?"
        params: list[Any] = [organization_id]
        if workflow_id is not None:
            sql += " AND e.workflow_id = ?"
            params.append(workflow_id)
        sql += " ORDER BY e.created_at DESC LIMIT ? OFFSET ?"
        with self.transaction() as con:
            return [_execution(r) for r in con.execute(sql, [*params, limit, offset]).fetchall()]

    def stats(self, organization_id: int, workflow: str | None = None, since: datetime | None = None) -> dict[str, Any]:
        """Per-workflow metrics over finished executions (from the ``execution_metrics`` view)."""
        where = "m.organization_id = ? AND m.status IN ('SUCCEEDED', 'FAILED', 'TIMED_OUT', 'CANCELLED')"
        params: list[Any] = [organization_id]
        if workflow is not None:
            where += " AND m.workflow = ?"
            params.append(workflow)
        if since is not None:
            where += " AND m.started_at >= ?"
            params.append(since)
        with self.transaction() as con:
            runs = con.execute(
                "SELECT workflow, count(*), count(*) FILTER (WHERE status = 'SUCCEEDED'), "
                "count(*) FILTER (WHERE status IN ('FAILED', 'TIMED_OUT')), "
                "quantile_cont(duration_ms, 0.5), quantile_cont(duration_ms, 0.95), max(duration_ms), "
                f"sum(rows_out), sum(contract_failures) FROM execution_metrics m WHERE {where} "
                "GROUP BY workflow ORDER BY workflow",
                params,
            ).fetchall()
            failures = con.execute(
                "SELECT m.workflow, n.node, coalesce(m.error_type, n.status), count(*) FROM node_executions n "
                f"JOIN execution_metrics m ON m.execution_id = n.execution_id WHERE {where} "
                "AND n.status IN ('FAILED', 'TIMED_OUT') GROUP BY ALL ORDER BY 1, 4 DESC, 2",
                params,
            ).fetchall()
        out: dict[str, Any] = {}
        for name, total, ok, failed, p50, p95, top, rows, contract in runs:
            out[name] = {
                "runs": total, "succeeded": ok, "failed": failed, "success_rate": ok / total if total else None,
                "duration_ms": {"p50": p50, "p95": p95, "max": top}, "rows_out": rows,
                "contract_failures": contract, "failures_by_node": [],
            }  # fmt: skip
        for name, node, error_type, count in failures:
            out[name]["failures_by_node"].append({"node": node, "error_type": error_type, "count": count})
        return out

    def contract_failures(self, execution_id: str) -> list[dict[str, Any]]:
        with self.transaction() as con:
            rows = con.execute(
                "SELECT node, column_name, check_name, failure_case, row_index FROM contract_failures "
                "WHERE execution_id = ? ORDER BY node, row_index",
                [execution_id],
            ).fetchall()
        keys = ("node", "column", "check", "failure_case", "index")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    # --- alerts -------------------------------------------------------------------

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
        sql = (
            "SELECT workflow_id, subject, rule, kind, target, status, attempts, payload, last_error, created_at, "
            "delivered_at FROM alert_deliveries WHERE true"
        )
        params: list[Any] = []
        if workflow_id is not None:
            sql += " AND workflow_id = ?"
            params.append(workflow_id)
        if subject is not None:
            sql += " AND subject = ?"
            params.append(subject)
        with self.transaction() as con:
            rows = con.execute(sql + " ORDER BY created_at, rule", params).fetchall()
        return [
            AlertDelivery(
                workflow_id=r[0],
                subject=r[1],
                rule=r[2],
                kind=r[3],
                target=r[4],
                status=r[5],
                attempts=r[6],
                payload=json.loads(r[7]),
                last_error=r[8],
                created_at=r[9],
                delivered_at=r[10],
            )
            for r in rows
        ]
