"""PostgreSQL nodes over ADBC: ``read_postgres`` (one query, workflow inputs bound as parameters,
Arrow into Polars) and ``write_postgres`` (append, replace or upsert, in one transaction).

The connection is a ``postgresql://`` URI, secret-capable (a secret reference fills the field
once secrets are in). Its host passes weflow's outbound policy (``weflow.outbound``) twice: as
written at apply (``check``) and resolved at run, where the checked address is pinned (libpq's
``hostaddr``) so that a DNS answer changing in between cannot redirect the connection. Only the
URI parameters in ``PARAMETERS`` are accepted: ``host``, ``service``, ``passfile`` or ``sslkey``
would let a definition pick another host or make the driver read the server's files. The password
never appears in a message: they name the URI without it and driver errors are scrubbed of it.
A read runs in a read-only transaction; a write stages the frame in a temporary table and changes
the target with one statement, all in one transaction: a failure leaves the table as it was.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

import polars as pl
from pydantic import Field

from weflow import outbound
from weflow.errors import OutboundError
from weflow.nodes.base import Frame, NodeConfig, NodeInputs, RunContext, SecretText, plain

if TYPE_CHECKING:
    from adbc_driver_manager import dbapi

SCHEMES = ("postgresql", "postgres")
PARAMETERS = ("sslmode", "connect_timeout", "application_name")
CONNECT_TIMEOUT_SECONDS = 10  # libpq waits forever by default
TABLE = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$"
STAGE = "_weflow_stage"
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DRIVER_PREFIX = re.compile(r"^[A-Z_]+: (\[libpq\] )?")


class PostgresConfig(NodeConfig):
    connection: SecretText = Field(
        description="postgresql://user:password@host:port/database (secret-capable; never shown)",
    )


class ReadPostgresConfig(PostgresConfig):
    query: str = Field(min_length=1, description="one query; $name binds a workflow input as a parameter")


class WritePostgresConfig(PostgresConfig):
    table: str = Field(pattern=TABLE, description="table or schema.table")
    mode: Literal["append", "replace", "upsert"] = "append"
    key: list[str] = Field(default_factory=list, description="upsert: the columns of the table's unique key")


# --- the connection ----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A checked connection URI: where it goes and how to name it in a message."""

    uri: str
    host: str
    port: int
    password: str
    shown: str  # the URI without password and parameters

    def scrub(self, text: str) -> str:
        """``text`` with the password (as written and decoded) and the URI replaced."""
        text = text.replace(self.uri, self.shown)
        for secret in {self.password, unquote(self.password)} - {""}:
            text = text.replace(secret, "***")
        return text


def target(uri: str) -> Target:
    """Read a connection URI; ValueError (``connection: ...``, never quoting it) when it is not one weflow takes."""
    try:
        parts = urlsplit(uri)
        port = parts.port or 5432
    except ValueError:
        raise ValueError("connection: not a valid postgresql:// URI") from None
    if parts.scheme not in SCHEMES:
        raise ValueError("connection: must be a postgresql:// URI")
    host = unquote(parts.hostname or "")
    if not host:
        raise ValueError("connection: the URI names no host (a local socket is not allowed)")
    if "," in parts.netloc or "/" in host:
        raise ValueError("connection: name one host (no list of hosts, no socket folder)")
    refused = [k for k, _ in parse_qsl(parts.query, keep_blank_values=True) if k not in PARAMETERS]
    if refused:
        raise ValueError(f"connection: parameter {refused[0]!r} is not allowed (allowed: {', '.join(PARAMETERS)})")
    if parts.fragment:
        raise ValueError("connection: the URI must not have a '#' fragment")
    user = f"{parts.username}@" if parts.username else ""
    where = f"[{host}]" if ":" in host else host
    shown = f"{parts.scheme}://{user}{where}:{port}{parts.path}"
    return Target(uri, host, port, parts.password or "", shown)


def check_connection(config: Any) -> None:
    """The apply-time check: a URI weflow takes, to a host the outbound policy allows as written."""
    if not isinstance(config.connection, str):
        return  # a secret reference (once the field takes one): its value is checked when the node runs
    found = target(config.connection)
    where = f"[{found.host}]" if ":" in found.host else found.host
    problem = outbound.Policy.current().check_url(f"http://{where}:{found.port}/")
    if problem is not None:
        raise ValueError(f"connection: {problem}")


def _pinned(found: Target, read_only: bool) -> str:
    """The URI with the host's checked address pinned, a connect timeout and, to read, read-only transactions."""
    try:
        addresses = outbound.Policy.current().resolve(found.host, found.port)
    except OutboundError as exc:
        raise type(exc)(f"{found.shown}: {exc}") from None
    parts = urlsplit(found.uri)
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    params["hostaddr"] = str(addresses[0])
    if not found.password and os.environ.get("PGPASSWORD"):
        raise ValueError(f"connection {found.shown}: the URI has no password and PGPASSWORD is set in weflow's "
                         "environment; a definition does not borrow the operator's: give the password in the URI "
                         "or a secret ({secret: NAME})")  # fmt: skip
    params["passfile"] = os.devnull  # nor the operator's ~/.pgpass
    params.setdefault("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
    if read_only:
        params["options"] = "-c default_transaction_read_only=on"
    return urlunsplit(parts._replace(query=urlencode(params, quote_via=quote)))  # libpq reads "+" as itself


def problem(exc: Exception, found: Target) -> str:
    """One line of a driver error, without its prefixes, the query echo or the password."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    for marker in ("FATAL:", "ERROR:"):
        first = first.rpartition(marker)[2].strip() if marker in first else first
    return found.scrub(_DRIVER_PREFIX.sub("", first))


@contextmanager
def connected(found: Target, read_only: bool) -> Iterator[dbapi.Connection]:
    """A connection to the checked host (a transaction open); closed on the way out."""
    import adbc_driver_postgresql.dbapi as pg  # type: ignore[import-untyped]  # deferred: its import costs ~0.3 s

    uri = _pinned(found, read_only)
    try:
        con = pg.connect(uri)
    except pg.Error as exc:
        raise OutboundError(f"{found.shown}: cannot connect: {problem(exc, found)}") from None
    try:
        yield con
    finally:
        con.close()


# --- read ----------------------------------------------------------------------------


def references(query: str) -> list[tuple[int, int, str]]:
    """The ``$name`` references of ``query`` outside strings, quoted names and comments: (start, end, name).

    PostgreSQL's own tokens decide (sqlglot's tokenizer): ``'$x'``, ``"a$b"`` and ``$tag$ ... $tag$``
    are not references. A positional ``$1`` is refused: inputs are bound by name.
    """
    import sqlglot  # deferred: only PostgreSQL queries need it
    from sqlglot.tokenizer_core import TokenType

    try:
        tokens = sqlglot.tokenize(query, read="postgres")
    except sqlglot.errors.SqlglotError as exc:
        raise ValueError(f"query: cannot be read ({str(exc).splitlines()[0]})") from None
    found = []
    for token, after in itertools.pairwise(tokens):
        if token.token_type is not TokenType.PARAMETER or after.start != token.end + 1:
            continue
        raw = query[after.start : after.end + 1]
        if raw.isdigit():
            raise ValueError(f"query: ${raw} is positional; bind a workflow input by name ($name)")
        if _NAME.fullmatch(raw):
            found.append((token.start, after.end, raw))
    return found


def bind(query: str, params: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    """``query`` with each ``$name`` made a PostgreSQL parameter (``$1``...) and the values to bind, in order."""
    refs = references(query)
    names = list(dict.fromkeys(name for _, _, name in refs))
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"query: input {missing[0]!r} is referenced as ${missing[0]} but not given")
    text = query
    for start, end, name in reversed(refs):
        text = f"{text[:start]}${names.index(name) + 1}{text[end + 1 :]}"
    return text, tuple(params[n] for n in names)


def check_query(config: Any) -> None:
    references(config.query)


def read_postgres(config: ReadPostgresConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    """The query's rows, Arrow-native; a timeout or cancel cancels the query on the server."""
    import adbc_driver_postgresql.dbapi as pg  # type: ignore[import-untyped]

    sql, values = bind(config.query, ctx.params)
    found = target(plain(config.connection))
    with connected(found, read_only=True) as con, con.cursor() as cursor:
        forget = ctx.stop.on_stop(cursor.adbc_cancel)
        try:
            cursor.execute(sql, values or None)
            table = cursor.fetch_arrow_table()
        except pg.Error as exc:
            ctx.stop.check()
            raise OutboundError(f"{found.shown}: the query failed: {problem(exc, found)}") from None
        finally:
            forget()
    frame = pl.DataFrame(table)
    ctx.logger.info("read %d rows from %s", frame.height, found.shown)
    return frame


# --- write ---------------------------------------------------------------------------


def check_write(config: Any) -> None:
    check_connection(config)
    if config.mode == "upsert" and not config.key:
        raise ValueError("key: mode upsert needs the key columns (key: [id])")
    if config.mode != "upsert" and config.key:
        raise ValueError(f"key: only mode upsert takes key columns (mode is {config.mode})")


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _frame_problem(config: WritePostgresConfig, frame: pl.DataFrame) -> str | None:
    """Why ``frame`` cannot be written as configured (checked before connecting), else None."""
    if not frame.columns:
        return "the frame has no columns"
    absent = [k for k in config.key if k not in frame.columns]
    if absent:
        return f"key: column {absent[0]!r} is not in the frame (columns: {', '.join(frame.columns)})"
    if config.key and frame.select(pl.struct(config.key).is_duplicated().any()).item():
        return f"key: rows of the frame share a key ({', '.join(config.key)}): an upsert needs one row per key"
    return None


def statements(config: WritePostgresConfig, columns: list[str], exists: bool) -> list[str]:
    """The SQL that moves the staged rows into the table, for the mode and whether the table exists."""
    table = ".".join(_ident(p) for p in config.table.split("."))
    cols = ", ".join(_ident(c) for c in columns)
    keys = ", ".join(_ident(k) for k in config.key)
    if not exists:
        created = [f"CREATE TABLE {table} AS SELECT {cols} FROM {STAGE}"]
        return created + ([f"ALTER TABLE {table} ADD PRIMARY KEY ({keys})"] if config.mode == "upsert" else [])
    insert = f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {STAGE}"
    if config.mode == "replace":
        return [f"DELETE FROM {table}", insert]  # DELETE, not TRUNCATE: readers keep the old rows until commit
    if config.mode == "upsert":
        updates = ", ".join(f"{_ident(c)} = EXCLUDED.{_ident(c)}" for c in columns if c not in config.key)
        return [f"{insert} ON CONFLICT ({keys}) " + (f"DO UPDATE SET {updates}" if updates else "DO NOTHING")]
    return [insert]


def _keep_previous(
    cursor: Any, found: Target, config: WritePostgresConfig, ctx: RunContext, exists: bool
) -> tuple[str, Callable[[], str]] | None:
    """Before the write: the compensation (action, run) that puts the table back if a later node fails,
    registered once the write committed (a failed attempt, rolled back, leaves nothing to undo).

    A table the write creates is dropped. Otherwise the rows this transaction writes (its ``xmin``)
    are deleted and the rows it replaced put back: for replace the whole table, for upsert the rows
    of the frame's keys (saved as Parquet in the run's folder), for append none.
    """
    if ctx.undo is None:
        return None
    table = ".".join(_ident(p) for p in config.table.split("."))
    where = f"{config.table} in {found.shown}"
    if not exists:

        def drop() -> str:
            _undo(found, f"DROP TABLE IF EXISTS {table}", None, table)
            return f"dropped {where} (it did not exist before)"

        return f"drop table {config.table}", drop
    cursor.execute("SELECT (txid_current() % 4294967296)::text")  # xmin holds the 32-bit transaction id
    row = cursor.fetchone()
    delete = f"DELETE FROM {table} WHERE xmin::text = '{int(row[0])}'"
    backup = None
    if config.mode != "append":
        if ctx.work_dir is None:
            return None  # nowhere to keep the rows it replaces
        keys = ", ".join(_ident(k) for k in config.key)
        only = f" WHERE ({keys}) IN (SELECT {keys} FROM {STAGE})" if config.mode == "upsert" else ""
        cursor.execute(f"SELECT * FROM {table}{only}")
        backup = ctx.work_dir / "undo" / f"{ctx.node}.parquet"
        backup.parent.mkdir(parents=True, exist_ok=True)
        pl.DataFrame(cursor.fetch_arrow_table()).write_parquet(backup)

    def restore() -> str:
        put_back = _undo(found, delete, backup, table)
        replaced = f" and put back the {put_back} rows it replaced" if backup is not None else ""
        return f"deleted the rows this run wrote to {where}{replaced}"

    return f"restore table {config.table}", restore


def _undo(found: Target, sql: str, backup: Path | None, table: str) -> int:
    """Run a compensation in one transaction: ``sql``, then the saved rows put back (how many)."""
    import adbc_driver_postgresql.dbapi as pg  # type: ignore[import-untyped]

    rows = pl.read_parquet(backup) if backup is not None else pl.DataFrame()
    with connected(found, read_only=False) as con, con.cursor() as cursor:
        try:
            cursor.execute(sql)
            if rows.height:
                cols = ", ".join(_ident(c) for c in rows.columns)
                cursor.adbc_ingest(STAGE, rows.to_arrow(), mode="create", temporary=True)
                cursor.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM {STAGE}")
            con.commit()
        except pg.Error as exc:
            raise OutboundError(
                f"{found.shown}: the compensation failed, {table} unchanged: {problem(exc, found)}"
            ) from None
    if backup is not None:
        backup.unlink(missing_ok=True)
    return rows.height


def write_postgres(config: WritePostgresConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    """Write the frame into the table in one transaction: all its rows, or (on any failure) none."""
    import adbc_driver_postgresql.dbapi as pg  # type: ignore[import-untyped]

    frame = ctx.stop.collect(inputs.one())
    found = target(plain(config.connection))
    wrong = _frame_problem(config, frame)
    if wrong is not None:
        raise ValueError(f"{config.table}: {wrong}")
    with connected(found, read_only=False) as con, con.cursor() as cursor:
        forget = ctx.stop.on_stop(cursor.adbc_cancel)
        try:
            cursor.adbc_ingest(STAGE, frame.to_arrow(), mode="create", temporary=True)
            cursor.execute("SELECT to_regclass($1) IS NOT NULL", (".".join(map(_ident, config.table.split("."))),))
            row = cursor.fetchone()
            exists = bool(row and row[0])
            undo = _keep_previous(cursor, found, config, ctx, exists)
            for sql in statements(config, frame.columns, exists):
                ctx.stop.check()
                cursor.execute(sql)
            cursor.execute(f"DROP TABLE {STAGE}")
            ctx.stop.check()
            con.commit()
            if undo is not None:
                ctx.compensation(*undo)
        except pg.Error as exc:
            con.rollback()
            ctx.stop.check()
            why = problem(exc, found)
            raise OutboundError(f"{found.shown}: writing {config.table} failed, nothing written: {why}") from None
        except BaseException:
            con.rollback()
            raise
        finally:
            forget()
    ctx.logger.info("wrote %d rows to %s in %s (%s)", frame.height, config.table, found.shown, config.mode)
    return frame
