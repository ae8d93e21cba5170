"""The ``weflow`` command line: thin parsing and rendering over the services."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from weflow import server as prefect_server
from weflow import workflows
from weflow.config import settings
from weflow.core import document
from weflow.core.entities import Execution, Mode, Status
from weflow.errors import WeflowError
from weflow.nodes.registry import node_types
from weflow.workflows import Scope

app = typer.Typer(
    name="weflow",
    help="Workflows stored as data in DuckDB, run as Prefect flows over Polars frames.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Markup and emoji codes off: names, descriptions, conditions, paths and log lines are user text,
# and a description with `[/x]` made `weflow list` exit 1 (issue 14); styles come from Text only.
out = Console(soft_wrap=True, markup=False, emoji=False)
if not out.is_terminal:
    out.width = 200  # scripts and logs: never truncate columns
_catalog: dict[str, Path | None] = {"path": None}
_verbose = {"on": False}


class Format(StrEnum):
    table = "table"
    json = "json"


class DocFormat(StrEnum):
    yaml = "yaml"
    json = "json"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts")]
T = TypeVar("T")


@app.callback()
def main(
    ctx: typer.Context,
    catalog: Annotated[
        Path | None,
        typer.Option("--catalog", envvar="WEFLOW_CATALOG", help="catalog file (default data/weflow.duckdb)"),
    ] = None,
    create_catalog: Annotated[
        bool, typer.Option("--create-catalog", help="create the folder of --catalog if it does not exist")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="show Prefect's console log and tracebacks while flows run")
    ] = False,
) -> None:
    source = ctx.get_parameter_source("catalog")  # typer's own vendored click: compare by name
    if catalog is not None and source is not None and source.name == "COMMANDLINE":
        _refuse_missing_folder(catalog, create_catalog)
    _catalog["path"] = catalog
    _verbose["on"] = verbose


def _refuse_missing_folder(catalog: Path, create: bool) -> None:
    """A typo in ``--catalog`` must not silently start an empty catalog (WEFLOW_CATALOG is left as it was)."""
    if create or catalog.parent.is_dir():
        return
    sys.stderr.write(
        f"error: --catalog {catalog}: folder {catalog.parent} does not exist (add --create-catalog to create it)\n"
    )
    raise SystemExit(2)


def _quiet_prefect_console() -> None:
    """Silence the console handler Prefect puts on the root logger, unless ``--verbose``.

    A failing run printed two full Prefect tracebacks on stderr (issue 14); the CLI prints one line
    instead. Prefect's API handler sits on its own loggers, so every line still reaches ``weflow logs``.
    Call after importing the services (importing Prefect configures logging once per process).
    """
    if _verbose["on"]:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL + 1)


def scope() -> Scope:
    return Scope.current(_catalog["path"] or settings().catalog)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "to_document"):
        return value.to_document()
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    t = Table(title=title, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[Text("" if v is None else str(v)) for v in r])
    out.print(t)


def bold(text: str) -> Text:
    return Text(text, style="bold")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


@app.command()
def apply(
    files: Annotated[list[Path], typer.Argument(help="definition files (YAML or JSON)")],
    message: Annotated[str, typer.Option("--message", "-m", help="version message")] = "",
    fmt: FormatOpt = Format.table,
) -> None:
    """Check and store definitions; each change makes a new version (all files or none)."""
    definitions = [workflows.read(f) for f in files]
    results = workflows.apply_many(definitions, scope(), message)
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
    found = workflows.versions(name, scope())
    if fmt is Format.json:
        emit_json([{"number": v.number, "content_hash": v.content_hash, "author_id": v.author_id,
                    "message": v.message, "created_at": v.created_at} for v in found])  # fmt: skip
        return
    table(None, ["version", "created", "author", "hash", "message"],
          [(v.number, _when(v.created_at), v.author_id, v.content_hash[:12], v.message) for v in found])  # fmt: skip


@app.command()
def diff(name: str, a: int, b: int, fmt: FormatOpt = Format.table) -> None:
    """Structural diff between versions A and B."""
    result = workflows.diff(name, a, b, scope())
    if fmt is Format.json:
        emit_json(result.to_dict())
        return
    lines = result.lines()
    out.print("\n".join(lines) if lines else f"versions {a} and {b} have the same content", highlight=False)


@app.command()
def rollback(name: str, number: int, message: Annotated[str, typer.Option("--message", "-m")] = "") -> None:
    """Make a new version whose content equals version NUMBER."""
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
    workflows.delete(name, scope(), purge=purge)
    out.print(f"{name}: {'purged' if purge else 'deleted'}")


@app.command()
def export(
    name: str,
    version: Annotated[int | None, typer.Option("--version", "-v")] = None,
    fmt: Annotated[DocFormat, typer.Option("--format", "-f")] = DocFormat.yaml,
) -> None:
    """Print the definition document of a version (the current one by default)."""
    d = workflows.version(name, scope(), version).definition
    sys.stdout.write(document.to_json(d) + "\n" if fmt is DocFormat.json else document.to_yaml(d))


@app.command()
def nodes(fmt: FormatOpt = Format.table) -> None:
    """List node types and their config fields."""
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


@app.command("run")
def run_(
    name: str,
    input_json: Annotated[str | None, typer.Option("--input-json", help="input data as a JSON object")] = None,
    timeout: Annotated[float | None, typer.Option(help="execution timeout in seconds (default 300)")] = None,
    version: Annotated[int | None, typer.Option("--version", "-v", help="run this version")] = None,
    persist: Annotated[bool, typer.Option(help="persist every node's output as Parquet")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="queue it on its deployment and return at once")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Run a workflow now, in this process, on a local Prefect server; exit 0 only if it succeeded."""
    from weflow import execution  # deferred: importing Prefect costs ~1.5 s that other commands skip

    try:
        data = json.loads(input_json) if input_json else None
    except json.JSONDecodeError as exc:
        raise BadInput(f"--input-json: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if data is not None and not isinstance(data, dict):
        raise BadInput("--input-json: must be a JSON object")
    _quiet_prefect_console()
    if queue:
        queued = execution.submit(name, scope(), Mode.MANUAL, data, timeout, queue=True)
        if fmt is Format.json:
            emit_json(queued)
        else:
            out.print(f"execution {queued.id} QUEUED (Prefect flow run {queued.flow_run_id})")
        return
    result = execution.run(name, scope(), input_data=data, timeout=timeout, version_number=version, persist=persist)
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
    wf_id = workflows.get(name, sc).id if name else None
    found = sc.catalog.executions(sc.user.organization_id, wf_id, limit=limit)
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
    sc = scope()
    if name:
        workflows.get(name, sc)  # a clear error for an unknown name
    found = sc.catalog.stats(sc.user.organization_id, name, parse_since(since) if since else None)
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


@app.command("deploy")
def deploy_(
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="runs report to the weflow API there (remote workers)")
    ] = None,
) -> None:
    """Create or update one Prefect deployment per ACTIVE/PAUSED workflow; remove the others'."""
    from weflow import deploy

    if api_url is not None and not api_url.startswith(("http://", "https://")):
        raise BadInput(f"--api-url {api_url!r}: expected http(s)://HOST:PORT")
    results = deploy.deploy(scope(), api_url)
    table(None, ["workflow", "deployment", "action", "schedules"],
          [(r.workflow, deploy.deployment_name(r.workflow), r.action, "paused" if r.paused else "active")
           for r in results])  # fmt: skip


@app.command()
def up(
    run: Annotated[list[str] | None, typer.Option("--run", help="queue a run of this workflow once up")] = None,
    exit_after: Annotated[bool, typer.Option("--exit", help="stop everything after the queued runs end")] = False,
    port: Annotated[int, typer.Option(help="Prefect server port")] = 4200,
) -> None:
    """Bring up the local stack: Prefect server (UI), deployments, a worker; Ctrl-C stops it."""
    from weflow import deploy, monitor
    from weflow import execution as service
    from weflow.compile import remote

    home = prefect_server.default_home()
    api = prefect_server.acquire(home, port=port)  # one it starts runs until this command ends
    existing = None if api.started else api
    os.environ["PREFECT_API_URL"] = api.api_url
    worker = node_worker = None
    try:
        sc = scope()
        for r in deploy.deploy(sc):
            out.print(f"deployment {deploy.deployment_name(r.workflow)}: {r.action}")
        worker = prefect_server.start_worker(api.api_url, deploy.work_pool(), deploy.execution_queue(), home)
        out.print(f"worker for pool {deploy.work_pool()!r}, queue {deploy.execution_queue()!r} (pid {worker.pid})")
        node_worker = prefect_server.start_node_worker(api.api_url, remote.node_queue(), home)
        out.print(f"node worker for node queue {remote.node_queue()!r} (pid {node_worker.pid})")
        queued = [service.submit(name, sc, Mode.MANUAL, queue=True) for name in run or []]
        for e in queued:
            out.print(f"queued {e.workflow}: execution {e.id}")
        for e in queued:
            final = service.wait(e.id, sc)
            out.print(Text.assemble(f"{final.workflow}: ", bold(final.status.value), f" {final.error_message or ''}"))
        out.print(f"Prefect UI: {api.ui_url}  (deployments: {api.ui_url}/deployments)")
        if not exit_after:
            out.print("running; Ctrl-C stops the worker" + ("" if existing else " and the server"))
            checked = 0.0
            while worker.poll() is None:
                if time.monotonic() - checked > 60:  # missed-schedule alerts, once a minute
                    checked = time.monotonic()
                    for sent in monitor.missed_schedules(sc):
                        out.print(f"alert {sent.rule} ({sent.workflow_id}): {sent.status}")
                time.sleep(1)
    except KeyboardInterrupt:
        out.print("stopping ...")
    finally:
        for proc in (worker, node_worker):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        if existing is None:
            prefect_server.stop(home)


@app.command("node-worker")
def node_worker(
    queue: Annotated[
        str | None, typer.Option(help="node queue (default: $WORKFLOW_NODE_QUEUE or workflow-nodes)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="steps run at once by this worker")] = 10,
) -> None:
    """Run steps of workflows with settings.node_queue on (a Prefect task worker); Ctrl-C stops it."""
    import asyncio

    from weflow.compile import remote

    if not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = prefect_server.ensure().api_url
    name = queue or remote.node_queue()
    out.print(f"node worker on node queue {name!r}, {limit} at a time")
    try:
        asyncio.run(remote.serve(name, limit))
    except KeyboardInterrupt:
        out.print("stopped")


alerts_app = typer.Typer(help="Alert deliveries and the missed-schedule check.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    name: Annotated[str | None, typer.Argument(help="only this workflow")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Alerts sent (or that failed to send), oldest first."""
    sc = scope()
    wf_id = workflows.get(name, sc).id if name else None
    mine = {w.id: w.name for w in workflows.list_workflows(sc)}
    found = [d for d in sc.catalog.alert_deliveries(wf_id) if d.workflow_id in mine]
    if fmt is Format.json:
        emit_json(found)
        return
    table(None, ["when", "workflow", "alert", "kind", "subject", "status", "attempts", "error"],
          [(_when(d.created_at), mine[d.workflow_id], d.rule, d.kind, d.subject, d.status, d.attempts,
            d.last_error or "") for d in found])  # fmt: skip


@alerts_app.command("check")
def alerts_check() -> None:
    """Send missed-schedule alerts for cron slots that passed with no run (``weflow up`` does it every minute)."""
    from weflow import monitor

    sent = monitor.missed_schedules(scope())
    for d in sent:
        out.print(f"{d.rule}: {d.payload.get('message')} -> {d.status}")
    out.print(f"{len(sent)} alert(s) sent")


server_app = typer.Typer(help="The local Prefect server weflow runs on.", no_args_is_help=True)
app.add_typer(server_app, name="server")


@server_app.command("start")
def server_start() -> None:
    """Start (or reuse) the local Prefect server of the Prefect home; it runs until `weflow server stop`."""
    found = (
        prefect_server.ensure()
        if os.environ.get("PREFECT_API_URL")
        else prefect_server.acquire(prefect_server.default_home(), keep=True)
    )
    out.print(f"Prefect API {found.api_url}; UI {found.ui_url}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop every local Prefect server of the Prefect home (and its supervisor), recorded or not."""
    home = prefect_server.default_home()
    stopped = prefect_server.stop(home)
    pids = ", ".join(str(pid) for pid in stopped)
    out.print(f"stopped {pids} ({home})" if stopped else f"no server was running ({home})")


@server_app.command("status")
def server_status() -> None:
    """List the local Prefect servers of the Prefect home: pid, URL, whether it stops when idle."""
    home = prefect_server.default_home()
    found = prefect_server.servers(home)
    if not found:
        raise BadInput(f"no local Prefect server is running for {home} (weflow server start)")
    for p in found:
        answers = "answers" if p.api_url and prefect_server.healthy(p.api_url) else "does not answer"
        stops = f"started implicitly, stops after {p.idle_seconds:g} s idle" if p.idle_seconds else "runs until stopped"
        recorded = "" if p.recorded else "; not recorded in the home"
        out.print(f"pid {p.pid}: Prefect API {p.api_url or '?'} ({answers}); {stops}{recorded}")


class BadInput(WeflowError):
    """A command-line value is wrong."""


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except WeflowError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(1) from None
    except Exception as exc:  # anything unforeseen: still one line (WEFLOW_DEBUG=1 for the traceback)
        if os.environ.get("WEFLOW_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sys.stderr.write(f"error: {type(exc).__name__}: {first}\n")
        raise SystemExit(1) from None


def run() -> None:
    """Console-script entry point: one clear line on stderr and exit 1 for any weflow error."""
    _guard(lambda: app(standalone_mode=True))


from weflow.cli import admin  # noqa: E402  (last: admin adds its commands to ``app``)

admin.register(app)
