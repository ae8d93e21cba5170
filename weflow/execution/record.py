"""Where a run's records go: one ``Recorder`` interface, the catalog here or the weflow API from a worker.

A run is recorded twice (DESIGN decision 7): ``begin`` writes the RUNNING record before the flow
starts, ``finish`` the final state with every node record and contract failure in one batch.
``CatalogRecorder`` writes the catalog (one session per record, or in batches through a
``weflow.catalog.batcher.Batcher`` in a process recording many runs) and holds the run's lease
while it runs; ``ApiRecorder`` (a remote worker, DESIGN decision 8) sends both to the weflow API,
whose ``/runner`` routes write them with the ``report_*`` functions below (through the API
process's shared batcher: concurrent reports share a session); ``UNRECORDED`` keeps nothing
(previews, benchmarks).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Protocol

from weflow import leases, monitor
from weflow.catalog.batch import Begun, Finished
from weflow.catalog.batcher import Batcher, shared
from weflow.client import WeflowApi
from weflow.core.cursors import Window
from weflow.core.entities import Execution, Mode, NodeExecution, RunState
from weflow.core.model import DEFAULT_TIMEOUT_SECONDS, Definition
from weflow.errors import ConflictError, NotFoundError
from weflow.workflows import Scope, check, version

Failures = list[dict[str, Any]]


class Recorder(Protocol):
    """The records of one run: mark it running, hold it while it runs, write its end."""

    def begin(self, execution: Execution, queued: bool, from_node: str | None = None) -> None:
        """Record ``execution`` (already RUNNING, with its start time) as running."""
        ...

    def holding(self, execution_id: str) -> AbstractContextManager[Any]:
        """Hold the run while the block runs (the catalog's lease heartbeat)."""
        ...

    def finish(
        self, final: Execution, nodes: list[NodeExecution], failures: Failures, definition: Definition,
        windows: Sequence[Window] = (),
    ) -> None:  # fmt: skip
        """Record the end: the final state, every node record, the contract failures, what incremental sources read
        (a SUCCEEDED end moves their cursors, in the same transaction)."""
        ...


class StoredRecorder(Recorder, Protocol):
    """A recorder that also holds the definitions: what the deployment entrypoint runs with."""

    @property
    def scope(self) -> Scope | None:
        """The catalog's scope, whose data roots the run reads; None on a remote worker (the settings' roots)."""
        ...

    def queued(self, workflow: str, execution_id: str) -> tuple[Definition, Execution]:
        """An execution recorded QUEUED and its checked, pinned definition."""
        ...

    def create(
        self, workflow: str, version_number: int | None, mode: Mode, input_data: dict[str, Any] | None,
        flow_run_id: str | None,
    ) -> tuple[Definition, Execution]:  # fmt: skip
        """A new execution of a run started outside weflow (the Prefect UI, a schedule) and its definition."""
        ...


class Unrecorded:
    """Keeps nothing: a preview, or a run measured without its catalog writes."""

    def begin(self, execution: Execution, queued: bool, from_node: str | None = None) -> None:
        return None

    def holding(self, execution_id: str) -> AbstractContextManager[Any]:
        return nullcontext()

    def finish(
        self, final: Execution, nodes: list[NodeExecution], failures: Failures, definition: Definition,
        windows: Sequence[Window] = (),
    ) -> None:  # fmt: skip
        return None


UNRECORDED = Unrecorded()


@dataclass(frozen=True)
class CatalogRecorder:
    """Records in the catalog, as the scope's user; the process running the run holds its lease.

    Without a ``batcher`` every record is its own session, written when the call returns (an
    in-process CLI run). With one (a process recording many runs), begins of QUEUED records and
    ends are written in its next batch and ``finish`` returns at once, the alerts sent once the end
    is written; a begin that inserts a new record still waits for its batch, because a record
    that never existed is the one loss ``weflow sync`` cannot repair from Prefect.
    """

    scope: Scope
    batcher: Batcher | None = None

    def queued(self, workflow: str, execution_id: str) -> tuple[Definition, Execution]:
        org = self.scope.user.organization_id
        execution = _committed(lambda: self.scope.catalog.execution(execution_id, org))
        return pinned(self.scope, workflow, execution), execution

    def create(
        self, workflow: str, version_number: int | None, mode: Mode, input_data: dict[str, Any] | None,
        flow_run_id: str | None,
    ) -> tuple[Definition, Execution]:  # fmt: skip
        return new_execution(
            self.scope, workflow, mode=mode, input_data=input_data, timeout=None, version_number=version_number
        )

    def begin(self, execution: Execution, queued: bool, from_node: str | None = None) -> None:
        """Insert the RUNNING record, or move a QUEUED one on, leased to this process."""
        lease = leases.here(execution.started_at)
        if self.batcher is not None:  # a queued run's RUNNING may wait for its end: a short run is written once
            linger = RUNNING_LINGER if queued else None
            self.batcher.put(Begun(execution, queued, from_node, lease), wait=not queued, linger=linger)
            return
        if not queued:
            self.scope.catalog.insert_execution(execution, from_node, lease=lease)
            return
        fields: dict[str, Any] = {"status": RunState.RUNNING, "started_at": execution.started_at}
        if execution.flow_run_id:
            fields["flow_run_id"] = execution.flow_run_id
        self.scope.catalog.update_execution(execution.id, lease=lease, **fields)

    def holding(self, execution_id: str) -> AbstractContextManager[Any]:
        return leases.beating(self.scope.catalog, [execution_id])

    def finish(
        self, final: Execution, nodes: list[NodeExecution], failures: Failures, definition: Definition,
        windows: Sequence[Window] = (),
    ) -> None:  # fmt: skip
        if self.batcher is not None:
            scope = self.scope
            end = Finished(final, tuple(nodes), tuple(failures), windows=tuple(windows))
            self.batcher.put(end, after=lambda: monitor.alert(final, definition, scope))
            return
        self.scope.catalog.finish_execution(final, nodes, failures, windows=windows)
        monitor.alert(final, definition, self.scope)


@dataclass(frozen=True)
class ApiRecorder:
    """Records through the weflow API (``WEFLOW_API_URL``): a remote worker never opens the catalog file."""

    api: WeflowApi
    scope: None = None

    def queued(self, workflow: str, execution_id: str) -> tuple[Definition, Execution]:
        execution = _committed(lambda: self.api.execution(execution_id))
        definition, _ = self.api.definition(workflow, execution.version)
        return check(definition), execution

    def create(
        self, workflow: str, version_number: int | None, mode: Mode, input_data: dict[str, Any] | None,
        flow_run_id: str | None,
    ) -> tuple[Definition, Execution]:  # fmt: skip
        definition, number = self.api.definition(workflow, version_number)
        execution = self.api.create_execution(workflow, number, mode, input_data, flow_run_id)
        return check(definition), execution

    def begin(self, execution: Execution, queued: bool, from_node: str | None = None) -> None:
        self.api.running(execution.id, execution.flow_run_id)

    def holding(self, execution_id: str) -> AbstractContextManager[Any]:
        return nullcontext()  # the API's records carry no lease: Prefect tells a dead worker's run

    def finish(
        self, final: Execution, nodes: list[NodeExecution], failures: Failures, definition: Definition,
        windows: Sequence[Window] = (),
    ) -> None:  # fmt: skip
        self.api.finish(final, nodes, failures)  # the API sends the alerts; no windows: prepare refuses incremental


# seconds a queued run's move to RUNNING (and its lease) may wait in a batcher for the run's end: a run shorter than
# this is written once, whole (one catalog session instead of two, the end committed ~30-50 ms sooner); a longer one
# shows RUNNING this much later. A process dying meanwhile leaves it QUEUED: sync ends it from Prefect's state.
RUNNING_LINGER = 0.25
COMMIT_WAIT = 10.0  # seconds a worker waits for the record of a flow run it took before the record was committed


def _committed(read: Callable[[], Execution]) -> Execution:
    """The QUEUED record of a flow run this process took, once its submitter committed it.

    ``execution.submit`` creates the flow run, then stores the record with its id: a worker
    polling in between finds the flow run first and waits here (a few ms in practice).
    """
    deadline = time.monotonic() + COMMIT_WAIT
    while True:
        try:
            return read()
        except NotFoundError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


_versions: dict[tuple[str, int, int, int], Definition] = {}
VERSIONS_KEPT = 256


def pinned(scope: Scope, workflow: str, execution: Execution) -> Definition:
    """The checked definition of the execution's version, read once per process (versions never change).

    Keyed by catalog file, workflow id, version and user (whose data roots it was checked against):
    a long-lived worker reads each version once instead of in a catalog session per run.
    """
    return _checked(scope, execution.workflow_id, execution.version,
                    lambda: version(workflow, scope, execution.version).definition)  # fmt: skip


def _checked(scope: Scope, workflow_id: int, number: int, read: Callable[[], Definition]) -> Definition:
    """A version's definition checked against the scope's data roots, once per process (see ``pinned``)."""
    key = (str(scope.catalog.path), workflow_id, number, scope.user.id)
    found = _versions.get(key)
    if found is None:
        found = check(read(), scope)
        if len(_versions) >= VERSIONS_KEPT:
            _versions.clear()
        _versions[key] = found
    return found


def new_execution(
    scope: Scope, name: str, *, mode: Mode, input_data: Mapping[str, Any] | None, timeout: float | None,
    version_number: int | None = None,
) -> tuple[Definition, Execution]:  # fmt: skip
    """A QUEUED execution record (not stored yet) pinned to a version, and that version's checked definition."""
    wf, ver = scope.catalog.workflow_version(scope.user.organization_id, name, version_number)  # one session
    execution = Execution(
        id=str(uuid.uuid4()),
        workflow_id=wf.id,
        workflow=wf.name,
        version=ver.number,
        mode=mode,
        user_id=scope.user.id,
        status=RunState.QUEUED,
        input_data=dict(input_data) if input_data is not None else None,
        created_at=datetime.now(UTC),
        timeout_seconds=timeout or ver.definition.settings.timeout_seconds or DEFAULT_TIMEOUT_SECONDS,
    )
    return _checked(scope, wf.id, ver.number, lambda: ver.definition), execution


# --- the API's side of ApiRecorder (routes /runner/...) -----------------------------------------


def report_created(scope: Scope, execution: Execution) -> Execution:
    """Store a worker's new QUEUED execution (in the API's next batch, waited for)."""
    shared(scope.catalog).put(Begun(execution), wait=True)
    return execution


def report_running(scope: Scope, execution_id: str, flow_run_id: str | None) -> Execution:
    """A worker started the run (no lease: the API is not the process that runs it)."""
    found = scope.catalog.execution(execution_id, scope.user.organization_id)
    if found.status.final:
        raise ConflictError(f"execution {found.id} already ended {found.status.value}")
    running = replace(found, status=RunState.RUNNING, started_at=datetime.now(UTC), flow_run_id=flow_run_id)
    shared(scope.catalog).put(Begun(running, queued=True), wait=True)
    return scope.catalog.execution(found.id)


def report_finished(scope: Scope, final: Execution, nodes: list[NodeExecution], failures: Failures) -> Execution:
    """A worker's run ended: its end (in the API's next batch, waited for) unless it already ended, then the alerts."""
    end = Finished(final, tuple(nodes), tuple(failures), only_if_unfinished=True)
    if not shared(scope.catalog).put(end, wait=True):
        raise ConflictError(f"execution {final.id} already ended")
    monitor.alert(final, check(version(final.workflow, scope, final.version).definition, scope), scope)
    return scope.catalog.execution(final.id)
