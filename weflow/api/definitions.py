"""Routes for workflows and their versions: list, create, read, replace, delete, roll back."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Response

from weflow import workflows
from weflow.api.http import StrictJSONRoute, documented
from weflow.api.models import (
    RollbackIn,
    SavedWorkflow,
    VersionDetail,
    VersionOut,
    WorkflowDetail,
    WorkflowOut,
    WorkflowPage,
)
from weflow.api.security import Caller
from weflow.core import document
from weflow.core.entities import Status, Workflow
from weflow.workflows import MAX_ID, SaveResult, Scope

router = APIRouter(route_class=StrictJSONRoute, tags=["workflows"], responses=documented(400, 401, 413, 422, 503))

_EXAMPLE = {
    "name": "paid_orders",
    "description": "Paid orders per region",
    "nodes": [
        {"name": "orders", "type": "read_csv", "config": {"path": "data/samples/orders.csv"}},
        {"name": "paid", "type": "filter", "config": {"condition": "status = 'paid'"}},
    ],
    "connections": [{"from": "orders", "to": "paid"}],
}
DocumentBody = Annotated[
    dict[str, Any],
    Body(
        description="a definition document, as `weflow apply` reads it (JSON): name, nodes, connections, ...",
        openapi_examples={"filter": {"summary": "read a CSV and filter it", "value": _EXAMPLE}},
    ),
]
Message = Annotated[str, Query(max_length=2000, description="the message of the new version")]
WorkflowId = Annotated[int, Path(description="the id of a workflow of your organization")]


def find(scope: Scope, workflow_id: int) -> Workflow:
    """A live workflow of the caller's organization; NotFoundError otherwise."""
    return workflows.by_id(workflow_id, scope)


def _saved(result: SaveResult) -> SavedWorkflow:
    detail = WorkflowDetail.with_definition(result.workflow, result.version)
    return SavedWorkflow.model_validate({**detail.model_dump(), "version_created": result.created})


@router.get("/workflows", response_model=WorkflowPage)
def list_workflows(
    scope: Caller,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    status: Status | None = None,
) -> WorkflowPage:
    """Workflows of your organization by name, a page at a time."""
    found = workflows.list_workflows(scope, status, limit + 1, offset)
    items = [WorkflowOut.of(w) for w in found[:limit]]
    return WorkflowPage(items=items, limit=limit, offset=offset, has_more=len(found) > limit)


@router.post("/workflows", status_code=201, response_model=SavedWorkflow, responses=documented(409))
def create_workflow(scope: Caller, body: DocumentBody, message: Message = "") -> SavedWorkflow:
    """Check and store a new workflow (version 1); 409 if the name is taken."""
    return _saved(workflows.create(document.from_data(body), scope, message))  # checked there, in the caller's scope


@router.get("/workflows/{workflow_id}", response_model=WorkflowDetail, responses=documented(404))
def get_workflow(scope: Caller, workflow_id: WorkflowId) -> WorkflowDetail:
    """A workflow and the definition of its current version."""
    workflow = find(scope, workflow_id)
    return WorkflowDetail.with_definition(workflow, workflows.version_of(workflow, scope))


@router.put("/workflows/{workflow_id}", response_model=SavedWorkflow, responses=documented(404))
def replace_workflow(
    scope: Caller, workflow_id: WorkflowId, body: DocumentBody, message: Message = ""
) -> SavedWorkflow:
    """Store a changed definition as a new version; an unchanged one makes none."""
    return _saved(workflows.replace(find(scope, workflow_id), body, scope, message))


@router.delete("/workflows/{workflow_id}", status_code=204, response_class=Response, responses=documented(404))
def delete_workflow(
    scope: Caller,
    workflow_id: WorkflowId,
    purge: Annotated[bool, Query(description="also remove versions, executions and webhook tokens")] = False,
) -> Response:
    """Soft delete (history kept) or purge a workflow."""
    workflows.remove(find(scope, workflow_id), scope, purge=purge)
    return Response(status_code=204)


@router.get("/workflows/{workflow_id}/versions", response_model=list[VersionOut], responses=documented(404))
def list_versions(scope: Caller, workflow_id: WorkflowId) -> list[VersionOut]:
    """Every version of a workflow, oldest first."""
    return [VersionOut.of(v) for v in workflows.versions_of(find(scope, workflow_id), scope)]


@router.get("/workflows/{workflow_id}/versions/{number}", response_model=VersionDetail, responses=documented(404))
def get_version(scope: Caller, workflow_id: WorkflowId, number: int) -> VersionDetail:
    """One version with its definition document."""
    workflow = find(scope, workflow_id)
    return VersionDetail.with_definition(workflows.version(workflow.name, scope, number))


@router.post("/workflows/{workflow_id}/rollback", response_model=SavedWorkflow, responses=documented(404))
def rollback(scope: Caller, workflow_id: WorkflowId, body: RollbackIn) -> SavedWorkflow:
    """A new version whose content equals an older one (none if it already is the current content)."""
    workflow = find(scope, workflow_id)
    return _saved(workflows.rollback(workflow.name, body.version, scope))
