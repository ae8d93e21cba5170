"""Whole-file maintenance of the catalog: copy it, swap a copy in, check it. Each runs under the catalog lock.

Every operation takes one ``session`` on the catalog (so no writer is inside while it works) and
does its own work on a second connection to the same database (``cursor()``, autocommitted), so
the copy DuckDB writes with ``COPY FROM DATABASE`` is complete on disk before anything is swapped.
A copy is verified (row counts per table) before it replaces anything; a swap is one ``rename``.
Work that needs no lock (reading a backup, checking a copy) is done outside it.

- ``copy`` copies the checkpointed catalog file into a new file under the lock, then reads the
  copy whole outside it (``backup``);
- ``compact`` rewrites the catalog into a sibling file and renames it over the catalog (DuckDB does
  not give back the space of deleted rows);
- ``replace`` copies a backup into a sibling file, checks it, keeps the old catalog aside (a hard
  link) and renames the copy over the catalog (``restore``);
- ``check`` reads every table and reports counts and problems (unreadable blocks, duplicate keys,
  rows whose parent is missing).
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from weflow.catalog.schema import MIGRATIONS, RELATIONS
from weflow.catalog.session import forget_migrations, path_literal, session
from weflow.errors import CatalogError

MAGIC = b"DUCK"  # bytes 8-11 of every DuckDB database file


@dataclass(frozen=True)
class Report:
    """What ``check`` found: the schema version, rows per table, and each problem in one line."""

    version: int
    latest: int
    counts: dict[str, int]
    problems: tuple[str, ...] = field(default=())
    size: int = 0


def is_duckdb(path: Path) -> bool:
    """Whether ``path`` starts like a DuckDB database file (read without opening it)."""
    try:
        with path.open("rb") as f:
            return f.read(12)[8:12] == MAGIC
    except OSError:
        return False


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


@contextmanager
def _locked(path: Path, timeout: float) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
    """The catalog's lock held, and an autocommitted connection on it with the catalog's name in it."""
    if not path.is_file():
        raise CatalogError(f"catalog {path} does not exist")
    with session(path, timeout) as con:
        row = con.execute("SELECT current_database()").fetchone()
        name = str(row[0]) if row else ""
        cur = con.cursor()  # a connection of its own (outside the session's transaction), on the same database
        try:
            cur.execute(f"USE {_quote(name)}")
            yield cur, name
        finally:
            cur.close()


@contextmanager
def _attached(cur: duckdb.DuckDBPyConnection, path: Path, read_only: bool = False) -> Iterator[str]:
    alias = f"weflow_{secrets.token_hex(6)}"
    mode = " (READ_ONLY)" if read_only else ""
    try:
        cur.execute(f"ATTACH {path_literal(path)} AS {alias}{mode}")
    except duckdb.Error as exc:
        raise CatalogError(f"{path}: cannot be opened as a DuckDB database: {_first(exc)}") from None
    try:
        yield alias
    finally:
        cur.execute(f"DETACH {alias}")


def _first(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tables(cur: duckdb.DuckDBPyConnection, db: str) -> list[str]:
    rows = cur.execute(
        "SELECT table_name FROM duckdb_tables() WHERE database_name = ? AND schema_name = 'main' ORDER BY 1", [db]
    ).fetchall()
    return [r[0] for r in rows]


def _counts(cur: duckdb.DuckDBPyConnection, db: str) -> dict[str, int]:
    counts = {}
    for table in _tables(cur, db):
        row = cur.execute(f"SELECT count(*) FROM {_quote(db)}.main.{_quote(table)}").fetchone()
        counts[table] = int(row[0]) if row else 0
    return counts


def _copy(cur: duckdb.DuckDBPyConnection, source: str, target: Path, label: Path) -> dict[str, int]:
    """Write database ``source`` (the file ``label``) into the new file ``target``; rows per table, checked equal."""
    if target.exists():
        raise CatalogError(f"{target} exists")
    try:
        with _attached(cur, target) as alias:
            try:
                cur.execute(f"COPY FROM DATABASE {_quote(source)} TO {alias}")
            except duckdb.Error as exc:
                raise CatalogError(f"{label} could not be copied: {_first(exc)}") from None
            expected, copied = _counts(cur, source), _counts(cur, alias)
        if copied != expected:
            raise CatalogError(f"the copy of {label} differs from it: {copied} rows, expected {expected}")
        return copied
    except BaseException:
        _remove(target)
        raise


def _remove(path: Path) -> None:
    for leftover in (path, path.with_name(path.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _sibling(path: Path, what: str) -> Path:
    """A new file beside the catalog, named after it (weflow's own state: no node may read it)."""
    return path.with_name(f"{path.name}.{what}-{secrets.token_hex(6)}.tmp")


def size(path: Path) -> int:
    """Bytes of the catalog file and its write-ahead log."""
    wal = path.with_name(path.name + ".wal")
    return sum(p.stat().st_size for p in (path, wal) if p.exists())


def copy(path: Path, target: Path, timeout: float = 60.0) -> dict[str, int]:
    """Copy the catalog at ``path`` into the new file ``target``: its bytes under the lock, then read whole."""
    if target.exists():
        raise CatalogError(f"{target} exists")
    try:
        with _locked(path, timeout) as (cur, name):
            cur.execute("CHECKPOINT")
            expected = _counts(cur, name)
            if size(path) == path.stat().st_size:  # no write-ahead log: the file alone is the catalog
                shutil.copyfile(path, target)  # 50x faster than COPY FROM DATABASE: the lock is held briefly
            else:
                _copy(cur, name, target, path)
        _verify(target, expected, path)
    except BaseException:
        _remove(target)
        raise
    return expected


def _verify(target: Path, expected: dict[str, int], label: Path) -> None:
    """Read every row of the copy ``target`` of ``label`` (outside the catalog's lock): rows as ``expected``."""
    counts: dict[str, int] = {}
    with duckdb.connect() as mem, _attached(mem, target, read_only=True) as alias:
        problems = _readable(mem, alias, counts)
    if problems:
        raise CatalogError(f"the copy of {label} is not whole: {problems[0]}")
    if counts != expected:
        raise CatalogError(f"the copy of {label} differs from it: {counts} rows, expected {expected}")


def compact(path: Path, timeout: float = 60.0) -> tuple[int, int, dict[str, int]]:
    """Rewrite the catalog into a new file and rename it over the catalog: bytes before, after, rows per table."""
    with _locked(path, timeout) as (cur, name):
        cur.execute("CHECKPOINT")
        before = size(path)
        tmp = _sibling(path, "compact")
        counts = _copy(cur, name, tmp, path)
        os.replace(tmp, path)  # this session's connection keeps the old file until it closes
    return before, size(path), counts


def replace(path: Path, backup: Path, aside: Path | None, timeout: float = 60.0) -> dict[str, int]:
    """Copy ``backup`` over the catalog at ``path``, the old catalog kept at ``aside``.

    The backup is copied beside the catalog and checked first, outside the lock (a DuckDB file,
    a weflow schema this weflow knows, every table readable, no problem ``check`` would report);
    then, under the lock, the catalog is linked at ``aside`` and the copy renamed over it. The
    catalog is unchanged when anything fails. A missing catalog is created from the backup.
    """
    _readable_backup(backup)
    tmp = _sibling(path, "restore")
    try:
        counts = _prepared(backup, tmp)
        existed = path.is_file()
        if not existed:
            with session(path, timeout):
                pass  # an empty catalog, so that the lock and the swap below have a file to work on
        try:
            with _locked(path, timeout) as (cur, _):
                cur.execute("CHECKPOINT")  # the catalog kept aside is whole without its .wal
                if existed and aside is not None:
                    _keep(path, aside)
                os.replace(tmp, path)  # this session's connection keeps the old file until it closes
        except BaseException:
            if not existed:
                _remove(path)  # leave no catalog where there was none
            raise
    finally:
        _remove(tmp)
        forget_migrations()
    return counts


def _prepared(backup: Path, tmp: Path) -> dict[str, int]:
    """Copy ``backup`` into the new file ``tmp`` (indexes rebuilt from the rows) and check it; rows per table."""
    with duckdb.connect() as mem:
        with _attached(mem, backup, read_only=True) as source:
            _require_schema(mem, source, backup)
            counts = _copy(mem, source, tmp, backup)
        with _attached(mem, tmp, read_only=True) as copied:
            problems = _problems(mem, copied, {})
    if problems:
        more = f" (and {len(problems) - 1} more)" if problems[1:] else ""
        raise CatalogError(f"{backup}: {problems[0]}{more}")
    return counts


def _keep(path: Path, aside: Path) -> None:
    try:
        os.link(path, aside)
    except OSError:  # a file system without hard links
        shutil.copyfile(path, aside)


def _readable_backup(backup: Path) -> None:
    if not backup.exists():
        raise CatalogError(f"{backup} does not exist")
    if not backup.is_file():
        raise CatalogError(f"{backup} is not a file")
    if not is_duckdb(backup):
        raise CatalogError(f"{backup} is not a DuckDB database file")


def _version(cur: duckdb.DuckDBPyConnection, db: str) -> int | None:
    if "schema_version" not in _tables(cur, db):
        return None
    row = cur.execute(f"SELECT coalesce(max(version), 0) FROM {_quote(db)}.main.schema_version").fetchone()
    return int(row[0]) if row else 0


def _require_schema(cur: duckdb.DuckDBPyConnection, db: str, path: Path) -> None:
    try:
        version = _version(cur, db)
    except duckdb.Error as exc:
        raise CatalogError(f"{path}: cannot read its schema version: {_first(exc)}") from None
    if version is None:
        raise CatalogError(f"{path} is not a weflow catalog (no schema_version table)")
    if version > len(MIGRATIONS):
        raise CatalogError(
            f"{path} has catalog schema version {version}, newer than this weflow's ({len(MIGRATIONS)}): upgrade weflow"
        )


def check(path: Path, timeout: float = 60.0) -> Report:
    """Read every table of the catalog under its lock: schema version, rows per table, problems found."""
    with _locked(path, timeout) as (cur, name):
        version = _version(cur, name) or 0
        counts: dict[str, int] = {}
        problems = _problems(cur, name, counts)
        if version != len(MIGRATIONS):
            problems.insert(0, f"schema version {version}, expected {len(MIGRATIONS)}")
    return Report(version, len(MIGRATIONS), counts, tuple(problems), size(path))


def _problems(cur: duckdb.DuckDBPyConnection, db: str, counts: dict[str, int]) -> list[str]:
    """Every problem of database ``db``; its rows per table go into ``counts``."""
    return [*_readable(cur, db, counts), *_keys(cur, db), *_orphans(cur, db), *_views(cur, db)]


def _readable(cur: duckdb.DuckDBPyConnection, db: str, counts: dict[str, int]) -> list[str]:
    """Read every column of every row (DuckDB checks each block's checksum as it reads it)."""
    problems = []
    for table in _tables(cur, db):
        try:
            sql = f"SELECT count(*), bit_xor(hash(COLUMNS(*))) FROM {_quote(db)}.main.{_quote(table)}"
            row = cur.execute(sql).fetchone()
            counts[table] = int(row[0]) if row else 0
        except duckdb.Error as exc:
            problems.append(f"table {table} cannot be read: {_first(exc)}")
    return problems


def _constraints(cur: duckdb.DuckDBPyConnection, db: str, kind: str) -> list[tuple[str, list[str]]]:
    return cur.execute(
        "SELECT table_name, constraint_column_names "
        "FROM duckdb_constraints() WHERE database_name = ? AND schema_name = 'main' AND constraint_type = ?",
        [db, kind],
    ).fetchall()


def _keys(cur: duckdb.DuckDBPyConnection, db: str) -> list[str]:
    """Primary and unique keys held by more than one row."""
    problems = []
    for kind in ("PRIMARY KEY", "UNIQUE"):
        for table, columns in _constraints(cur, db, kind):
            cols = ", ".join(_quote(c) for c in columns)
            sql = (f"SELECT count(*) FROM (SELECT {cols} FROM {_quote(db)}.main.{_quote(table)} "
                   f"GROUP BY ALL HAVING count(*) > 1)")  # fmt: skip
            found = _count(cur, sql)
            if found:
                problems.append(f"table {table}: {found} values of ({', '.join(columns)}) held by several rows")
    return problems


def _orphans(cur: duckdb.DuckDBPyConnection, db: str) -> list[str]:
    """Rows whose parent row is missing, for the schema's ``RELATIONS`` (none is a declared foreign key)."""
    sql = "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main'"
    columns = {(t, c) for t, c in cur.execute(sql, [db]).fetchall()}
    problems = []
    for child, cols, parent, parent_cols in RELATIONS:
        if not all((child, c) in columns for c in cols) or not all((parent, c) in columns for c in parent_cols):
            continue  # a relation of another schema version
        on = " AND ".join(f"p.{_quote(pc)} = c.{_quote(c)}" for c, pc in zip(cols, parent_cols, strict=True))
        present = " AND ".join(f"c.{_quote(c)} IS NOT NULL" for c in cols)
        found = _count(
            cur,
            f"SELECT count(*) FROM {_quote(db)}.main.{_quote(child)} c WHERE {present} AND NOT EXISTS "
            f"(SELECT 1 FROM {_quote(db)}.main.{_quote(parent)} p WHERE {on})",
        )
        if found:
            problems.append(f"table {child}: {found} rows whose ({', '.join(cols)}) has no row in {parent}")
    return problems


def _views(cur: duckdb.DuckDBPyConnection, db: str) -> list[str]:
    problems = []
    names = cur.execute(
        "SELECT view_name FROM duckdb_views() WHERE database_name = ? AND schema_name = 'main' AND NOT internal", [db]
    ).fetchall()
    for (view,) in names:
        try:
            cur.execute(f"SELECT * FROM {_quote(db)}.main.{_quote(view)} LIMIT 0").fetchall()
        except duckdb.Error as exc:
            problems.append(f"view {view} cannot be read: {_first(exc)}")
    return problems


def _count(cur: duckdb.DuckDBPyConnection, sql: str) -> int:
    try:
        row = cur.execute(sql).fetchone()
    except duckdb.Error:
        return 0  # an unreadable table is reported once, by _readable
    return int(row[0]) if row else 0
