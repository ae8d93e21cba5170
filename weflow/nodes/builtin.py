"""The built-in node types: the registry table over the modules that hold them by kind
(``sources``, ``transforms``, ``python_node``, ``sinks``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from weflow.nodes import excel, postgres, python_node, sinks, sources, sqlcheck, transforms
from weflow.nodes.base import NodeType, check_path


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
    NodeType("read_csv", sources.CsvConfig, sources.read_csv, "source", (), check=check_path(),
             description="scan CSV file(s) lazily"),
    NodeType("read_parquet", sources.PathConfig, sources.read_parquet, "source", (), check=check_path(),
             description="scan Parquet file(s) lazily"),
    NodeType("read_ndjson", sources.PathConfig, sources.read_ndjson, "source", (), check=check_path(),
             description="scan newline-delimited JSON lazily"),
    NodeType("read_duckdb", sources.DuckdbReadConfig, sources.read_duckdb, "source", (), lazy=False,
             check=_both(check_path("database", "one"), _check_sql), description="query a DuckDB file"),
    NodeType("http_json", sources.HttpJsonConfig, sources.http_json, "source", (), lazy=False,
             description="GET a JSON API into a frame"),
    NodeType("read_postgres", postgres.ReadPostgresConfig, postgres.read_postgres, "source", (), lazy=False,
             check=_both(postgres.check_connection, postgres.check_query),
             description="query PostgreSQL, inputs bound as parameters"),
    NodeType("read_excel", excel.ExcelConfig, excel.read_excel, "source", (), lazy=False, check=excel.check_excel,
             description="read a sheet of an Excel workbook"),
    NodeType("filter", transforms.FilterConfig, transforms.filter_rows,
             description="keep rows where condition holds"),
    NodeType("select", transforms.SelectConfig, transforms.select,
             description="keep columns and/or compute expressions"),
    NodeType("with_columns", transforms.WithColumnsConfig, transforms.with_columns,
             description="add or replace columns"),
    NodeType("join", transforms.JoinConfig, transforms.join, inputs=("left", "right"),
             description="join ports left and right"),
    NodeType("aggregate", transforms.AggregateConfig, transforms.aggregate, description="group by and aggregate"),
    NodeType("sort", transforms.SortConfig, transforms.sort, description="sort rows"),
    NodeType("limit", transforms.LimitConfig, transforms.limit, description="first n rows"),
    NodeType("union", transforms.UnionConfig, transforms.union, variadic=True,
             description="concatenate any number of inputs"),
    NodeType("sql", transforms.SqlConfig, transforms.sql, variadic=True, lazy=False, check=_check_sql,
             description="DuckDB SQL over the inputs, each a table named after its upstream node"),
    NodeType("python", python_node.PythonConfig, python_node.python, "python", variadic=True, min_inputs=0,
             lazy=False, check=python_node.check_python,
             description="an allowed module:function taking and returning frames"),
    NodeType("validate", transforms.ValidateConfig, transforms.identity, "validate",
             description="apply the node's contract"),
    NodeType("write_parquet", sources.PathConfig, sinks.write_parquet, "sink", lazy=False,
             check=check_path(form="literal"), description="write Parquet atomically"),
    NodeType("write_csv", sources.PathConfig, sinks.write_csv, "sink", lazy=False,
             check=check_path(form="literal"), description="write CSV atomically"),
    NodeType("write_duckdb", sinks.DuckdbWriteConfig, sinks.write_duckdb, "sink", lazy=False,
             check=check_path("database", "one"), description="write a DuckDB table in one transaction"),
    NodeType("write_postgres", postgres.WritePostgresConfig, postgres.write_postgres, "sink", lazy=False,
             check=postgres.check_write, description="write a PostgreSQL table in one transaction"),
)  # fmt: skip
