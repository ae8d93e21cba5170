"""Stack commands: ``deploy``, ``up``, ``node-worker``, ``alerts`` and the local Prefect ``server``."""

from __future__ import annotations

import contextvars
import signal
import threading
from typing import TYPE_CHECKING, Annotated

import typer
from rich.text import Text

from weflow.cli.console import BadInput, Format, FormatOpt, _when, app, bold, emit_json, out, scope, table
from weflow.core.records import Mode

if TYPE_CHECKING:
    from weflow.workflows import Scope


@app.command("deploy")
def deploy_(
    api_url: Annotated[
        str | None, typer.Option("--api-url", help="runs report to the weflow API there (remote workers)")
    ] = None,
) -> None:
    """Create or update one Prefect deployment per ACTIVE/PAUSED workflow; remove the others'."""
    from weflow import deploy  # deferred: importing Prefect costs ~1.5 s that other commands skip

    if api_url is not None and not api_url.startswith(("http://", "https://")):
        raise BadInput(f"--api-url {api_url!r}: expected http(s)://HOST:PORT")
    sc = scope()
    results = deploy.deploy(sc, api_url)
    table(None, ["workflow", "deployment", "action", "schedules"],
          [(r.workflow, deploy.deployment_name(r.workflow), r.action, "paused" if r.paused else "active")
           for r in results])  # fmt: skip
    for name, why in deploy.skipped(sc):  # a DRAFT is not deployed: say so rather than leave users wondering
        out.print(f"skipped {name}: {why}")


@app.command()
def up(
    run: Annotated[list[str] | None, typer.Option("--run", help="queue a run of this workflow once up")] = None,
    exit_after: Annotated[bool, typer.Option("--exit", help="stop everything after the queued runs end")] = False,
    port: Annotated[int, typer.Option(help="Prefect server port")] = 4200,
) -> None:
    """Bring up the local stack: Prefect server (UI), deployments, a weflow worker, a node worker; Ctrl-C stops it."""
    from weflow import deploy, retention, stack  # deferred: importing Prefect costs ~1.5 s that other commands skip
    from weflow import execution as service

    for each in STOP_SIGNALS:
        signal.signal(each, _interrupt)
    running = stack.Stack(port)
    watching = threading.Event()  # set: the file triggers' watcher stops
    api = running.server
    try:
        sc = scope()
        for r in running.deploy(sc):
            out.print(f"deployment {deploy.deployment_name(r.workflow)}: {r.action}")
        worker = running.start_worker()
        out.print(f"weflow worker for pool {deploy.work_pool()!r}, queue {deploy.execution_queue()!r} "
                  f"(supervisor pid {worker.pid}; `weflow worker`)")  # fmt: skip
        node_worker = running.start_node_worker()
        out.print(f"node worker for node queue {stack.node_queue()!r} (pid {node_worker.pid})")
        queued = [service.submit(name, sc, Mode.MANUAL, queue=True) for name in run or []]
        for e in queued:
            out.print(f"queued {e.workflow}: execution {e.id}")
        for e in queued:
            final = service.wait(e.id, sc)
            out.print(Text.assemble(f"{final.workflow}: ", bold(final.status.value), f" {final.error_message or ''}"))
        out.print(f"Prefect UI: {api.ui_url}  (deployments: {api.ui_url}/deployments)")
        if not exit_after:
            _watch_files(sc, watching)
            out.print("running; Ctrl-C stops the worker" + ("" if running.reused else " and the server"))
            with retention.pruning(sc.catalog.path):  # the retention policies: now, then hourly
                for sent in running.watch(sc):
                    out.print(f"alert {sent.rule} ({sent.workflow_id}): {sent.status}")
    except KeyboardInterrupt:
        out.print("stopping ...")
    finally:
        for each in STOP_SIGNALS:  # a second one must not cut the stop short
            signal.signal(each, signal.SIG_IGN)
        watching.set()
        running.stop()


# What service managers (systemd, `docker stop`, `kill`) and a closed terminal send: `weflow up` then stops its
# stack as on Ctrl-C. Python's default for both ended the process at once and left the server and workers running.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch_files(sc: Scope, stop: threading.Event) -> None:
    """The folders of the workflows' ``file`` triggers, watched in a thread of ``weflow up`` until ``stop``."""
    from weflow import file_triggers

    here = contextvars.copy_context()  # the CLI's settings in the watcher's thread too
    threading.Thread(target=here.run, args=(file_triggers.watch, sc, stop), name="weflow-files", daemon=True).start()


@app.command("watch-files")
def watch_files(
    once: Annotated[bool, typer.Option("--once", help="look once and exit")] = False,
    every: Annotated[float, typer.Option(min=0.2, help="seconds between looks")] = 2.0,
) -> None:
    """Start one run per new file of the ACTIVE workflows' file triggers (weflow up does this too); Ctrl-C stops."""
    from weflow import file_triggers  # deferred: it imports Prefect

    sc = scope()
    stop = threading.Event()
    while not stop.is_set():
        for workflow, _, _, path in file_triggers.scan(sc):
            out.print(f"{workflow}: new file {path}")
        if once:
            return
        try:
            stop.wait(every)
        except KeyboardInterrupt:
            return


@app.command("node-worker")
def node_worker(
    queue: Annotated[
        str | None, typer.Option(help="node queue (default: $WORKFLOW_NODE_QUEUE or workflow-nodes)")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="steps run at once by this worker")] = 10,
    parent: Annotated[
        int | None, typer.Option(hidden=True, help="stop when this process, the one starting it, ends (weflow up)")
    ] = None,
) -> None:
    """Run steps of workflows with settings.node_queue on (a Prefect task worker); Ctrl-C stops it."""
    from weflow import stack  # deferred: importing Prefect costs ~1.5 s that other commands skip

    if parent is not None:  # first: a parent already gone starts nothing
        stack.end_with(parent, "node worker")
    stack.point_at_server()
    name = stack.node_queue(queue)
    out.print(f"node worker on node queue {name!r}, {limit} at a time")
    try:
        stack.serve_nodes(name, limit)  # returns on SIGTERM
    except KeyboardInterrupt:
        pass
    out.print("stopped")


alerts_app = typer.Typer(help="Alert deliveries and the missed-schedule check.", no_args_is_help=True)
app.add_typer(alerts_app, name="alerts")


@alerts_app.command("list")
def alerts_list(
    name: Annotated[str | None, typer.Argument(help="only this workflow")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Alerts sent (or that failed to send), oldest first."""
    from weflow import monitor  # deferred, as in alerts_check: httpx loads only for the alert commands

    found = monitor.deliveries(scope(), name)
    if fmt is Format.json:
        emit_json([d for _, d in found])
        return
    table(None, ["when", "workflow", "alert", "kind", "subject", "status", "attempts", "error"],
          [(_when(d.created_at), workflow, d.rule, d.kind, d.subject, d.status, d.attempts,
            d.last_error or "") for workflow, d in found])  # fmt: skip


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
    from weflow import servers

    found = servers.start()
    out.print(f"Prefect API {found.api_url}; UI {found.ui_url}")


@server_app.command("stop")
def server_stop() -> None:
    """Stop every local Prefect server of the Prefect home (and its supervisor), recorded or not."""
    from weflow import servers

    home = servers.home()
    stopped = servers.stop()
    pids = ", ".join(str(pid) for pid in stopped)
    out.print(f"stopped {pids} ({home})" if stopped else f"no server was running ({home})")


@server_app.command("status")
def server_status() -> None:
    """List the local Prefect servers of the Prefect home: pid, URL, whether it stops when idle."""
    from weflow import servers

    home = servers.home()
    found = servers.status()
    if not found:
        raise BadInput(f"no local Prefect server is running for {home} (weflow server start)")
    for p in found:
        answers = "answers" if p.answers else "does not answer"
        stops = f"started implicitly, stops after {p.idle_seconds:g} s idle" if p.idle_seconds else "runs until stopped"
        recorded = "" if p.recorded else "; not recorded in the home"
        out.print(f"pid {p.pid}: Prefect API {p.api_url or '?'} ({answers}); {stops}{recorded}")
