"""Incremental cursors of a workflow (``weflow cursors``): where each incremental source got to; move or clear one.

A run moves a cursor itself (``weflow.catalog.cursors``); this service is for people: the CLI and
the API show the cursors of a workflow of the caller's organization and reset one.
"""

from __future__ import annotations

from dataclasses import dataclass

from weflow.catalog.cursors import Cursor, Cursors
from weflow.core import cursors
from weflow.core.cursors import Kind
from weflow.core.entities import Execution
from weflow.core.model import Definition
from weflow.errors import WeflowError
from weflow.workflows import Scope, get, version_of


class CursorError(WeflowError):
    """A cursor cannot be shown or moved as asked (no such incremental source, a value of the wrong kind)."""


@dataclass(frozen=True)
class Source:
    """An incremental source of a workflow and its cursor (None: no run has succeeded yet, or it was cleared)."""

    node: str
    column: str
    cursor: Cursor | None


def listed(scope: Scope, name: str) -> list[Source]:
    """Every incremental source of the workflow's current version, and any node that still has a cursor."""
    workflow = get(name, scope)
    definition = version_of(workflow, scope).definition
    stored = {c.node: c for c in Cursors(scope.catalog.path).cursors(scope.user.organization_id, workflow.id)}
    found = [
        Source(n.name, n.incremental.cursor, stored.pop(n.name, None))
        for n in definition.nodes
        if n.incremental is not None
    ]
    return found + [Source(c.node, c.column, c) for c in stored.values()]


def reset(scope: Scope, name: str, node: str, to: str | None = None) -> Cursor | None:
    """Move ``node``'s cursor to ``to`` (parsed as the column's kind), or clear it: the next run reads every row."""
    sources = {s.node: s for s in listed(scope, name)}
    source = sources.get(node)
    if source is None:
        known = ", ".join(sorted(sources)) or "none"
        raise CursorError(f"{name}: no incremental source {node!r} (incremental sources: {known})")
    value: tuple[Kind, str] | None = None
    if to is not None:
        value = _parsed(to, source)
    workflow = get(name, scope)
    return Cursors(scope.catalog.path).reset(scope.user.organization_id, workflow.id, node, source.column, value)


def mark_full_refresh(scope: Scope, execution: Execution, definition: Definition) -> None:
    """Make a QUEUED execution a full refresh (call it before handing the run on): its incremental sources
    read every row; when it succeeds their cursors move forward to the highest value read."""
    sources = {n.name: n.incremental.cursor for n in definition.nodes if n.incremental is not None}
    if sources:
        Cursors(scope.catalog.path).mark_full_refresh(execution.id, sources)


def _parsed(text: str, source: Source) -> tuple[Kind, str]:
    """``text`` as a value of the cursor's kind (guessed when it has none yet), in its stored form."""
    known = source.cursor.kind if source.cursor is not None and source.cursor.column == source.column else None
    try:
        if known is not None:
            return known, cursors.to_text(cursors.parse(text, known))
        kind, value = cursors.guess(text)
    except ValueError as exc:
        raise CursorError(f"--to: {exc} (column {source.column!r} of {source.node!r})") from None
    return kind, cursors.to_text(value)
