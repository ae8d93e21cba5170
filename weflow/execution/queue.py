"""Queueing: record a run QUEUED and hand it on: to a Prefect deployment's worker, else to a live weflow
worker of this home, else to a child process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from weflow import children, leases
from weflow.catalog import Catalog
from weflow.config import settings
from weflow.core.entities import Execution, Mode
from weflow.execution.lifecycle import RunResult, execute, resolve_inputs
from weflow.execution.record import new_execution, pinned
from weflow.prefect_gateway import flow_runs, server, worker_home
from weflow.workflows import Scope


def submit(
    name: str,
    scope: Scope,
    mode: Mode = Mode.API,
    input_data: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    queue: bool | None = None,
    version_number: int | None = None,
) -> Execution:
    """Record a QUEUED execution and return at once; the input is checked before anything is stored.

    With ``queue`` a Prefect flow run is created from the workflow's deployment and a worker
    runs it; without, a live weflow worker of this home runs it in its process, else a child
    process (``weflow.children``): workflow code never runs in the calling process, which is the
    API's. By default the queue is used when the workflow is deployed. The record is stored
    before its flow run exists (a worker taking the run at once finds it), and removed again
    when the flow run cannot be created.
    """
    definition, execution = new_execution(
        scope, name, mode=mode, input_data=input_data, timeout=timeout, version_number=version_number
    )
    resolve_inputs(definition, input_data)
    scope.catalog.insert_execution(execution, lease=leases.here() if queue is False else None)
    try:
        flow_run_id = flow_runs.create(execution, required=bool(queue)) if queue is not False else None
    except BaseException:
        scope.catalog.discard_queued(execution.id)  # nothing half-written: no record without its flow run
        raise
    if flow_run_id is not None:
        worker_home.wake(server.default_home())  # this host's weflow workers poll now, not at their next poll
        scope.catalog.update_execution(execution.id, flow_run_id=flow_run_id)  # the worker's begin sets it too
        return replace(execution, flow_run_id=flow_run_id)
    if queue is None:
        scope.catalog.update_execution(execution.id, lease=leases.here())  # held here until a worker or child takes it
    request = {"execution_id": execution.id, "catalog": str(scope.catalog.path.resolve())}
    answered = worker_home.hand_over(server.default_home(), "/execute", request)
    if answered is None or answered[0] >= 300:  # no weflow worker up, or it refused: a child process of this one
        children.default().start(execution.id, scope)
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
        definition = pinned(scope, found.workflow, found)
        return execute(definition, found, scope=scope, queued=True)
    except Exception as exc:  # the top of a process: record why, then exit
        text = str(exc).strip() or type(exc).__name__
        leases.abandon(scope, [found.id], type(exc).__name__, text.splitlines()[0][:2000])
        return None
