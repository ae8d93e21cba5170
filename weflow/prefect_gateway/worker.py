"""weflow's own Prefect worker type, ``weflow``: flow runs of the execution queue run inside the worker.

A ``prefect worker`` of type ``process`` starts two interpreters per flow run (~2.5-3 s and
~200 MB here, DESIGN facts). ``WeflowWorker`` is Prefect's ``ProcessWorker`` (so
``BaseWorker``'s polling, pool sync, heartbeats, per-worker limit and pending-run cancel) whose
``run`` loads the deployment's entrypoint flow once, through Prefect's own loader, and runs each
flow run with Prefect's async flow engine against the existing flow run, in a thread of its own
(a thread keeps Prefect's SIGTERM bridge out of the worker's main thread). Prefect records the
run's states, task runs and logs as usual; the run is still the deployment's flow run.

A run goes to a fresh process instead (``ProcessWorker.run``: ``python -m prefect.engine``) when
its job variables say ``isolation: process`` (``settings.isolation`` of the workflow), when its
job env sets a ``WEFLOW_*`` variable to another value than this worker's (another catalog or
API), or when its deployment pulls code from storage. The same worker starts those processes,
rather than a second pool of process workers: one pool, one queue and one kind of worker to run,
and a workflow that changes its isolation keeps its deployment's pool, queue and limits.

Cancel: a Cancelling flow run that runs here is cancelled inside its event loop; the engine then
ends it Cancelled (not Crashed), and weflow's run records it CANCELLED. Health: after
``max_runs`` runs, or above ``max_memory_mb`` of RSS, the worker takes no new run, finishes the
ones in flight and returns; its supervisor (``weflow worker``) starts a fresh one. Each worker
records its wake-up port and in-flight flow runs in the Prefect home (``worker_home``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

import anyio
import anyio.abc
from prefect import Flow
from prefect._flow_run_suspension import (
    FlowRunSuspensionRequest,
    mark_flow_run_suspension_requested,
    register_flow_run_suspension_request,
)
from prefect._internal.observers import FlowRunCancellingObserver, FlowRunSuspendingObserver
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateName,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
    WorkQueueFilter,
    WorkQueueFilterName,
)
from prefect.client.schemas.objects import Flow as APIFlow
from prefect.client.schemas.objects import FlowRun, State, StateDetails, StateType, WorkPool, WorkQueue
from prefect.client.schemas.responses import DeploymentResponse, WorkerFlowRunResponse
from prefect.client.schemas.sorting import FlowRunSort
from prefect.events import emit_event
from prefect.events.schemas.events import RelatedResource
from prefect.exceptions import Abort, InfrastructureNotFound, ObjectNotFound, PrefectHTTPStatusError
from prefect.flow_engine import AsyncFlowRunEngine
from prefect.flows import load_flow_from_entrypoint
from prefect.settings import (
    get_current_settings,
)
from prefect.states import Cancelled, Crashed, Pending
from prefect.utilities.callables import get_call_parameters, parameters_to_args_kwargs
from prefect.utilities.engine import propose_state
from prefect.workers.process import ProcessJobConfiguration, ProcessVariables, ProcessWorker, ProcessWorkerResult
from pydantic import Field, PrivateAttr

from weflow.prefect_gateway import concurrency_lease, worker_home
from weflow.prefect_gateway.client import on_server, run_clients, shared_client
from weflow.prefect_gateway.deployments import WATCH_ENDED, managed

Isolation = Literal["worker", "process"]
log = logging.getLogger("weflow.worker")
POLLED_KEPT = 1000  # flow runs a worker remembers its polls returned (for their Scheduled events)
POLLED_FRESH = 5.0  # seconds: a run's announcement later than this after a poll returned it (or it was taken) is read
DESCRIBE_AFTER = 2.0  # seconds into a run here at most before the worker writes its labels and pid on it
WAITING = "AwaitingConcurrencySlot"  # Prefect's Scheduled state for a run its deployment's limit sent back


_base_env: list[Any] = [None, {}]  # the settings object and its env (Prefect's settings are immutable)


class WeflowJobConfiguration(ProcessJobConfiguration):
    """The process worker's job, plus where the run goes: this worker (default) or a process of its own."""

    isolation: Isolation = Field(default="worker")
    _entrypoint: str | None = PrivateAttr(default=None)  # the flow to load here; None: code comes from storage

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        """Prefect's settings as a run process's env, made once per settings object, not per run.

        Prefect serialises every setting for each run it prepares: 61 ms of the worker's event loop
        per run here (cProfile), spent even on the runs that stay in this process.
        """
        current = get_current_settings()
        if _base_env[0] is not current:
            _base_env[:] = [current, super()._base_environment()]
        return dict(_base_env[1])

    def prepare_for_flow_run(
        self,
        flow_run: FlowRun,
        deployment: DeploymentResponse | None = None,
        flow: APIFlow | None = None,
        work_pool: WorkPool | None = None,
        worker_name: str | None = None,
        worker_id: UUID | None = None,
    ) -> None:
        """Also keep the deployment's entrypoint file (BaseWorker read the deployment already)."""
        super().prepare_for_flow_run(flow_run, deployment, flow, work_pool, worker_name, worker_id=worker_id)
        if deployment is None:
            return
        entry = deployment.entrypoint or ""
        if deployment.path and ":" in entry and not deployment.pull_steps and not deployment.storage_document_id:
            self._entrypoint = str(Path(deployment.path) / entry)


class WeflowVariables(ProcessVariables):
    isolation: Isolation = Field(
        default="worker",
        description="worker: run inside a long-lived weflow worker; process: in a fresh Python process",
    )


class WeflowWorkerResult(ProcessWorkerResult):
    """How a flow run ended on this worker (0: Prefect holds its final state)."""


class _InProcess:
    """A flow run running in one of this worker's threads, cancellable from the worker's loop."""

    def __init__(self, flow_run_id: UUID) -> None:
        self.flow_run_id = flow_run_id
        self.cancelled = threading.Event()
        self.policy_by_worker = False  # the worker writes its flow version; its engine skips that write
        self.ended = anyio.Event()  # on the worker's loop
        self._lock = threading.Lock()
        self._task: tuple[asyncio.AbstractEventLoop, asyncio.Task[Any]] | None = None

    async def under_way(self) -> None:
        """Until the run ended or has run ``DESCRIBE_AFTER`` s."""
        with anyio.move_on_after(DESCRIBE_AFTER):
            await self.ended.wait()

    def attach(self) -> bool:
        """Called in the run's thread: cancel reaches this task from now on; False if already cancelled."""
        with self._lock:
            task = asyncio.current_task()
            assert task is not None
            self._task = (asyncio.get_running_loop(), task)
            return not self.cancelled.is_set()

    def cancel(self) -> None:
        with self._lock:
            self.cancelled.set()
            if self._task is not None:
                loop, task = self._task
                loop.call_soon_threadsafe(task.cancel)


class _Engine(AsyncFlowRunEngine[Any, Any]):
    """Prefect's async flow engine; the worker's cancel ends the run Cancelled instead of Crashed, and the worker's
    one suspension observer watches the run.

    Prefect tells a requested cancel from a crash through a process-wide intent its runner sets
    before a SIGTERM; runs sharing a process need a flag of their own.
    """

    weflow_cancel: threading.Event | None = None
    weflow_policy_by_worker = False  # the worker writes this run's flow version (``policy_by_worker``)
    weflow_beats_from: float | None = None  # a run here: its first heartbeat not before (``_emit_flow_run_heartbeat``)
    weflow_watch: Literal["unwatched", "watched", "ended"] = "unwatched"  # by crash detection (``end_watch``)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._weflow_watch = threading.Lock()  # a heartbeat goes out (Prefect's thread) or the watch ends, not both

    @contextmanager
    def setup_flow_run_suspension_request(self) -> Iterator[FlowRunSuspensionRequest]:
        """Prefect's, without an observer of its own: Prefect starts a thread with an event loop and an event
        subscription for each deployment's flow run and waits for it at both ends (~140 ms of every run here,
        py-spy); the worker's ``FlowRunSuspendingObserver`` watches its runs in flight instead (``run``), and a
        suspension it sees reaches this run through Prefect's registry of requests, as Prefect's own would."""
        if not self.flow_run:
            raise ValueError("Flow run not set")
        request = self._get_flow_run_suspension_request()
        with register_flow_run_suspension_request(self.flow_run.id, request):
            request.raise_if_requested()
            yield request

    @property
    def client(self) -> Any:
        """Prefect's; until the engine's start-up write of the run's flow version and retry policy, one that skips
        that write when the worker makes it (``policy_by_worker``)."""
        found = super().client
        return _PolicyByWorker(found, self) if self.weflow_policy_by_worker else found

    async def begin_run(self) -> State:
        """Prefect's, without renaming a flow run that already has the name its flow gives it (weflow names the
        runs it creates as the entrypoint's ``flow_run_name`` does): one request to the server less per run."""
        template = self.flow.flow_run_name
        if isinstance(template, str) and self.flow_run is not None:
            with suppress(KeyError, IndexError, ValueError):
                self._flow_run_name_set = self.flow_run.name == template.format(**(self.parameters or {}))
        return await super().begin_run()

    def _emit_flow_run_heartbeat(
        self, resource: dict[str, str] | None = None, related: list[RelatedResource] | None = None
    ) -> None:
        """Prefect's; for a run in the worker's threads, none until it has run half a heartbeat period (Prefect's thread
        beats as the run starts, then every period, 30 s at least, so the first goes out one period in), and none
        once ``end_watch`` ran.

        Crash detection (``deployments.crash_detection``, a Prefect automation) watches a run from its first heartbeat
        until ``WATCH_ENDED``: a run that ends before its first heartbeat, as most here do, costs the Prefect server
        nothing for it (a bucket written and closed and a hold cost ~35 ms of its CPU per run). Such a run that dies
        with the worker is ended by its supervisor (``weflow.workers``), or, when the whole worker tree died, by the
        next ``weflow worker`` on the Prefect home (``Supervisor.sweep``); a run that lasts is watched by Prefect.
        Runs in a process of their own beat from their start, as Prefect's engine does."""
        if self.weflow_beats_from is not None and time.monotonic() < self.weflow_beats_from:
            return
        with self._weflow_watch:
            if self.weflow_watch == "ended":
                return
            super()._emit_flow_run_heartbeat(resource, related)
            self.weflow_watch = "watched"

    def end_watch(self) -> None:
        """The run ended here: no heartbeat from now on, and ``WATCH_ENDED`` if one went out (none: nothing watches)
        and Prefect has the run's final state (if not, the watch fires and Prefect's run ends CRASHED)."""
        with self._weflow_watch:
            watched, self.weflow_watch = self.weflow_watch == "watched", "ended"
            if watched and self.flow_run is not None and self.state is not None and self.state.is_final():
                resource, related = self._build_heartbeat_event_template()
                emit_event(event=WATCH_ENDED, resource=resource, related=related)

    async def handle_crash(self, exc: BaseException) -> None:
        if self.weflow_cancel is not None and self.weflow_cancel.is_set() and isinstance(exc, asyncio.CancelledError):
            await self.handle_cancellation(exc)
        else:
            await super().handle_crash(exc)


def policy_by_worker(flow: Flow[..., Any]) -> bool:
    """Whether the worker writes a run's flow version with its infrastructure pid, one request it makes anyway,
    and the engine skips its own write of version and retry policy at the run's start (one request less on the
    way to Running). Only for a flow without retries: the policy the engine would write (0 retries, no delay)
    then means what a deployment's run already has (none: ``RetryFailedFlows`` retries neither)."""
    return not flow.retries and not flow.retry_delay_seconds


class _PolicyByWorker:
    """The engine's client, without its start-up ``update_flow_run(flow_version=, empirical_policy=)``."""

    def __init__(self, client: Any, engine: _Engine) -> None:
        self._client = client
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    async def update_flow_run(self, flow_run_id: UUID, **fields: Any) -> Any:
        if {k for k, v in fields.items() if v is not None} <= {"flow_version", "empirical_policy"}:
            self._engine.weflow_policy_by_worker = False  # once: later calls go to Prefect's client
            return None
        return await self._client.update_flow_run(flow_run_id, **fields)


def rss_mb() -> float:
    """This process's resident memory in MB (its peak where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _CachedReads:
    """The worker's Prefect client, with a run's deployment and flow read at most once per ``ttl`` seconds.

    BaseWorker reads a flow run's deployment twice and its flow once before each run (a check that
    the deployment still exists, then the job configuration): at a few runs per second that is
    most of the worker's reads. A deployment changed in place or deleted is seen within ``ttl``.

    A deployment weflow manages is never changed in place: ``weflow deploy`` replaces it, under a new id, when its
    fingerprint (its ``version``) changes. For such a deployment read at the version the runs being submitted were
    made from (their ``deployment_version``, ``expect``), the read holds for ``known_ttl`` instead: the first run
    after a pause (an analyst's Run, a webhook) no longer waits for a read of its deployment before its Pending
    state. ``known_ttl`` bounds what an edit made around weflow (in the Prefect UI) takes to be seen; a flow (a name,
    the same for every run of the entrypoint) is read once per ``known_ttl`` too.
    """

    def __init__(self, client: Any, ttl: float = 2.0, known_ttl: float = 60.0) -> None:
        self._client = client
        self._ttl = ttl
        self._known_ttl = known_ttl
        self._seen: dict[tuple[str, UUID | str], tuple[float, Any]] = {}
        self._expected: dict[UUID, str] = {}  # deployment id -> deployment_version of its runs being submitted
        self.versions: dict[UUID, str] = {}  # flow versions to write with the runs' infrastructure pids
        self.starting: dict[UUID, _InProcess] = {}  # runs here whose infrastructure pid waits (``under_way``)
        self.pools_watched = False  # Prefect's events of pool and queue changes reach the worker (``open_queues``)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def expect(self, flow_runs: Iterable[FlowRun]) -> None:
        """These runs are about to be submitted: their deployments at the versions they were made from will do."""
        for run in flow_runs:
            if run.deployment_id is not None and run.deployment_version is not None:
                self._expected[run.deployment_id] = run.deployment_version

    async def _cached(self, kind: str, key: UUID | str, read: Any, ttl: float | None = None) -> Any:
        found = self._seen.get((kind, key))
        if found is not None and time.monotonic() - found[0] < (self._ttl if ttl is None else ttl):
            return found[1]
        value = await read(key)
        self._seen[(kind, key)] = (time.monotonic(), value)
        return value

    async def read_deployment(self, deployment_id: UUID) -> DeploymentResponse:
        found = self._seen.get(("deployment", deployment_id))
        if found is not None and time.monotonic() - found[0] < self._known_ttl:
            deployment: DeploymentResponse = found[1]
            if managed(deployment) and deployment.version == self._expected.get(deployment_id):
                return deployment
        return await self._cached("deployment", deployment_id, self._client.read_deployment)  # type: ignore[no-any-return]

    async def read_flow(self, flow_id: UUID) -> APIFlow:
        found: APIFlow = await self._cached("flow", flow_id, self._client.read_flow, self._known_ttl)
        return found

    async def open_queues(self, pool: str) -> set[UUID]:
        """The queues of ``pool`` a run may start from without the server's poll (``WeflowWorker.take``): none while
        the pool is paused or has a concurrency limit, else those neither paused nor limited (only the poll applies a
        limit). The pool and its queues are read together, again after ``forget_pools`` (Prefect's event of a change
        to a pool or queue), and at least every ``known_ttl`` while those events are watched, ``ttl`` otherwise."""
        ttl = self._known_ttl if self.pools_watched else self._ttl
        pool_read = self._cached("work_pool", pool, self._client.read_work_pool, ttl)
        queues_read = self._cached(
            "work_queues", pool, lambda name: self._client.read_work_queues(work_pool_name=name), ttl
        )
        found: WorkPool
        queues: list[WorkQueue]
        found, queues = await asyncio.gather(pool_read, queues_read)
        if found.is_paused or found.concurrency_limit is not None:
            return set()
        return {queue.id for queue in queues if not queue.is_paused and queue.concurrency_limit is None}

    def forget_pools(self) -> None:
        for key in [key for key in self._seen if key[0] in ("work_pool", "work_queues")]:
            del self._seen[key]

    async def update_flow_run(self, flow_run_id: UUID, **fields: Any) -> Any:
        """Prefect's; BaseWorker's write of a run's infrastructure pid also carries the flow version of a run the
        worker runs in its threads (``policy_by_worker``), which its engine then does not write, and waits until that
        run is under way (``WeflowWorker._describe``)."""
        if "infrastructure_pid" in fields:
            if (version := self.versions.pop(flow_run_id, None)) is not None:
                fields.setdefault("flow_version", version)
            if (handle := self.starting.pop(flow_run_id, None)) is not None:
                await handle.under_way()
        return await self._client.update_flow_run(flow_run_id, **fields)


class WeflowWorker(ProcessWorker):
    type = "weflow"
    job_configuration = WeflowJobConfiguration
    job_configuration_variables = WeflowVariables  # type: ignore[assignment]  # Prefect's stub says None
    _description = "weflow: run flow runs inside a long-lived worker process that imported weflow once."
    _display_name = "weflow"

    def __init__(
        self, *args: Any, home: Path, max_runs: int | None = None, max_memory_mb: float | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.home = home
        self.max_runs = max_runs
        self.max_memory_mb = max_memory_mb
        self.runs_done = 0
        self.draining = False
        self.port: int | None = None
        self.handed = 0  # runs handed over (``/execute``) running in this worker's threads now
        self._in_flight: dict[UUID, _InProcess] = {}
        self._flows: dict[str, Flow[..., Any]] = {}
        self._observer: FlowRunCancellingObserver | None = None
        self._suspensions: FlowRunSuspendingObserver | None = None
        self._poll_lock: anyio.Lock | None = None
        self._threads: anyio.CapacityLimiter | None = None  # one thread per run in flight (anyio's default is 40)
        self._full = False  # the last poll filled every slot
        self._drained = False  # the last poll left a slot free: no run of its queues was left due then
        self._polled: dict[UUID, float] = {}  # flow runs its polls returned lately: when (monotonic)
        self._waiting: set[UUID] = set()  # deployments seen with runs waiting for a concurrency slot
        self.on_slot_free: Callable[[], None] | None = None  # set by the serving loop: poll now

    async def setup(self) -> None:
        await super().setup()
        concurrency_lease.install()  # a run's lease, just renewed by its Running state, is not renewed again at once
        self._client = _CachedReads(self._client)  # type: ignore[assignment]
        self._poll_lock = anyio.Lock()
        self._threads = anyio.CapacityLimiter(self._limit or 1000)
        # BaseWorker watches only runs it is still submitting; this watches the ones running here
        self._observer = await self._exit_stack.enter_async_context(
            FlowRunCancellingObserver(on_cancelling=self._cancel_in_process, polling_interval=5)
        )
        self._suspensions = await self._exit_stack.enter_async_context(
            FlowRunSuspendingObserver(on_suspended=_suspended, polling_interval=10)  # Prefect's per-run interval
        )

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """No Submitting state: a run starts in this process (or its own child) right away, so Prefect's
        Pending -> Submitting -> Running would cost a state transition and an event per run for nothing."""

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        """Prefect's, except that a run which waited for its deployment's concurrency slot starts now.

        Prefect sends a run over its deployment's limit back to Scheduled (``AwaitingConcurrencySlot``), due again
        30 s later; its Pending state keeps that time, and its Running state then waits for it, holding the slot
        idle. A workflow's default limit is 1: a burst of runs drained one per ~20 s, each run taking 50 ms.
        A Pending state proposing its own scheduled time (now) is Prefect's way to start earlier
        (``CopyScheduledTime``). A rejected run marks its deployment as having runs waiting (``_take_waiting``); a run
        another worker took first frees the slot for the runs due next (``refill``).
        """
        run_logger = self.get_flow_run_logger(flow_run)
        waited = flow_run.state is not None and flow_run.state.name == WAITING
        pending: State[Any] = (
            Pending(state_details=StateDetails(scheduled_time=datetime.now(UTC))) if waited else Pending()
        )
        try:
            state = await propose_state(self.client, pending, flow_run_id=flow_run.id)
        except Abort as exc:  # no longer Scheduled: another worker took it since it was read, or it ended
            run_logger.info(f"Aborted submission of flow run '{flow_run.id}'. Server sent an abort signal: {exc}")
            self._next_now()
            return False
        except Exception:
            run_logger.exception(f"Failed to update state of flow run '{flow_run.id}'")
            return False
        if not state.is_pending():
            if state.name == WAITING and flow_run.deployment_id is not None:
                self._waiting.add(flow_run.deployment_id)
            elif not state.is_scheduled():
                self._next_now()
            run_logger.info(
                f"Aborted submission of flow run '{flow_run.id}': Server returned a non-pending state {state.name!r}"
            )
            return False
        return True

    def _next_now(self) -> None:
        """A run turned down at its Pending: its slot, given back right after, takes the runs due next now (``refill``),
        not at the next poll (up to ``PREFECT_WORKER_QUERY_SECONDS`` with runs due)."""
        if not self.draining and self._runs_task_group is not None:
            self._runs_task_group.start_soon(self._refill_or_poll)

    async def _take_waiting(self, deployment_id: UUID) -> None:
        """A run of this deployment just ended here, freeing its slot: its longest-waiting run starts now rather than
        when Prefect would next retry it. One read per run while the deployment has runs waiting, none otherwise."""
        if self.draining or self._poll_lock is None or self._work_pool is None:
            return
        queues = (
            WorkQueueFilter(name=WorkQueueFilterName(any_=sorted(self._work_queues))) if self._work_queues else None
        )
        async with self._poll_lock:  # not beside a poll, which could return the same run
            try:
                found = await self.client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=[WAITING]))),
                    deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                    work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool_name])),
                    work_queue_filter=queues, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=1,
                )  # fmt: skip
            except Exception as exc:  # Prefect retries the run at its scheduled time anyway
                self._logger.warning(f"Could not read the runs waiting for deployment {deployment_id}: {exc}")
                return
            if not found:
                self._waiting.discard(deployment_id)
                return
            run = found[0]
            response = WorkerFlowRunResponse(
                work_pool_id=self._work_pool.id, work_queue_id=run.work_queue_id, flow_run=run
            )
            await self._submit_scheduled_flow_runs([response])

    async def _give_worker_labels_to_flow_run(self, flow_run_id: UUID) -> None:
        """Nothing before the run: ``run`` writes the worker's labels on it (the UI's link to this worker) beside it.

        Prefect writes them with a read-then-update transaction; on SQLite it failed with ``database is
        locked`` whenever another write (the server's event persister, say) came between, and Prefect's
        client retries such a 503 after ~2 s: a quarter to half of the runs here started 2 s late for it.
        """

    def _describe(self, flow_run_id: UUID, handle: _InProcess | None = None) -> None:
        """Write the worker's labels on a run; for a run in this process, once it ended or ran ``DESCRIBE_AFTER`` s.

        The labels and the infrastructure pid (``_CachedReads.update_flow_run``, with the flow version) are the
        worker's two writes about a run, information for the UI. Made as the run started, they competed with its
        Running state for the server (SQLite takes one write at a time: Running took 62-287 ms beside them instead of
        ~50 here); made once it was Running, with its first steps for this process (the event loop's requests and
        the run's thread share one interpreter). Neither is needed to run or cancel it: BaseWorker kills by pid only
        a run not yet started, and this worker cancels its runs through their handles.
        """
        if handle is not None and isinstance(self._client, _CachedReads):
            self._client.starting[flow_run_id] = handle
        if self._runs_task_group is not None:
            self._runs_task_group.start_soon(self._label, flow_run_id, handle)

    async def _label(self, flow_run_id: UUID, handle: _InProcess | None = None) -> None:
        if handle is not None:
            await handle.under_way()
        try:
            await super()._give_worker_labels_to_flow_run(flow_run_id)
        except Exception as exc:  # labels are information: a run never fails for them
            self._logger.warning(f"Could not label flow run {flow_run_id} with this worker: {exc}")

    async def _mark_flow_run_as_cancelled(self, flow_run: FlowRun, state_updates: dict[str, Any] | None = None) -> None:
        """Prefect's, and the run's slot given back unless it runs here.

        Prefect 3.9.1's ``_submit_run`` cancels a run whose deployment no longer exists and returns
        without releasing the slot it took for it: two such runs (left in the pool by a deleted
        workflow) stopped a ``--limit 2`` worker for good. A slot released twice is a no-op.
        """
        try:
            await super()._mark_flow_run_as_cancelled(flow_run, state_updates)
        finally:
            if flow_run.id not in self._in_flight:
                self._release_limit_slot(flow_run.id)

    async def _get_scheduled_flow_runs(self) -> list[WorkerFlowRunResponse]:
        """Prefect's poll, asking for no more runs than this worker has free slots (at least 1: a poll is also how
        the queue shows it is served). Prefect's asks for up to the server's default limit, 200: with a deep queue
        every poll carried 200 flow runs from the server to be parsed here and dropped, and a worker polls each time
        a slot frees (a 1,000-run batch: 2.4 runs/s at its start, 1.5 over the whole batch)."""
        free = max(1, self._limiter.available_tokens) if self._limiter is not None else None
        body: dict[str, Any] = {
            "work_queue_names": list(self._work_queues),
            "scheduled_before": str(datetime.now(UTC) + timedelta(seconds=int(self._prefetch_seconds))),
        }
        if free is not None:
            body["limit"] = int(free)
        try:
            answer = await self.client.request(
                "POST", "/work_pools/{name}/get_scheduled_flow_runs", path_params={"name": self._work_pool_name},
                json=body,
            )  # fmt: skip
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:  # the pool is made again by the next sync, as Prefect's poll does
                return []
            raise
        found = WorkerFlowRunResponse.model_validate_list(answer.json())
        # runs sent back to wait for their deployment's slot, not yet due: proposing them again before their time
        # (the poll looks 10 s ahead) would be turned down again at once, a state and an event each time
        early = {r.flow_run.id: r.flow_run.deployment_id for r in found if _waits(r.flow_run, datetime.now(UTC))}
        self._waiting.update(deployment for deployment in early.values() if deployment is not None)
        found = [r for r in found if r.flow_run.id not in early]
        self._remember_polled(response.flow_run for response in found)
        return found

    @property
    def full(self) -> bool:
        """Its last poll (or refill) took every free slot: a poll now could take nothing; the next run to end takes the
        runs due next (``refill``)."""
        return self._full

    def watch_pools(self, watched: bool) -> None:
        """Whether Prefect's events of changes to pools and queues reach this worker now (``pools_changed``)."""
        if isinstance(self._client, _CachedReads):
            self._client.pools_watched = watched
            self._client.forget_pools()

    def pools_changed(self) -> None:
        """A pool or queue was changed (paused, resumed, its limit): read them again before the next ``take``."""
        if isinstance(self._client, _CachedReads):
            self._client.forget_pools()

    async def take(self, flow_run_id: UUID) -> bool:
        """Start a run announced by id (its Scheduled event, weflow's wake-up after making it) without a poll; False
        when a poll should look for it instead. True too when a poll returned it lately (a run is announced twice)
        or no slot is free (the next run to end takes the runs due next).

        A poll is a read plus two writes the server queues behind it (the pool's queues and deployments marked as
        polled), which Prefect on SQLite then makes beside the run's Pending and Running states: reading the one run
        instead took ~35-80 ms off a run's start here. The run is started as the poll would have returned it: of this
        worker's pool and queues, Scheduled and due within the worker's prefetch, not waiting for its deployment's
        slot nor for an in-process retry, its pool and queue neither paused nor limited (``_CachedReads.open_queues``:
        a pause is seen once Prefect's event of it arrived). With a slot free, the last poll left no other run of these
        queues due (else the poll takes runs in their order: ``_drained``).
        """
        client = self._client
        if self.draining or self._poll_lock is None or self._work_pool is None or not isinstance(client, _CachedReads):
            return False
        async with self._poll_lock:  # not beside a poll, which could return the same run
            seen = self._polled.pop(flow_run_id, None)
            if seen is not None and time.monotonic() - seen < POLLED_FRESH:
                return True
            if flow_run_id in self._submitting_flow_run_ids or (self._limiter and self._limiter.available_tokens < 1):
                return True
            if not self._drained:  # runs may wait that came first: the poll takes them in order
                return False
            try:
                run, open_ids = await asyncio.gather(
                    client.read_flow_run(flow_run_id), client.open_queues(self._work_pool_name)
                )
            except ObjectNotFound:  # deleted, or announced before its creation was committed: the poll finds it
                return False
            except Exception as exc:
                self._logger.warning(f"Could not read announced flow run {flow_run_id}: {exc!r}; polling instead")
                return False
            now = datetime.now(UTC)
            due = run.next_scheduled_start_time
            if not (
                run.work_queue_id in open_ids
                and run.work_pool_name == self._work_pool_name
                and (not self._work_queues or run.work_queue_name in self._work_queues)
                and run.state is not None and run.state.is_scheduled() and not _waits(run, now)
                and (due is None or due <= now + timedelta(seconds=self._prefetch_seconds))
                and run.empirical_policy.retry_type != "in_process"
            ):  # fmt: skip
                return False
            await self._start_read([run])
            return True

    async def _start_read(self, runs: Sequence[FlowRun]) -> None:
        """Start runs read rather than polled (``take``, ``refill``), as a poll's would start; their announcements need
        no poll then."""
        assert self._work_pool is not None
        self._remember_polled(runs)
        await self._submit_scheduled_flow_runs([
            WorkerFlowRunResponse(work_pool_id=self._work_pool.id, work_queue_id=run.work_queue_id, flow_run=run)
            for run in runs
        ])  # fmt: skip
        self._full = self._limiter is not None and self._limiter.available_tokens == 0

    def _remember_polled(self, runs: Iterable[FlowRun]) -> None:
        seen = time.monotonic()
        self._polled.update((run.id, seen) for run in runs)
        while len(self._polled) > POLLED_KEPT:
            del self._polled[next(iter(self._polled))]

    async def refill(self) -> bool:
        """A slot freed after a poll (or a refill) that filled every slot: read the runs due next and start as many as
        slots are free, in the poll's order; False when only a poll can tell which runs are next.

        A poll reads inside a write transaction and has the server mark the worker's queues and deployments as polled
        (two writes more), and in a deep queue a worker polled each time a run ended: ~0.9 polls a run, each ~22 ms of
        the server's CPU here against ~4 ms for a read. The regular poll (every ``PREFECT_WORKER_QUERY_SECONDS``) still
        shows the queue served. A read can stand for the poll only where the poll's order is the due time alone and no
        limit applies but this worker's: one queue, neither it nor the pool paused or limited (``open_queues``). Runs
        waiting for their deployment's slot or for an in-process retry are left to the poll, as ``take`` leaves them.
        """
        client = self._client
        if (
            self.draining or self._poll_lock is None or self._work_pool is None or self._limiter is None
            or not isinstance(client, _CachedReads) or len(self._work_queues) != 1
        ):  # fmt: skip
            return False
        async with self._poll_lock:
            free = int(self._limiter.available_tokens)
            if free < 1:  # a poll or an announced run took the slot meanwhile
                return True
            now = datetime.now(UTC)
            held = self._submitting_flow_run_ids | set(self._in_flight)  # still Scheduled until their Pending is in
            try:
                open_ids = await client.open_queues(self._work_pool_name)
                found = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                        next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                            before_=now + timedelta(seconds=self._prefetch_seconds)
                        ),
                    ),
                    work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._work_pool_name])),
                    work_queue_filter=WorkQueueFilter(name=WorkQueueFilterName(any_=sorted(self._work_queues))),
                    sort=FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC, limit=free + len(held),
                )  # fmt: skip
            except Exception as exc:
                self._logger.warning(f"Could not read the runs due next: {exc!r}; polling instead")
                return False
            found = [run for run in found if run.id not in held][:free]
            if any(run.work_queue_id not in open_ids for run in found):
                return False
            if any(_waits(run, now) or run.empirical_policy.retry_type == "in_process" for run in found):
                return False
            await self._start_read(found)
            self._drained = len(found) < free  # none left due: an announced run may be taken without a poll
            return True

    async def _refill_or_poll(self) -> None:
        """The runs due next for a freed slot: read (``refill``), else the poll woken."""
        if not await self.refill() and self.on_slot_free is not None:
            self.on_slot_free()

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        """Poll (also on a wake-up), unless recycling: then no new run is taken."""
        if self.draining or self._poll_lock is None:
            return []
        async with self._poll_lock:
            taken = await super().get_and_submit_flow_runs()
            # every slot taken: more runs may wait, and the next poll would come only after the query interval
            self._full = self._limiter is not None and self._limiter.available_tokens == 0
            self._drained = not self._full
            return taken

    async def _submit_scheduled_flow_runs(self, flow_run_response: list[Any]) -> list[FlowRun]:
        """Nothing once recycling: a poll that was in flight when the last allowed run ended leaves its runs Scheduled
        for the next worker (BaseWorker submits without an await from here on, so the check cannot go stale)."""
        if self.draining:
            return []
        if isinstance(self._client, _CachedReads):
            self._client.expect(response.flow_run for response in flow_run_response)
        return await super()._submit_scheduled_flow_runs(flow_run_response)

    def preload(self, entrypoints: Sequence[str]) -> None:
        """Load these flows now (``/path/file.py:flow``), so the first run pays no import."""
        for full in entrypoints:
            self._flows[full] = load_flow_from_entrypoint(full, use_placeholder_flow=False)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        status = task_status or anyio.TASK_STATUS_IGNORED
        entrypoint, reason = self._placement(configuration)
        if entrypoint is None:
            self.get_flow_run_logger(flow_run).info(f"Running flow run {flow_run.id} in its own process: {reason}")
            self._describe(flow_run.id)
            try:
                result = await super().run(flow_run, configuration, status)
            finally:
                self._ended(flow_run)
            await self._end_watch(flow_run)
            return result
        flow = self._flows.get(entrypoint)
        if flow is None:
            flow = self._flows[entrypoint] = await anyio.to_thread.run_sync(
                lambda: load_flow_from_entrypoint(entrypoint, use_placeholder_flow=False)
            )
        handle = self._in_flight[flow_run.id] = _InProcess(flow_run.id)
        for observer in (self._observer, self._suspensions):
            if observer is not None:
                observer.add_in_flight_flow_run_id(flow_run.id)
        self.record()
        if policy_by_worker(flow) and isinstance(self._client, _CachedReads) and flow.version is not None:
            self._client.versions[flow_run.id] = flow.version
            handle.policy_by_worker = True
        self._describe(flow_run.id, handle)
        status.started(os.getpid())
        try:
            code = await anyio.to_thread.run_sync(_run_in_thread, handle, flow, flow_run, limiter=self._threads)
        finally:
            handle.ended.set()
            if isinstance(self._client, _CachedReads):
                self._client.versions.pop(flow_run.id, None)
                self._client.starting.pop(flow_run.id, None)
            for observer in (self._observer, self._suspensions):
                if observer is not None:
                    observer.remove_in_flight_flow_run_id(flow_run.id)
            del self._in_flight[flow_run.id]
            self._ended(flow_run)
            self.record()
        return WeflowWorkerResult(status_code=code, identifier=str(os.getpid()))

    async def _end_watch(self, flow_run: FlowRun) -> None:
        """A run's own process exited: ``WATCH_ENDED`` for crash detection, which watched it from its first heartbeat
        (sent as its process started). A process that did not exit cleanly is reported CRASHED by Prefect's worker
        right after ``run`` (its ``_propose_crashed_state``)."""
        try:
            await _watch_ended(self.client, flow_run)
        except Exception as exc:  # the automation then fires for a run already ended, which Prefect refuses
            self._logger.warning(f"Could not tell crash detection that flow run {flow_run.id} ended: {exc}")

    def _placement(self, configuration: ProcessJobConfiguration) -> tuple[str | None, str]:
        """The flow to run here (``/path/file.py:flow``), or None and why the run needs its own process."""
        if getattr(configuration, "isolation", "worker") == "process":
            return None, "its workflow has settings.isolation: process"
        env = configuration.env.items()
        differ = sorted(k for k, v in env if k.startswith("WEFLOW_") and v is not None and os.environ.get(k) != v)
        if differ:
            return None, f"its job env sets {', '.join(differ)} unlike this worker"
        entrypoint = getattr(configuration, "_entrypoint", None)
        if entrypoint is None:
            return None, "it has no deployment whose code is a local file"
        return entrypoint, ""

    def _ended(self, flow_run: FlowRun | None = None) -> None:
        self.runs_done += 1
        self.check_health()
        if flow_run is not None and flow_run.deployment_id in self._waiting and self._runs_task_group is not None:
            # runs once this run's worker slot is given back (BaseWorker, right after ``run`` returns)
            self._runs_task_group.start_soon(self._take_waiting, flow_run.deployment_id)
        if self._full and self.on_slot_free is not None:  # a burst larger than --limit: the next runs now, not at the
            self._full = False  # interval
            if self._runs_task_group is not None:
                self._runs_task_group.start_soon(self._refill_or_poll)
            else:
                self.on_slot_free()

    def check_health(self) -> None:
        """Stop taking runs once ``max_runs`` ran or the RSS passed ``max_memory_mb``."""
        if self.draining:
            return
        if self.max_runs is not None and self.runs_done >= self.max_runs:
            self.drain(f"{self.runs_done} runs done (--max-runs {self.max_runs})")
        elif self.max_memory_mb is not None and self.runs_done and (rss := rss_mb()) > self.max_memory_mb:
            # only after a run: a limit below the worker's own start-up RSS must not recycle it in a loop
            self.drain(f"RSS {rss:.0f} MB over --max-memory-mb {self.max_memory_mb:g}")

    def drain(self, why: str) -> None:
        """Take no new run; the worker returns once the runs in flight ended."""
        self.draining = True
        self._logger.info(f"Recycling: {why}; finishing {len(self._in_flight)} run(s) in flight, taking no new one")

    def idle(self) -> bool:
        return (not self._in_flight and not self._submitting_flow_run_ids and self.limiter.borrowed_tokens == 0
                and not self.handed)  # fmt: skip

    def _cancel_in_process(self, flow_run_id: UUID) -> None:
        handle = self._in_flight.get(flow_run_id)
        if handle is not None:
            self._logger.info(f"Cancelling flow run {flow_run_id}, running in this worker")
            handle.cancel()

    async def kill_infrastructure(
        self, infrastructure_pid: str, configuration: ProcessJobConfiguration, grace_seconds: int = 30
    ) -> None:
        """A pending run's cancel (BaseWorker): stop it if it is about to run here."""
        flow_run_id = configuration.env.get("PREFECT__FLOW_RUN_ID")
        handle = self._in_flight.get(UUID(flow_run_id)) if flow_run_id else None
        if handle is None:
            raise InfrastructureNotFound(f"flow run {flow_run_id} does not run in this worker")
        handle.cancel()

    def record(self) -> None:
        """This worker's record in the Prefect home: wake-up port and flow runs in flight."""
        worker_home.write(
            self.home,
            {
                "pid": os.getpid(),
                "supervisor": os.getppid(),  # its runs in flight are left to it when this process dies
                "name": self.name,
                "pool": self._work_pool_name,
                "queues": sorted(self._work_queues),
                "port": self.port,
                "in_flight": [str(i) for i in self._in_flight],
                "runs": self.runs_done,
                "draining": self.draining,
            },
        )


def _waits(flow_run: FlowRun, now: datetime) -> bool:
    """Whether ``flow_run`` waits for its deployment's concurrency slot and Prefect retries it after ``now``."""
    state = flow_run.state
    due = state.state_details.scheduled_time if state is not None else None
    return state is not None and state.name == WAITING and due is not None and due > now


def _suspended(flow_run_id: UUID, state: State[Any]) -> None:
    """The worker's suspension observer saw a run suspended: its engine stops at its next task (Prefect's ``Pause``)."""
    mark_flow_run_suspension_requested(flow_run_id, state)


def _run_in_thread(handle: _InProcess, flow: Flow[..., Any], flow_run: FlowRun) -> int:
    return asyncio.run(_run_flow(handle, flow, flow_run))


async def _run_flow(handle: _InProcess, flow: Flow[..., Any], flow_run: FlowRun) -> int:
    """Prefect's ``run_flow_async`` on the existing flow run; 0 when Prefect holds the run's final state."""
    if not handle.attach():
        async with shared_client() as client:
            await client.set_flow_run_state(flow_run.id, Cancelled(message="cancelled before it started"), force=True)
        return 0
    args, kwargs = parameters_to_args_kwargs(flow.fn, flow_run.parameters or {})
    engine = _Engine(flow=flow, parameters=get_call_parameters(flow.fn, args, kwargs), flow_run=flow_run)
    engine.weflow_cancel = handle.cancelled
    engine.weflow_policy_by_worker = handle.policy_by_worker
    if (period := engine.heartbeat_seconds) is not None:  # Prefect's thread beats at 0, period, 2 periods, ...
        engine.weflow_beats_from = time.monotonic() + period / 2
    try:
        async with run_clients(), engine.start():
            while engine.is_running():
                async with engine.run_context():
                    _ = await engine.call_flow_fn()  # Prefect annotates the result as a coroutine
    except BaseException as exc:  # the engine already recorded a crash or a cancel
        log.debug("flow run %s ended with %r", flow_run.id, exc)
    finally:
        engine.end_watch()
    return 0 if engine.state is not None and engine.state.is_final() else 1


def crash(flow_run_ids: Sequence[str], message: str) -> list[str]:
    """End these flow runs CRASHED (Cancelled if they were being cancelled) unless they ended; those changed.
    Crash detection is told each of them ended (``WATCH_ENDED``): a run that sent a heartbeat is watched till then."""
    return on_server(lambda: _crash(flow_run_ids, message))


async def _crash(flow_run_ids: Sequence[str], message: str) -> list[str]:
    changed = []
    async with shared_client() as client:
        for flow_run_id in flow_run_ids:
            try:
                found = await client.read_flow_run(UUID(flow_run_id))
            except ObjectNotFound:
                continue
            if found.state is None or not found.state.is_final():
                cancelling = found.state is not None and found.state.is_cancelling()
                state: State[Any] = Cancelled(message=message) if cancelling else Crashed(message=message)
                await client.set_flow_run_state(UUID(flow_run_id), state, force=True)
                changed.append(flow_run_id)
            # ended here or just before its worker died (which then could not say so): a run that sent a heartbeat is
            # still watched, and its watch would fire for a run ended since
            try:
                await _watch_ended(client, found)
            except Exception as exc:  # the automation's action then fails (Prefect refuses CRASHED for it): visible
                log.warning("could not tell crash detection that flow run %s ended: %s", flow_run_id, exc)
    return changed


async def _watch_ended(client: Any, flow_run: FlowRun) -> None:
    """``WATCH_ENDED`` for a run that ended without its engine's (``_Engine.end_watch``): its own process exited, or
    its worker died and the supervisor ended it (``crash``). Crash detection matches it by the run and its flow."""
    flow = await client.read_flow(flow_run.flow_id)
    run = {"prefect.resource.id": f"prefect.flow-run.{flow_run.id}", "prefect.resource.name": flow_run.name}
    of = {"prefect.resource.id": f"prefect.flow.{flow.id}", "prefect.resource.role": "flow",
          "prefect.resource.name": flow.name}  # fmt: skip
    emit_event(event=WATCH_ENDED, resource=run, related=[of])
