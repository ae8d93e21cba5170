"""Incremental cursors as plain data: a source's window of one run and the text form of a cursor value.

A cursor value is an integer, a date or a timestamp; the catalog keeps it as text (ISO 8601 for
dates and timestamps) with its kind, so that ``weflow cursors reset --to`` parses a value the
way the column holds it and a comparison never mixes kinds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Literal, get_args

Kind = Literal["integer", "date", "timestamp"]
KINDS: tuple[Kind, ...] = get_args(Kind)
Mode = Literal["incremental", "full_refresh", "backfill"]
Value = int | date | datetime
EXAMPLES = {"integer": "42", "date": "2026-05-01", "timestamp": "2026-05-01T12:00:00"}


@dataclass(frozen=True)
class Window:
    """What one run of an incremental source reads: rows whose ``column`` is above ``start`` (None: all).

    ``end`` is the highest value the run read (None: none read, or not run yet); ``mode`` says
    whether a success moves the workflow's cursor: ``incremental`` and ``full_refresh`` move it
    forward to ``end`` (never back), ``backfill`` leaves it alone.
    """

    node: str
    column: str
    kind: Kind | None = None
    start: str | None = None
    end: str | None = None
    mode: Mode = "incremental"

    @property
    def filters(self) -> bool:
        """The run reads only rows above ``start``."""
        return self.mode == "incremental" and self.start is not None


def kind_of(value: object) -> Kind | None:
    """The cursor kind of a Python value (a column's max), or None if it cannot be a cursor."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return "integer"
    if isinstance(value, datetime):
        return "timestamp"
    if isinstance(value, date):
        return "date"
    return None


def to_text(value: Value) -> str:
    """The stored text of a cursor value."""
    return value.isoformat() if isinstance(value, date) else str(value)


def parse(text: str, kind: Kind) -> Value:
    """The value of a stored (or given) text of kind ``kind``; ValueError saying what was expected."""
    text = text.strip()
    try:
        if kind == "integer":
            return int(text)
        if kind == "date":
            return date.fromisoformat(text)
        return datetime.fromisoformat(text)
    except ValueError:
        article = "an" if kind == "integer" else "a"
        raise ValueError(f"{text!r} is not {article} {kind} (e.g. {EXAMPLES[kind]})") from None


def guess(text: str) -> tuple[Kind, Value]:
    """The kind and value of a text whose kind is not known yet: an integer, else a date, else a timestamp."""
    for kind in KINDS:
        try:
            return kind, parse(text, kind)
        except ValueError:
            continue
    raise ValueError(f"{text.strip()!r} is not an integer, a date or a timestamp (e.g. 42, 2026-05-01, "
                     "2026-05-01T12:00:00)")  # fmt: skip


def above(new: str, kind: Kind, old: str | None, old_kind: Kind | None) -> bool:
    """Whether ``new`` moves a cursor at ``old`` forward (a cursor of another kind, or none, is replaced)."""
    if old is None or old_kind != kind:
        return True
    try:
        return bool(parse(new, kind) > parse(old, kind))  # type: ignore[operator]
    except TypeError:  # a timestamp with a zone against one without: the column changed, take the new one
        return True
