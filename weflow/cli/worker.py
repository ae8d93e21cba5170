"""``weflow worker``: a long-lived execution worker (a supervisor over one worker process that imported weflow once)."""

from __future__ import annotations

from typing import Annotated

import typer

from weflow import workers
from weflow.cli.console import app, out


@app.command("worker")
def worker_(
    limit: Annotated[int, typer.Option(min=1, help="flow runs this worker runs at once")] = workers.DEFAULT_LIMIT,
    max_runs: Annotated[
        int | None, typer.Option("--max-runs", min=1, help="recycle the worker process after this many runs")
    ] = None,
    max_memory_mb: Annotated[
        int | None,
        typer.Option("--max-memory-mb", min=64, help="recycle the worker process once its RSS goes over this"),
    ] = None,
    name: Annotated[str | None, typer.Option(help="worker name in the Prefect UI (default: weflow HOST PID)")] = None,
    parent: Annotated[
        int | None, typer.Option(hidden=True, help="stop when this process, the one starting it, ends (weflow up)")
    ] = None,
) -> None:
    """Run queued flow runs inside a long-lived worker process (restarted when it recycles or dies); Ctrl-C stops it."""
    if name is not None and ("/" in name or "%" in name):
        raise typer.BadParameter(f"{name!r}: a worker name cannot contain '/' or '%'", param_hint="--name")
    options = workers.WorkerOptions(limit, max_runs, max_memory_mb, name, parent)
    out.print(f"weflow worker: up to {limit} run(s) at once" + (f", recycled after {max_runs} runs" if max_runs else "")
              + (f", or above {max_memory_mb} MB" if max_memory_mb else "") + "; Ctrl-C stops it")  # fmt: skip
    workers.supervise(options, say=lambda line: out.print(line, highlight=False))
    out.print("stopped")
