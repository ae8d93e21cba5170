"""Each node type's hops, from its config: Polars parses expressions, sqlglot reads a ``sql`` node's query."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl
import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError
from sqlglot.lineage import Node as LineageNode
from sqlglot.lineage import lineage as sql_lineage
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.scope import traverse_scope

from weflow.column_lineage.model import Hop, Ref
from weflow.core.graph import Edge
from weflow.core.model import Node
from weflow.errors import DefinitionError
from weflow.nodes import expressions

PASS_THROUGH = frozenset({"filter", "sort", "limit", "validate"})
SQL_CLAUSES = {"where": "FILTER", "having": "FILTER", "group": "GROUP_BY", "order": "SORT"}


@dataclass
class Inputs:
    """What a node's rule sees: its inbound edges and each upstream node's Polars schema (None: unknown)."""

    edges: list[Edge]
    schemas: Mapping[str, pl.Schema | None]

    def port(self, name: str) -> tuple[str, list[str]]:
        edge = next(e for e in self.edges if e.port == name)
        return edge.source, list(self.schemas[edge.source] or {})

    def one(self) -> tuple[str, list[str]]:
        edge = self.edges[0]
        return edge.source, list(self.schemas[edge.source] or {})


Rule = Callable[[Node, Any, Inputs, list[str]], list[Hop]]


def hops(index: int, node: Node, kind: str, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    """The hops into ``node``'s columns (``columns``: its output, as far as known); ``kind``: its type's kind."""
    rule = RULES.get(node.type)
    if rule is not None:
        return rule(node, config, inputs, columns)
    if not inputs.edges:
        return []  # a source: its columns are where lineage starts
    if node.type in PASS_THROUGH or kind == "sink":
        return _same_names(node.name, inputs, columns, "IDENTITY", "")
    return _same_names(node.name, inputs, columns, "TRANSFORMATION", f"{node.type} (opaque: same-named input)")


def _same_names(target: str, inputs: Inputs, columns: list[str], subtype: str, text: str) -> list[Hop]:
    out = []
    for edge in inputs.edges:
        known = set(inputs.schemas[edge.source] or {})
        out += [Hop(Ref(edge.source, c), Ref(target, c), subtype, text) for c in columns if c in known]
    return out


def _roots(text: str) -> list[str]:
    """The columns an expression reads (bound inputs ``$name`` are values, not columns)."""
    names = expressions.parse(text).meta.root_names()
    return list(dict.fromkeys(n for n in names if not n.startswith(expressions.PARAM_PREFIX)))


def _computed(source: str, target: Ref, text: str, subtype: str = "TRANSFORMATION") -> list[Hop]:
    if subtype != "AGGREGATION" and expressions.parse(text).meta.is_column():
        subtype = "IDENTITY"
    return [Hop(Ref(source, c), target, subtype, text) for c in _roots(text)]


def _row_hops(source: str, target: str, columns: Iterable[str], subtype: str, text: str) -> list[Hop]:
    return [Hop(Ref(source, c), Ref(target, "*"), subtype, text) for c in columns]


def _filter(node: Node, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    src, _ = inputs.one()
    found = _same_names(node.name, inputs, columns, "IDENTITY", "")
    return found + _row_hops(src, node.name, _roots(config.condition), "FILTER", config.condition)


def _sort(node: Node, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    src, _ = inputs.one()
    by = [config.by] if isinstance(config.by, str) else config.by
    return _same_names(node.name, inputs, columns, "IDENTITY", "") + _row_hops(src, node.name, by, "SORT", "sort")


def _select(node: Node, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    src, _ = inputs.one()
    out = [Hop(Ref(src, c), Ref(node.name, c), "IDENTITY") for c in config.columns]
    for name, text in config.exprs.items():
        out += _computed(src, Ref(node.name, name), text)
    return out


def _with_columns(node: Node, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    src, before = inputs.one()
    out = [Hop(Ref(src, c), Ref(node.name, c), "IDENTITY") for c in before if c not in config.columns]
    for name, text in config.columns.items():
        out += _computed(src, Ref(node.name, name), text)  # with_columns reads the input's columns, all at once
    return out


def _aggregate(node: Node, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    src, _ = inputs.one()
    out = [Hop(Ref(src, c), Ref(node.name, c), "IDENTITY", "group key") for c in config.by]
    for name, text in config.aggs.items():
        out += _computed(src, Ref(node.name, name), text, "AGGREGATION")
    return out + _row_hops(src, node.name, config.by, "GROUP_BY", "group by " + ", ".join(config.by))


def _keys(value: list[str] | str | None) -> list[str]:
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def _join(node: Node, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    """Polars' join: left columns, then right ones minus coalesced keys, renamed on a clash (Polars named them)."""
    (left, lcols), (right, rcols) = inputs.port("left"), inputs.port("right")
    lkeys = _keys(config.on if config.on is not None else config.left_on)
    rkeys = _keys(config.on if config.on is not None else config.right_on)
    pairs = dict(zip(lkeys, rkeys, strict=True))
    feeds: list[list[Ref]] = [[Ref(left, c), *([Ref(right, pairs[c])] if c in pairs else [])] for c in lcols]
    if config.how not in {"semi", "anti"}:
        feeds += [[Ref(right, c)] for c in rcols if config.how == "cross" or c not in rkeys]
    out = []
    for name, refs in zip(columns, feeds, strict=False):
        key = len(refs) > 1
        out += [Hop(r, Ref(node.name, name), "IDENTITY", "join key" if key else "") for r in refs]
    text = ", ".join(f"{a} = {b}" for a, b in pairs.items()) or "cross"
    return out + _row_hops(left, node.name, lkeys, "JOIN", text) + _row_hops(right, node.name, rkeys, "JOIN", text)


def _union(node: Node, config: Any, inputs: Inputs, columns: list[str]) -> list[Hop]:
    return _same_names(node.name, inputs, columns, "IDENTITY", "union")


RULES: dict[str, Rule] = {
    "filter": _filter,
    "sort": _sort,
    "select": _select,
    "with_columns": _with_columns,
    "aggregate": _aggregate,
    "join": _join,
    "union": _union,
}


# --- sql nodes ------------------------------------------------------------------------------------


def sql(index: int, node: Node, query: str, inputs: Inputs) -> tuple[list[str] | None, list[Hop], str]:
    """A ``sql`` node's output columns (None: unknown), hops and a note, from sqlglot's reading of its query.

    The query is qualified against the inputs' columns (tables named after the upstream nodes).
    """
    where = f"nodes[{index}].config.query"
    if any(inputs.schemas[e.source] is None for e in inputs.edges):
        return None, [], "unknown: an input's columns are unknown"
    schema: dict[str, object] = {
        e.source: dict.fromkeys(inputs.schemas[e.source] or {}, "UNKNOWN") for e in inputs.edges
    }
    try:
        qualified = qualify(sqlglot.parse_one(query, read="duckdb"), schema=schema, dialect="duckdb")
        if not isinstance(qualified, exp.Query) or not qualified.named_selects:
            raise DefinitionError([(where, "cannot read the SQL for lineage: not a query with named columns")])
        outputs = list(dict.fromkeys(qualified.named_selects))
        if "*" in outputs:  # a star over something that is not an input: DuckDB alone knows its columns
            return None, [], "unknown: SELECT * over a table that is not an input"
        found = [h for c in outputs for h in _sql_column(node.name, c, qualified, schema)]
    except SqlglotError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DefinitionError([(where, f"cannot read the SQL for lineage: {reason}")]) from None
    return outputs, found + _sql_rows(node.name, qualified, found), ""


def _sql_column(target: str, column: str, qualified: exp.Query, schema: dict[str, object]) -> list[Hop]:
    top = sql_lineage(column, qualified, schema=schema, dialect="duckdb")
    assert isinstance(top, LineageNode)  # one column asked: one node
    made = top.expression.unalias() if isinstance(top.expression, exp.Alias) else top.expression
    subtype = "IDENTITY" if isinstance(made, exp.Column) else "TRANSFORMATION"
    if made.find(exp.AggFunc) is not None:
        subtype = "AGGREGATION"
    text = "" if subtype == "IDENTITY" else made.sql("duckdb")
    out = []
    for leaf in top.walk():
        if isinstance(leaf.expression, exp.Table) and leaf.expression.name in schema:
            out.append(
                Hop(Ref(leaf.expression.name, exp.to_column(leaf.name).name), Ref(target, column), subtype, text)
            )
    return list(dict.fromkeys(out))


def _sql_rows(target: str, qualified: exp.Query, direct: list[Hop]) -> list[Hop]:
    """INDIRECT hops of WHERE, HAVING, GROUP BY, ORDER BY and JOIN ... ON over input tables (not derived ones).

    An ORDER BY of an output column's name sorts by what feeds that column (``direct``).
    """
    fed: dict[str, list[Ref]] = {}
    for hop in direct:
        fed.setdefault(hop.target.column, []).append(hop.source)
    out = []
    for scope in traverse_scope(qualified):
        clauses = [(scope.expression.args.get(k), s) for k, s in SQL_CLAUSES.items()]
        clauses += [(j.args.get("on"), "JOIN") for j in scope.expression.args.get("joins") or []]
        for clause, subtype in clauses:
            if clause is None:
                continue
            text = clause.sql("duckdb")
            for column in clause.find_all(exp.Column):
                source = scope.sources.get(column.table)
                if isinstance(source, exp.Table):
                    out.append(Hop(Ref(source.name, column.name), Ref(target, "*"), subtype, text))
                elif not column.table and scope.is_root:
                    out += [Hop(ref, Ref(target, "*"), subtype, text) for ref in fed.get(column.name, [])]
    return list(dict.fromkeys(out))
