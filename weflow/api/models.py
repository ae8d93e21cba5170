"""Request and response bodies of the REST API, in the seed's camelCase field names.

A response that shows a record (``WorkflowOut``, ``VersionOut``, ``NodeExecutionOut``,
``ExecutionOut``, ``HookOut``) takes its fields from the ``core.entities`` dataclass
(``record_fields``), so a field added there reaches the API with no second list to keep.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, get_type_hints

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.alias_generators import to_camel

from weflow.core.entities import Execution, NodeExecution, Version, WebhookToken, Workflow

MAX_TIMEOUT_SECONDS = 7 * 24 * 3600.0


class Body(BaseModel):
    """Base of every body: camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, from_attributes=True
    )


def record_fields(record: type[Any], skip: frozenset[str] = frozenset(), **override: Any) -> type[Body]:
    """A body with the fields of a ``core.entities`` record, each required (responses always carry it).

    ``override``: a field's ``Field(...)`` (the record's type kept) or ``(type, Field(...))``.
    """
    hints = get_type_hints(record)
    definitions: dict[str, Any] = {}
    for field in dataclasses.fields(record):
        given = override.get(field.name, ...)
        if field.name not in skip:
            definitions[field.name] = given if isinstance(given, tuple) else (hints[field.name], given)
    return create_model(f"_{record.__name__}Fields", __base__=Body, **definitions)


# mypy sees plain bodies (it cannot type a class built at run time); their fields come from the records.
if TYPE_CHECKING:
    _WorkflowFields = Body
    _VersionFields = Body
    _NodeExecutionFields = Body
    _ExecutionFields = Body
    _HookFields = Body
else:
    _WorkflowFields = record_fields(Workflow, skip=frozenset({"deleted_at"}))
    _VersionFields = record_fields(Version, skip=frozenset({"definition"}))
    _NodeExecutionFields = record_fields(
        NodeExecution, skip=frozenset({"execution_id"}), group=Field(description="the fused step the node ran in")
    )
    _HookFields = record_fields(
        WebhookToken, prefix=Field(description="the public start of the token, to tell tokens apart")
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


class WorkflowOut(_WorkflowFields):
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


class VersionOut(_VersionFields):
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
    full_refresh: bool = Field(
        default=False, description="incremental sources read every row (their cursors move forward only)"
    )


class NodeExecutionOut(_NodeExecutionFields):
    @classmethod
    def of(cls, node: NodeExecution) -> NodeExecutionOut:
        return cls.model_validate(node)


if not TYPE_CHECKING:
    _ExecutionFields = record_fields(
        Execution,
        skip=frozenset({"resumed_from", "compensations"}),
        nodes=(list[NodeExecutionOut], Field(description="node by node; empty in listings")),
    )


class ExecutionOut(_ExecutionFields):
    @classmethod
    def of(cls, execution: Execution) -> ExecutionOut:
        return cls.model_validate(execution)


class ExecutionPage(Body):
    items: list[ExecutionOut]
    limit: int
    offset: int
    has_more: bool


class HookOut(_HookFields):
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
