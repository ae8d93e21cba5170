"""The deployment entrypoint's body: one path whatever records the run (the catalog, or the weflow API).

``flows/run_workflow.py`` calls ``run_deployed`` inside its Prefect flow run. With
``WEFLOW_API_URL`` set (a remote worker) the records go through the weflow API, else to the catalog:
one session per record, or through the catalog's shared batcher in a process that runs many flow
runs (a long-lived weflow worker calls ``record_in_batches``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from weflow.catalog.batcher import shared
from weflow.client import WeflowApi
from weflow.config import settings
from weflow.core import intervals
from weflow.core.entities import Mode
from weflow.execution.lifecycle import RunResult, begin, prepare, run_in_flow
from weflow.execution.record import ApiRecorder, CatalogRecorder, StoredRecorder
from weflow.prefect_gateway import flow_runs, scheduling
from weflow.workflows import Scope

_batched = False


def record_in_batches() -> None:
    """This process runs many deployed runs (a long-lived worker): their catalog records go in batches."""
    global _batched
    _batched = True


def recorder() -> StoredRecorder:
    """The weflow API's recorder on a remote worker (``WEFLOW_API_URL``), else the catalog's for the current user."""
    api = WeflowApi.from_env()
    if api is not None:
        return ApiRecorder(api)
    scope = _scope()
    return CatalogRecorder(scope, shared(scope.catalog) if _batched else None)


_scopes: dict[tuple[str, str, str], Scope] = {}


def _scope() -> Scope:
    """The current user's scope; a long-lived worker looks it up once per catalog and user.

    ``Scope.current`` is a write session (``ensure_user``): in a worker running 4 runs at once it
    waited ~190 ms per run for the catalog lock here (cProfile of the worker's run threads).
    """
    if not _batched:
        return Scope.current()
    cfg = settings()
    key = (str(cfg.catalog.resolve()), cfg.organization, cfg.user)
    if key not in _scopes:
        _scopes[key] = Scope.current()
    return _scopes[key]


async def run_deployed(
    workflow: str,
    input_data: dict[str, Any] | None,
    version_number: int | None,
    execution_id: str | None,
) -> RunResult:
    """Find the record (or make it, for a run started outside weflow), run, record the end; raise if it failed."""
    flow_run_id = flow_runs.current_id()
    records = recorder()
    if execution_id is not None:
        definition, execution = records.queued(workflow, execution_id)
    else:  # started outside weflow: the Prefect UI, `prefect deployment run`, a schedule, an event trigger
        by, slot = await scheduling.started_by(flow_run_id)  # a schedule's run: its slot binds the interval inputs
        mode = {"schedule": Mode.CRON, "automation": Mode.TRIGGER}.get(by, Mode.MANUAL)
        definition, execution = records.create(workflow, version_number, mode, input_data, flow_run_id)
        if slot is not None:
            bound = intervals.bind(definition.schedule, list(definition.inputs), slot, execution.input_data)
            execution = replace(execution, input_data=bound)
    prepared = prepare(definition, execution, recorder=records, scope=records.scope)
    begin(prepared, execution_id is not None, flow_run_id)
    with records.holding(execution.id):
        result = await run_in_flow(prepared, flow_run_id)
    if not result.ok:
        raise RuntimeError(result.execution.error_message or result.execution.status.value)
    return result
