"""Schedule intervals: the slots of a workflow's cron schedules, each from its start to the next slot.

A workflow with several cron expressions has one timeline, their union: a slot's interval ends at
the next slot of any of them. Times are UTC, as Prefect runs the deployments' cron schedules
(``weflow.deploy`` gives no timezone). Pure: backfills and scheduled runs bind the same
``interval_start``/``interval_end`` inputs from here.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from cronsim import CronSim

INTERVAL_INPUTS = ("interval_start", "interval_end")
# A slot's status: PENDING until it is queued, then its execution's (weflow.core.entities.RunState)
PENDING = "PENDING"
LIVE = frozenset({PENDING, "QUEUED", "RUNNING"})


@dataclass(frozen=True)
class BackfillSlot:
    """One interval of a backfill and the run that fills it."""

    interval_start: datetime
    interval_end: datetime
    status: str
    execution_id: str | None = None
    error: str | None = None  # why it could not be queued


@dataclass(frozen=True)
class Backfill:
    """Runs of one workflow over the schedule's slots in [start_at, end_at), at most ``max_parallel`` at once.

    ``slots``: the range's slot count; ``skipped``: those left alone because they already had a run.
    ``status``: RUNNING until every slot it queued ended, then SUCCEEDED, FAILED (some slot did) or CANCELLED.
    """

    id: str
    organization_id: int
    workflow_id: int
    start_at: datetime
    end_at: datetime
    max_parallel: int
    rerun: bool
    slots: int
    skipped: int
    status: str
    created_by: int
    created_at: datetime | None = None
    finished_at: datetime | None = None
    items: tuple[BackfillSlot, ...] = field(default=())

    def counts(self) -> dict[str, int]:
        """Slots per status (PENDING, QUEUED, RUNNING, SUCCEEDED, ...)."""
        found: dict[str, int] = {}
        for item in self.items:
            found[item.status] = found.get(item.status, 0) + 1
        return found


class Slot(NamedTuple):
    start: datetime
    end: datetime

    def inputs(self, declared: Sequence[str] | None = None) -> dict[str, str]:
        """``interval_start``/``interval_end`` as ISO timestamps (only the ``declared`` ones, if given)."""
        values = {"interval_start": self.start.isoformat(), "interval_end": self.end.isoformat()}
        return {k: v for k, v in values.items() if declared is None or k in declared}


def _times(crons: Sequence[str], after: datetime) -> Iterator[datetime]:
    """Every time of any of ``crons`` after ``after`` (UTC), in order, each once."""
    merged = heapq.merge(*(CronSim(c, after.astimezone(UTC)) for c in crons))
    last = None
    for at in merged:
        if at != last:
            yield at
            last = at


def slots(crons: Sequence[str], start: datetime, end: datetime) -> Iterator[Slot]:
    """The slots that start in [``start``, ``end``), lazily (a caller stops at its limit)."""
    times = _times(crons, start - timedelta(seconds=1))
    at = next(times, None)
    while at is not None and at < start:
        at = next(times, None)
    while at is not None and at < end:
        following = next(times)
        yield Slot(at, following)
        at = following


def slot_at(crons: Sequence[str], at: datetime) -> Slot:
    """The interval of a run scheduled at ``at``: from there to the schedule's next slot."""
    return Slot(at.astimezone(UTC), next(_times(crons, at)))


def bind(
    crons: Sequence[str], declared: Sequence[str], at: datetime, given: dict[str, Any] | None
) -> dict[str, Any] | None:
    """``given`` with the interval of the slot at ``at`` for those of its two inputs the definition declares."""
    wanted = [k for k in INTERVAL_INPUTS if k in declared]
    if not crons or not wanted:
        return given
    return {**(given or {}), **slot_at(crons, at).inputs(wanted)}
