"""Routes for backfills of a scheduled workflow (``weflow.backfills``), within the caller's organization.

POST queues nothing itself: it stores the backfill and drives it in a thread of this API process
(``backfills.drive``), which keeps ``maxParallel`` runs going. If the API stops first, the backfill
stays RUNNING with its slots not queued yet; ``weflow backfill resume ID`` carries on.
"""

from __future__ import annotations

import contextvars
import logging
import threading
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query
from pydantic import ConfigDict, Field

from weflow import backfills
from weflow.api.definitions import WorkflowId, find
from weflow.api.http import StrictJSONRoute, documented
from weflow.api.models import Body
from weflow.api.security import Caller
from weflow.core.intervals import Backfill
from weflow.workflows import Scope

log = logging.getLogger("weflow.backfills")
router = APIRouter(route_class=StrictJSONRoute, tags=["backfills"], responses=documented(400, 401, 404, 422, 503))
BackfillId = Annotated[str, Path(max_length=64, description="the id of a backfill of your organization")]


class BackfillIn(Body):
    model_config = ConfigDict(extra="forbid")

    start: datetime = Field(description="first instant of the range (UTC when no zone is given)")
    end: datetime = Field(description="end of the range, excluded")
    max_parallel: int = Field(default=1, ge=1, le=1000, description="most runs unfinished at once")
    rerun: bool = Field(default=False, description="run again slots that already have a successful run")


class SlotOut(Body):
    interval_start: datetime
    interval_end: datetime
    status: str = Field(description="PENDING until queued, then its execution's status")
    execution_id: str | None = None
    error: str | None = Field(default=None, description="why the slot could not be queued")


class BackfillOut(Body):
    id: str
    workflow_id: int
    workflow: str
    status: str = Field(description="RUNNING, SUCCEEDED, FAILED or CANCELLED")
    start: datetime
    end: datetime
    max_parallel: int
    rerun: bool
    slots: int = Field(description="slots of the schedule in the range")
    skipped: int = Field(description="slots left alone: they already had a run")
    counts: dict[str, int] = Field(description="this backfill's slots per status")
    created_at: datetime | None
    finished_at: datetime | None
    items: list[SlotOut]

    @classmethod
    def of(cls, backfill: Backfill, workflow: str) -> BackfillOut:
        return cls(
            id=backfill.id, workflow_id=backfill.workflow_id, workflow=workflow, status=backfill.status,
            start=backfill.start_at, end=backfill.end_at, max_parallel=backfill.max_parallel, rerun=backfill.rerun,
            slots=backfill.slots, skipped=backfill.skipped, counts=backfill.counts(), created_at=backfill.created_at,
            finished_at=backfill.finished_at, items=[SlotOut.model_validate(s) for s in backfill.items],
        )  # fmt: skip


def _drive(scope: Scope, backfill_id: str) -> None:
    try:
        backfills.drive(scope, backfill_id)
    except Exception:  # the top of a thread: say why the backfill stopped (`weflow backfill resume` carries on)
        log.exception("backfill %s stopped", backfill_id)


@router.post("/workflows/{workflow_id}/backfills", status_code=202, response_model=BackfillOut)
def create_backfill(scope: Caller, workflow_id: WorkflowId, body: BackfillIn) -> BackfillOut:
    """Store a backfill over [start, end) and start driving it in the background (poll GET /backfills/{id})."""
    workflow = find(scope, workflow_id)
    created = backfills.create(scope, workflow, body.start, body.end, body.max_parallel, body.rerun)
    context = contextvars.copy_context()  # the request's settings (``config.using``) hold in the driver too
    driver = threading.Thread(target=context.run, args=(_drive, scope, created.id), name=f"backfill-{created.id[:8]}")
    driver.daemon = True  # the API's shutdown does not wait for a backfill; `weflow backfill resume` carries on
    driver.start()
    return BackfillOut.of(created, workflow.name)


@router.get("/backfills", response_model=list[BackfillOut])
def list_backfills(
    scope: Caller, workflow: Annotated[str | None, Query(max_length=128, description="only this workflow's")] = None
) -> list[BackfillOut]:
    """The organization's backfills, newest first (the last 50), with their slots."""
    return [BackfillOut.of(b, name) for name, b in backfills.listed(scope, workflow)]


@router.get("/backfills/{backfill_id}", response_model=BackfillOut)
def get_backfill(scope: Caller, backfill_id: BackfillId) -> BackfillOut:
    """One backfill with each slot's status and execution."""
    found = backfills.show(scope, backfill_id)
    return BackfillOut.of(found, backfills.workflow_name(scope, found))


@router.post("/backfills/{backfill_id}/cancel", response_model=BackfillOut, responses=documented(409))
def cancel_backfill(scope: Caller, backfill_id: BackfillId) -> BackfillOut:
    """Cancel the whole backfill: slots not queued never start, queued and running runs are cancelled; 409 if ended."""
    found = backfills.cancel(scope, backfill_id)
    return BackfillOut.of(found, backfills.workflow_name(scope, found))
