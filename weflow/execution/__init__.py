"""The execution service: run a pinned version, queue it, resume it, and read its history.

Entry points (``from weflow import execution``; every interface goes through these):
- ``lifecycle.py``: ``run`` / ``start_execution`` / ``execute`` / ``preview`` — a run in this process:
  ``prepare`` (inputs, plan), ``begin`` (RUNNING), the compiled Prefect flow, ``conclude`` (the end).
- ``record.py``: the ``Recorder`` interface (begin, holding, finish) and its two implementations,
  ``CatalogRecorder`` and ``ApiRecorder`` (remote workers); ``report_*`` are the API's side of the latter.
- ``deployed.py``: ``run_deployed``, the one body of the deployment entrypoint (``flows/run_workflow.py``).
- ``queue.py``: ``submit`` (record QUEUED, hand to a deployment or a child process), ``run_queued``.
- ``resuming.py``: ``resume``. ``history.py``: ``executions`` (the one listing), ``current``, ``find``,
  ``sync``, ``logs``, ``wait``, ``cancel``. Every Prefect call goes through ``weflow.prefect_gateway``.
Display (a run's Markdown and Mermaid graph) lives in ``weflow.display``. Inside, imports point down
(an import-linter contract): deployed | queue | resuming | history > lifecycle > record.
No module is named like a function exported here (``run``, ``resume``), so none shadows it.
The names load on first use (PEP 562): reading history (``executions``, ``current``, ``wait``) imports neither
Prefect nor the engine; a run, a submit or a Prefect read does.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from weflow.execution.deployed import run_deployed
    from weflow.execution.history import cancel, contract_failures, current, executions, find, logs, sync, wait
    from weflow.execution.lifecycle import (
        Prepared,
        RunResult,
        begin,
        conclude,
        execute,
        prepare,
        preview,
        resolve_inputs,
        run,
        run_in_flow,
        start_execution,
    )
    from weflow.execution.queue import run_queued, submit
    from weflow.execution.record import (
        ApiRecorder,
        CatalogRecorder,
        Recorder,
        new_execution,
        report_created,
        report_finished,
        report_running,
    )
    from weflow.execution.resuming import resume
    from weflow.prefect_gateway.flow_runs import LogLine

_HOMES = {  # each exported name -> its module (the names imported above for type checkers)
    name: module
    for module, names in {
        "weflow.execution.deployed": ("run_deployed",),
        "weflow.execution.history": (
            "cancel",
            "contract_failures",
            "current",
            "executions",
            "find",
            "logs",
            "sync",
            "wait",
        ),
        "weflow.execution.lifecycle": (
            "Prepared",
            "RunResult",
            "begin",
            "conclude",
            "execute",
            "prepare",
            "preview",
            "resolve_inputs",
            "run",
            "run_in_flow",
            "start_execution",
        ),
        "weflow.execution.queue": ("run_queued", "submit"),
        "weflow.execution.record": (
            "ApiRecorder",
            "CatalogRecorder",
            "Recorder",
            "new_execution",
            "report_created",
            "report_finished",
            "report_running",
        ),
        "weflow.execution.resuming": ("resume",),
        "weflow.prefect_gateway.flow_runs": ("LogLine",),
    }.items()
    for name in names
}


def __getattr__(name: str) -> object:
    """An exported name, imported from its module the first time it is read (then a plain attribute)."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "ApiRecorder",
    "CatalogRecorder",
    "LogLine",
    "Prepared",
    "Recorder",
    "RunResult",
    "begin",
    "cancel",
    "conclude",
    "contract_failures",
    "current",
    "execute",
    "executions",
    "find",
    "logs",
    "new_execution",
    "prepare",
    "preview",
    "report_created",
    "report_finished",
    "report_running",
    "resolve_inputs",
    "resume",
    "run",
    "run_deployed",
    "run_in_flow",
    "run_queued",
    "start_execution",
    "submit",
    "sync",
    "wait",
]
