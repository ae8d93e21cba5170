"""Workflows and their immutable versions: the definitions side of the catalog."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import pyarrow as pa

from weflow.catalog.rows import Columns, Fetched, insert
from weflow.catalog.session import Repository
from weflow.core.document import content_hash, from_data
from weflow.core.entities import Status, User, Version, Workflow
from weflow.core.model import Definition
from weflow.errors import NotFoundError

WORKFLOW = Columns(Workflow)
_VERSION = Columns(Version, decoders={"definition": lambda stored: from_data(json.loads(stored))})


@dataclass(frozen=True)
class SaveResult:
    workflow: Workflow
    version: Version
    created: bool  # False when the save changed nothing and no version was made


def _graph_nodes(workflow_id: int, number: int, definition: Definition) -> pa.Table:
    nodes = definition.nodes
    return pa.table(
        {
            "workflow_id": pa.array([workflow_id] * len(nodes), pa.int32()),
            "version": pa.array([number] * len(nodes), pa.int32()),
            "name": [n.name for n in nodes],
            "type": [n.type for n in nodes],
            "config": [json.dumps(n.config) for n in nodes],
            "retries": pa.array([n.retries for n in nodes], pa.int32()),
            "retry_delay_seconds": [float(n.retry_delay_seconds) for n in nodes],
            "timeout_seconds": pa.array([n.timeout_seconds for n in nodes], pa.float64()),
            "contract": [n.contract.model_dump_json(exclude_defaults=True) if n.contract else None for n in nodes],
            "position_x": pa.array([n.position.x if n.position else None for n in nodes], pa.float64()),
            "position_y": pa.array([n.position.y if n.position else None for n in nodes], pa.float64()),
        }
    )


def _graph_connections(workflow_id: int, number: int, definition: Definition) -> pa.Table:
    conns = definition.connections
    return pa.table(
        {
            "workflow_id": pa.array([workflow_id] * len(conns), pa.int32()),
            "version": pa.array([number] * len(conns), pa.int32()),
            "idx": pa.array(range(len(conns)), pa.int32()),
            "source_node": [c.from_.node for c in conns],
            "source_port": [c.from_.port or "out" for c in conns],
            "target_node": [c.to.node for c in conns],
            "target_port": pa.array([c.to.port for c in conns], pa.string()),
        }
    )


def _insert_graph(con: duckdb.DuckDBPyConnection, workflow_id: int, number: int, definition: Definition) -> None:
    insert(con, "workflow_nodes", _graph_nodes(workflow_id, number, definition))
    if definition.connections:
        insert(con, "workflow_node_connections", _graph_connections(workflow_id, number, definition))


class Workflows(Repository):
    def find_workflow(self, con: duckdb.DuckDBPyConnection, organization_id: int, name: str) -> Workflow | None:
        return WORKFLOW.one(
            con.execute(
                f"SELECT {WORKFLOW.select} FROM workflows "
                "WHERE organization_id = ? AND name = ? AND deleted_at IS NULL",
                [organization_id, name],
            )
        )

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
            found = WORKFLOW.one(
                con.execute(
                    f"SELECT {WORKFLOW.select} FROM workflows "
                    "WHERE organization_id = ? AND id = ? AND deleted_at IS NULL",
                    [organization_id, workflow_id],
                )
            )
        if found is None:
            raise NotFoundError(f"no workflow with id {workflow_id}")
        return found

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
        existing = self.find_workflow(con, user.organization_id, definition.name)
        if existing is not None:
            current = self._version(con, existing.id, existing.current_version)
            if current.content_hash == digest:
                return SaveResult(existing, current, created=False)
        now = datetime.now(UTC)
        workflow_id, number = _store_workflow(con, definition, user, existing, now)
        con.execute(
            "INSERT INTO workflow_versions (workflow_id, number, definition, content_hash, author_id, "
            "message, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [workflow_id, number, json.dumps(definition.to_document()), digest, user.id, message, now],
        )
        _insert_graph(con, workflow_id, number, definition)
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

    def _version(self, con: duckdb.DuckDBPyConnection, workflow_id: int, number: int) -> Version:
        found = _VERSION.one(
            con.execute(
                f"SELECT {_VERSION.select} FROM workflow_versions WHERE workflow_id = ? AND number = ?",
                [workflow_id, number],
            )
        )
        if found is None:
            raise NotFoundError(f"workflow id {workflow_id} has no version {number}")
        return found

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
            return _VERSION.all(
                con.execute(
                    f"SELECT {_VERSION.select} FROM workflow_versions WHERE workflow_id = ? ORDER BY number",
                    [workflow.id],
                )
            )

    def workflows(
        self,
        organization_id: int,
        status: Status | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[Workflow]:
        sql = f"SELECT {WORKFLOW.select} FROM workflows WHERE organization_id = ? AND deleted_at IS NULL"
        params: list[Any] = [organization_id]
        if status is not None:
            sql += " AND status = ?"
            params.append(str(status))
        sql += " ORDER BY name LIMIT ? OFFSET ?"
        params += [limit if limit is not None else 2**62, offset]
        with self.transaction() as con:
            fetched = Fetched.of(con.execute(sql, params))
        return WORKFLOW.records(fetched, configuration=_json_page)

    def delete(self, workflow: Workflow, purge: bool = False) -> None:
        """Soft delete (history kept) or purge every row of the workflow, in one transaction."""
        with self.transaction() as con:
            now = datetime.now(UTC)
            con.execute("UPDATE workflows SET deleted_at = ?, is_active = false WHERE id = ?", [now, workflow.id])
            if not purge:
                return
            ids = "SELECT id FROM workflow_executions WHERE workflow_id = ?"
            for table in (
                "contract_failures", "node_executions", "compensations", "execution_resumes", "execution_leases",
                "execution_cursors",
            ):  # fmt: skip
                con.execute(f"DELETE FROM {table} WHERE execution_id IN ({ids})", [workflow.id])
            for table in (
                "workflow_nodes", "workflow_node_connections", "webhook_tokens", "alert_deliveries", "execution_hours",
                "node_failure_hours", "recent_durations", "sample_pins", "cursors",
            ):  # fmt: skip
                con.execute(f"DELETE FROM {table} WHERE workflow_id = ?", [workflow.id])
            for table in ("workflow_executions", "workflow_versions"):
                con.execute(f"DELETE FROM {table} WHERE workflow_id = ?", [workflow.id])
            con.execute("DELETE FROM workflows WHERE id = ?", [workflow.id])


def _json_page(documents: list[str]) -> list[Any]:
    # one json.loads for the page's configurations: per-row calls were a quarter of listing 10,000
    return list(json.loads("[" + ",".join(documents) + "]"))


def _store_workflow(
    con: duckdb.DuckDBPyConnection, definition: Definition, user: User, existing: Workflow | None, now: datetime
) -> tuple[int, int]:
    """Insert the workflow row or move it to its next version: its id and the new version number."""
    configuration = json.dumps(definition.configuration)
    active = definition.status != "ARCHIVED"
    if existing is not None:
        number = existing.current_version + 1
        con.execute(
            "UPDATE workflows SET description = ?, status = ?, configuration = ?, is_active = ?, "
            "updated_at = ?, current_version = ? WHERE id = ?",
            [definition.description, definition.status, configuration, active, now, number, existing.id],
        )
        return existing.id, number
    row = con.execute(
        "INSERT INTO workflows (organization_id, name, description, status, configuration, "
        "is_active, owner_id, created_at, updated_at, current_version) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1) RETURNING id",
        [user.organization_id, definition.name, definition.description, definition.status, configuration,
         active, user.id, now, now],
    ).fetchone()  # fmt: skip
    assert row is not None
    return row[0], 1
