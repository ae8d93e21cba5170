"""Run history: list and read executions, repair them from Prefect, read their logs, wait, cancel."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from weflow import children, leases, monitor, retention
from weflow.core.entities import Execution, RunState, Workflow
from weflow.errors import ConflictError, ExecutionTimeout
from weflow.prefect_gateway.states import final_state
from weflow.workflows import Scope, get, version

if TYPE_CHECKING:
    from weflow.prefect_gateway.flow_runs import LogLine

# Prefect's client (weflow.prefect_gateway.flow_runs, ~1.5 s of imports) loads where a function needs it: a listing
# or a wait with nothing to ask Prefect (`weflow executions`, `weflow execution`) does not import Prefect.

current = leases.current  # the API's and CLI's read of one execution


def find(execution_id: str, scope: Scope) -> Execution:
    """One execution of the scope's organization, as recorded (no repair)."""
    return scope.catalog.execution(execution_id, scope.user.organization_id)


def contract_failures(execution: Execution, scope: Scope) -> list[dict[str, Any]]:
    """The failure cases an execution's contracts recorded (``execution`` as read by ``find``)."""
    return scope.catalog.contract_failures(execution.id)


def executions(
    scope: Scope, workflow: str | Workflow | None = None, limit: int = 100, offset: int = 0
) -> list[Execution]:
    """Executions of the organization (or of one workflow), most recent first, without node records.

    Unfinished ones whose process died are ended first (``leases.reap``).
    """
    workflow_id = (get(workflow, scope) if isinstance(workflow, str) else workflow).id if workflow else None
    org = scope.user.organization_id
    found = scope.catalog.executions(org, workflow_id, limit=limit, offset=offset)
    if leases.reap(scope, [e.id for e in found if not e.status.final]):  # their processes died
        found = scope.catalog.executions(org, workflow_id, limit=limit, offset=offset)
    return found


def sync(scope: Scope) -> list[Execution]:
    """Repair the catalog mirror: unfinished records whose flow run has ended, or whose process died.

    Prefect first: a deployed run that was cancelled or crashed ends with the state its worker reported.
    Then retention, when a prune is due (``weflow.retention.prune_due``: at most hourly).
    """
    pending = [e for e in scope.catalog.unfinished(scope.user.organization_id) if e.flow_run_id]
    repaired = _sync_from_prefect(scope, pending) if pending else []
    repaired += leases.reap(scope)
    retention.after_sync(scope.catalog)
    return repaired


def _sync_from_prefect(scope: Scope, pending: list[Execution]) -> list[Execution]:
    from weflow.prefect_gateway import flow_runs

    repaired = []
    states = flow_runs.ended([e.flow_run_id for e in pending if e.flow_run_id])
    for e in pending:
        kind, name, message = states.get(e.flow_run_id or "", ("", "", ""))
        status = final_state(kind, name) if kind else None
        if status is None:
            continue
        fixed = replace(
            e,
            status=status,
            finished_at=datetime.now(UTC),
            error_type=None if status is RunState.SUCCEEDED else f"Prefect{name}",
            error_message=None if status is RunState.SUCCEEDED else f"flow run {name.lower()}: {message}",
        )
        nodes = [
            replace(n, status=RunState.CANCELLED if status is RunState.CANCELLED else RunState.FAILED)
            if not n.status.final
            else n
            for n in e.nodes
        ]
        if scope.catalog.finish_execution(fixed, nodes, only_if_unfinished=True):
            repaired.append(fixed)
            monitor.alert(fixed, version(e.workflow, scope, e.version).definition, scope)
    return repaired


def logs(execution_id: str, scope: Scope, node: str | None = None, limit: int = 5000) -> list[LogLine]:
    """An execution's log lines from Prefect (the system of record), oldest first, per node if asked."""
    from weflow.prefect_gateway import flow_runs

    execution = find(execution_id, scope)
    if execution.flow_run_id is None:
        return []
    lines = flow_runs.logs(execution.flow_run_id, limit)
    if node is not None:
        lines = [line for line in lines if line.node == node or (line.node or "").startswith(f"{node} (+")]
    return lines


REPAIR_EVERY = 5.0  # seconds between a waiter's repairs of the run it waits for (its record is read every poll)
READ_GAP = 0.1  # seconds at least between two reads of a waiter, however often the catalog changes


def wait(execution_id: str, scope: Scope, timeout: float = 600.0, poll: float = 0.5) -> Execution:
    """Block until an execution ends; ExecutionTimeout past ``timeout``.

    Each poll reads the record, which a run that ends, well or not, writes itself: at once when the catalog file
    changed (``Catalog.changed``), at most ``poll`` s after the last read otherwise. Every ``REPAIR_EVERY`` s, and
    once more at the deadline, it also repairs that execution alone (``sync``'s two repairs: its flow run ended in
    Prefect, its holder died), so a run whose process died ends within seconds. Repairing at every poll cost a
    Prefect read or a lease reap (a catalog session) twice a second per waiter, for runs that nearly always end
    by their own record."""
    deadline = time.monotonic() + timeout
    repaired = -REPAIR_EVERY
    while True:
        seen = scope.catalog.stamp()
        found = scope.catalog.execution(execution_id)
        if found.status.final:
            return found
        now = time.monotonic()
        if now > deadline or now - repaired >= REPAIR_EVERY:
            repaired = now
            if not (found.flow_run_id and _sync_from_prefect(scope, [found])):
                leases.reap(scope, [found.id])
            if now > deadline:
                found = scope.catalog.execution(execution_id)
                if found.status.final:
                    return found
                raise ExecutionTimeout(f"execution {execution_id} still {found.status.value} after {timeout:g} s")
        scope.catalog.changed(seen, poll, gap=READ_GAP)  # read again on any process's write, else after ``poll``


def cancel(execution_id: str, scope: Scope) -> Execution:
    """Cancel a queued or running execution through Prefect; the record ends CANCELLED."""
    execution = find(execution_id, scope)
    if execution.status.final:
        raise ConflictError(f"execution {execution_id} already ended {execution.status.value}")
    if execution.flow_run_id is None:
        if children.cancel(execution.id):  # a run this process (the API) handed to a child
            return scope.catalog.execution(execution_id)
        raise ConflictError(f"execution {execution_id} runs in a process weflow cannot reach; it cannot be cancelled")
    from weflow.prefect_gateway import flow_runs

    flow_runs.cancel(execution.flow_run_id)
    if execution.status is RunState.QUEUED:
        scope.catalog.update_execution(execution.id, status=RunState.CANCELLED, finished_at=datetime.now(UTC))
    return scope.catalog.execution(execution_id)
