"""Definition commands: ``apply``, ``list``, ``show``, ``versions``, ``diff``, ``rollback``, ``delete``, ``export``
and ``nodes`` (the node types definitions may use).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from weflow.cli import data_diff
from weflow.cli.console import BadInput, DocFormat, Format, FormatOpt, _when, app, bold, emit_json, out, scope, table
from weflow.core.records import Status


@app.command()
def apply(
    files: Annotated[list[Path], typer.Argument(help="definition files (YAML or JSON)")],
    message: Annotated[str, typer.Option("--message", "-m", help="version message")] = "",
    fmt: FormatOpt = Format.table,
) -> None:
    """Check and store definitions; each change makes a new version (all files or none)."""
    from weflow import workflows

    checked = [workflows.checked(workflows.parse_file(f)) for f in files]  # before the catalog is opened
    results = workflows.apply_many(checked, scope(), message)  # stored unchecked again: same data roots
    if fmt is Format.json:
        emit_json([
            {"workflow": r.workflow.name, "id": r.workflow.id, "version": r.version.number, "changed": r.created}
            for r in results
        ])  # fmt: skip
        return
    for r in results:
        what = f"version {r.version.number}" if r.created else f"unchanged (version {r.version.number})"
        out.print(Text.assemble(bold(r.workflow.name), f": {what}"))


@app.command("list")
def list_(
    status: Annotated[Status | None, typer.Option(help="only workflows in this status")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """List workflows."""
    from weflow import workflows

    found = workflows.list_workflows(scope(), status)
    if fmt is Format.json:
        emit_json(found)
        return
    table(
        None,
        ["id", "name", "status", "version", "runs", "last run", "description"],
        [(w.id, w.name, w.status.value, w.current_version, w.execution_count, _when(w.last_executed_at),
          w.description) for w in found],
    )  # fmt: skip


@app.command()
def show(
    name: str,
    version: Annotated[int | None, typer.Option("--version", "-v", help="version number")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Show a workflow: its record and the nodes of a version."""
    from weflow import workflows

    sc = scope()
    wf = workflows.get(name, sc)
    ver = workflows.version(name, sc, version)
    if fmt is Format.json:
        emit_json({"workflow": wf, "version": ver.number, "content_hash": ver.content_hash,
                   "definition": ver.definition.to_document()})  # fmt: skip
        return
    d = ver.definition
    out.print(
        Text.assemble(bold(wf.name), f" (id {wf.id}) {wf.status.value}, version {ver.number} of {wf.current_version}")
    )
    if d.description:
        out.print(d.description)
    if d.schedule:
        out.print("schedule: " + ", ".join(d.schedule))
    inputs: dict[str, list[str]] = {c.to.node: [] for c in d.connections}
    for c in d.connections:
        inputs[c.to.node].append(c.source + (f" -> .{c.to.port}" if c.to.port else ""))
    table(None, ["node", "type", "inputs", "config"],
          [(n.name, n.type, ", ".join(inputs.get(n.name, [])), json.dumps(n.config)) for n in d.nodes])  # fmt: skip


@app.command()
def versions(name: str, fmt: FormatOpt = Format.table) -> None:
    """List the versions of a workflow."""
    from weflow import workflows

    found = workflows.versions(name, scope())
    if fmt is Format.json:
        emit_json([{"number": v.number, "content_hash": v.content_hash, "author_id": v.author_id,
                    "message": v.message, "created_at": v.created_at} for v in found])  # fmt: skip
        return
    table(None, ["version", "created", "author", "hash", "message"],
          [(v.number, _when(v.created_at), v.author_id, v.content_hash[:12], v.message) for v in found])  # fmt: skip


@app.command()
def diff(
    name: str,
    a: int,
    b: int,
    data: Annotated[
        bool, typer.Option("--data", help="run both versions on the same input; compare node outputs")
    ] = False,
    key: Annotated[
        str | None, typer.Option(help="with --data: columns matching rows, comma-separated (default: contract unique)")
    ] = None,
    rows: Annotated[int | None, typer.Option(help="with --data: rows each source reads [default: 1000]")] = None,
    samples: Annotated[bool, typer.Option("--samples", help="with --data: run both on the pinned samples")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Structural diff between versions A and B; with --data, what their nodes output differently."""
    from weflow import workflows

    if data:
        data_diff.show(name, a, b, key.split(",") if key else None, rows, samples, fmt is Format.json)
        return
    if key is not None or rows is not None or samples:
        raise BadInput("--key, --rows and --samples go with --data")
    result = workflows.diff(name, a, b, scope())
    if fmt is Format.json:
        emit_json(result.to_dict())
        return
    lines = result.lines()
    out.print("\n".join(lines) if lines else f"versions {a} and {b} have the same content", highlight=False)


@app.command()
def rollback(name: str, number: int, message: Annotated[str, typer.Option("--message", "-m")] = "") -> None:
    """Make a new version whose content equals version NUMBER."""
    from weflow import workflows

    result = workflows.rollback(name, number, scope(), message)
    if result.created:
        out.print(f"{name}: version {result.version.number} (content of version {number})")
    else:
        out.print(f"{name}: version {number} is already the current content (version {result.version.number})")


@app.command()
def delete(
    name: str,
    purge: Annotated[bool, typer.Option(help="also remove versions and execution history")] = False,
) -> None:
    """Delete a workflow (history is kept unless --purge)."""
    from weflow import workflows

    workflows.delete(name, scope(), purge=purge)
    out.print(f"{name}: {'purged' if purge else 'deleted'}")


@app.command()
def export(
    name: str,
    version: Annotated[int | None, typer.Option("--version", "-v")] = None,
    fmt: Annotated[DocFormat, typer.Option("--format", "-f")] = DocFormat.yaml,
) -> None:
    """Print the definition document of a version (the current one by default)."""
    from weflow import workflows
    from weflow.core import document

    d = workflows.version(name, scope(), version).definition
    sys.stdout.write(document.to_json(d) + "\n" if fmt is DocFormat.json else document.to_yaml(d))


@app.command()
def nodes(fmt: FormatOpt = Format.table) -> None:
    """List node types and their config fields."""
    from weflow.nodes.registry import node_types  # deferred: the node types bring Polars (~0.2 s)

    types = sorted(node_types().values(), key=lambda t: (t.kind, t.name))
    if fmt is Format.json:
        emit_json([{"type": t.name, "kind": t.kind, "inputs": list(t.inputs), "variadic": t.variadic,
                    "description": t.description, "config": t.fields()} for t in types])  # fmt: skip
        return
    rows = []
    for t in types:
        ports = "any number" if t.variadic else (", ".join(t.inputs) or "none")
        fields = ", ".join(f"{f['name']}{'' if f['required'] else '?'}: {f['type']}" for f in t.fields())
        rows.append((t.name, t.kind, ports, fields, t.description))
    table(None, ["type", "kind", "inputs", "config", "description"], rows)
