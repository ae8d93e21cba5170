"""Sink node types: Parquet and CSV files written atomically, a DuckDB table written in one
transaction; each registers the compensation that puts back what it replaced (``ctx.undo``)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import duckdb
import polars as pl
from pydantic import Field

from weflow.files import write_atomic
from weflow.nodes import objectstore
from weflow.nodes.base import Frame, NodeConfig, NodeInputs, RunContext, SecretText, plain, resolve_path
from weflow.nodes.sources import PathConfig, secret

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
FileWriter = Callable[[Frame, Path], pl.DataFrame]  # Stop.write_parquet or write_csv: groups of rows at a time
Compensation = tuple[str, Callable[[], str]]  # (action, run): what RunContext.compensation registers


def _keep_previous(
    ctx: RunContext, exists: Callable[[], bool], remove: Compensation, suffix: str, save: Callable[[Path], Compensation]
) -> None:
    """Before a sink writes: register ``remove`` if what it writes is new, else ``save`` a backup and its restore."""
    if ctx.undo is None:
        return
    if not exists():
        ctx.compensation(*remove)
        return
    if ctx.work_dir is None:
        return
    backup = ctx.work_dir / "undo" / f"{ctx.node}{suffix}"
    backup.parent.mkdir(parents=True, exist_ok=True)
    ctx.compensation(*save(backup))


def _keep_previous_file(target: Path, ctx: RunContext) -> None:
    """Before a sink replaces ``target``: register the compensation that puts the old file back."""

    def remove() -> str:
        target.unlink(missing_ok=True)
        return f"removed {target} (it did not exist before)"

    def save(backup: Path) -> Compensation:
        shutil.copy2(target, backup)

        def restore() -> str:
            os.replace(backup, target)
            return f"restored the previous {target}"

        return f"restore {target.name}", restore

    _keep_previous(ctx, target.exists, (f"remove {target.name}", remove), target.suffix, save)


def _write_file(config: PathConfig, inputs: NodeInputs, ctx: RunContext, write: FileWriter) -> Frame:
    target = resolve_path(config.path, ctx.data_roots)
    _keep_previous_file(target, ctx)
    written: list[pl.DataFrame] = []  # collected and written a group of rows at a time: a timeout stops both
    write_atomic(target, lambda tmp: written.append(write(inputs.one(), tmp)))
    return written[0]


def _write_object(config: PathConfig, inputs: NodeInputs, ctx: RunContext, fmt: objectstore.WriteFormat) -> Frame:
    """Collect the frame, then upload it whole: until the upload completes the old object stays as it was."""
    objectstore.locate(config.path, form="literal", organization=ctx.organization)  # before any work
    if ctx.undo is not None:
        ctx.logger.warning("%s: an s3:// object is not put back if a later node fails", ctx.node)
    frame = ctx.stop.collect(inputs.one())
    objectstore.write(frame, config.path, fmt, secret(config), ctx.organization)
    return frame


def write_parquet(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    if objectstore.is_url(config.path):
        return _write_object(config, inputs, ctx, "parquet")
    return _write_file(config, inputs, ctx, ctx.stop.write_parquet)


def write_csv(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    if objectstore.is_url(config.path):
        return _write_object(config, inputs, ctx, "csv")
    return _write_file(config, inputs, ctx, ctx.stop.write_csv)


class DuckdbWriteConfig(NodeConfig):
    database: SecretText = Field(description="DuckDB file under the data roots; may be {secret: NAME}")
    table: str = Field(pattern=IDENT)
    mode: Literal["replace", "append"] = "replace"


def write_duckdb(config: DuckdbWriteConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    frame = ctx.stop.collect(inputs.one())
    path = resolve_path(plain(config.database), ctx.data_roots, "database")
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

    def exists() -> bool:
        [(found,)] = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'", [table]
        ).fetchall()
        return bool(found)

    def drop() -> str:
        with duckdb.connect(str(database)) as undo:
            undo.execute(f'DROP TABLE IF EXISTS "{table}"')
        return f"dropped {table} in {database.name} (it did not exist before)"

    def save(backup: Path) -> Compensation:
        quoted = str(backup).replace("'", "''")
        con.execute(f"COPY \"{table}\" TO '{quoted}' (FORMAT parquet)")

        def restore() -> str:
            with duckdb.connect(str(database)) as undo:
                undo.execute(f"CREATE OR REPLACE TABLE \"{table}\" AS SELECT * FROM read_parquet('{quoted}')")
            backup.unlink(missing_ok=True)
            return f"restored the previous table {table} in {database.name}"

        return f"restore table {table}", restore

    _keep_previous(ctx, exists, (f"drop table {table}", drop), ".parquet", save)
