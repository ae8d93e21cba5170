"""Routes for remote workers (DESIGN decision 8): the API owns the catalog, workers report to it.

A worker configured with ``WEFLOW_API_URL`` and an API key loads the pinned definition and
records its execution here, so it never needs the catalog file. Every route acts in the key's
organization, like the rest of the API.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Path, Query
from pydantic import Field

from weflow import execution
from weflow.api.http import StrictJSONRoute, documented
from weflow.api.models import Body as Model
from weflow.api.models import ExecutionOut, NodeExecutionOut, record_fields
from weflow.api.runs import ExecutionId, _execution_id
from weflow.api.security import Caller
from weflow.core.entities import Execution, Mode, NodeExecution, RunState
from weflow.errors import ConflictError
from weflow.workflows import version

router = APIRouter(
    prefix="/runner", route_class=StrictJSONRoute, tags=["runner"], responses=documented(400, 401, 404, 409, 413, 422)
)
WorkflowName = Annotated[str, Path(max_length=128, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]


class DefinitionOut(Model):
    workflow: str
    version: int
    document: dict[str, Any]


class NewExecution(Model):
    workflow: str
    version: int | None = None
    mode: Mode = Mode.MANUAL
    input_data: dict[str, Any] | None = None
    flow_run_id: str | None = None


class Running(Model):
    flow_run_id: str | None = None


_ENDED = ("started_at", "finished_at", "duration_ms", "error_type", "error_message", "error_node", "output")
if TYPE_CHECKING:  # mypy cannot type a class built at run time
    _EndFields = Model
else:  # the fields of an execution's end, typed by the record (``core.entities.Execution``), optional
    _others = frozenset(f.name for f in dataclasses.fields(Execution)).difference(_ENDED)
    _EndFields = record_fields(Execution, skip=_others, **dict.fromkeys(_ENDED))


class Finished(_EndFields):
    status: RunState
    flow_run_id: str | None = None
    nodes: list[NodeExecutionOut] = Field(default_factory=list)
    failures: list[dict[str, Any]] = Field(default_factory=list)


@router.get("/workflows/{name}/definition", response_model=DefinitionOut)
def get_definition(
    scope: Caller, name: WorkflowName, number: Annotated[int | None, Query(alias="version", ge=1)] = None
) -> DefinitionOut:
    """The definition document of a version (the current one by default)."""
    found = version(name, scope, number)
    return DefinitionOut(workflow=name, version=found.number, document=found.definition.to_document())


@router.post("/executions", status_code=201, response_model=ExecutionOut)
def create_execution(scope: Caller, body: Annotated[NewExecution, Body()]) -> ExecutionOut:
    """Record a run a worker started without weflow (the Prefect UI, a schedule): QUEUED, pinned."""
    definition, new = execution.new_execution(
        scope, body.workflow, mode=body.mode, input_data=body.input_data, timeout=None, version_number=body.version
    )
    execution.resolve_inputs(definition, body.input_data)
    return ExecutionOut.of(execution.report_created(scope, replace(new, flow_run_id=body.flow_run_id)))


@router.post("/executions/{execution_id}/running", response_model=ExecutionOut)
def mark_running(scope: Caller, execution_id: ExecutionId, body: Annotated[Running, Body()]) -> ExecutionOut:
    """The worker started the run."""
    return ExecutionOut.of(execution.report_running(scope, _execution_id(execution_id), body.flow_run_id))


@router.post("/executions/{execution_id}/finish", response_model=ExecutionOut)
def finish(scope: Caller, execution_id: ExecutionId, body: Annotated[Finished, Body()]) -> ExecutionOut:
    """The run ended: its final state, node records and contract failures; alerts go out from here."""
    found = execution.find(_execution_id(execution_id), scope)
    if not body.status.final:
        raise ConflictError(f"{body.status.value} is not a final state")
    final = replace(
        found,
        **body.model_dump(exclude={"nodes", "failures", "flow_run_id"}),
        flow_run_id=body.flow_run_id or found.flow_run_id,
    )
    nodes = [NodeExecution(execution_id=found.id, **n.model_dump()) for n in body.nodes]
    failures = [{**f, "node": str(f.get("node", ""))} for f in body.failures]
    return ExecutionOut.of(execution.report_finished(scope, final, nodes, failures))
