"""Backfills and their slots (migration 7): which interval of a workflow has a run, and which backfill queued it.

A slot row is unique per (workflow, interval_start), so a second backfill of a range takes over only
the slots with no run to duplicate: never run (PENDING) or ended without success (unless ``rerun``,
which also takes succeeded ones). A slot whose run is queued or running is never taken. A run of the
same interval started another way (a scheduled run, with the ``interval_start`` input bound) counts
too. Queueing a slot is a conditional update (``claim_slot``): a backfill that lost the slot to a
newer one cannot queue it as well.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import duckdb
import pyarrow as pa

from weflow.catalog.rows import Columns, Fetched, insert, when
from weflow.catalog.session import Repository
from weflow.core.intervals import LIVE, PENDING, Backfill, BackfillSlot, Slot
from weflow.errors import NotFoundError

_BACKFILL = Columns(Backfill, skip=frozenset({"items"}))
_SLOT = Columns(
    BackfillSlot, prefix="s.", sources={"status": "coalesce(e.status, s.status)"}
)  # a queued slot's status is its execution's, read live
_ENDED_OK = "SUCCEEDED"


def _existing(
    con: duckdb.DuckDBPyConnection, workflow_id: int, starts: list[datetime]
) -> tuple[dict[datetime, str], set[datetime]]:
    """The status of each of ``starts`` that has a slot row or a run with that ``interval_start`` input; the rows."""
    found: dict[datetime, str] = {}
    if not starts:
        return found, set()
    rows = con.execute(
        "SELECT epoch_us(s.interval_start), coalesce(e.status, s.status) FROM backfill_slots s "
        "LEFT JOIN workflow_executions e ON e.id = s.execution_id "
        "WHERE s.workflow_id = ? AND list_contains(?, s.interval_start)",
        [workflow_id, starts],
    ).fetchall()
    found.update({when(start): status for start, status in rows})
    with_rows = set(found)
    others = con.execute(
        "SELECT json_extract_string(input_data, '$.interval_start'), status FROM workflow_executions "
        "WHERE workflow_id = ? AND status IN ('QUEUED', 'RUNNING', 'SUCCEEDED') "
        "AND list_contains(?, json_extract_string(input_data, '$.interval_start'))",
        [workflow_id, [s.isoformat() for s in starts]],
    ).fetchall()
    by_text = {s.isoformat(): s for s in starts}
    for text, status in others:
        start = by_text[text]
        if found.get(start) not in LIVE - {PENDING}:  # a live run wins over a succeeded one
            found[start] = status
    return found, with_rows


def _taken(status: str | None, rerun: bool) -> bool:
    """Whether a new backfill takes a slot in this status (None: the slot never had a row or a run)."""
    if status is None or status == PENDING:
        return True
    if status in LIVE:
        return False
    return rerun or status != _ENDED_OK


class Backfills(Repository):
    def create_backfill(self, backfill: Backfill, wanted: Sequence[Slot]) -> Backfill:
        """Store ``backfill`` with the slots of ``wanted`` it takes (see the module); ``skipped`` counts the rest."""
        with self.transaction() as con:
            existing, with_rows = _existing(con, backfill.workflow_id, [s.start for s in wanted])
            mine = [s for s in wanted if _taken(existing.get(s.start), backfill.rerun)]
            stored = Backfill(**{**vars(backfill), "skipped": len(wanted) - len(mine), "items": ()})
            insert(con, "backfills", _BACKFILL.arrow([stored]), _BACKFILL.names)
            known = [s.start for s in mine if s.start in with_rows]
            if known:  # taken over: the row is this backfill's now, not run yet
                con.execute(
                    "UPDATE backfill_slots SET backfill_id = ?, status = ?, execution_id = NULL, error = NULL "
                    "WHERE workflow_id = ? AND list_contains(?, interval_start)",
                    [backfill.id, PENDING, backfill.workflow_id, known],
                )
            new = [s for s in mine if s.start not in with_rows]
            rows = pa.table(
                {
                    "workflow_id": pa.array([backfill.workflow_id] * len(new), pa.int64()),
                    "interval_start": pa.array([s.start for s in new], pa.timestamp("us", "UTC")),
                    "interval_end": pa.array([s.end for s in new], pa.timestamp("us", "UTC")),
                    "backfill_id": pa.array([backfill.id] * len(new), pa.string()),
                    "status": pa.array([PENDING] * len(new), pa.string()),
                }
            )
            insert(con, "backfill_slots", rows, rows.column_names)
        return self.backfill(backfill.id, backfill.organization_id)

    def backfill(self, backfill_id: str, organization_id: int) -> Backfill:
        """One backfill of the organization with its slots, statuses brought up to date from their executions."""
        with self.transaction() as con:
            found = _BACKFILL.one(
                con.execute(
                    f"SELECT {_BACKFILL.select} FROM backfills WHERE id = ? AND organization_id = ?",
                    [backfill_id, organization_id],
                )
            )
            if found is None:
                raise NotFoundError(f"no backfill {backfill_id!r}")
            items = self._slots(con, [backfill_id]).get(backfill_id, [])
        return Backfill(**{**vars(found), "items": tuple(items)})

    def backfills(self, organization_id: int, workflow_id: int | None = None, limit: int = 50) -> list[Backfill]:
        """The organization's backfills (of one workflow, if given), newest first, with their slots."""
        with self.transaction() as con:
            sql = f"SELECT {_BACKFILL.select} FROM backfills WHERE organization_id = ?"
            params: list[object] = [organization_id]
            if workflow_id is not None:
                sql += " AND workflow_id = ?"
                params.append(workflow_id)
            found = _BACKFILL.all(con.execute(sql + " ORDER BY created_at DESC, id LIMIT ?", [*params, limit]))
            items = self._slots(con, [b.id for b in found])
        return [Backfill(**{**vars(b), "items": tuple(items.get(b.id, []))}) for b in found]

    @staticmethod
    def _slots(con: duckdb.DuckDBPyConnection, ids: list[str]) -> dict[str, list[BackfillSlot]]:
        fetched = Fetched.of(
            con.execute(
                f"SELECT s.backfill_id AS backfill_id, {_SLOT.select} FROM backfill_slots s "
                "LEFT JOIN workflow_executions e ON e.id = s.execution_id "
                "WHERE list_contains(?, s.backfill_id) ORDER BY s.interval_start",
                [ids],
            )
        )
        out: dict[str, list[BackfillSlot]] = {}
        for row, slot in zip(fetched.rows, _SLOT.records(fetched), strict=True):
            out.setdefault(row[0], []).append(slot)
        return out

    def claim_slots(self, backfill_id: str, workflow_id: int, starts: Sequence[datetime]) -> list[datetime]:
        """Mark PENDING slots of this backfill QUEUED (about to be submitted); those that still were."""
        if not starts:
            return []
        with self.transaction() as con:
            rows = con.execute(
                "UPDATE backfill_slots SET status = 'QUEUED' WHERE workflow_id = ? "
                "AND list_contains(?, interval_start) AND backfill_id = ? AND status = ? "
                "RETURNING epoch_us(interval_start)",
                [workflow_id, list(starts), backfill_id, PENDING],
            ).fetchall()
        return sorted(when(r[0]) for r in rows)

    def set_slots(self, workflow_id: int, outcomes: Sequence[tuple[datetime, str, str | None, str | None]]) -> None:
        """Each slot's (start, status, execution id, error) after it was submitted, in one session."""
        if not outcomes:
            return
        with self.transaction() as con:
            for start, status, execution_id, error in outcomes:  # a few rows: at most --max-parallel
                con.execute(
                    "UPDATE backfill_slots SET status = ?, execution_id = ?, error = ? "
                    "WHERE workflow_id = ? AND interval_start = ?",
                    [status, execution_id, error, workflow_id, start],
                )

    def end_backfill(self, backfill_id: str, status: str) -> bool:
        """End a RUNNING backfill with ``status``; slots not queued yet become CANCELLED. False if it had ended."""
        with self.transaction() as con:
            row = con.execute(
                "UPDATE backfills SET status = ?, finished_at = now() WHERE id = ? AND status = 'RUNNING' RETURNING 1",
                [status, backfill_id],
            ).fetchone()
            con.execute(
                "UPDATE backfill_slots SET status = 'CANCELLED' WHERE backfill_id = ? AND status = ?",
                [backfill_id, PENDING],
            )
            con.execute(
                "UPDATE backfill_slots s SET status = e.status FROM workflow_executions e "
                "WHERE e.id = s.execution_id AND s.backfill_id = ? AND s.status <> e.status",
                [backfill_id],
            )  # the runs' last known ends, kept should retention remove them
        return row is not None
