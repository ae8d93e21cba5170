"""Source node types: lazy scans of CSV, Parquet and NDJSON files, a DuckDB query, a JSON API."""

from __future__ import annotations

import glob
from typing import Annotated, Any

import polars as pl
from pydantic import BeforeValidator, Field, field_validator

from weflow import outbound
from weflow.core.secret_ref import as_reference
from weflow.errors import OutboundError
from weflow.nodes import expressions, objectstore
from weflow.nodes.base import (
    Frame,
    NodeConfig,
    NodeInputs,
    RunContext,
    SecretParam,
    SecretRef,
    SecretText,
    plain,
    resolve_files,
    resolve_path,
)

SecretOnly = Annotated[SecretRef, BeforeValidator(as_reference)]  # {secret: NAME}, never a value in clear


class PathConfig(NodeConfig):
    path: str = Field(min_length=1, description="file or glob under the data roots, or s3://bucket/key")
    credentials: SecretOnly | None = Field(
        default=None, description="s3:// only: {secret: NAME} holding the AWS keys as JSON (else the operator's)"
    )


def secret(config: PathConfig) -> str | None:
    """The value of an s3:// node's credentials secret (the engine has read it), if it names one."""
    return None if config.credentials is None else plain(config.credentials)


class CsvConfig(PathConfig):
    separator: str = Field(default=",", min_length=1, max_length=1)
    has_header: bool = True


def read_csv(config: CsvConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    if objectstore.is_url(config.path):
        options = {"separator": config.separator, "has_header": config.has_header}
        return objectstore.scan(config.path, "csv", secret(config), ctx.organization, **options)
    files = resolve_files(config.path, ctx.data_roots)
    return pl.scan_csv(files, separator=config.separator, has_header=config.has_header, glob=False)


def read_parquet(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    if objectstore.is_url(config.path):
        return objectstore.scan(config.path, "parquet", secret(config), ctx.organization)
    return pl.scan_parquet(resolve_files(config.path, ctx.data_roots), glob=False)


def read_ndjson(config: PathConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    if objectstore.is_url(config.path):
        return objectstore.scan(config.path, "ndjson", secret(config), ctx.organization)
    # scan_ndjson has no glob=False: escaped, a matched name such as 'a[1].json' stays itself
    return pl.scan_ndjson([glob.escape(str(f)) for f in resolve_files(config.path, ctx.data_roots)])


class DuckdbReadConfig(NodeConfig):
    database: SecretText = Field(description="DuckDB file under the data roots; may be {secret: NAME}")
    query: str = Field(min_length=1, description="SELECT over the file's tables; $name binds an input")


def read_duckdb(config: DuckdbReadConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    path = resolve_path(plain(config.database), ctx.data_roots, "database")
    if not path.is_file():
        raise FileNotFoundError(f"database {config.database!r} does not exist")
    con = ctx.stop.connect(str(path), read_only=True, config={"enable_external_access": False})
    try:
        result: pl.DataFrame = con.sql(config.query, params=expressions.bound(config.query, ctx.params) or None).pl()
        return result
    finally:
        ctx.stop.release(con)


class HttpJsonConfig(NodeConfig):
    url: str = Field(pattern=r"^https?://", description="http(s) URL returning JSON")
    params: dict[str, SecretParam] = Field(default_factory=dict, description="query values; {secret: NAME} allowed")
    headers: dict[str, SecretText] = Field(default_factory=dict, description="request headers; {secret: NAME} allowed")
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


def http_json(config: HttpJsonConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    """The records at ``record_path`` of a JSON answer; errors never quote the body (it may hold secrets)."""
    where = outbound.redact(config.url)
    data: Any = outbound.get_json(config.url, config.params, config.timeout_seconds, headers=config.headers)
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
