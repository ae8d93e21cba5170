"""``weflow test``: workflow tests in this process (no Prefect server, nothing written), by ``workflow_tests``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from weflow.cli.console import BadInput, Format, FormatOpt, app, emit_json, out, scope

if TYPE_CHECKING:
    from weflow.workflow_tests import Outcome


def _show(outcome: Outcome) -> None:
    verdict = Text("PASS ", style="green") if outcome.ok else Text("FAIL ", style="bold red")
    out.print(Text.assemble(verdict, outcome.title, f" ({outcome.seconds * 1000:.0f} ms)"))
    if not outcome.ok:
        out.print(Text(outcome.report()))


@app.command("test")
def test_(
    names: Annotated[list[str] | None, typer.Argument(help="stored workflows (default: every one with tests)")] = None,
    files: Annotated[
        list[Path] | None, typer.Option("--file", help="a definition file (its NAME.tests.yaml beside it too)")
    ] = None,
    only: Annotated[list[str] | None, typer.Option("--test", "-k", help="only tests whose name contains this")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run workflow tests on Polars in this process: sources get given rows, sinks write nothing; 1 on a failure."""
    from weflow import workflow_tests  # deferred: the engine imports Prefect (~1.5 s) that other commands skip

    t0 = time.perf_counter()
    definitions = [workflow_tests.from_file(f) for f in files or []]
    if names or not files:
        definitions += workflow_tests.stored(names or [], scope())
    outcomes = workflow_tests.run_all(definitions, only or [], progress=None if fmt is Format.json else _show)
    if not outcomes:
        raise BadInput("no workflow tests found" + (f" matching {', '.join(only)}" if only else ""))
    failed = [o for o in outcomes if not o.ok]
    if fmt is Format.json:
        emit_json([
            {"workflow": o.workflow, "test": o.test, "ok": o.ok, "seconds": round(o.seconds, 4),
             "mismatches": [{"node": m.node, "check": m.check, "message": m.message} for m in o.mismatches]}
            for o in outcomes
        ])  # fmt: skip
    else:
        passed = len(outcomes) - len(failed)
        style = "bold red" if failed else "green"
        out.print(Text(f"{passed} passed, {len(failed)} failed in {time.perf_counter() - t0:.2f} s", style=style))
    if failed:
        raise typer.Exit(1)
