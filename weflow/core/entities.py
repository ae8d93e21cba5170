"""Catalog records: what is stored about workflows, versions, executions and their owners."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from weflow.core.model import Definition
from weflow.core.records import AlertDelivery as AlertDelivery
from weflow.core.records import Compensation as Compensation
from weflow.core.records import Execution as Execution
from weflow.core.records import Lease as Lease
from weflow.core.records import Mode as Mode
from weflow.core.records import NodeExecution as NodeExecution
from weflow.core.records import RunState as RunState
from weflow.core.records import Status as Status


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
