"""Leases on unfinished executions: which process runs one, and whether it still does.

The process that runs an execution records itself with the RUNNING record (host, pid, the
process's start time) and renews a heartbeat while it runs; the lease ends with the record.
A reader (``sync``, ``wait``, the API's execution reads) ends an unfinished record whose holder
is gone as FAILED with error type ``ProcessDied``: on this host, when the pid is dead, a zombie
or a newer process (its start time differs); from another host, when the heartbeat is older
than the lease. A run with a Prefect flow run is given one beat more, so that the end its worker
reports to Prefect (Cancelled, Crashed) wins. Without leases, a node that killed its interpreter
left the record RUNNING forever.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from weflow import monitor
from weflow.catalog import Catalog
from weflow.core.entities import Execution, Lease, NodeExecution, RunState
from weflow.core.model import Definition
from weflow.errors import CatalogError, NotFoundError, WeflowError
from weflow.workflows import Scope, version

log = logging.getLogger(__name__)

HEARTBEAT_ENV = "WEFLOW_HEARTBEAT_SECONDS"
DEFAULT_HEARTBEAT_SECONDS = 30.0
LEASE_BEATS = 3  # a lease outlives two missed beats: a busy catalog can delay one by its lock timeout
DIED = "ProcessDied"


def heartbeat_seconds() -> float:
    """The heartbeat interval from WEFLOW_HEARTBEAT_SECONDS (default 30 s)."""
    text = os.environ.get(HEARTBEAT_ENV, "").strip()
    if not text:
        return DEFAULT_HEARTBEAT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0.05 <= seconds <= 86_400:
        raise WeflowError(f"{HEARTBEAT_ENV}={text!r}: must be a number of seconds between 0.05 and 86400")
    return seconds


def _started(pid: int) -> int | None:
    """The start time of a live process (clock ticks after boot), 0 where /proc is missing; None if none runs."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): existence is all we can tell
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return 0
        return 0
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return None
    return int(fields[19])


def here(at: datetime | None = None) -> Lease:
    """A lease held by this process."""
    pid = os.getpid()
    return Lease(
        host=socket.gethostname(),
        pid=pid,
        process_started=_started(pid) or 0,
        heartbeat_at=at or datetime.now(UTC),
        lease_seconds=heartbeat_seconds() * LEASE_BEATS,
    )


def gone(lease: Lease, now: datetime | None = None) -> bool:
    """The holder no longer runs: checked by pid on its own host, by heartbeat age from any other."""
    if lease.host == socket.gethostname():
        started = _started(lease.pid)
        return started is None or (started != lease.process_started and 0 not in (started, lease.process_started))
    return (now or datetime.now(UTC)) - lease.heartbeat_at > timedelta(seconds=lease.lease_seconds)


def _beat_missed(lease: Lease, now: datetime) -> bool:
    """A beat passed since the last heartbeat: time for a worker to report a deployed run's end to Prefect."""
    return now - lease.heartbeat_at > timedelta(seconds=lease.lease_seconds / LEASE_BEATS)


@contextmanager
def beating(catalog: Catalog | None, execution_ids: Sequence[str]) -> Iterator[None]:
    """Renew the leases of ``execution_ids`` from a daemon thread while the block runs."""
    if catalog is None or not execution_ids:
        yield
        return
    stop = threading.Event()
    seconds = heartbeat_seconds()

    def beat() -> None:
        while not stop.wait(seconds):
            try:
                catalog.heartbeat(execution_ids)
            except CatalogError as exc:  # a missed beat is not fatal: the lease outlives two
                log.warning("heartbeat of %s not recorded: %s", ", ".join(execution_ids), exc)

    thread = threading.Thread(target=beat, name=f"weflow-heartbeat-{execution_ids[0][:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)


def reap(scope: Scope, execution_ids: Sequence[str] | None = None) -> list[Execution]:
    """End FAILED (ProcessDied) the scope's unfinished executions whose holding process is gone."""
    now = datetime.now(UTC)
    message = "the process running this execution ended without recording its end (it crashed or was killed)"
    held = scope.catalog.leased(scope.user.organization_id, execution_ids)
    dead = [e for e, lease in held if gone(lease, now) and (e.flow_run_id is None or _beat_missed(lease, now))]
    return [fixed for e in dead if (fixed := end(scope, e, DIED, message)) is not None]


def abandon(
    scope: Scope, execution_ids: Sequence[str], error_type: str, message: str, status: RunState = RunState.FAILED
) -> list[Execution]:
    """End these unfinished executions now (FAILED unless told), whoever holds them: their holder gives up."""
    found = scope.catalog.leased(scope.user.organization_id, execution_ids)
    return [fixed for e, _ in found if (fixed := end(scope, e, error_type, message, status)) is not None]


def end(
    scope: Scope, execution: Execution, error_type: str, message: str, status: RunState = RunState.FAILED
) -> Execution | None:
    """Record ``execution`` ended (FAILED) with every unfinished node, then alert; None if it ended meanwhile."""
    now = datetime.now(UTC)
    execution = scope.catalog.execution(execution.id)  # with its node records, if any were written
    definition = _definition(scope, execution)
    fixed = replace(
        execution,
        status=status,
        finished_at=now,
        duration_ms=(now - execution.started_at).total_seconds() * 1000 if execution.started_at else None,
        error_type=error_type,
        error_message=message,
    )
    nodes = _ended_nodes(execution, definition, now, status)
    if not scope.catalog.finish_execution(fixed, nodes, only_if_unfinished=True):
        return None
    if definition is not None:
        monitor.alert(fixed, definition, scope)
    return fixed


def _definition(scope: Scope, execution: Execution) -> Definition | None:
    try:
        return version(execution.workflow, scope, execution.version).definition
    except NotFoundError:  # the workflow was deleted since: the record still ends
        return None


def _ended_nodes(
    execution: Execution, definition: Definition | None, now: datetime, status: RunState
) -> list[NodeExecution]:
    """The recorded nodes, unfinished ones ended with ``status``, plus such a record for each node never recorded."""
    why = (
        "not finished: the execution was cancelled"
        if status is RunState.CANCELLED
        else "not finished: the process running the execution died"
    )
    nodes = [n if n.status.final else replace(n, status=status, finished_at=now, error=why) for n in execution.nodes]
    recorded = {n.node for n in nodes}
    names = [n.name for n in definition.nodes] if definition is not None else []
    nodes += [NodeExecution(execution.id, name, status, error=why) for name in names if name not in recorded]
    return nodes


def current(execution_id: str, scope: Scope) -> Execution:
    """One execution of the scope's organization, ended first if the process running it died."""
    found = scope.catalog.execution(execution_id, scope.user.organization_id)
    if not found.status.final and reap(scope, [found.id]):
        found = scope.catalog.execution(execution_id, scope.user.organization_id)
    return found
