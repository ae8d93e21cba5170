"""Run commands: ``run``, ``executions``, ``execution``, ``logs``, ``stats``, ``cancel``, ``resume``, ``sync``."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from typing import Annotated, NoReturn

import typer

from weflow import handoff
from weflow.cli import console
from weflow.cli.console import (
    BadInput,
    Format,
    FormatOpt,
    _quiet_prefect_console,
    _when,
    app,
    bold,
    catalog_path,
    emit_json,
    out,
    scope,
    table,
)
from weflow.core.records import Execution, Mode, RunState


@app.command("run")
def run_(
    name: str,
    input_json: Annotated[str | None, typer.Option("--input-json", help="input data as a JSON object")] = None,
    timeout: Annotated[float | None, typer.Option(help="execution timeout in seconds (default 300)")] = None,
    version: Annotated[int | None, typer.Option("--version", "-v", help="run this version")] = None,
    persist: Annotated[bool, typer.Option(help="persist every node's output as Parquet")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="queue it on its deployment and return at once")] = False,
    local: Annotated[bool, typer.Option("--local", help="run it in this process, even with a worker up")] = False,
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="incremental sources read every row (cursors move forward only)")
    ] = False,
    samples: Annotated[
        bool, typer.Option("--samples", help="on the pinned samples, in this process: not recorded, no sink written")
    ] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run a workflow now on a running weflow worker (else in this process); exit 0 only if it succeeded."""
    if samples:
        clash = [f for f, on in (("--queue", queue), ("--persist", persist), ("--full-refresh", full_refresh)) if on]
        if clash:
            raise BadInput(f"--samples runs on the pins in this process and writes nothing: not with {clash[0]}")
        from weflow.cli.samples import run as run_on_samples

        return run_on_samples(name, version=version, node=None, input_json=input_json, fmt=fmt)
    try:
        data = json.loads(input_json) if input_json else None
    except json.JSONDecodeError as exc:
        raise BadInput(f"--input-json: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if data is not None and not isinstance(data, dict):
        raise BadInput("--input-json: must be a JSON object")
    if not (queue or local or persist or full_refresh):
        handed = handoff.run_on_worker(name, catalog_path(), data, timeout, version, while_waiting=console.prepare)
        if handed is not None:
            _show_execution(handed, fmt)
            if handed.status is not RunState.SUCCEEDED:
                _run_failed(handed)
            return
        if fmt is Format.table:  # stdout: stderr holds only the one line of an error; json stays pure
            out.print("no weflow worker runs for this Prefect home: running it in this process (weflow up starts one)")
    from weflow import execution  # deferred: importing Prefect costs ~1.5 s that other commands skip

    _quiet_prefect_console()
    if queue:
        queued = execution.submit(name, scope(), Mode.MANUAL, data, timeout, queue=True, full_refresh=full_refresh)
        if fmt is Format.json:
            emit_json(queued)
        else:
            out.print(f"execution {queued.id} QUEUED (Prefect flow run {queued.flow_run_id})")
        return
    result = execution.run(
        name, scope(), input_data=data, timeout=timeout, version_number=version, persist=persist,
        full_refresh=full_refresh,
    )  # fmt: skip
    _show_execution(result.execution, fmt)
    if not result.ok:
        _run_failed(result.execution)


@app.command()
def executions(
    name: Annotated[str | None, typer.Argument(help="only this workflow")] = None,
    limit: Annotated[int, typer.Option(help="most recent N")] = 50,
    fmt: FormatOpt = Format.table,
) -> None:
    """List executions, most recent first (unfinished ones are first brought up to date from Prefect)."""
    from weflow import execution as service

    sc = scope()
    service.sync(sc)
    found = service.executions(sc, name, limit=limit)
    if fmt is Format.json:
        emit_json(found)
        return
    table(None, ["id", "workflow", "version", "mode", "status", "started", "duration", "error"],
          [(e.id, e.workflow, e.version, e.mode.value, e.status.value, _when(e.started_at), _ms(e.duration_ms),
            e.error_message or "") for e in found])  # fmt: skip


@app.command()
def execution(execution_id: str, fmt: FormatOpt = Format.table) -> None:
    """One execution, node by node: status, attempts, rows, duration, error (ended first if its process died)."""
    from weflow import leases  # no Prefect import: a dead run is told from its lease alone

    _show_execution(leases.current(execution_id, scope()), fmt)


def _ms(value: float | None) -> str:
    if value is None:
        return ""
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


def _run_failed(e: Execution) -> NoReturn:
    """The README's promise for a failed run: one line (node, cause) and where the whole story is."""
    causes = (e.error_message or "").strip().splitlines()
    cause = causes[0] + (" ..." if len(causes) > 1 else "") if causes else ""
    node = f"node {e.error_node!r}"
    if e.error_node and not cause.startswith(node):  # node errors already start with their node
        cause = f"{node}: {cause}" if cause else node
    sys.stderr.write(f"error: run of {e.workflow} {e.status.value}" + (f": {cause}" if cause else "") + "\n")
    sys.stderr.write(f"details: weflow logs {e.id}\n")
    raise SystemExit(1)


def _show_execution(e: Execution, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json(e)
        return
    from rich.text import Text  # deferred: ``weflow run`` imports rich while its run runs (``console.prepare``)

    out.print(f"execution {e.id}")
    out.print(Text.assemble(f"{e.workflow} v{e.version} {e.mode.value}: ", bold(e.status.value),
                            f" in {_ms(e.duration_ms)}"))  # fmt: skip
    if e.resumed_from:
        out.print(f"resumes execution {e.resumed_from}")
    if e.error_message:
        out.print(f"error ({e.error_type}, node {e.error_node}): {e.error_message}", highlight=False)
    table(None, ["node", "status", "attempts", "rows in", "rows out", "duration", "fused into", "error"],
          [(n.node, n.status.value, n.attempts, n.rows_in, n.rows_out, _ms(n.duration_ms), n.group or "",
            (n.error or "")[:200]) for n in e.nodes])  # fmt: skip
    if e.compensations:
        table("compensations (newest first)", ["node", "action", "status", "detail"],
              [(c.node, c.action, c.status, c.detail or "") for c in e.compensations])  # fmt: skip


@app.command()
def logs(
    execution_id: str,
    node: Annotated[str | None, typer.Option(help="only this node's lines")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """An execution's log lines (its nodes' and weflow's), read from Prefect."""
    from weflow import execution as service

    lines = service.logs(execution_id, scope(), node)
    if fmt is Format.json:
        emit_json(lines)
        return
    for line in lines:
        where = line.node or "flow"
        out.print(f"{line.timestamp:%H:%M:%S.%f}"[:-3] + f" {line.level:<7} {where}: {line.message}", highlight=False)


def parse_since(text: str) -> datetime:
    """``7d``, ``24h``, ``30m`` ago, or an ISO date/time."""
    units = {"d": 86400, "h": 3600, "m": 60}
    if text[:-1].isdigit() and text[-1:] in units:
        return datetime.now(UTC) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        found = datetime.fromisoformat(text)
    except ValueError:
        raise BadInput(f"--since {text!r}: give 7d, 24h, 30m or an ISO date like 2026-11-01") from None
    return found if found.tzinfo else found.replace(tzinfo=UTC)


@app.command()
def stats(
    name: Annotated[str | None, typer.Argument(help="only this workflow")] = None,
    since: Annotated[str | None, typer.Option(help="window: 7d, 24h, 30m or an ISO date")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Metrics per workflow: runs, success rate, duration p50/p95/max, rows, failures by node."""
    from weflow import monitor  # deferred: alerts bring httpx, which no other command here needs

    found = monitor.stats(scope(), name, parse_since(since) if since else None)
    if fmt is Format.json:
        emit_json(found)
        return
    rows = []
    for w, m in found.items():
        d = m["duration_ms"]
        rows.append((w, m["runs"], f"{m['success_rate']:.0%}", _ms(d["p50"]), _ms(d["p95"]), _ms(d["max"]),
                     m["rows_out"], m["contract_failures"]))  # fmt: skip
    table(None, ["workflow", "runs", "success", "p50", "p95", "max", "rows out", "contract failures"], rows)
    failing = [(w, f["node"], f["error_type"], f["count"]) for w, m in found.items() for f in m["failures_by_node"]]
    if failing:
        table("failures by node", ["workflow", "node", "error", "count"], failing)


@app.command()
def cancel(execution_id: str) -> None:
    """Cancel a queued or running execution (through Prefect)."""
    from weflow import execution as service

    found = service.cancel(execution_id, scope())
    out.print(f"execution {found.id}: {found.status.value} (cancellation requested)")


@app.command()
def resume(
    execution_id: str,
    from_node: Annotated[str | None, typer.Option("--from", help="re-run this node and all after it")] = None,
    latest_version: Annotated[bool, typer.Option("--latest-version", help="run the current version")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run an ended execution again, reusing the outputs of the steps that succeeded."""
    from weflow import execution as service

    _quiet_prefect_console()
    result = service.resume(execution_id, scope(), from_node=from_node, latest_version=latest_version)
    _show_execution(result.execution, fmt)
    if not result.ok:
        _run_failed(result.execution)


@app.command()
def sync() -> None:
    """Repair the catalog's execution records from Prefect (after a crash or a UI cancellation)."""
    from weflow import execution as service

    fixed = service.sync(scope())
    out.print(f"{len(fixed)} execution(s) brought up to date")
    for e in fixed:
        out.print(f"  {e.id} {e.workflow}: {e.status.value}")
