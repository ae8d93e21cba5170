"""Transform node types: Polars expressions (filter, select, with_columns, aggregate), join, sort,
limit, union, DuckDB SQL over the inputs, and validate (the identity: its contract is the check)."""

from __future__ import annotations

from typing import Literal

import polars as pl
from pydantic import Field, field_validator, model_validator

from weflow.nodes import expressions
from weflow.nodes.base import Frame, NodeConfig, NodeInputs, RunContext


def _expr_dict(value: dict[str, str]) -> dict[str, str]:
    for name, text in value.items():
        try:
            expressions.check(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None
    return value


class FilterConfig(NodeConfig):
    condition: str = Field(description="SQL boolean expression; $name binds an input")
    _check = field_validator("condition")(lambda cls, v: expressions.check(v))


def filter_rows(config: FilterConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
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


def select(config: SelectConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    texts = list(config.exprs.values())
    frame, _ = expressions.with_params(inputs.one(), texts, ctx.params)
    named = [expressions.parse(t).alias(n) for n, t in config.exprs.items()]
    return frame.select([*[pl.col(c) for c in config.columns], *named])


class WithColumnsConfig(NodeConfig):
    columns: dict[str, str] = Field(min_length=1, description="name -> SQL expression")
    _check = field_validator("columns")(lambda cls, v: _expr_dict(v))


def with_columns(config: WithColumnsConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
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


def join(config: JoinConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
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


def aggregate(config: AggregateConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    aggs = [expressions.parse(t).alias(n) for n, t in config.aggs.items()]
    frame = inputs.one()
    if not config.by:
        return frame.select(aggs)
    return frame.group_by(config.by).agg(aggs)  # no maintain_order: it costs; add a sort node for order


class SortConfig(NodeConfig):
    by: list[str] | str
    descending: bool | list[bool] = False
    nulls_last: bool = False


def sort(config: SortConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    return inputs.one().sort(config.by, descending=config.descending, nulls_last=config.nulls_last)


class LimitConfig(NodeConfig):
    n: int = Field(ge=0)


def limit(config: LimitConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    return inputs.one().head(config.n)


class UnionConfig(NodeConfig):
    how: Literal["vertical", "diagonal"] = "vertical"


def union(config: UnionConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    how: Literal["vertical_relaxed", "diagonal_relaxed"] = (
        "vertical_relaxed" if config.how == "vertical" else "diagonal_relaxed"
    )
    return pl.concat(inputs.frames(), how=how)


class SqlConfig(NodeConfig):
    query: str = Field(min_length=1, description="DuckDB SQL over the inputs (tables named after upstream nodes)")


def sql(config: SqlConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    # DuckDB with file access off: a query sees its inputs and nothing else on disk.
    con = ctx.stop.connect(config={"enable_external_access": False})  # a timeout interrupts its query
    try:
        for name, frame in inputs.by_source().items():
            con.register(name, ctx.stop.collect(frame).to_arrow())
        result: pl.DataFrame = con.sql(config.query, params=expressions.bound(config.query, ctx.params) or None).pl()
        return result
    finally:
        ctx.stop.release(con)


class ValidateConfig(NodeConfig):
    """No settings: the node's ``contract`` is what it checks."""


def identity(config: ValidateConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    return inputs.one()
