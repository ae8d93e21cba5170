"""Rows and records: a record's SQL columns, row mapping and Arrow table, all derived from its dataclass.

A ``Columns`` reads a ``core.entities`` dataclass by column name: its select list aliases one
expression to each field, and a row (a mapping of column name to value) becomes the record with
each value decoded by the field's type. Adding a field to the dataclass adds it to every query;
a field stored under another name, or computed, says so in ``sources``.
"""

from __future__ import annotations

import dataclasses
import json
import types
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from enum import Enum
from functools import cached_property
from typing import TYPE_CHECKING, Any, Generic, TypeVar, Union, get_args, get_origin, get_type_hints

import duckdb

if TYPE_CHECKING:
    import pyarrow as pa  # imported by the bulk writes that use it: a read-only command does not pay ~60 ms

T = TypeVar("T")
Decoder = Callable[[Any], Any]
Row = Mapping[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def when(microseconds: int) -> datetime:
    return _EPOCH + timedelta(microseconds=microseconds)


def _at(microseconds: int | None) -> datetime | None:
    return None if microseconds is None else _EPOCH + timedelta(microseconds=microseconds)


def _optional(decode: Decoder) -> Decoder:
    return lambda value: None if value is None else decode(value)


def _plain(hint: Any) -> tuple[Any, bool]:
    """The type inside ``X | None`` and whether None was allowed."""
    if get_origin(hint) in (Union, types.UnionType):
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0], True
    return hint, False


def _decoder(hint: Any) -> Decoder | None:
    """How a stored value becomes the field's type; None: it already is."""
    base, nullable = _plain(hint)
    if base is datetime:
        return _at if nullable else when
    if isinstance(base, type) and issubclass(base, Enum):
        decode: Decoder = {member.value: member for member in base}.__getitem__  # Enum() per row cost more
    elif get_origin(base) is dict:
        decode = json.loads
    elif base in (int, float, str, bool):
        return None
    else:
        raise TypeError(f"no column decoder for {hint!r}: give one in decoders")
    return _optional(decode) if nullable else decode


def _arrow_type(hint: Any) -> pa.DataType:
    import pyarrow as pa

    base, _ = _plain(hint)
    if base is datetime:
        return pa.timestamp("us", "UTC")
    if base is int:
        return pa.int64()
    if base is float:
        return pa.float64()
    if base is bool:
        return pa.bool_()
    return pa.string()  # str, enums and JSON documents


def _encoder(hint: Any) -> Callable[[Any], Any]:
    base, _ = _plain(hint)
    if get_origin(base) is dict:
        return lambda value: None if value is None else json.dumps(value)
    if isinstance(base, type) and issubclass(base, Enum):
        return lambda value: None if value is None else str(value)
    return lambda value: value


@dataclasses.dataclass(frozen=True)
class Columns(Generic[T]):
    """The columns of one record type: ``sources`` maps a field to its SQL expression where it is not
    ``prefix + field``; ``skip`` leaves fields out (the record's defaults fill them)."""

    record: type[T]
    prefix: str = ""
    sources: Mapping[str, str] = dataclasses.field(default_factory=dict)
    skip: frozenset[str] = frozenset()
    decoders: Mapping[str, Decoder] = dataclasses.field(default_factory=dict)

    @cached_property
    def hints(self) -> dict[str, Any]:
        names = [f.name for f in dataclasses.fields(self.record)]  # type: ignore[arg-type]
        hints = get_type_hints(self.record)
        return {name: hints[name] for name in names if name not in self.skip}

    @cached_property
    def names(self) -> list[str]:
        """The stored column of each field, in the dataclass's order (for INSERT column lists)."""
        return [self.sources.get(name, name) for name in self.hints]

    @cached_property
    def select(self) -> str:
        """``expression AS field, ...``; timestamps as epoch microseconds (see ``when``)."""
        parts = []
        for name, hint in self.hints.items():
            source = self.sources.get(name, f"{self.prefix}{name}")
            if _plain(hint)[0] is datetime:
                # DuckDB's conversion of a TIMESTAMPTZ to a Python datetime goes through the session
                # time zone per value and was 4/5 of listing 10,000 workflows
                source = f"epoch_us({source})"
            parts.append(f'{source} AS "{name}"')
        return ", ".join(parts)

    def build(self, row: Row) -> T:
        """The record of a row read by column name (extra columns are left alone)."""
        return self.record(**{n: row[n] if decode is None else decode(row[n]) for n, decode in self._decoders})

    def records(self, fetched: Fetched, **pages: Callable[[list[Any]], list[Any]]) -> list[T]:
        """The records of fetched rows; ``pages``: fields decoded for all the rows at once."""
        index = {name: i for i, name in enumerate(fetched.names)}
        plan = [(name, index[name], decode) for name, decode in self._decoders if name not in pages]
        paged = [(name, pages[name]([row[index[name]] for row in fetched.rows])) for name in pages]
        out = []
        for k, row in enumerate(fetched.rows):
            values = {name: row[i] if decode is None else decode(row[i]) for name, i, decode in plan}
            for name, column in paged:
                values[name] = column[k]
            out.append(self.record(**values))
        return out

    @cached_property
    def _decoders(self) -> list[tuple[str, Decoder | None]]:
        return [(name, self.decoders.get(name) or _decoder(hint)) for name, hint in self.hints.items()]

    def all(self, cursor: duckdb.DuckDBPyConnection) -> list[T]:
        return self.records(Fetched.of(cursor))

    def one(self, cursor: duckdb.DuckDBPyConnection) -> T | None:
        found = self.all(cursor)
        return found[0] if found else None

    def arrow(self, records: Sequence[T]) -> pa.Table:
        """The records as an Arrow table whose columns are ``names`` (bulk writes go through Arrow)."""
        import pyarrow as pa

        columns = {}
        for (name, hint), column in zip(self.hints.items(), self.names, strict=True):
            encode = _encoder(hint)
            values = [encode(getattr(r, name)) for r in records]
            columns[column] = pa.array(values, _arrow_type(hint))
        return pa.table(columns)


@dataclasses.dataclass(frozen=True)
class Fetched:
    """A cursor's rows with their column names: fetched inside a session, made records after it."""

    names: tuple[str, ...]
    rows: list[tuple[Any, ...]]

    @classmethod
    def of(cls, cursor: duckdb.DuckDBPyConnection) -> Fetched:
        return cls(tuple(d[0] for d in cursor.description or ()), cursor.fetchall())


def named(cursor: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The cursor's remaining rows, each a mapping of column name to value."""
    fetched = Fetched.of(cursor)
    return [dict(zip(fetched.names, row, strict=True)) for row in fetched.rows]


def first(cursor: duckdb.DuckDBPyConnection) -> dict[str, Any] | None:
    """The cursor's next row by column name, or None."""
    row = cursor.fetchone()
    return None if row is None else dict(zip([d[0] for d in cursor.description or ()], row, strict=True))


def insert(con: duckdb.DuckDBPyConnection, table: str, rows: pa.Table, columns: Iterable[str] | None = None) -> None:
    """Insert an Arrow table in one statement (``executemany`` was 240x slower here)."""
    view = f"_weflow_{table}"
    into = f"{table} ({', '.join(columns)})" if columns is not None else table
    con.register(view, rows)
    try:
        con.execute(f"INSERT INTO {into} SELECT * FROM {view}")
    finally:
        con.unregister(view)


def where(sql: str, optional: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """``sql`` with ``AND condition`` for each condition whose value is not None, and those values."""
    given = {condition: value for condition, value in optional.items() if value is not None}
    return sql + "".join(f" AND {condition}" for condition in given), list(given.values())
