"""``weflow lineage``: which source columns, through which transforms, feed each column of a workflow."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text
from rich.tree import Tree

from weflow.cli.console import app, bold, emit_json, out, scope, table

if TYPE_CHECKING:  # sqlglot and Polars: imported when `weflow lineage` runs, not by every command
    from weflow import column_lineage
    from weflow.column_lineage import Lineage, Ref


@app.command()
def lineage(
    name: str,
    column: Annotated[str | None, typer.Argument(metavar="NODE.COLUMN", help="one column: its sources")] = None,
    version: Annotated[int | None, typer.Option("--version", "-v", help="version number")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON for scripts")] = False,
    as_mermaid: Annotated[bool, typer.Option("--mermaid", help="a Mermaid graph of the column hops")] = False,
) -> None:
    """Column lineage of a workflow version: each column's source columns and the transforms between."""
    from weflow import column_lineage

    found = column_lineage.for_workflow(name, scope(), version)
    ref = found.ref(column) if column else None
    if as_mermaid:
        out.print(found.mermaid(ref))
    elif as_json:
        emit_json(_column_json(found, ref) if ref else _json(found))
    elif ref is not None:
        out.print(_column_tree(found, ref))
    else:
        _table(found)


def _table(found: Lineage) -> None:
    from weflow.column_lineage import Ref

    rows = []
    for node in found.nodes:
        if not node.columns:
            rows.append((node.node, node.type, node.step, "", node.note, ""))
        for col in node.columns:
            origins = found.origins(Ref(node.node, col))
            via = sorted({o.transforms for o in origins if o.transforms})
            sources = ", ".join(sorted({str(o.source) for o in origins})) or (
                "(source)" if node.kind == "source" else ""
            )
            rows.append((node.node, node.type, node.step, col, sources, "; ".join(via)))
    out.print(Text.assemble(bold(found.workflow), f" version {found.version}: column lineage"))
    table(None, ["node", "type", "step", "column", "from", "via"], rows)


def _column_tree(found: Lineage, ref: Ref) -> Tree:
    tree = Tree(Text.assemble(bold(str(ref)), f" ({found.workflow} version {found.version})"))
    origins = found.origins(ref)
    if not origins:
        tree.add(Text("made from no source column (a constant or a row count)"))
    for origin in origins:
        tree.add(Text.assemble(bold(str(origin.source)), f"  via {origin.transforms or 'identity'}"))
    rows = found.row_sources(ref.node)
    if rows:
        branch = tree.add(Text("rows decided by"))
        for source, subtype in sorted(rows):
            branch.add(f"{source} ({subtype.lower()})")
    return tree


def _json(found: Lineage) -> dict[str, Any]:
    return {
        "workflow": found.workflow,
        "version": found.version,
        "nodes": [
            {"node": n.node, "type": n.type, "kind": n.kind, "step": n.step, "columns": n.schema, "note": n.note}
            for n in found.nodes
        ],
        "hops": [_hop(h) for h in found.hops],
    }


def _column_json(found: Lineage, ref: Ref) -> dict[str, Any]:
    return {
        "workflow": found.workflow,
        "version": found.version,
        "column": str(ref),
        "sources": sorted(str(s) for s in found.sources(ref)),
        "origins": [{"source": str(o.source), "path": [_hop(h) for h in o.path]} for o in found.origins(ref)],
        "rows": [{"source": str(s), "subtype": t} for s, t in sorted(found.row_sources(ref.node))],
    }


def _hop(h: column_lineage.Hop) -> dict[str, str]:
    return {
        "from": str(h.source), "to": str(h.target), "type": h.kind, "subtype": h.subtype, "description": h.description,
    }  # fmt: skip
