"""Queueing: record a run QUEUED and hand it on: to a Prefect deployment's worker, else to a live weflow
worker of this home, else to a child process."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from weflow import children, cursors, leases
from weflow.catalog import Catalog
from weflow.catalog.batch import Begun
from weflow.catalog.batcher import shared
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
    full_refresh: bool = False,
) -> Execution:
    """Record a QUEUED execution and return at once; the input is checked before anything is stored.

    With ``queue`` a Prefect flow run is created from the workflow's deployment and a worker
    runs it; without, a live weflow worker of this home runs it in its process, else a child
    process (``weflow.children``): workflow code never runs in the calling process, which is the
    API's. By default the queue is used when the workflow is deployed. The flow run is created
    first and the record stored with its id in one write (in the process's batch: concurrent API
    calls share a catalog session); a worker that takes the flow run before the record is
    committed waits for it (``record.CatalogRecorder.queued``); a record that cannot be stored
    takes its flow run with it. ``full_refresh``: its incremental sources read every row (marked
    before anyone can take the run).
    """
    definition, execution = new_execution(
        scope, name, mode=mode, input_data=input_data, timeout=timeout, version_number=version_number
    )
    resolve_inputs(definition, input_data)
    if full_refresh:
        cursors.mark_full_refresh(scope, execution, definition)
    flow_run_id = flow_runs.create(execution, required=bool(queue)) if queue is not False else None
    execution = replace(execution, flow_run_id=flow_run_id)
    try:  # in the process's next batch, shared with the other runs queued at the same time
        shared(scope.catalog).put(Begun(execution, lease=None if flow_run_id else leases.here()), wait=True)
    except BaseException:
        if flow_run_id is not None:
            flow_runs.delete(flow_run_id)  # nothing half-written: no flow run without its record
        raise
    if flow_run_id is not None:
        worker_home.wake(server.default_home(), flow_run_id)  # this host's weflow workers poll now, not in a second
        return execution
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
