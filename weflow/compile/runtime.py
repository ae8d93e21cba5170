"""Running a plan inside a Prefect flow: one async task per step, frames kept in memory.

Prefect's fixed costs are paid once (DESIGN decision 11): tasks never hash or persist frames
(NO_CACHE, no result persistence, frames passed through a closure, not as task parameters),
independent steps run concurrently in one event loop, and timeouts really stop the work: every
step has a stop switch (``weflow.nodes.stop``) that ends its Polars collects at the next batch and
interrupts its DuckDB connections; a Python node's thread also gets an exception raised in it.
With ``max_memory_mb`` a watchdog samples the process RSS and stops the run the same way.
"""

from __future__ import annotations

import asyncio
import contextvars
import ctypes
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from prefect import Task, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE

from weflow import contracts
from weflow.compile.plan import Plan, Step
from weflow.core.entities import Compensation, NodeExecution, RunState
from weflow.core.graph import Edge
from weflow.errors import ContractError, NodeError
from weflow.files import write_atomic
from weflow.nodes.base import Frame, Inbound, NodeInputs, NodeType, RunContext
from weflow.nodes.stop import MemoryLimitExceeded, Stop, fresh, settle, watch_memory

T = TypeVar("T")
Persist = Callable[[str, pl.DataFrame], str]


class NodeTimeout(TimeoutError):
    """Raised inside a node's thread when its task times out or the run is cancelled."""


async def collect(
    frame: pl.LazyFrame, stop: Stop | None = None, threads: list[threading.Thread] | None = None
) -> pl.DataFrame:
    """Collect on Polars' streaming engine in a thread, without blocking the event loop; stopped if cancelled.

    Polars 2.1 ignores the engine of ``collect(background=True)`` and always runs the in-memory
    engine (measured on TPC-H SF 1, Q1: 1.5 GB and 3.6 s against 0.4 GB and 1.1 s streaming), and
    its ``cancel()`` left that engine running; so ``Stop.collect`` drives the streaming engine batch
    by batch, and a cancelled or timed-out step stops it at the next batch and drops the query.
    """
    stop = stop or Stop()
    return await in_thread(stop.collect, frame, stop=stop, threads=threads)


async def in_thread(
    fn: Callable[..., T], *args: Any, stop: Stop | None = None, threads: list[threading.Thread] | None = None
) -> T:
    """Run blocking code in a thread; on cancellation stop ``stop`` and raise NodeTimeout inside that thread.

    When ``stop`` is stopped from elsewhere (the memory watchdog), the caller gets its reason at once,
    even if the thread is in code that cannot be stopped; ``threads`` collects the thread, to be joined.
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def report(value: Any, exc: BaseException | None) -> None:
        try:
            loop.call_soon_threadsafe(_settle, done, value, exc)
        except RuntimeError:  # the loop has closed: the run ended without this thread (it was stopped)
            pass

    def target() -> None:
        try:
            value = fn(*args)
        except BaseException as exc:
            if not done.done():
                report(None, exc)
        else:
            report(value, None)

    def stopped() -> None:
        reason = stop.reason if stop is not None else None
        if reason is not None:
            report(None, fresh(reason))

    context = contextvars.copy_context()  # settings overrides and Prefect's run context go along
    thread = threading.Thread(target=context.run, args=(target,), name="weflow-node", daemon=True)
    if threads is not None:
        threads.append(thread)
    forget = stop.on_stop(stopped) if stop is not None else None
    thread.start()
    try:
        return await asyncio.shield(done)
    except asyncio.CancelledError:
        done.cancel()  # nobody waits for the thread's outcome any more
        if stop is not None:
            stop.stop(NodeTimeout("the step was stopped: it timed out or its run was cancelled"))
        if thread.ident is not None and thread.is_alive():
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(NodeTimeout))
        raise
    finally:
        if forget is not None:
            forget()


def _settle(future: asyncio.Future[Any], value: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


@dataclass
class NodeRecord:
    """What weflow records of a node while the run goes; frozen into a NodeExecution at the end."""

    node: str
    group: str | None
    status: RunState = RunState.QUEUED
    attempts: int = 0
    rows_in: int | None = None
    rows_out: int | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    contract: dict[str, Any] | None = None
    output_path: str | None = None

    def frozen(self, execution_id: str) -> NodeExecution:
        return NodeExecution(execution_id=execution_id, **asdict(self))


@dataclass
class PlanResult:
    outputs: dict[str, pl.DataFrame]
    records: dict[str, NodeRecord]
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: BaseException | None = None
    error_node: str | None = None

    @property
    def status(self) -> RunState:
        states = {r.status for r in self.records.values()}
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
    node_queue: str | None = None  # run every step on the Prefect task workers serving this queue
    dask: str | None = None  # run every step on Dask: a scheduler address, or "local" for a local cluster
    spill_dir: Path | None = None  # where frames go when they leave the process (node queue, resume)
    max_memory_mb: int | None = None  # stop the run (FAILED) past this process RSS; DuckDB's memory_limit
    reuse: Mapping[str, str] = field(default_factory=dict)  # step root -> Parquet output of an earlier run


def _now() -> datetime:
    return datetime.now(UTC)


class PlanRun:
    """One run of a plan: state shared by its step tasks."""

    def __init__(self, plan: Plan, types: Mapping[str, NodeType], spec: RunSpec) -> None:
        self.plan = plan
        self.types = types
        self.spec = spec
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

    def __reduce__(self) -> tuple[Any, ...]:
        """Prefect serializes a run's context for remote task runs (Dask, task workers); the live
        state of a run (frames, events) never leaves its process: it travels as a label."""
        return (str, (f"<run of {self.spec.workflow}>",))

    async def run(self) -> PlanResult:
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
        outputs = {n: f for n, f in self.frames.items() if n in self.keep}
        return PlanResult(outputs, self.records, self.failures, self.error, self.error_node)

    def mark_unfinished(self, state: RunState, error: str | None = None) -> None:
        """After the run was stopped from outside: running (or cancelled) nodes take ``state``."""
        now = _now()
        for rec in self.records.values():
            if rec.status is RunState.CANCELLED and state is not RunState.CANCELLED:
                rec.status, rec.error = state, error or rec.error
            elif rec.status in (RunState.QUEUED, RunState.RUNNING):
                if rec.status is RunState.RUNNING and rec.started_at:
                    rec.finished_at = now
                    rec.duration_ms = (now - rec.started_at).total_seconds() * 1000
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

    def _registrar(self, node: str) -> Callable[[str, Callable[[], str]], None]:
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
                outcome = Compensation(node, action, "DONE", run(), _now())
            except Exception as exc:
                outcome = Compensation(node, action, "FAILED", f"{type(exc).__name__}: {exc}", _now())
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
            self._fail(step, exc)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        self.succeeded.add(step.root)

    def _fail(self, step: Step, exc: BaseException) -> None:
        if isinstance(self.stop.reason, MemoryLimitExceeded) and not isinstance(exc, MemoryLimitExceeded):
            exc = fresh(self.stop.reason)  # a step cancelled because the run went over its memory limit
        timed_out = isinstance(exc, TimeoutError) or type(exc).__name__.endswith("TimeoutError")
        cancelled = isinstance(exc, asyncio.CancelledError)
        state = RunState.TIMED_OUT if timed_out else RunState.CANCELLED if cancelled else RunState.FAILED
        failing = getattr(exc, "node", None) or step.root
        message = _describe(exc, failing)
        now = _now()
        for name in step.nodes:
            rec = self.records[name]
            rec.status = state
            rec.finished_at = now
            if rec.started_at is not None:
                rec.duration_ms = (now - rec.started_at).total_seconds() * 1000
            rec.error = message if name == failing or not step.fused else f"fused step failed at {failing!r}"
        if self.error is None:
            self.error, self.error_node = exc, failing

    async def attempt(self, step: Step) -> None:
        """One attempt of a step: build its nodes' plans, collect once, check, persist."""
        if self.spec.node_queue is not None or self.spec.dask is not None:
            from weflow.compile import remote

            await remote.dispatch(self, step, self.spec.node_queue)
            return
        stop = self.stop.child()
        try:
            stop.check()  # the run was stopped (memory limit) before this step started
            await self._attempt(step, stop)
        except (asyncio.CancelledError, ContractError, NodeTimeout, MemoryLimitExceeded):
            raise
        except Exception as exc:
            if stop.reason is None:
                raise
            raise fresh(stop.reason) from exc  # DuckDB's "INTERRUPT Error" and the like: say why it stopped

    async def _attempt(self, step: Step, stop: Stop) -> None:
        started = _now()
        t0 = time.perf_counter()
        for name in step.nodes:
            rec = self.records[name]
            rec.attempts += 1
            rec.status = RunState.RUNNING
            rec.started_at = started
            rec.error = None
        logger = get_run_logger()
        local: dict[str, Frame] = {}
        for e in step.inputs:
            local[e.source] = self.frames[e.source]
        rows_in = sum(self.frames[e.source].height for e in step.inputs) if step.inputs else None
        out: Frame | None = None
        for name in step.nodes:
            node = self.nodes[name]
            node_type = self.types[node.type]
            items = []
            for e in self.incoming[name]:
                frame = local[e.source]
                contract = node.input_contracts.get(e.port)
                if contract is not None:
                    frame = await self._check(name, contract, frame, f"input {e.port!r}", stop)
                items.append(Inbound(e.source, e.port, frame.lazy()))
            ctx = RunContext(
                self.spec.workflow, name, self.spec.params, self.spec.data_roots, logger,
                work_dir=self.spec.spill_dir, undo=self._registrar(name) if node.compensate else None, stop=stop,
            )  # fmt: skip
            config = node_type.config.model_validate(node.config)
            try:
                if node_type.lazy:
                    out = node_type.run(config, NodeInputs(tuple(items)), ctx)
                else:
                    out = await in_thread(
                        node_type.run, config, NodeInputs(tuple(items)), ctx, stop=stop, threads=self.threads
                    )
            except (ContractError, NodeError, NodeTimeout, MemoryLimitExceeded):
                raise
            except Exception as exc:
                raise NodeError(name, f"{type(exc).__name__}: {exc}") from exc
            self.effected.add(name)
            if self.spec.limit is not None and node_type.kind == "source":
                out = out.head(self.spec.limit)
            local[name] = out
        assert out is not None
        root = self.nodes[step.root]
        try:
            frame = await collect(out, stop, self.threads) if isinstance(out, pl.LazyFrame) else out
        except (asyncio.CancelledError, NodeTimeout, MemoryLimitExceeded):
            raise
        except Exception as exc:
            failing = step.root if not step.fused else f"{step.root}"
            raise NodeError(failing, f"{type(exc).__name__}: {exc}") from exc
        if root.contract is not None:
            frame = await self._check(step.root, root.contract, frame, "output", stop)
        rec = self.records[step.root]
        if self.spec.persist is not None and (root.persist or self.plan.persist_all):
            rec.output_path = await in_thread(self.spec.persist, step.root, frame, threads=self.threads)
        self.frames[step.root] = frame
        finished = _now()
        elapsed = (time.perf_counter() - t0) * 1000
        for name in step.nodes:
            r = self.records[name]
            r.status, r.finished_at, r.duration_ms = RunState.SUCCEEDED, finished, elapsed
        rec.rows_out = frame.height
        first = self.records[step.nodes[0]]
        first.rows_in = rows_in

    async def _check(self, node: str, contract: Any, frame: Frame, where: str, stop: Stop) -> pl.DataFrame:
        if contract.checks_data and isinstance(frame, pl.LazyFrame):
            frame = await collect(frame, stop, self.threads)  # in a thread and stoppable, not in the loop
        outcome = contracts.apply(contract, frame)
        rec = self.records[node]
        rec.contract = {**outcome.summary(), "where": where}
        if outcome.ok:
            return await self._materialised(outcome.frame, stop)
        self.failures.extend({**f, "node": node} for f in outcome.failures)
        message = outcome.message(self.spec.workflow, node)
        await _publish_failures(node, outcome.failures, message)
        if contract.on_failure == "fail":
            raise ContractError(message, workflow=self.spec.workflow, node=node, failure_cases=outcome.failures)
        get_run_logger().warning(message)
        return await self._materialised(outcome.frame, stop)

    async def _materialised(self, frame: Frame, stop: Stop) -> pl.DataFrame:
        return await collect(frame, stop, self.threads) if isinstance(frame, pl.LazyFrame) else frame


async def _publish_failures(node: str, failures: list[dict[str, Any]], message: str) -> None:
    try:
        rows = [{k: ("" if v is None else str(v)) for k, v in f.items()} for f in failures[:500]]
        await acreate_table_artifact(table=rows, key=f"contract-{node.lower().replace('_', '-')}", description=message)
    except Exception:  # an artifact is a view; never fail the node over it
        get_run_logger().debug("could not publish contract failures: %s", traceback.format_exc())


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
