"""Retention on the storage side: which ended executions a policy lets go, and removing their rows.

An execution's rows: itself, its node executions, contract failures, compensations, lease, the
resume links from or to it and the alert deliveries about it, all in one transaction per batch.
Versions and the counters of ``metrics`` are never touched. Files are the
service's (``weflow.retention``): here only which paths the removed rows named, and which of some
paths kept executions still name.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import pyarrow as pa

from weflow.catalog.session import Repository
from weflow.core.model import Retention

_ENDED = "status NOT IN ('QUEUED', 'RUNNING')"
_GONE = "(SELECT id FROM _weflow_gone)"
# table -> the condition naming an execution of {ids} that goes; counted and deleted in this order
DEPENDENTS = {
    "node_executions": "execution_id IN {ids}",
    "contract_failures": "execution_id IN {ids}",
    "compensations": "execution_id IN {ids}",
    "execution_cursors": "execution_id IN {ids}",
    "execution_resumes": "(execution_id IN {ids} OR resumed_from IN {ids})",
    "execution_leases": "execution_id IN {ids}",
    "alert_deliveries": "subject IN {ids}",
}


@dataclass(frozen=True)
class Target:
    """A workflow (deleted ones too) and the retention its current version asks for."""

    workflow_id: int
    organization: str
    workflow: str
    retention: Retention


@dataclass
class Removed:
    """Rows a prune removed (or would remove), per table, and the output paths the removed node rows named."""

    rows: dict[str, int] = field(default_factory=dict)
    paths: set[str] = field(default_factory=set)

    def add(self, other: Removed) -> None:
        for table, count in other.rows.items():
            self.rows[table] = self.rows.get(table, 0) + count
        self.paths |= other.paths


def _ids(con: duckdb.DuckDBPyConnection, name: str, values: Iterable[str]) -> None:
    """A temporary table ``name`` of ids (it ends with the session's connection)."""
    con.register("_weflow_ids", pa.table({"id": pa.array(list(values), pa.string())}))
    con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT DISTINCT id FROM _weflow_ids")
    con.unregister("_weflow_ids")


class Retentions(Repository):
    def retention_targets(self) -> list[Target]:
        """Every workflow of the catalog with the ``settings.retention`` of its current version."""
        sql = (
            "SELECT w.id, o.name, w.name, json_extract(v.definition, '$.settings.retention') FROM workflows w "
            "JOIN organizations o ON o.id = w.organization_id "
            "JOIN workflow_versions v ON v.workflow_id = w.id AND v.number = w.current_version ORDER BY o.name, w.name"
        )
        with self.transaction() as con:
            rows = con.execute(sql).fetchall()
        return [Target(i, org, name, Retention.model_validate(json.loads(r) if r else {})) for i, org, name, r in rows]

    def expired(
        self, workflow_id: int, max_age_days: float, max_executions: int, now: datetime, limit: int
    ) -> list[str]:
        """Up to ``limit`` ended executions of a workflow past either bound (0: no bound), oldest first."""
        if not max_age_days and not max_executions:
            return []
        cutoff = now - timedelta(days=max_age_days) if max_age_days else None
        sql = (
            "SELECT id FROM (SELECT id, created_at, row_number() OVER (ORDER BY created_at DESC, id DESC) AS k "
            f"FROM workflow_executions WHERE workflow_id = ? AND {_ENDED}) "
            "WHERE (? > 0 AND k > ?) OR created_at < ? ORDER BY created_at, id LIMIT ?"
        )
        with self.transaction() as con:
            rows = con.execute(sql, [workflow_id, max_executions, max_executions, cutoff, limit]).fetchall()
        return [r[0] for r in rows]

    def remove_executions(self, ids: Sequence[str], dry_run: bool = False, counted: Sequence[str] = ()) -> Removed:
        """Remove ended executions with every row that hangs off them (``dry_run``: only count them).

        ``counted``: executions an earlier batch of a dry run counted (a resume link between two is counted once).
        """
        removed = Removed()
        if not ids:
            return removed
        with self.transaction() as con:
            _ids(con, "_weflow_gone", ids)
            _ids(con, "_weflow_counted", counted)
            con.execute(f"DELETE FROM _weflow_gone WHERE id NOT IN (SELECT id FROM workflow_executions WHERE {_ENDED})")
            found = con.execute(
                f"SELECT DISTINCT output_path FROM node_executions WHERE execution_id IN {_GONE} "
                "AND output_path IS NOT NULL"
            ).fetchall()
            removed.paths = {r[0] for r in found}
            for table, naming in DEPENDENTS.items():
                condition = naming.format(ids=_GONE)
                before = naming.format(ids="(SELECT id FROM _weflow_counted)")
                row = con.execute(f"SELECT count(*) FROM {table} WHERE {condition} AND NOT {before}").fetchone()
                removed.rows[table] = row[0] if row else 0
                if not dry_run:
                    con.execute(f"DELETE FROM {table} WHERE {condition}")
            row = con.execute(f"SELECT count(*) FROM {_GONE}").fetchone()
            removed.rows["workflow_executions"] = row[0] if row else 0
            if not dry_run:
                con.execute(f"DELETE FROM workflow_executions WHERE id IN {_GONE}")
        return removed

    def expired_alerts(self, workflow_id: int, before: datetime, dry_run: bool = False) -> int:
        """Missed-schedule alert deliveries of a workflow made ``before`` (the others go with their execution)."""
        condition = "workflow_id = ? AND subject LIKE 'missed:%' AND created_at < ?"
        with self.transaction() as con:
            row = con.execute(f"SELECT count(*) FROM alert_deliveries WHERE {condition}", [workflow_id, before])
            count = (row.fetchone() or (0,))[0]
            if count and not dry_run:
                con.execute(f"DELETE FROM alert_deliveries WHERE {condition}", [workflow_id, before])
        return int(count)

    def named_paths(self, tails: Iterable[str], excluding: Sequence[str] = ()) -> list[str]:
        """Output paths that node executions (not of ``excluding``) name, whose last two parts are in ``tails``.

        Matched by ``dir/file`` and compared resolved by the caller: one file may be named relative to
        one process's folder and absolutely by another.
        """
        wanted = set(tails)
        if not wanted:
            return []
        with self.transaction() as con:
            _ids(con, "_weflow_tails", wanted)
            _ids(con, "_weflow_gone", excluding)
            rows = con.execute(
                "SELECT DISTINCT output_path FROM node_executions WHERE output_path IS NOT NULL "
                f"AND execution_id NOT IN {_GONE} "
                "AND regexp_extract(output_path, '[^/]+/[^/]+$') IN (SELECT id FROM _weflow_tails)"
            ).fetchall()
        return [r[0] for r in rows]

    def last_pruned(self) -> datetime | None:
        """When a prune of the whole catalog last finished (None: never)."""
        with self.transaction() as con:
            row = con.execute("SELECT finished_at FROM retention_runs WHERE id = 1").fetchone()
        return row[0] if row else None

    def mark_pruned(self, at: datetime) -> None:
        with self.transaction() as con:
            con.execute("INSERT OR REPLACE INTO retention_runs VALUES (1, ?)", [at])
