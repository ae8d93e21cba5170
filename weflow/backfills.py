"""Backfills: one run of a scheduled workflow per slot of its cron schedules in [start, end).

``create`` checks the request and stores the backfill with the slots it takes (a slot that already
has a run is skipped unless ``rerun``: ``weflow.catalog.backfills``). ``drive`` then queues the slots
through ``execution.submit`` (the one queue path), at most ``max_parallel`` unfinished at once, and
waits until every run ended: whoever calls it drives the backfill (the CLI in the foreground, like
Airflow's ``backfill`` command; the API in a thread of its process). ``drive`` holds no state of its
own: called again on a backfill left RUNNING (its driver stopped), it carries on where that one was.
``cancel`` ends the backfill at once: slots not queued yet never start, queued and running runs are
cancelled through ``execution.cancel``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice
from typing import TYPE_CHECKING

from weflow.catalog.backfills import Backfills
from weflow.config import settings
from weflow.core.entities import Mode, Status, Workflow
from weflow.core.intervals import INTERVAL_INPUTS, LIVE, PENDING, Backfill, BackfillSlot, Slot, slots
from weflow.errors import ConflictError, WeflowError
from weflow.workflows import Scope, get, list_workflows, version

if TYPE_CHECKING:
    from types import ModuleType


def _execution() -> ModuleType:
    """The execution service, imported when a backfill queues or checks runs: it imports Prefect (~1.5 s)
    that ``weflow backfills`` and every other command importing this module skip."""
    from weflow import execution

    return execution


def _scheduling() -> ModuleType:
    from weflow.prefect_gateway import scheduling

    return scheduling


RUNNING = "RUNNING"
SYNC_SECONDS = 30.0  # how often a driver repairs records from Prefect (a crashed flow run); ~1 s with retention
Progress = Callable[[Backfill], None]


class BackfillError(WeflowError):
    """A backfill cannot be made as asked (range, schedule, status, size)."""


def parse_time(text: str, what: str) -> datetime:
    """An ISO 8601 timestamp or date (UTC when it names no zone); a bad one is a one-line error naming ``what``."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BackfillError(f"{what}: {text!r} is not a timestamp (ISO 8601, e.g. 2026-01-01T00:00:00Z)") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def _instant(value: datetime | str, what: str) -> datetime:
    if isinstance(value, str):
        return parse_time(value, what)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _store(scope: Scope) -> Backfills:
    return Backfills(scope.catalog.path, scope.catalog.lock_timeout)


def _runnable(workflow: Workflow) -> None:
    if workflow.status is Status.DRAFT:
        raise BackfillError(
            f"workflow {workflow.name!r} is DRAFT: set 'status: ACTIVE' in its definition, apply it and deploy it first"
        )
    if workflow.status is Status.PAUSED:
        raise BackfillError(f"workflow {workflow.name!r} is PAUSED: set 'status: ACTIVE' and apply it to backfill it")
    if workflow.status is not Status.ACTIVE:
        raise BackfillError(f"workflow {workflow.name!r} is {workflow.status.value}: only ACTIVE ones are backfilled")


def create(
    scope: Scope,
    workflow: str | Workflow,
    start: datetime | str,
    end: datetime | str,
    max_parallel: int = 1,
    rerun: bool = False,
) -> Backfill:
    """Check the request, then store the backfill and the slots it takes (nothing is queued yet: ``drive``)."""
    begin, finish = _instant(start, "--start"), _instant(end, "--end")
    found = get(workflow, scope) if isinstance(workflow, str) else workflow
    _runnable(found)
    if finish <= begin:
        raise BackfillError(f"--end {finish.isoformat()} is not after --start {begin.isoformat()}")
    if max_parallel < 1:
        raise BackfillError(f"--max-parallel {max_parallel}: must be 1 or more")
    definition = version(found.name, scope).definition
    if not definition.schedule:
        raise BackfillError(f"workflow {found.name!r} has no schedule: a backfill runs one run per slot of its cron")
    limit = settings().backfill_max_slots
    try:
        wanted = list(islice(slots(definition.schedule, begin, finish), limit + 1))
    except OverflowError:  # a slot's end past year 9999
        raise BackfillError(f"--end {finish.isoformat()}: a slot in the range ends past the year 9999") from None
    if len(wanted) > limit:
        raise BackfillError(
            f"over {limit} slots of {', '.join(definition.schedule)} in [{begin.isoformat()}, {finish.isoformat()}): "
            "split the range or raise WEFLOW_BACKFILL_MAX_SLOTS"
        )
    if not wanted:
        crons = ", ".join(definition.schedule)
        raise BackfillError(f"no slot of {crons} in [{begin.isoformat()}, {finish.isoformat()})")
    _execution().resolve_inputs(definition, wanted[0].inputs(list(definition.inputs)))  # other required inputs: refused
    backfill = Backfill(
        str(uuid.uuid4()), scope.user.organization_id, found.id, begin, finish, max_parallel, rerun,
        len(wanted), 0, RUNNING, scope.user.id, datetime.now(UTC),
    )  # fmt: skip
    return _store(scope).create_backfill(backfill, wanted)


def show(scope: Scope, backfill_id: str) -> Backfill:
    """One backfill of the organization with its slots' statuses."""
    return _store(scope).backfill(backfill_id, scope.user.organization_id)


def listed(scope: Scope, workflow: str | None = None) -> list[tuple[str, Backfill]]:
    """The organization's backfills (of ``workflow``), newest first, each with its workflow's name."""
    workflow_id = get(workflow, scope).id if workflow else None
    names = {w.id: w.name for w in list_workflows(scope)}
    found = _store(scope).backfills(scope.user.organization_id, workflow_id)
    return [(names.get(b.workflow_id, f"#{b.workflow_id}"), b) for b in found]


def _queue(
    scope: Scope, backfill: Backfill, name: str, declared: list[str], slot: BackfillSlot
) -> tuple[datetime, str, str | None, str | None]:
    """Submit one claimed slot as a run with its interval inputs: (start, status, execution id, error)."""
    inputs = Slot(slot.interval_start, slot.interval_end).inputs(declared)
    try:
        queued = _execution().submit(name, scope, Mode.API, inputs)
    except Exception as exc:  # the server's 503, a changed definition: this slot fails, the others go on
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:2000]
        return slot.interval_start, "FAILED", None, text
    if queued.flow_run_id:
        _scheduling().tag(queued.flow_run_id, [f"backfill:{backfill.id}"])
    return slot.interval_start, queued.status.value, queued.id, None


def _start_more(scope: Scope, backfill: Backfill, name: str, declared: list[str]) -> None:
    """Queue pending slots until ``max_parallel`` are unfinished (claimed first: a newer backfill may own one)."""
    live = sum(1 for s in backfill.items if s.status in LIVE - {PENDING})
    room = max(0, backfill.max_parallel - live)
    pending = {s.interval_start: s for s in backfill.items if s.status == PENDING}
    store = _store(scope)
    claimed = store.claim_slots(backfill.id, backfill.workflow_id, sorted(pending)[:room])
    store.set_slots(backfill.workflow_id, [_queue(scope, backfill, name, declared, pending[at]) for at in claimed])


def _ending(backfill: Backfill) -> str | None:
    """The status the backfill ends with once none of its slots is pending or running; None before."""
    counts = backfill.counts()
    if any(counts.get(s, 0) for s in LIVE):
        return None
    return "FAILED" if counts.get("FAILED", 0) or counts.get("TIMED_OUT", 0) else "SUCCEEDED"


def drive(scope: Scope, backfill_id: str, progress: Progress | None = None, poll: float = 0.5) -> Backfill:
    """Queue the backfill's slots, at most ``max_parallel`` unfinished at once, until every run ended."""
    store = _store(scope)
    backfill = show(scope, backfill_id)
    name = workflow_name(scope, backfill)
    declared = [k for k in version(name, scope).definition.inputs if k in INTERVAL_INPUTS]
    synced = time.monotonic()
    while True:
        if progress:
            progress(backfill)
        if backfill.status == "CANCELLED":
            _cancel_runs(scope, backfill)  # a run submitted while the cancel came in
        if backfill.status != RUNNING:
            return backfill
        ending = _ending(backfill)
        if ending is not None:
            store.end_backfill(backfill.id, ending)
        else:
            _start_more(scope, backfill, name, declared)
            time.sleep(poll)
            if time.monotonic() - synced > SYNC_SECONDS:
                _execution().sync(scope)  # a flow run that crashed without its record ending
                synced = time.monotonic()
        backfill = show(scope, backfill_id)


def _cancel_runs(scope: Scope, backfill: Backfill) -> None:
    for slot in backfill.items:
        if slot.execution_id and slot.status in LIVE:
            try:
                _execution().cancel(slot.execution_id, scope)
            except ConflictError:
                continue  # it ended meanwhile


def cancel(scope: Scope, backfill_id: str) -> Backfill:
    """Cancel the whole backfill: slots not queued yet never start, queued and running runs are cancelled."""
    store = _store(scope)
    backfill = show(scope, backfill_id)
    if backfill.status != RUNNING:
        raise ConflictError(f"backfill {backfill_id} already ended {backfill.status}")
    store.end_backfill(backfill.id, "CANCELLED")
    _cancel_runs(scope, backfill)
    return show(scope, backfill_id)


def workflow_name(scope: Scope, backfill: Backfill) -> str:
    """The name of the backfill's workflow (``#id`` once it was deleted)."""
    names = {w.id: w.name for w in list_workflows(scope)}
    return names.get(backfill.workflow_id, f"#{backfill.workflow_id}")
