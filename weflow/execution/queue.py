"""Queueing: record a run QUEUED and hand it on, to a Prefect deployment's worker or to a child process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from weflow import children, leases
from weflow.catalog import Catalog
from weflow.config import settings
from weflow.core.entities import Execution, Mode
from weflow.execution.lifecycle import RunResult, execute, resolve_inputs
from weflow.execution.record import new_execution
from weflow.prefect_gateway import flow_runs, server, worker_home
from weflow.workflows import Scope, check, version


def submit(
    name: str,
    scope: Scope,
    mode: Mode = Mode.API,
    input_data: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    queue: bool | None = None,
) -> Execution:
    """Record a QUEUED execution and return at once; the input is checked before anything is stored.

    With ``queue`` a Prefect flow run is created from the workflow's deployment and a worker
    runs it; without, a child process runs it (``weflow.children``): workflow code never runs in
    the calling process, which is the API's. By default the queue is used when the workflow is deployed.
    """
    definition, execution = new_execution(scope, name, mode=mode, input_data=input_data, timeout=timeout)
    resolve_inputs(definition, input_data)
    if queue is not False:
        flow_run_id = flow_runs.create(execution, required=bool(queue))
        if flow_run_id is not None:
            execution = replace(execution, flow_run_id=flow_run_id)
            scope.catalog.insert_execution(execution)
            worker_home.wake(server.default_home())  # this host's weflow workers poll now, not at their next poll
            return execution
    processes = children.default()
    scope.catalog.insert_execution(execution, lease=leases.here())  # held here until its child takes it
    processes.start(execution.id, scope)
    return execution


def run_queued(execution_id: str) -> RunResult | None:
    """Run an execution ``submit`` recorded QUEUED, in this process (the body of ``python -m weflow.child``).

    Whatever stops it before it runs (its workflow deleted, its input no longer valid) ends the
    record FAILED with that error; None then.
    """
    catalog = Catalog(settings().catalog)
    found = catalog.execution(execution_id)
    scope = Scope(catalog, catalog.user(found.user_id))
    try:
        definition = check(version(found.workflow, scope, found.version).definition, scope)
        return execute(definition, found, scope=scope, queued=True)
    except Exception as exc:  # the top of a process: record why, then exit
        text = str(exc).strip() or type(exc).__name__
        leases.abandon(scope, [found.id], type(exc).__name__, text.splitlines()[0][:2000])
        return None
