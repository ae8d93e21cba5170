"""Run records: the states of workflows and runs, executions, their nodes, leases and alert deliveries.

Plain dataclasses and enums without the definition model (``weflow.core.model``), so a process
that only reads a run's record (``weflow run`` handing a run to a worker) builds no pydantic
model of a definition. ``weflow.core.entities`` exports them with the catalog's other records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any


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
