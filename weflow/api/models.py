"""Request and response bodies of the REST API, in the seed's camelCase field names."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from weflow.catalog import WebhookToken
from weflow.core.entities import Execution, Mode, NodeExecution, RunState, Status, Version, Workflow

MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0


class Body(BaseModel):
    """Base of every body: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, from_attributes=True
    )


class Problem(Body):
    path: str = Field(description="where in the document or request, e.g. nodes[1].config.condition")
    message: str


class ErrorOut(Body):
    """Every error: one line of detail, and for 422 each problem with its path."""

    detail: str
    problems: list[Problem] = Field(default_factory=list)


class Health(Body):
    status: Literal["ok"] = "ok"


class WorkflowOut(Body):
    id: int
    name: str
    description: str
    status: Status
    configuration: dict[str, Any]
    is_active: bool
    execution_count: int
    last_executed_at: datetime | None
    owner_id: int
    organization_id: int
    created_at: datetime
    updated_at: datetime
    current_version: int

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowOut:
        return cls.model_validate(workflow)


class WorkflowDetail(WorkflowOut):
    definition: dict[str, Any] = Field(description="the definition document of the current version")

    @classmethod
    def with_definition(cls, workflow: Workflow, version: Version) -> WorkflowDetail:
        return cls.model_validate({**WorkflowOut.of(workflow).model_dump(), "definition": _document(version)})


class SavedWorkflow(WorkflowDetail):
    version_created: bool = Field(description="false when the definition did not change (no new version)")


class WorkflowPage(Body):
    items: list[WorkflowOut]
    limit: int
    offset: int
    has_more: bool


class VersionOut(Body):
    workflow_id: int
    number: int
    content_hash: str
    author_id: int
    message: str
    created_at: datetime

    @classmethod
    def of(cls, version: Version) -> VersionOut:
        return cls.model_validate(version)


class VersionDetail(VersionOut):
    definition: dict[str, Any]

    @classmethod
    def with_definition(cls, version: Version) -> VersionDetail:
        return cls.model_validate({**VersionOut.of(version).model_dump(), "definition": _document(version)})


class RollbackIn(Body):
    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1, le=2**31 - 1, description="the version whose content becomes a new version")


class ExecutionIn(Body):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["MANUAL", "API"] = "API"
    input_data: dict[str, Any] | None = Field(default=None, description="values of the workflow's inputs")
    timeout: float | None = Field(
        default=None, gt=0, le=MAX_TIMEOUT_SECONDS, description="execution timeout in seconds (default 300)"
    )


class NodeExecutionOut(Body):
    node: str
    status: RunState
    attempts: int
    rows_in: int | None
    rows_out: int | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error: str | None
    contract: dict[str, Any] | None
    group: str | None = Field(description="the fused step the node ran in")
    output_path: str | None

    @classmethod
    def of(cls, node: NodeExecution) -> NodeExecutionOut:
        return cls.model_validate(node)


class ExecutionOut(Body):
    id: str
    workflow_id: int
    workflow: str
    version: int
    mode: Mode
    user_id: int
    status: RunState
    input_data: dict[str, Any] | None
    flow_run_id: str | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    error_type: str | None
    error_message: str | None
    error_node: str | None
    output: dict[str, Any] | None
    timeout_seconds: float | None
    nodes: list[NodeExecutionOut] = Field(description="node by node; empty in listings")

    @classmethod
    def of(cls, execution: Execution) -> ExecutionOut:
        return cls.model_validate(execution)


class ExecutionPage(Body):
    items: list[ExecutionOut]
    limit: int
    offset: int
    has_more: bool


class HookOut(Body):
    id: int
    workflow_id: int
    workflow: str
    user_id: int
    prefix: str = Field(description="the public start of the token, to tell tokens apart")
    created_at: datetime
    revoked_at: datetime | None

    @classmethod
    def of(cls, hook: WebhookToken) -> HookOut:
        return cls.model_validate(hook)


class HookCreated(HookOut):
    token: str = Field(description="the secret token; shown only in this response")
    url: str = Field(description="the path to POST to: /hooks/{token}")


def _document(version: Version) -> dict[str, Any]:
    return version.definition.to_document()


class LogLineOut(Body):
    """One log line of an execution, as Prefect recorded it."""

    timestamp: datetime
    level: str
    node: str | None  # None: the flow's own line
    message: str
