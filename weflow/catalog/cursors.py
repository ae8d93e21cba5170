"""Incremental cursors: where each incremental source of a workflow got to, and what each run read.

``cursors`` holds one row per (workflow, node), the organization's own: the highest cursor value a
SUCCEEDED run read, moved in the transaction that writes the run's end (``record``), never back
(only ``reset`` moves it down or clears it). ``execution_cursors`` keeps every run's window (start,
end, mode), so that a resumed run reads from the start of the run it resumes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from weflow.catalog.session import Repository
from weflow.core import cursors
from weflow.core.cursors import Kind, Mode, Window
from weflow.core.entities import Execution, RunState
from weflow.errors import NotFoundError


@dataclass(frozen=True)
class Cursor:
    """Where one incremental source stands: its column's last value read, when, by which execution."""

    node: str
    column: str
    kind: Kind
    value: str
    updated_at: datetime
    execution_id: str | None  # None: set by ``weflow cursors reset``


_CURSOR = "node, column_name, kind, value, updated_at, execution_id"


def _current(con: duckdb.DuckDBPyConnection, workflow_id: int) -> dict[str, Cursor]:
    rows = con.execute(f"SELECT {_CURSOR} FROM cursors WHERE workflow_id = ? ORDER BY node", [workflow_id]).fetchall()
    return {r[0]: Cursor(*r) for r in rows}


def _is_backfill(con: duckdb.DuckDBPyConnection, execution: Execution) -> bool:
    """A run a backfill queued: its slot names it, or (not yet written back) is claimed for its interval."""
    start = (execution.input_data or {}).get("interval_start")
    row = con.execute(
        "SELECT count(*) FROM backfill_slots WHERE workflow_id = ? AND (execution_id = ? OR (? IS NOT NULL "
        "AND execution_id IS NULL AND status = 'QUEUED' AND interval_start = TRY_CAST(? AS TIMESTAMPTZ)))",
        [execution.workflow_id, execution.id, start, start if isinstance(start, str) else None],
    ).fetchone()
    return bool(row and row[0])


def record(con: duckdb.DuckDBPyConnection, execution: Execution, windows: Sequence[Window]) -> None:
    """Store what the run read; when it SUCCEEDED, move each cursor forward to its end (in the caller's transaction)."""
    if not windows:
        return
    con.execute("DELETE FROM execution_cursors WHERE execution_id = ?", [execution.id])
    for w in windows:
        con.execute(
            "INSERT INTO execution_cursors VALUES (?, ?, ?, ?, ?, ?, ?)",
            [execution.id, w.node, w.column, w.kind, w.start, w.end, w.mode],
        )
    if execution.status is not RunState.SUCCEEDED:
        return  # a failed run moves nothing: its rows are read again
    organization = con.execute("SELECT organization_id FROM workflows WHERE id = ?", [execution.workflow_id]).fetchone()
    now = execution.finished_at or datetime.now(UTC)
    current = _current(con, execution.workflow_id)
    for w in windows:
        if w.mode == "backfill" or w.end is None or w.kind is None:
            continue
        old = current.get(w.node)
        if old is not None and old.column == w.column and not cursors.above(w.end, w.kind, old.value, old.kind):
            continue
        _put(con, organization[0] if organization else 0, execution.workflow_id, w, now, execution.id)


def _put(
    con: duckdb.DuckDBPyConnection, organization_id: int, workflow_id: int, w: Window, at: datetime, by: str | None
) -> None:
    con.execute(
        "INSERT INTO cursors VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (workflow_id, node) DO UPDATE SET "
        "column_name = excluded.column_name, kind = excluded.kind, value = excluded.value, "
        "updated_at = excluded.updated_at, execution_id = excluded.execution_id",
        [organization_id, workflow_id, w.node, w.column, w.kind, w.end, at, by],
    )


class Cursors(Repository):
    """The cursors of a workflow's incremental sources; every call names the organization."""

    def cursors(self, organization_id: int, workflow_id: int) -> list[Cursor]:
        with self.transaction() as con:
            _owned(con, organization_id, workflow_id)
            return list(_current(con, workflow_id).values())

    def windows(
        self, execution: Execution, sources: Mapping[str, str], full_refresh: bool = False
    ) -> dict[str, Window]:
        """What each incremental source (node -> cursor column) of this run reads, in one session.

        A backfill's run and a full refresh (asked here, or with ``mark_full_refresh`` when the run was
        queued) read everything; a resumed run reads from the start of the run it resumes (and a
        source it reuses keeps that run's end); any other from the cursor.
        """
        if not sources:
            return {}
        with self.transaction() as con:
            full_refresh = full_refresh or _marked(con, execution.id)
            backfill = _is_backfill(con, execution)
            mode: Mode = "backfill" if backfill else "full_refresh" if full_refresh else "incremental"
            if mode != "incremental":
                return {n: Window(n, c, mode=mode) for n, c in sources.items()}
            current = _current(con, execution.workflow_id)
            earlier = _windows_of(con, execution.resumed_from) if execution.resumed_from else {}
        found = {}
        for node, column in sources.items():
            if node in earlier and earlier[node].column == column:
                found[node] = earlier[node]
                continue
            at = current.get(node)
            same = at is not None and at.column == column  # a cursor on another column starts again
            found[node] = Window(node, column, at.kind if same and at else None, at.value if same and at else None)
        return found

    def mark_full_refresh(self, execution_id: str, sources: Mapping[str, str]) -> None:
        """Before a queued run starts: its incremental sources (node -> column) read every row."""
        with self.transaction() as con:
            for node, column in sources.items():
                con.execute(
                    "INSERT OR REPLACE INTO execution_cursors VALUES (?, ?, ?, NULL, NULL, NULL, 'full_refresh')",
                    [execution_id, node, column],
                )

    def reset(
        self, organization_id: int, workflow_id: int, node: str, column: str, to: tuple[Kind, str] | None
    ) -> Cursor | None:
        """Move the cursor of ``node`` to ``to`` (kind, text), or clear it (None): the next run reads everything."""
        with self.transaction() as con:
            _owned(con, organization_id, workflow_id)
            if to is None:
                con.execute("DELETE FROM cursors WHERE workflow_id = ? AND node = ?", [workflow_id, node])
                return None
            at = datetime.now(UTC)
            _put(con, organization_id, workflow_id, Window(node, column, to[0], end=to[1]), at, None)
            return _current(con, workflow_id)[node]


def _marked(con: duckdb.DuckDBPyConnection, execution_id: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM execution_cursors WHERE execution_id = ? AND mode = 'full_refresh'", [execution_id]
    ).fetchone()
    return bool(row and row[0])


def _owned(con: duckdb.DuckDBPyConnection, organization_id: int, workflow_id: int) -> None:
    row = con.execute(
        "SELECT count(*) FROM workflows WHERE id = ? AND organization_id = ?", [workflow_id, organization_id]
    ).fetchone()
    if not row or not row[0]:
        raise NotFoundError(f"no workflow #{workflow_id}")


def _windows_of(con: duckdb.DuckDBPyConnection, execution_id: str) -> dict[str, Window]:
    """The windows an earlier run read: a resume reads from their starts (and keeps the ends of sources it reuses)."""
    rows = con.execute(
        "SELECT node, column_name, kind, start_value, end_value, mode FROM execution_cursors WHERE execution_id = ?",
        [execution_id],
    ).fetchall()
    return {r[0]: Window(*r) for r in rows}
