"""Derive a version's lineage: each node's schema from Polars (or its contract), its hops from ``rules``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import polars as pl

from weflow.column_lineage import rules
from weflow.column_lineage.model import Lineage, NodeColumns
from weflow.column_lineage.rules import Inputs
from weflow.compile import plan as planning
from weflow.core.graph import edges, topological_order
from weflow.core.model import Definition, Node
from weflow.nodes import expressions
from weflow.nodes.base import Inbound, NodeInputs, NodeType, RunContext
from weflow.nodes.registry import node_types, signatures
from weflow.workflows import Scope, data_roots, version

# --- derivation ---------------------------------------------------------------------------------


def of(definition: Definition, roots: tuple[Path, ...], version_number: int | None = None) -> Lineage:
    """The column lineage of a checked ``definition``; sources' schemas read lazily under ``roots``."""
    types = node_types()
    wired = edges(definition, signatures())
    params = {name: spec.default for name, spec in definition.inputs.items()}
    steps = {n: s.name for s in planning.build(definition, types).steps for n in s.nodes}
    schemas: dict[str, pl.Schema | None] = {}
    nodes, hops = [], []
    for name in topological_order(definition):
        index, node = next((i, n) for i, n in enumerate(definition.nodes) if n.name == name)
        kind = types[node.type]
        inputs = Inputs([e for e in wired if e.target == name], schemas)
        config = kind.config.model_validate(node.config)
        if node.type == "sql":  # sqlglot tells the columns, DuckDB over empty inputs their types
            columns, found, note = rules.sql(index, node, node.config["query"], inputs)
            schema = _sql_schema(columns, node.config["query"], inputs, params) if columns is not None else None
        else:
            schema, note = _schema(node, kind, config, inputs, RunContext(definition.name, name, params, roots))
            found = rules.hops(index, node, kind.kind, config, inputs, list(schema or ()))
        schemas[name] = schema
        shown = {c: str(t) for c, t in schema.items()} if schema is not None else None
        nodes.append(NodeColumns(name, node.type, kind.kind, shown, steps.get(name, name), note))
        hops += found
    return Lineage(definition.name, version_number, tuple(nodes), tuple(hops))


def for_workflow(name: str, scope: Scope, number: int | None = None) -> Lineage:
    """The lineage of a stored version (the current one by default), in the scope's data roots."""
    found = version(name, scope, number)
    return of(found.definition, data_roots(scope), found.number)


def _schema(node: Node, kind: NodeType, config: Any, inputs: Inputs, ctx: RunContext) -> tuple[pl.Schema | None, str]:
    """The node's output schema, and a note when it was declared or is unknown."""
    declared = pl.Schema({c: _dtype(s.dtype) for c, s in node.contract.columns.items()}) if node.contract else None
    fallback = "declared by the contract" if declared is not None else "unknown: "
    if kind.kind == "sink":
        return inputs.schemas[inputs.edges[0].source], ""
    if not kind.lazy:
        return declared, fallback + ("" if declared is not None else "not a Polars node and no contract")
    if any(inputs.schemas[e.source] is None for e in inputs.edges):
        return declared, fallback + ("" if declared is not None else "an input's columns are unknown")
    frames = tuple(Inbound(e.source, e.port, pl.LazyFrame(schema=inputs.schemas[e.source])) for e in inputs.edges)
    try:
        got = kind.run(config, NodeInputs(frames), ctx)
        return (got.lazy() if isinstance(got, pl.DataFrame) else got).collect_schema(), ""
    except Exception as exc:  # a missing file, a refused root: the picture goes on with what is known
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return declared, fallback + ("" if declared is not None else reason)


def _dtype(name: str | None) -> pl.DataType:
    """A contract's dtype name (``model.DTYPES``: Polars' own class names) as a Polars dtype."""
    found = getattr(pl, name, None) if name else None
    return found() if isinstance(found, type) and issubclass(found, pl.DataType) else pl.Null()


def _sql_schema(columns: list[str], query: str, inputs: Inputs, params: dict[str, Any]) -> pl.Schema:
    """The types DuckDB gives ``columns`` over empty frames of the inputs (file access off); Null if it cannot."""
    con = duckdb.connect(config={"enable_external_access": False})
    try:
        for edge in inputs.edges:
            con.register(edge.source, pl.DataFrame(schema=inputs.schemas[edge.source]).to_arrow())
        found = con.sql(query, params=expressions.bound(query, params) or None).limit(0).pl().schema
    except (duckdb.Error, KeyError, TypeError):
        found = pl.Schema()
    finally:
        con.close()
    types = list(found.values()) if len(found) == len(columns) else [pl.Null()] * len(columns)
    return pl.Schema(dict(zip(columns, types, strict=True)))
