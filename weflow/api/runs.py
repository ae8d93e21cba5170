"""Routes that run workflows: executions, their cancellation, webhook tokens and the webhook trigger."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Body, FastAPI, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from weflow import accounts, children, execution
from weflow.api.definitions import WorkflowId, find
from weflow.api.http import StrictJSONRoute, documented
from weflow.api.models import ExecutionIn, ExecutionOut, ExecutionPage, HookCreated, HookOut, LogLineOut
from weflow.api.security import Caller, CatalogDep
from weflow.core.entities import Mode
from weflow.errors import NotFoundError
from weflow.workflows import MAX_ID, Scope


@asynccontextmanager
async def _run_processes(app: FastAPI) -> AsyncIterator[None]:
    """Runs go to child processes (``execution.submit``); the API stops them when it shuts down."""
    yield
    await run_in_threadpool(children.stop_default)


router = APIRouter(
    route_class=StrictJSONRoute, responses=documented(400, 401, 404, 413, 422, 503), lifespan=_run_processes
)
webhooks = APIRouter(route_class=StrictJSONRoute, tags=["webhooks"])  # the token is the credential
ExecutionId = Annotated[str, Path(description="the id of an execution of your organization")]


def _execution_id(value: str) -> str:
    """A well-formed execution id, else NotFoundError (nothing else can name an execution)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise NotFoundError(f"no execution {value!r}") from None


@router.post("/workflows/{workflow_id}/executions", status_code=202, response_model=ExecutionOut, tags=["executions"])
def start_execution(
    scope: Caller, workflow_id: WorkflowId, body: Annotated[ExecutionIn | None, Body()] = None
) -> ExecutionOut:
    """Queue a run of the current version; it runs in the background (poll GET /executions/{id})."""
    request = body or ExecutionIn()
    workflow = find(scope, workflow_id)
    started = execution.submit(
        workflow.name, scope, Mode(request.mode), request.input_data, request.timeout, full_refresh=request.full_refresh
    )
    return ExecutionOut.of(started)


@router.get("/workflows/{workflow_id}/executions", response_model=ExecutionPage, tags=["executions"])
def list_executions(
    scope: Caller,
    workflow_id: WorkflowId,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> ExecutionPage:
    """Executions of a workflow, most recent first (without node records)."""
    found = execution.executions(scope, find(scope, workflow_id), limit=limit + 1, offset=offset)
    items = [ExecutionOut.of(e) for e in found[:limit]]
    return ExecutionPage(items=items, limit=limit, offset=offset, has_more=len(found) > limit)


@router.get("/executions/{execution_id}", response_model=ExecutionOut, tags=["executions"])
def get_execution(scope: Caller, execution_id: ExecutionId) -> ExecutionOut:
    """One execution with its node executions."""
    return ExecutionOut.of(execution.current(_execution_id(execution_id), scope))


@router.get("/executions/{execution_id}/logs", response_model=list[LogLineOut], tags=["executions"])
def get_logs(
    scope: Caller,
    execution_id: ExecutionId,
    node: Annotated[str | None, Query(max_length=128, description="only this node's lines")] = None,
) -> list[LogLineOut]:
    """The execution's log lines (its nodes' and weflow's), oldest first, read from Prefect."""
    lines = execution.logs(_execution_id(execution_id), scope, node)
    return [LogLineOut.model_validate(line) for line in lines]


@router.post(
    "/executions/{execution_id}/cancel", response_model=ExecutionOut, tags=["executions"], responses=documented(409)
)
def cancel_execution(scope: Caller, execution_id: ExecutionId) -> ExecutionOut:
    """Cancel a queued or running execution through Prefect; 409 if it ended or cannot be reached."""
    return ExecutionOut.of(execution.cancel(_execution_id(execution_id), scope))


@router.post("/workflows/{workflow_id}/hooks", status_code=201, response_model=HookCreated, tags=["webhooks"])
def create_hook(scope: Caller, workflow_id: WorkflowId, request: Request) -> HookCreated:
    """A new webhook token for the workflow; the token is shown only in this response."""
    hook, token = accounts.create_hook(scope, find(scope, workflow_id))
    url = str(request.url_for("trigger_webhook", token=token))
    return HookCreated.model_validate({**HookOut.of(hook).model_dump(), "token": token, "url": url})


@router.get("/workflows/{workflow_id}/hooks", response_model=list[HookOut], tags=["webhooks"])
def list_hooks(scope: Caller, workflow_id: WorkflowId) -> list[HookOut]:
    """The workflow's webhook tokens (revoked ones included), without their secrets."""
    workflow = find(scope, workflow_id)
    return [HookOut.of(h) for h in accounts.hooks(scope, workflow)]


@router.delete("/workflows/{workflow_id}/hooks/{hook_id}", status_code=204, response_class=Response, tags=["webhooks"])
def revoke_hook(scope: Caller, workflow_id: WorkflowId, hook_id: Annotated[int, Path()]) -> Response:
    """Revoke a webhook token: its URL answers 404 from now on."""
    workflow = find(scope, workflow_id)
    accounts.revoke_hook(scope, hook_id, workflow)
    return Response(status_code=204)


@webhooks.post(
    "/hooks/{token}", status_code=202, response_model=ExecutionOut, responses=documented(400, 404, 413, 422, 503)
)
def trigger_webhook(
    catalog: CatalogDep,
    token: Annotated[str, Path(description="the webhook token (it is the credential: no API key needed)")],
    body: Annotated[dict[str, Any] | None, Body(description="becomes the run's input data")] = None,
) -> ExecutionOut:
    """Start the token's workflow with the JSON body as input data (mode WEBHOOK)."""
    found = accounts.resolve_hook(catalog, token)
    if found is None:
        raise NotFoundError("no such webhook (unknown or revoked token)")
    hook, user = found
    return ExecutionOut.of(execution.submit(hook.workflow, Scope(catalog, user), Mode.WEBHOOK, body))
