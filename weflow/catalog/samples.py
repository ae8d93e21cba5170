"""Pinned samples (migration 8): one row per (workflow, source node) naming its Parquet file and what it holds.

The file lives in the catalog's samples folder (``weflow.samples`` decides where); the row says which
definition of the source it was taken from (``source_hash``: a pin whose hash differs from the source's
current one is stale), where its rows came from (an execution's kept output, or a bounded read) and its
shape. Pinning a node again replaces its row. No foreign keys (see migration 6): a purge deletes the rows.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from weflow.catalog.rows import when
from weflow.catalog.session import Repository

_SELECT = (
    "SELECT node, source_hash, path, rows, columns, version, execution_id, epoch_us(pinned_at) "
    "FROM sample_pins WHERE workflow_id = ?"
)


@dataclass(frozen=True)
class Pin:
    """A pinned sample of one source node's output."""

    node: str
    source_hash: str  # the hash of the source's definition it was taken from
    path: str  # the Parquet file, relative to the workflow's samples folder
    rows: int
    columns: tuple[tuple[str, str], ...]  # (name, Polars dtype)
    version: int  # the workflow version whose source it was taken from
    execution_id: str | None  # the run whose kept output it is; None: a bounded read
    pinned_at: datetime


class Pins(Repository):
    """The pinned samples of workflows; each method is one short transaction."""

    def pins(self, workflow_id: int, node: str | None = None) -> list[Pin]:
        sql, params = _SELECT, list[Any]([workflow_id])
        if node is not None:
            sql, params = sql + " AND node = ?", [workflow_id, node]
        with self.transaction() as con:
            rows = con.execute(sql + " ORDER BY node", params).fetchall()
        return [_pin(row) for row in rows]

    def put_pins(self, workflow_id: int, pins: Sequence[Pin]) -> None:
        """Store ``pins``, replacing the rows of the same nodes, in one transaction."""
        with self.transaction() as con:
            for p in pins:
                con.execute("DELETE FROM sample_pins WHERE workflow_id = ? AND node = ?", [workflow_id, p.node])
                con.execute(
                    "INSERT INTO sample_pins (workflow_id, node, source_hash, path, rows, columns, version, "
                    "execution_id, pinned_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [workflow_id, p.node, p.source_hash, p.path, p.rows, json.dumps(p.columns), p.version,
                     p.execution_id, p.pinned_at],
                )  # fmt: skip

    def drop_pins(self, workflow_id: int, node: str | None = None) -> list[Pin]:
        """Delete the workflow's pins (or one node's); the pins deleted."""
        sql, params = "DELETE FROM sample_pins WHERE workflow_id = ?", list[Any]([workflow_id])
        if node is not None:
            sql, params = sql + " AND node = ?", [workflow_id, node]
        with self.transaction() as con:
            rows = con.execute(
                sql + " RETURNING node, source_hash, path, rows, columns, version, execution_id, epoch_us(pinned_at)",
                params,
            ).fetchall()
        return [_pin(row) for row in rows]

    def pinned_paths(self, workflow_id: int) -> set[str]:
        """The files the workflow's pins still name (a file may hold the same rows for two nodes)."""
        with self.transaction() as con:
            rows = con.execute("SELECT path FROM sample_pins WHERE workflow_id = ?", [workflow_id]).fetchall()
        return {r[0] for r in rows}


def _pin(row: tuple) -> Pin:  # type: ignore[type-arg]
    node, source_hash, path, rows, columns, version, execution_id, pinned_at = row
    cols = tuple((str(n), str(t)) for n, t in json.loads(columns))
    return Pin(node, source_hash, path, rows, cols, version, execution_id, when(pinned_at))
