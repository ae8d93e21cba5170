"""``weflow samples pin|list|drop|run``: pinned samples of sources and runs on them (``weflow.samples``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.text import Text

from weflow.cli.console import BadInput, Format, FormatOpt, _when, emit_json, note, out, scope, table
from weflow.errors import WeflowError

if TYPE_CHECKING:
    from weflow.samples import PinStatus

samples_app = typer.Typer(
    help="Pinned samples: a small Parquet sample of each source, to run a workflow on without reading its sources.",
    no_args_is_help=True,
)
ON_PINS = "on pinned samples, in this process: not recorded as an execution, no sink written"


def _rows(found: list[PinStatus]) -> list[tuple[Any, ...]]:
    rows = []
    for s in found:
        p = s.pin
        state = "not pinned" if p is None else ("STALE" if s.stale else "pinned")
        columns = ", ".join(c for c, _ in p.columns) if p else ""
        rows.append((s.node, state, p.rows if p else "", columns, f"v{p.version}" if p else "",
                     _when(p.pinned_at) if p else "", s.origin))  # fmt: skip
    return rows


def _emit(found: list[PinStatus], fmt: Format, title: str | None) -> None:
    if fmt is Format.json:
        emit_json([{"node": s.node, "stale": s.stale, "origin": s.origin, "pin": s.pin} for s in found])
        return
    table(title, ["node", "state", "rows", "columns", "from", "pinned at", "origin"], _rows(found))


@samples_app.command("pin")
def pin(
    name: str,
    rows: Annotated[int, typer.Option("--rows", "-n", help="rows per source (1 to 100000)")] = 100,
    from_execution: Annotated[
        str | None,
        typer.Option("--from-execution", help="from this run's kept outputs (weflow run --persist)"),
    ] = None,
    node: Annotated[str | None, typer.Option("--node", help="pin only this source")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Pin the first N rows of each source of NAME (a bounded read, or a run's kept output)."""
    from weflow import samples  # deferred: reading a source runs the engine, which imports Prefect (~1.5 s)

    with note.status(f"pinning the sources of {name}"):
        found = samples.pin(name, scope(), rows=rows, from_execution=from_execution, node=node)
    _emit(found, fmt, f"pinned samples of {name}")


@samples_app.command("list")
def list_(name: str, fmt: FormatOpt = Format.table) -> None:
    """The sources of NAME's current version and their pins (rows, columns, when, stale or not)."""
    from weflow import samples

    _emit(samples.status(name, scope()), fmt, None)


@samples_app.command("drop")
def drop(
    name: str, node: Annotated[str | None, typer.Argument(help="only this node's pin (default: all)")] = None
) -> None:
    """Drop NAME's pins (or one node's), their files included."""
    from weflow import samples

    gone = samples.drop(name, scope(), node)
    out.print(f"dropped {len(gone)} pin(s) of {name}" + (f": {', '.join(gone)}" if gone else ""), highlight=False)


@samples_app.command("run")
def run(
    name: str,
    version: Annotated[int | None, typer.Option("--version", "-v", help="run this version")] = None,
    node: Annotated[str | None, typer.Option("--node", help="only this node and its upstream")] = None,
    input_json: Annotated[str | None, typer.Option("--input-json", help="input data as a JSON object")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run NAME with every source replaced by its pin, in this process: nothing recorded, no sink written."""
    from weflow import samples

    data = _input(input_json)
    with note.status(f"running {name} on pinned samples"):
        done = samples.run_on_pins(name, scope(), version=version, node=node, input_data=data)
    result = done.result
    if fmt is Format.json:
        emit_json({"workflow": name, "mode": "SAMPLES", "recorded": False, "status": result.status.value,
                   "error_node": result.error_node, "error": str(result.error) if result.error else None,
                   "nodes": list(result.records),
                   "outputs": {n: f.to_dicts() for n, f in result.outputs.items()}})  # fmt: skip
    else:
        out.print(Text.assemble(f"{name} SAMPLES: ", Text(result.status.value, style="bold"), f" ({ON_PINS})"))
        rows = [(r.node, r.status.value, r.rows_in, r.rows_out, (r.error or "")[:200]) for r in result.records]
        table(None, ["node", "status", "rows in", "rows out", "error"], rows)
        for shown, frame in result.outputs.items():
            out.print(f"{shown}: {frame.height} rows", highlight=False)
            out.print(str(frame), highlight=False)
    if result.error is not None:
        first = (str(result.error).strip().splitlines() or [type(result.error).__name__])[0]
        raise WeflowError(f"run of {name} on pinned samples failed at node {result.error_node!r}: {first}")


def _input(text: str | None) -> dict[str, Any] | None:
    try:
        data = json.loads(text) if text else None
    except json.JSONDecodeError as exc:
        raise BadInput(f"--input-json: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if data is not None and not isinstance(data, dict):
        raise BadInput("--input-json: must be a JSON object")
    return data


def register(app: typer.Typer) -> None:
    """Add ``samples`` to the ``weflow`` command."""
    app.add_typer(samples_app, name="samples")
