"""Catalog records: what is stored about workflows, versions, executions and their owners."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from weflow.core.model import Definition


class Status(StrEnum):
    DRAFT = "DRAFT"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    ARCHIVED = "ARCHIVED"


class Mode(StrEnum):
    MANUAL = "MANUAL"
    API = "API"
    WEBHOOK = "WEBHOOK"
    CRON = "CRON"
    TRIGGER = "TRIGGER"  # an event trigger's automation (another workflow ended, a file landed)


class RunState(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    TIMED_OUT = "TIMED_OUT"
    CANCELLED = "CANCELLED"
    SKIPPED = "SKIPPED"
    REUSED = "REUSED"  # a resumed execution took this node's output from the execution it resumes

    @property
    def final(self) -> bool:
        return self not in {RunState.QUEUED, RunState.RUNNING}


@dataclass(frozen=True)
class Organization:
    id: int
    name: str
    created_at: datetime


@dataclass(frozen=True)
class User:
    id: int
    name: str
    organization_id: int
    created_at: datetime


@dataclass(frozen=True)
class Workflow:
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
    deleted_at: datetime | None = None


@dataclass(frozen=True)
class Version:
    workflow_id: int
    number: int
    definition: Definition
    content_hash: str
    author_id: int
    message: str
    created_at: datetime


@dataclass(frozen=True)
class NodeExecution:
    execution_id: str
    node: str
    status: RunState
    attempts: int = 0
    rows_in: int | None = None
    rows_out: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    contract: dict[str, Any] | None = None
    group: str | None = None
    output_path: str | None = None


@dataclass(frozen=True)
class Compensation:
    """A compensating action run after a failure, undoing what a completed node did."""

    node: str
    action: str
    status: str  # DONE or FAILED
    detail: str | None = None
    at: datetime | None = None


@dataclass(frozen=True)
class AlertDelivery:
    """One alert sent (or tried) for one subject: an execution id, or a missed schedule slot."""

    workflow_id: int
    subject: str
    rule: str
    kind: str
    target: str
    status: str  # PENDING, DELIVERED or FAILED
    attempts: int
    payload: dict[str, Any]
    last_error: str | None = None
    created_at: datetime | None = None
    delivered_at: datetime | None = None


@dataclass(frozen=True)
class Execution:
    id: str
    workflow_id: int
    workflow: str
    version: int
    mode: Mode
    user_id: int
    status: RunState
    input_data: dict[str, Any] | None = None
    flow_run_id: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error_type: str | None = None
    error_message: str | None = None
    error_node: str | None = None
    output: dict[str, Any] | None = None
    timeout_seconds: float | None = None
    nodes: tuple[NodeExecution, ...] = field(default=())
    resumed_from: str | None = None
    compensations: tuple[Compensation, ...] = field(default=())


@dataclass(frozen=True)
class Lease:
    """Which process runs an unfinished execution, and when it last said it still does."""

    host: str
    pid: int
    process_started: int  # the process's start time (clock ticks after boot): tells a reused pid apart
    heartbeat_at: datetime
    lease_seconds: float  # past this without a heartbeat, a reader on another host takes the owner for dead


@dataclass(frozen=True)
class ApiKey:
    """A user's key for the REST API (the secret itself is never stored)."""

    id: int
    user_id: int
    user: str  # its user's name
    organization: str  # its user's organization's name
    prefix: str  # wfk_<lookup>: the public start of the key, to tell keys apart
    created_at: datetime
    revoked_at: datetime | None = None  # a revoked key stays revoked; its row is kept


@dataclass(frozen=True)
class WebhookToken:
    """A token that starts one workflow as the user who created it."""

    id: int
    workflow_id: int
    workflow: str  # the workflow's name
    user_id: int  # the user the workflow runs as
    prefix: str  # wfh_<lookup>: the public start of the token
    created_at: datetime
    revoked_at: datetime | None = None
