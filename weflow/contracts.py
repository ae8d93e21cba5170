"""Contracts: weflow's declarative column spec compiled to ``pandera.polars.DataFrameSchema``.

A contract validates a materialised frame once (values and schema) unless it says
``checks_data: false``; then only names and dtypes are checked, on the plan, without a collect.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandera.polars as pa
import polars as pl
from pandera.errors import SchemaError, SchemaErrors

from weflow.core.model import Column, Contract

_FAILURE_SAMPLE = 5


def _dtype(name: str) -> Any:
    return getattr(pl, name)


_BY_NAME = frozenset({"ge", "le", "gt", "lt", "eq", "ne", "isin", "notin", "str_matches"})


def _checks(column: Column) -> list[pa.Check]:
    out = []
    for name, arg in column.checks.items():
        if name in _BY_NAME:  # the same name and argument in pandera
            out.append(getattr(pa.Check, name)(arg))
        elif name == "str_length":
            out.append(pa.Check.str_length(arg.get("min"), arg.get("max")))
        elif name == "between":
            out.append(pa.Check.in_range(arg.get("min"), arg.get("max")))
    return out


def to_schema(contract: Contract, name: str | None = None) -> pa.DataFrameSchema:
    columns = {
        col: pa.Column(
            _dtype(spec.dtype) if spec.dtype else None,
            checks=_checks(spec),
            nullable=spec.nullable,
            unique=spec.unique,
            required=spec.required,
        )
        for col, spec in contract.columns.items()
    }
    return pa.DataFrameSchema(columns, strict=contract.strict, coerce=contract.coerce, name=name)


@dataclass(frozen=True)
class Verdict:
    """A contract's verdict on a frame: the frame to pass on and what failed."""

    frame: pl.DataFrame | pl.LazyFrame
    failures: list[dict[str, Any]] = field(default_factory=list)
    rows_checked: int | None = None
    invalid_rows: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "failures": len(self.failures),
            "rows_checked": self.rows_checked,
            "invalid_rows": self.invalid_rows,
        }

    def message(self, workflow: str, node: str) -> str:
        """One readable line: workflow, node, and per column and check a few failing values."""
        grouped: dict[tuple[str | None, str | None], list[str]] = {}
        for f in self.failures:
            grouped.setdefault((f.get("column"), f.get("check")), []).append(str(f.get("failure_case")))
        parts = []
        for (column, check), values in grouped.items():
            shown = ", ".join(values[:_FAILURE_SAMPLE]) + (", ..." if len(values) > _FAILURE_SAMPLE else "")
            where = f"column {column!r}" if column else "frame"
            parts.append(f"{where} failed {check} ({len(values)} case(s): {shown})")
        return f"contract failed in workflow {workflow!r}, node {node!r}: " + "; ".join(parts)


def _records(cases: pl.DataFrame) -> list[dict[str, Any]]:
    keep = [c for c in ("column", "check", "failure_case", "index") if c in cases.columns]
    frame = cases.select(keep).with_columns(pl.col("failure_case").cast(pl.String))
    return frame.to_dicts()


def apply(contract: Contract, frame: pl.DataFrame | pl.LazyFrame) -> Verdict:
    """Validate ``frame``; on ``quarantine`` the returned frame keeps only the valid rows."""
    schema = to_schema(contract)
    if not contract.checks_data:
        lazy = frame.lazy()
        try:
            schema.validate(lazy, lazy=True)
        except SchemaErrors as exc:
            return Verdict(frame, _records(exc.failure_cases))
        except SchemaError as exc:
            return Verdict(frame, [{"column": None, "check": "schema", "failure_case": str(exc), "index": None}])
        return Verdict(frame)
    data = frame.collect() if isinstance(frame, pl.LazyFrame) else frame
    failures: list[dict[str, Any]] = []
    try:
        validated = schema.validate(data, lazy=True)
        data = validated if isinstance(validated, pl.DataFrame) else data
    except SchemaErrors as exc:
        failures = _records(exc.failure_cases)
    n = data.height
    if contract.min_rows is not None and n < contract.min_rows:
        failures.append(
            {"column": None, "check": f"min_rows({contract.min_rows})", "failure_case": str(n), "index": None}
        )
    if contract.max_rows is not None and n > contract.max_rows:
        failures.append(
            {"column": None, "check": f"max_rows({contract.max_rows})", "failure_case": str(n), "index": None}
        )
    bad_rows = {f["index"] for f in failures if f.get("index") is not None}
    if contract.on_failure == "quarantine" and bad_rows:
        data = data.with_row_index("__weflow_row").filter(~pl.col("__weflow_row").is_in(list(bad_rows)))
        data = data.drop("__weflow_row")
    return Verdict(data, failures, rows_checked=n, invalid_rows=len(bad_rows))
