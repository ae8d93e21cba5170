"""Incremental sources: narrow a source's read to the rows above its cursor, and find where it got to.

A file source (``read_csv``, ``read_parquet``, ``read_ndjson``) is a lazy scan: the filter is
added to the scan's plan, where Polars pushes it into the reader. A query source (``read_duckdb``,
``read_postgres``) gets its query wrapped (``SELECT * FROM (query) WHERE cursor > literal``) so the
database filters; the literal is written here from the catalog's value of a known kind, never
from text a definition carries. The run's end value is the highest cursor value it read.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, datetime
from typing import Any

import polars as pl

from weflow.core.cursors import Kind, Value, Window, kind_of, parse, to_text
from weflow.core.model import INCREMENTAL_TYPES

QUERY_TYPES = frozenset({"read_duckdb", "read_postgres"})
SCAN_TYPES = INCREMENTAL_TYPES - QUERY_TYPES
ALIAS = "_weflow_incremental"


def column_kind(dtype: pl.DataType) -> Kind | None:
    """The cursor kind of a column type, or None if a column of it cannot be a cursor."""
    if dtype.is_integer():
        return "integer"
    if isinstance(dtype, pl.Datetime):
        return "timestamp"
    if isinstance(dtype, pl.Date):
        return "date"
    return None


def narrowed_config(node_type: str, config: Any, window: Window) -> Any:
    """A query source's config with its query narrowed to the window (other configs as they are)."""
    if node_type not in QUERY_TYPES or not window.filters:
        return config
    return config.model_copy(update={"query": narrowed_query(config.query, window)})


def narrowed_query(query: str, window: Window) -> str:
    """``query`` wrapped to keep the rows above the window's start (on its own lines: a trailing comment ends there)."""
    assert window.start is not None and window.kind is not None
    body = query.strip().rstrip(";")
    column = '"' + window.column.replace('"', '""') + '"'
    return f"SELECT * FROM (\n{body}\n) AS {ALIAS} WHERE {column} > {sql_literal(window.start, window.kind)}"


def sql_literal(text: str, kind: Kind) -> str:
    """A SQL literal (DuckDB and PostgreSQL) of a cursor value; parsed first, so only a value of its kind is written."""
    value = parse(text, kind)
    if isinstance(value, datetime):
        return f"{'TIMESTAMPTZ' if value.tzinfo else 'TIMESTAMP'} '{value.isoformat(sep=' ')}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return str(int(value))


def problem(window: Window, schema: pl.Schema) -> str | None:
    """Why the source's output cannot be read from this window's cursor, if it cannot."""
    where = "incremental.cursor"
    if window.column not in schema:
        shown = ", ".join(list(schema)[:20])
        return f"{where}: no column {window.column!r} in the source's output (columns: {shown})"
    kind = column_kind(schema[window.column])
    if kind is None:
        return (f"{where}: column {window.column!r} is {schema[window.column]}; a cursor must be an integer, "
                "date or timestamp column (a CSV's dates are text: read Parquet or DuckDB, or use an id)")  # fmt: skip
    if window.filters and window.kind != kind:
        return (f"{where}: the cursor holds {window.kind} {window.start!r} but column {window.column!r} is "
                f"{schema[window.column]} (weflow cursors reset the node)")  # fmt: skip
    return None


def above_start(window: Window, dtype: pl.DataType) -> pl.Expr:
    """The scan filter: the cursor column above the window's start, compared in the column's own type."""
    assert window.start is not None and window.kind is not None
    return pl.col(window.column) > pl.lit(parse(window.start, window.kind)).cast(dtype)


def up_to(window: Window, end: Value, dtype: pl.DataType) -> pl.Expr:
    """The bound that keeps a scan to what was measured: rows added while the run reads wait for the next run."""
    return pl.col(window.column) <= pl.lit(end).cast(dtype)


def end_of(window: Window, highest: object) -> Window:
    """The window once read: ``end`` is the highest value read, or the start when nothing new was read."""
    kind = kind_of(highest)
    if kind is None:
        return window if window.end is not None else replace(window, end=window.start)
    return replace(window, kind=kind, end=to_text(highest))  # type: ignore[arg-type]
