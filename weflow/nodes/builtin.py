"""Built-in node types: sources, Polars transforms, SQL, Python callables and atomic sinks."""

from __future__ import annotations

import glob
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import duckdb
import polars as pl
from pydantic import Field, field_validator, model_validator

from weflow import outbound
from weflow.config import settings
from weflow.errors import OutboundError
from weflow.files import write_atomic
from weflow.nodes import callables, expressions, sqlcheck
from weflow.nodes.base import (
    Frame,
    NodeConfig,
    NodeInputs,
    NodeType,
    RunContext,
    check_path,
    resolve_files,
    resolve_path,
)

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _expr_dict(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        try:
            expressions.check(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return value


# --- sources -----------------------------------------------------------------------


class PathConfig(NodeConfig):
    path: str = Field(min_length=1, description="file or glob under the data roots")


class CsvConfig(PathConfig):
    separator: str = Field(default=",", min_length=1, max_length=1)
    has_header: bool = True


def _read_csv(config: CsvConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    files = resolve_files(config.path, ctx.data_roots)
    return pl.scan_csv(files, separator=config.separator, has_header=config.has_header, glob=False)


def _read_parquet(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    return pl.scan_parquet(resolve_files(config.path, ctx.data_roots), glob=False)


def _read_ndjson(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    # scan_ndjson has no glob=False: escaped, a matched name such as 'a[1].json' stays itself
    return pl.scan_ndjson([glob.escape(str(f)) for f in resolve_files(config.path, ctx.data_roots)])


class DuckdbReadConfig(NodeConfig):
    database: str = Field(min_length=1, description="DuckDB file under the data roots")
    query: str = Field(min_length=1, description="SELECT over the file's tables; $name binds an input")


def _bound(query: str, params: dict[str, Any] | Any) -> dict[str, Any]:
    return {n: params[n] for n in expressions.param_names(query)}


def _read_duckdb(config: DuckdbReadConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    path = resolve_path(config.database, ctx.data_roots, "database")
    if not path.is_file():
        raise FileNotFoundError(f"database {config.database!r} does not exist")
    con = ctx.stop.connect(str(path), read_only=True, config={"enable_external_access": False})
    try:
        result: pl.DataFrame = con.sql(config.query, params=_bound(config.query, ctx.params) or None).pl()
        return result
    finally:
        ctx.stop.release(con)


class HttpJsonConfig(NodeConfig):
    url: str = Field(pattern=r"^https?://", description="http(s) URL returning JSON")
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    record_path: str | None = Field(default=None, description="dotted key of the list of records")

    @field_validator("url")
    @classmethod
    def _reachable(cls, url: str) -> str:
        problem = outbound.Policy.current().check_url(url)
        if problem is not None:
            raise ValueError(problem)
        return url


def _json_kind(value: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return names.get(type(value), "null")


def _http_json(config: HttpJsonConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    """The records at ``record_path`` of a JSON answer; errors never quote the body (it may hold secrets)."""
    where = outbound.redact(config.url)
    data: Any = outbound.get_json(config.url, config.params, config.timeout_seconds)
    for key in (config.record_path or "").split("."):
        if not key:
            continue
        if not isinstance(data, dict) or key not in data:
            got = f"an object without {key!r}" if isinstance(data, dict) else _json_kind(data)
            raise OutboundError(f"{where}: record_path {config.record_path!r}: found {got}")
        data = data[key]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list):
        raise OutboundError(f"{where}: expected a list of records, found {_json_kind(data)}")
    try:
        return pl.DataFrame(data)
    except Exception as exc:  # Polars quotes the values it could not load: only the kind of problem is shown
        raise OutboundError(f"{where}: the records do not make a table ({type(exc).__name__})") from None


# --- transforms --------------------------------------------------------------------


class FilterConfig(NodeConfig):
    condition: str = Field(description="SQL boolean expression; $name binds an input")
    _check = field_validator("condition")(lambda cls, v: expressions.check(v))


def _filter(config: FilterConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    frame, extra = expressions.with_params(inputs.one(), [config.condition], ctx.params)
    out = frame.filter(expressions.parse(config.condition))
    return out.drop(extra) if extra else out


class SelectConfig(NodeConfig):
    columns: list[str] = Field(default_factory=list, description="columns kept as they are")
    exprs: dict[str, str] = Field(default_factory=dict, description="new columns: name -> expression")
    _check = field_validator("exprs")(lambda cls, v: _expr_dict(v))

    @model_validator(mode="after")
    def _something(self) -> SelectConfig:
        if not self.columns and not self.exprs:
            raise ValueError("give columns, exprs or both")
        return self


def _select(config: SelectConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    texts = list(config.exprs.values())
    frame, _ = expressions.with_params(inputs.one(), texts, ctx.params)
    named = [expressions.parse(t).alias(n) for n, t in config.exprs.items()]
    return frame.select([*[pl.col(c) for c in config.columns], *named])


class WithColumnsConfig(NodeConfig):
    columns: dict[str, str] = Field(min_length=1, description="name -> SQL expression")
    _check = field_validator("columns")(lambda cls, v: _expr_dict(v))


def _with_columns(config: WithColumnsConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    frame, extra = expressions.with_params(inputs.one(), list(config.columns.values()), ctx.params)
    out = frame.with_columns(expressions.parse(t).alias(n) for n, t in config.columns.items())
    return out.drop(extra) if extra else out


class JoinConfig(NodeConfig):
    on: list[str] | str | None = None
    left_on: list[str] | str | None = None
    right_on: list[str] | str | None = None
    how: Literal["inner", "left", "right", "full", "semi", "anti", "cross"] = "inner"
    suffix: str = "_right"

    @model_validator(mode="after")
    def _keys(self) -> JoinConfig:
        if self.how == "cross":
            return self
        if self.on is None and (self.left_on is None or self.right_on is None):
            raise ValueError("give 'on', or both 'left_on' and 'right_on'")
        if self.on is not None and (self.left_on is not None or self.right_on is not None):
            raise ValueError("give either 'on' or 'left_on'/'right_on', not both")
        return self


def _join(config: JoinConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    left, right = inputs.port("left"), inputs.port("right")
    if config.how == "cross":
        return left.join(right, how="cross", suffix=config.suffix)
    return left.join(
        right,
        on=config.on,
        left_on=config.left_on,
        right_on=config.right_on,
        how=config.how,
        suffix=config.suffix,
        coalesce=True,
    )


class AggregateConfig(NodeConfig):
    by: list[str] = Field(default_factory=list, description="group keys (none: one row)")
    aggs: dict[str, str] = Field(min_length=1, description="name -> aggregate expression")
    _check = field_validator("aggs")(lambda cls, v: _expr_dict(v))


def _aggregate(config: AggregateConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    aggs = [expressions.parse(t).alias(n) for n, t in config.aggs.items()]
    frame = inputs.one()
    if not config.by:
        return frame.select(aggs)
    return frame.group_by(config.by).agg(aggs)  # no maintain_order: it costs; add a sort node for order


class SortConfig(NodeConfig):
    by: list[str] | str
    descending: bool | list[bool] = False
    nulls_last: bool = False


def _sort(config: SortConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    return inputs.one().sort(config.by, descending=config.descending, nulls_last=config.nulls_last)


class LimitConfig(NodeConfig):
    n: int = Field(ge=0)


def _limit(config: LimitConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    return inputs.one().head(config.n)


class UnionConfig(NodeConfig):
    how: Literal["vertical", "diagonal"] = "vertical"


def _union(config: UnionConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    how: Literal["vertical_relaxed", "diagonal_relaxed"] = (
        "vertical_relaxed" if config.how == "vertical" else "diagonal_relaxed"
    )
    return pl.concat(inputs.frames(), how=how)


class SqlConfig(NodeConfig):
    query: str = Field(min_length=1, description="DuckDB SQL over the inputs (tables named after upstream nodes)")


def _sql(config: SqlConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    # DuckDB with file access off: a query sees its inputs and nothing else on disk.
    con = ctx.stop.connect(config={"enable_external_access": False})  # a timeout interrupts its query
    try:
        for name, frame in inputs.by_source().items():
            con.register(name, ctx.stop.collect(frame).to_arrow())
        result: pl.DataFrame = con.sql(config.query, params=_bound(config.query, ctx.params) or None).pl()
        return result
    finally:
        ctx.stop.release(con)


class ValidateConfig(NodeConfig):
    """No settings: the node's ``contract`` is what it checks."""


def _identity(config: ValidateConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    return inputs.one()


# --- python callables --------------------------------------------------------------


class PythonConfig(NodeConfig):
    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function")
    kwargs: dict[str, Any] = Field(default_factory=dict)


def check_python(config: PythonConfig) -> None:
    """Only a function defined in a listed module (read from its source, not imported)."""
    try:
        callables.check(config.callable, settings().python_node_modules)
    except ValueError as exc:
        raise ValueError(f"callable: {exc}") from None


def load_callable(spec: str) -> Callable[..., Any]:
    """Import an allowed function; refused if the imported object was not defined in its module."""
    try:
        return callables.load(spec, settings().python_node_modules)
    except ValueError as exc:
        raise ValueError(f"callable: {exc}") from None


def _python(config: PythonConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    fn = load_callable(config.callable)  # checks again at run time: the allow-list may have changed
    frames = [ctx.stop.collect(f) for f in inputs.frames()]
    result = fn(*frames, **config.kwargs)
    if not isinstance(result, pl.DataFrame | pl.LazyFrame):
        raise TypeError(f"{config.callable} returned {type(result).__name__}, not a Polars frame")
    return result


# --- sinks -------------------------------------------------------------------------


def _keep_previous_file(target: Path, ctx: RunContext) -> None:
    """Before a sink replaces ``target``: register the compensation that puts the old file back."""
    if ctx.undo is None:
        return
    if not target.exists():

        def remove() -> str:
            target.unlink(missing_ok=True)
            return f"removed {target} (it did not exist before)"

        ctx.compensation(f"remove {target.name}", remove)
        return
    if ctx.work_dir is None:
        return
    backup = ctx.work_dir / "undo" / f"{ctx.node}{target.suffix}"
    backup.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(target, backup)

    def restore() -> str:
        os.replace(backup, target)
        return f"restored the previous {target}"

    ctx.compensation(f"restore {target.name}", restore)


def _write_parquet(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    target = resolve_path(config.path, ctx.data_roots)
    _keep_previous_file(target, ctx)
    written: list[pl.DataFrame] = []  # collected and written a group of rows at a time: a timeout stops both
    write_atomic(target, lambda tmp: written.append(ctx.stop.write_parquet(inputs.one(), tmp)))
    return written[0]


def _write_csv(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    target = resolve_path(config.path, ctx.data_roots)
    _keep_previous_file(target, ctx)
    written: list[pl.DataFrame] = []  # collected and written a group of rows at a time: a timeout stops both
    write_atomic(target, lambda tmp: written.append(ctx.stop.write_csv(inputs.one(), tmp)))
    return written[0]


class DuckdbWriteConfig(NodeConfig):
    database: str = Field(min_length=1)
    table: str = Field(pattern=IDENT)
    mode: Literal["replace", "append"] = "replace"


def _write_duckdb(config: DuckdbWriteConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    frame = ctx.stop.collect(inputs.one())
    path = resolve_path(config.database, ctx.data_roots, "database")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = ctx.stop.connect(str(path))
    try:
        _keep_previous_table(con, path, config.table, ctx)
        con.register("_weflow_frame", frame.to_arrow())
        con.execute("BEGIN")
        try:
            if config.mode == "replace":
                con.execute(f'CREATE OR REPLACE TABLE "{config.table}" AS SELECT * FROM _weflow_frame')
            else:
                con.execute(f'CREATE TABLE IF NOT EXISTS "{config.table}" AS SELECT * FROM _weflow_frame LIMIT 0')
                con.execute(f'INSERT INTO "{config.table}" BY NAME SELECT * FROM _weflow_frame')
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        ctx.stop.release(con)
    return frame


def _keep_previous_table(con: duckdb.DuckDBPyConnection, database: Path, table: str, ctx: RunContext) -> None:
    """Before a sink changes ``table``: save it as Parquet and register the compensation restoring it."""
    if ctx.undo is None:
        return
    [(exists,)] = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'", [table]
    ).fetchall()
    if not exists:

        def drop() -> str:
            with duckdb.connect(str(database)) as undo:
                undo.execute(f'DROP TABLE IF EXISTS "{table}"')
            return f"dropped {table} in {database.name} (it did not exist before)"

        ctx.compensation(f"drop table {table}", drop)
        return
    if ctx.work_dir is None:
        return
    backup = ctx.work_dir / "undo" / f"{ctx.node}.parquet"
    backup.parent.mkdir(parents=True, exist_ok=True)
    quoted = str(backup).replace("'", "''")
    con.execute(f"COPY \"{table}\" TO '{quoted}' (FORMAT parquet)")

    def restore() -> str:
        with duckdb.connect(str(database)) as undo:
            undo.execute(f"CREATE OR REPLACE TABLE \"{table}\" AS SELECT * FROM read_parquet('{quoted}')")
        backup.unlink(missing_ok=True)
        return f"restored the previous table {table} in {database.name}"

    ctx.compensation(f"restore table {table}", restore)


def _check_sql(config: Any) -> None:
    # DuckDB's own parser splits the statements: `select ';' AS x` is one SELECT, `select 1; copy ...` two.
    try:
        sqlcheck.check_query(config.query)
    except ValueError as exc:
        raise ValueError(f"query: {exc}") from None


def _both(*checks: Callable[[Any], None]) -> Callable[[Any], None]:
    def run(config: Any) -> None:
        for check in checks:
            check(config)

    return run


BUILTINS: tuple[NodeType, ...] = (
    NodeType("read_csv", CsvConfig, _read_csv, "source", (), check=check_path(),
             description="scan CSV file(s) lazily"),
    NodeType("read_parquet", PathConfig, _read_parquet, "source", (), check=check_path(),
             description="scan Parquet file(s) lazily"),
    NodeType("read_ndjson", PathConfig, _read_ndjson, "source", (), check=check_path(),
             description="scan newline-delimited JSON lazily"),
    NodeType("read_duckdb", DuckdbReadConfig, _read_duckdb, "source", (), lazy=False,
             check=_both(check_path("database", "one"), _check_sql), description="query a DuckDB file"),
    NodeType("http_json", HttpJsonConfig, _http_json, "source", (), lazy=False,
             description="GET a JSON API into a frame"),
    NodeType("filter", FilterConfig, _filter, description="keep rows where condition holds"),
    NodeType("select", SelectConfig, _select, description="keep columns and/or compute expressions"),
    NodeType("with_columns", WithColumnsConfig, _with_columns, description="add or replace columns"),
    NodeType("join", JoinConfig, _join, inputs=("left", "right"), description="join ports left and right"),
    NodeType("aggregate", AggregateConfig, _aggregate, description="group by and aggregate"),
    NodeType("sort", SortConfig, _sort, description="sort rows"),
    NodeType("limit", LimitConfig, _limit, description="first n rows"),
    NodeType("union", UnionConfig, _union, variadic=True, description="concatenate any number of inputs"),
    NodeType("sql", SqlConfig, _sql, variadic=True, lazy=False, check=_check_sql,
             description="DuckDB SQL over the inputs, each a table named after its upstream node"),
    NodeType("python", PythonConfig, _python, "python", variadic=True, min_inputs=0, lazy=False,
             check=check_python, description="an allowed module:function taking and returning frames"),
    NodeType("validate", ValidateConfig, _identity, "validate", description="apply the node's contract"),
    NodeType("write_parquet", PathConfig, _write_parquet, "sink", lazy=False, check=check_path(form="literal"),
             description="write Parquet atomically"),
    NodeType("write_csv", PathConfig, _write_csv, "sink", lazy=False, check=check_path(form="literal"),
             description="write CSV atomically"),
    NodeType("write_duckdb", DuckdbWriteConfig, _write_duckdb, "sink", lazy=False,
             check=check_path("database", "one"), description="write a DuckDB table in one transaction"),
)  # fmt: skip
