"""Running a plan inside a Prefect flow: one async task per step, frames kept in memory.

Prefect's fixed costs are paid once (DESIGN decision 11): tasks never hash or persist frames
(NO_CACHE, no result persistence, frames passed through a closure, not as task parameters),
independent steps run concurrently in one event loop, and timeouts really stop the work: every
step has a stop switch (``weflow.nodes.stop``) that ends its Polars collects at the next batch and
interrupts its DuckDB connections; a Python node's thread also gets an exception raised in it.
With ``max_memory_mb`` a watchdog samples the process RSS and stops the run the same way.

The engine schedules steps, retries and times them out (one Prefect task per step), records failures,
reuses, spills and compensates; where a step runs is its ``StepExecutor``, chosen once when the run
is prepared (``remote.executor_for``): ``executors.InProcess``, ``remote.NodeQueue`` or ``remote.Dask``.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from weflow.compile.plan import Plan, Step
from weflow.core.cursors import Window
from weflow.core.entities import Compensation, NodeExecution, RunState
from weflow.core.graph import Edge
from weflow.engine import results
from weflow.engine.threads import NodeTimeout, in_thread
from weflow.errors import ContractError, NodeError
from weflow.files import write_atomic
from weflow.nodes.base import NodeType
from weflow.nodes.stop import MemoryLimitExceeded, Stop, fresh, settle, watch_memory

Persist = Callable[[str, pl.DataFrame], str]


class NodeRecord:
    """What weflow records of a node while the run goes: a ``NodeExecution`` (its fields are written once,
    in ``core.entities``) that assignments replace by a changed copy; frozen with the execution's id at the end."""

    value: NodeExecution

    def __init__(self, node: str, group: str | None) -> None:
        self._thaw(NodeExecution(execution_id="", node=node, status=RunState.QUEUED, group=group))

    def _thaw(self, value: NodeExecution) -> NodeRecord:
        object.__setattr__(self, "value", value)
        return self

    def __getattr__(self, name: str) -> Any:
        if name == "value":  # not set yet (while unpickling)
            raise AttributeError(name)
        return getattr(self.value, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._thaw(value if name == "value" else replace(self.value, **{name: value}))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_record, (self.value,))

    def frozen(self, execution_id: str) -> NodeExecution:
        return replace(self.value, execution_id=execution_id)


def _record(value: NodeExecution) -> NodeRecord:
    """A NodeRecord back from pickling (node workers send theirs to the flow)."""
    return NodeRecord(value.node, value.group)._thaw(value)


@dataclass
class PlanResult:
    """What a run of a plan produced: the kept outputs, every node's record, the contract failures,
    the error that ended it (and where), and the compensations run after a failure."""

    outputs: dict[str, pl.DataFrame]
    records: tuple[NodeExecution, ...]  # execution_id still empty: the recorder's side fills it
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    error_node: str | None = None
    compensations: tuple[Compensation, ...] = ()
    windows: tuple[Window, ...] = ()  # what each incremental source read (its end once it ran)

    @property
    def status(self) -> RunState:
        """The run's state from its nodes': the worst of TIMED_OUT, FAILED, CANCELLED, else SUCCEEDED."""
        states = {r.status for r in self.records}
        for bad in (RunState.TIMED_OUT, RunState.FAILED, RunState.CANCELLED):
            if bad in states:
                return bad
        return RunState.SUCCEEDED


@dataclass(frozen=True)
class RunSpec:
    """Everything a run needs besides the plan: who, what inputs, where data lives."""

    workflow: str
    params: Mapping[str, Any]
    data_roots: tuple[Path, ...]
    persist: Persist | None = None
    keep: frozenset[str] = frozenset()  # node outputs to return (terminals by default)
    limit: int | None = None  # preview: cap every source at this many rows
    spill_dir: Path | None = None  # where frames go when they leave the process (node queue, resume)
    max_memory_mb: int | None = None  # stop the run (FAILED) past this process RSS; DuckDB's memory_limit
    reuse: Mapping[str, str] = field(default_factory=dict)  # step root -> Parquet output of an earlier run
    organization: str | None = None  # whose secrets, buckets ({organization}) a run reads (None: the settings')
    windows: Mapping[str, Window] = field(default_factory=dict)  # incremental source -> the rows it reads
    execution_id: str | None = None  # the execution the run records (None: a preview, a test, a run on pins)


def now() -> datetime:
    return datetime.now(UTC)


class StepExecutor(Protocol):
    """Where a run's steps run, chosen once when the run is prepared: ``executors.InProcess``, or
    ``remote.NodeQueue`` and ``remote.Dask`` (which hand each step to a worker that runs it in-process)."""

    def task_runner(self) -> Any | None:
        """The Prefect task runner the run's flow needs (None: Prefect's default)."""
        ...

    async def attempt(self, run: PlanRun, step: Step) -> None:
        """One attempt of ``step``: on success its records are filled and its output is in ``run``."""
        ...


class PlanRun:
    """One run of a plan: state shared by its step tasks."""

    def __init__(self, plan: Plan, types: Mapping[str, NodeType], spec: RunSpec, executor: StepExecutor) -> None:
        self.plan = plan
        self.types = types
        self.spec = spec
        self.executor = executor
        self.frames: dict[str, pl.DataFrame] = {}
        self.paths: dict[str, str] = {}  # step root -> its output as Parquet (node queue, reuse, spill)
        self.done: dict[str, asyncio.Event] = {}
        self.succeeded: set[str] = set()
        self.records = {
            name: NodeRecord(name, step.root if step.fused else None) for step in plan.steps for name in step.nodes
        }
        self.failures: list[dict[str, Any]] = []
        self.nodes = {n.name: n for n in plan.definition.nodes}
        self.incoming: dict[str, list[Edge]] = {n: [] for n in self.nodes}
        for edge in plan.edges:
            self.incoming[edge.target].append(edge)
        self.error: BaseException | None = None
        self.error_node: str | None = None
        self.keep = spec.keep or frozenset(plan.terminals)
        self.undo: list[tuple[str, str, Callable[[], str]]] = []  # (node, action, run), first per node
        self.effected: set[str] = set()  # nodes whose run returned: their effect happened
        self.stop = Stop(spec.max_memory_mb)  # the run's switch; each step attempt has a child of it
        self.threads: list[threading.Thread] = []  # node threads, joined (bounded) before the run returns
        self.revealed: dict[str, str] = {}  # secret name -> value read for a node: scrubbed from every error
        self.windows = dict(spec.windows)  # an incremental source's end is set when it has read

    def __reduce__(self) -> tuple[Any, ...]:
        """Prefect serializes a run's context for remote task runs (Dask, task workers); the live
        state of a run (frames, events) never leaves its process: it travels as a label."""
        return (str, (f"<run of {self.spec.workflow}>",))

    async def run(self, publish: bool = True) -> PlanResult:
        """Run every step; then, with ``publish``, the result artifact (the caller publishes it otherwise)."""
        self.done = {s.root: asyncio.Event() for s in self.plan.steps}
        finished = threading.Event()
        if self.spec.max_memory_mb is not None:
            watch_memory(self.stop, self.spec.max_memory_mb, finished)
        jobs = [asyncio.ensure_future(self._step(step)) for step in self.plan.steps]
        try:
            await asyncio.gather(*jobs, return_exceptions=True)
        except asyncio.CancelledError:
            self.stop.stop(NodeTimeout("the run was stopped: it timed out or was cancelled"))
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            self.mark_unfinished(RunState.CANCELLED)
            raise
        finally:
            finished.set()
            settle(self.threads, self.stop)  # blocking on purpose: a cancelled scope cancels every await
        if publish:
            await results.publish(self)  # the result artifact on this flow run (Prefect UI)
        return self.result()

    def result(self, compensations: tuple[Compensation, ...] = ()) -> PlanResult:
        """The run as it stands, as one result object."""
        outputs = {n: f for n, f in self.frames.items() if n in self.keep}
        records = tuple(rec.value for rec in self.records.values())
        windows = tuple(self.windows.values())
        return PlanResult(outputs, records, list(self.failures), self.error, self.error_node, compensations, windows)

    def end(self, status: RunState, message: str | None = None) -> PlanResult:
        """The run's end once its state is known (also when it was stopped from outside): nodes still
        running take ``status`` with ``message``; a run that did not succeed leaves what succeeded on
        disk for ``weflow resume`` (spill) and runs its compensations."""
        if status in (RunState.TIMED_OUT, RunState.CANCELLED):
            self.mark_unfinished(status, message)
        results.announce(self, status)  # what other workflows' ``after`` triggers wait on
        if status is RunState.SUCCEEDED:
            return self.result()
        self.spill()
        return self.result(tuple(self.compensate()))

    def mark_unfinished(self, state: RunState, error: str | None = None) -> None:
        """After the run was stopped from outside: running (or cancelled) nodes take ``state``."""
        at = now()
        for rec in self.records.values():
            if rec.status is RunState.CANCELLED and state is not RunState.CANCELLED:
                rec.status, rec.error = state, error or rec.error
            elif rec.status in (RunState.QUEUED, RunState.RUNNING):
                if rec.status is RunState.RUNNING and rec.started_at:
                    rec.finished_at = at
                    rec.duration_ms = (at - rec.started_at).total_seconds() * 1000
                    rec.error = rec.error or error
                rec.status = state if rec.status is RunState.RUNNING else RunState.SKIPPED

    async def _step(self, step: Step) -> None:
        try:
            for e in step.inputs:
                await self.done[e.source].wait()
            if any(e.source not in self.succeeded for e in step.inputs):
                for node in step.nodes:
                    self.records[node].status = RunState.SKIPPED
                return
            if step.root in self.spec.reuse:
                await self._reuse(step, self.spec.reuse[step.root])
                return
            await self._attempts(step)
        finally:
            self.done[step.root].set()

    async def _reuse(self, step: Step, path: str) -> None:
        """Take a step's output from an earlier execution (resume) instead of running it."""
        frame = await in_thread(pl.read_parquet, path, threads=self.threads)
        self.paths[step.root] = path
        self.frames[step.root] = frame
        for name in step.nodes:
            self.records[name].status = RunState.REUSED
        rec = self.records[step.root]
        rec.output_path, rec.rows_out = path, frame.height
        self.succeeded.add(step.root)

    def registrar(self, node: str) -> Callable[[str, Callable[[], str]], None]:
        def register(action: str, run: Callable[[], str]) -> None:
            if all(n != node for n, _, _ in self.undo):  # the first state seen is the one to restore
                self.undo.append((node, action, run))

        return register

    def compensate(self) -> list[Compensation]:
        """After a failure: undo what completed nodes did, newest first; every outcome is returned."""
        done = []
        for node, action, run in reversed(self.undo):
            if node not in self.effected:
                continue
            try:
                outcome = Compensation(node, action, "DONE", run(), now())
            except Exception as exc:
                outcome = Compensation(node, action, "FAILED", f"{type(exc).__name__}: {exc}", now())
            done.append(outcome)
        self.undo.clear()
        return done

    def spill(self) -> None:
        """Write the in-memory output of every succeeded step to ``spill_dir`` (so a resume can reuse it)."""
        if self.spec.spill_dir is None:
            return
        for root in sorted(self.succeeded):
            if root in self.paths or root not in self.frames:
                continue
            spilled = write_atomic(self.spec.spill_dir / f"{root}.parquet", self.frames[root].write_parquet)
            self.paths[root] = str(spilled)
            self.records[root].output_path = self.paths[root]

    async def _attempts(self, step: Step) -> None:
        policy = self.nodes[step.root]
        runner = _task_for(policy.retries, policy.retry_delay_seconds, policy.timeout_seconds)
        try:
            await runner(self, step, step.name)
        except BaseException as exc:
            self.fail(step, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.succeeded.add(step.root)

    def fail(self, step: Step, exc: BaseException) -> None:
        if isinstance(self.stop.reason, MemoryLimitExceeded) and not isinstance(exc, MemoryLimitExceeded):
            exc = fresh(self.stop.reason)  # a step cancelled because the run went over its memory limit
        timed_out = isinstance(exc, TimeoutError) or type(exc).__name__.endswith("TimeoutError")
        cancelled = isinstance(exc, asyncio.CancelledError)
        state = RunState.TIMED_OUT if timed_out else RunState.CANCELLED if cancelled else RunState.FAILED
        failing = getattr(exc, "node", None) or step.root
        message = _describe(exc, failing)
        at = now()
        for name in step.nodes:
            rec = self.records[name]
            rec.status = state
            rec.finished_at = at
            if rec.started_at is not None:
                rec.duration_ms = (at - rec.started_at).total_seconds() * 1000
            rec.error = message if name == failing or not step.fused else f"fused step failed at {failing!r}"
        if self.error is None:
            self.error, self.error_node = exc, failing

    async def attempt(self, step: Step) -> None:
        """One attempt of a step, wherever the run's step executor runs it."""
        await self.executor.attempt(self, step)


def _describe(exc: BaseException, node: str) -> str:
    if isinstance(exc, ContractError | NodeError | MemoryLimitExceeded):
        return str(exc)
    if isinstance(exc, TimeoutError) or type(exc).__name__.endswith("TimeoutError"):
        return f"node {node!r} timed out: {exc}"
    return f"node {node!r}: {type(exc).__name__}: {exc}"


@task(name="weflow-step", task_run_name="{label}", cache_policy=NO_CACHE, persist_result=False, log_prints=False)
async def _step_task(run: PlanRun, step: Step, label: str) -> None:
    """One step; ``label`` names the task run after its node(s)."""
    await run.attempt(step)


_tasks: dict[tuple[int, float, float | None], Task[..., Any]] = {}


def _task_for(retries: int, retry_delay_seconds: float, timeout_seconds: float | None) -> Task[..., Any]:
    """The step task with a node's run policy, made once per policy (making one costs ~0.5 ms)."""
    key = (retries, retry_delay_seconds, timeout_seconds)
    if key not in _tasks:
        _tasks[key] = _step_task.with_options(
            retries=retries, retry_delay_seconds=retry_delay_seconds, timeout_seconds=timeout_seconds
        )
    return _tasks[key]
