"""Short, serialised sessions on the catalog file (DESIGN decision 7).

DuckDB lets one process hold the file; while it does nobody else can open it. Every access
here is one short transaction taken under the catalog's lock (``lock.hold``: callers served in
arrival order), so processes queue instead of failing, and lock conflicts that still happen (a
foreign process) are retried with backoff.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from weflow.catalog.lock import hold
from weflow.catalog.schema import MIGRATIONS
from weflow.errors import CatalogError

_migrated: set[str] = set()


def _connect(path: Path, timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        try:
            return duckdb.connect(str(path))
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise CatalogError(f"cannot open catalog {path}: {exc}") from exc
            time.sleep(delay * (1 + random.random()))
            delay = min(delay * 2, 0.2)


def _migrate(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version "
        "(version INTEGER PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    row = con.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    current = row[0] if row else 0
    if current > len(MIGRATIONS):
        raise CatalogError(
            f"catalog schema version {current} is newer than this weflow ({len(MIGRATIONS)}): upgrade weflow"
        )
    for number, script in enumerate(MIGRATIONS[current:], start=current + 1):
        con.execute("BEGIN")
        con.execute(script)
        con.execute("INSERT INTO schema_version (version) VALUES (?)", [number])
        con.execute("COMMIT")


@contextmanager
def session(path: Path, timeout: float = 60.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """One transaction on the catalog: committed on success, rolled back on any error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with hold(path, timeout):
        con = _connect(path, timeout)
        try:
            key = str(path.resolve())
            if key not in _migrated:
                _migrate(con)
                _migrated.add(key)
            con.execute("BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            try:
                con.execute("COMMIT")
            except duckdb.Error as exc:
                raise CatalogError(f"catalog {path}: could not commit: {exc}") from exc
        finally:
            con.close()


class Repository:
    """Base of the catalog's repositories: where the file is, and one short transaction on it."""

    def __init__(self, path: str | Path, lock_timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A raw transaction, for batching several operations in one session."""
        with session(self.path, self.lock_timeout) as con:
            yield con


def forget_migrations() -> None:
    """Make the next session re-check the schema (a catalog file was replaced)."""
    _migrated.clear()
