"""The node queue (``WORKFLOW_NODE_QUEUE``): steps run on Prefect task workers, not in the flow process.

With ``settings.node_queue: true`` a run's flow keeps one task per step (its retries and timeout
stay Prefect's), but that task only hands the step to a task worker: ``apply_async`` on the node
task, whose task key names the queue, so every ``weflow node-worker`` serving that queue takes
steps from it and adding workers adds capacity. Frames cross processes as Parquet files in the
execution's spill folder (shared storage when workers are on other hosts); parameters carry the
definition snapshot itself, so a node worker never needs the catalog. ``NodeQueue`` and ``Dask``
are the two step executors that hand steps over; the worker runs its step with ``InProcess``.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import re
import traceback
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import polars as pl
from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectDistributedFuture
from prefect.states import Cancelled

from weflow import config
from weflow.compile import plan as planning
from weflow.compile.plan import Step
from weflow.config import settings
from weflow.core.document import from_data
from weflow.core.entities import RunState
from weflow.engine.executors import InProcess
from weflow.engine.runtime import NodeRecord, PlanRun, RunSpec, StepExecutor
from weflow.errors import ContractError, NodeError
from weflow.files import write_atomic
from weflow.nodes.registry import node_types
from weflow.prefect_gateway.client import shared_client

DEFAULT_QUEUE = "workflow-nodes"


def node_queue() -> str:
    """The queue name node steps go to: ``WORKFLOW_NODE_QUEUE``, or ``workflow-nodes``."""
    return os.environ.get("WORKFLOW_NODE_QUEUE", DEFAULT_QUEUE)


@dataclass
class Outcome:
    """What a node worker sends back: the step's records, its output file, or why it failed."""

    records: dict[str, NodeRecord]
    path: str | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_node: str | None = None
    kind: str | None = None  # "contract", "timeout" or "node" when it failed


async def run_step(
    document: dict[str, Any],
    nodes: list[str],
    params: dict[str, Any],
    inputs: dict[str, str],
    output: str,
    attempt: str = "",
    trusted: dict[str, Any] | None = None,
) -> Outcome:
    """On a node worker: rebuild the step from the definition snapshot, run it, write its output.

    ``trusted``: data roots and python allow-list of the flow's own settings, sent only to the
    flow's own Dask workers; a node worker of the node queue always applies its own settings.

    ``nodes`` are the step's nodes in order, the last its root (the flow decided the fusion);
    ``attempt`` is unique per attempt, so the cache policy Prefect gives task workers never
    answers a retry with an earlier result.
    """
    definition = from_data(document)
    types = node_types()
    plan = planning.build(definition, types, fuse=False, persist_all=True)  # every edge, one node a step
    members = set(nodes)
    edges_in = tuple(e for e in plan.edges if e.target in members and e.source not in members)
    root = nodes[-1]
    step = Step(root, tuple(nodes), tuple(sorted(edges_in, key=lambda e: e.index)))
    if trusted is not None:
        with config.using(
            data_roots=tuple(Path(p) for p in trusted["data_roots"]),
            python_node_modules=tuple(trusted["python_node_modules"]),
        ):
            return await run_step(document, nodes, params, inputs, output, attempt)
    cfg = settings()  # data roots and the python allow-list are the node worker's own
    roots = cfg.roots_for(cfg.organization)
    run = PlanRun(plan, types, RunSpec(workflow=definition.name, params=params, data_roots=roots), InProcess())
    for source, path in inputs.items():
        run.frames[source] = pl.read_parquet(path)
    records = {n: run.records[n] for n in step.nodes}
    try:
        await run.attempt(step)
    except BaseException as exc:  # the flow side turns this back into the step's failure
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
            raise
        kind = "contract" if isinstance(exc, ContractError) else "node"
        if isinstance(exc, TimeoutError):
            kind = "timeout"
        failing = getattr(exc, "node", None) or root
        message = str(exc) if isinstance(exc, ContractError | NodeError) else f"{type(exc).__name__}: {exc}"
        return Outcome(records, None, run.failures, message, failing, kind)
    written = write_atomic(Path(output), run.frames[root].write_parquet)
    return Outcome(records, str(written), run.failures)


_tasks: dict[str, Task[..., Any]] = {}


def node_task(queue: str) -> Task[..., Any]:
    """The task node workers serve for ``queue``.

    Prefect routes a deferred task run to the task workers serving its task key, which it
    derives from the function's name and code (and recomputes in ``with_options``), so each
    queue gets a function of its own name: same queue and same weflow code, same key.
    """
    if queue not in _tasks:

        async def on_queue(
            document: dict[str, Any],
            nodes: list[str],
            params: dict[str, Any],
            inputs: dict[str, str],
            output: str,
            attempt: str = "",
        ) -> Outcome:
            return await run_step(document, nodes, params, inputs, output, attempt)

        on_queue.__name__ = on_queue.__qualname__ = "weflow_node_" + re.sub(r"\W", "_", queue)
        _tasks[queue] = Task(on_queue, name=f"weflow-node/{queue}", cache_policy=NO_CACHE, log_prints=True)
    return _tasks[queue]


_dask_task: Task[..., Any] = Task(run_step, name="weflow-step/dask", cache_policy=NO_CACHE, persist_result=False)


@dataclass(frozen=True)
class NodeQueue:
    """Hand each step to the task workers serving ``queue`` (``weflow node-worker``)."""

    queue: str

    def task_runner(self) -> Any | None:
        return None

    async def attempt(self, run: PlanRun, step: Step) -> None:
        await dispatch(run, step, self.queue)


@dataclass(frozen=True)
class Dask:
    """Hand each step to the flow's Dask task runner: a scheduler ``address``, or ``local``."""

    address: str

    def task_runner(self) -> Any | None:
        return dask_runner(self.address)

    async def attempt(self, run: PlanRun, step: Step) -> None:
        await dispatch(run, step, None)


def executor_for(on_queue: bool, dask: str | None) -> StepExecutor:
    """Where a run's steps go: the node queue (``WORKFLOW_NODE_QUEUE``) first, then Dask, else this process."""
    if on_queue:
        return NodeQueue(node_queue())
    return Dask(dask) if dask is not None else InProcess()


async def dispatch(run: PlanRun, step: Step, queue: str | None) -> None:
    """In the flow: send ``step`` to the node queue (or, without one, to the flow's Dask task
    runner), wait for it, take its records and output back."""
    spill = run.spec.spill_dir
    if spill is None:
        raise NodeError(step.root, "the node queue needs a spill folder for frames (RunSpec.spill_dir)")
    inputs = {}
    for e in step.inputs:
        if e.source not in run.paths:
            run.paths[e.source] = str(write_atomic(spill / f"{e.source}.parquet", run.frames[e.source].write_parquet))
        inputs[e.source] = run.paths[e.source]
    for name in step.nodes:
        run.records[name].status = RunState.RUNNING
        run.records[name].attempts += 1
    kwargs = {
        "document": run.plan.definition.model_dump(mode="json", by_alias=True),
        "nodes": list(step.nodes),
        "params": dict(run.spec.params),
        "inputs": inputs,
        "output": str(spill / f"{step.root}.parquet"),
        "attempt": uuid.uuid4().hex,
    }
    if queue is None:  # Dask: the flow's task runner ships the step to a Dask worker
        cfg = settings()
        roots = [str(r) for r in run.spec.data_roots]  # the organization's, expanded
        trusted = {"data_roots": roots, "python_node_modules": list(cfg.python_node_modules)}
        submitted = _dask_task.submit(**kwargs, trusted=trusted)
        outcome: Outcome = await asyncio.to_thread(submitted.result)
    else:
        future = await _submit(node_task(queue), kwargs)
        try:
            outcome = await result_of(future)
        except asyncio.CancelledError:
            await _cancel(future.task_run_id)
            raise
    for name, rec in outcome.records.items():
        mine = run.records[name]
        mine.value = replace(rec.value, attempts=mine.attempts, group=mine.group)
    run.failures.extend(outcome.failures)
    if outcome.error is not None:
        failing = outcome.error_node or step.root
        if outcome.kind == "contract":
            raise ContractError(outcome.error, workflow=run.spec.workflow, node=failing)
        if outcome.kind == "timeout":
            raise TimeoutError(outcome.error)
        raise NodeError(failing, outcome.error)
    assert outcome.path is not None
    run.paths[step.root] = outcome.path
    run.records[step.root].output_path = outcome.path
    if step.root in run.keep:
        run.frames[step.root] = await asyncio.to_thread(pl.read_parquet, outcome.path)


async def _submit(node: Task[..., Any], kwargs: dict[str, Any]) -> PrefectDistributedFuture[Outcome]:
    """``apply_async`` without the flow's run context in the stored parameters.

    Prefect stores the caller's serialized run context with a deferred task's parameters; ours
    holds the step task's arguments and the compiled flow, which hold live event-loop objects.
    The task run is still created in this flow run, under this step's task run.
    """
    flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
    detached = contextvars.copy_context()
    detached.run(FlowRunContext.__var__.set, None)  # type: ignore[arg-type]
    detached.run(TaskRunContext.__var__.set, None)  # type: ignore[arg-type]
    created = asyncio.get_running_loop().create_task(
        node.create_run(parameters=kwargs, flow_run_context=flow_ctx, parent_task_run_context=task_ctx, deferred=True),
        context=detached,
    )
    task_run = await created
    return PrefectDistributedFuture(task_run_id=task_run.id)


UNRECORDED_FOR = 30.0  # seconds a step's task run may show no state before waiting on it fails


async def result_of(future: PrefectDistributedFuture[Any], patience: float = UNRECORDED_FOR) -> Any:
    """``future.result_async()``, once the server shows the task run's state.

    Prefect's future reads the task run first and fails at once if it has no state ("hasn't
    started yet"); the server's task-run recorder writes task-run states from events in batches,
    so under load a step's task run was read without one and the run failed for nothing (seen in
    a full test run on 2 busy cores). Read again, every 0.1-1 s, for up to ``patience`` s.
    """
    deadline, pause = asyncio.get_running_loop().time() + patience, 0.1
    while True:
        try:
            return await future.result_async()
        except RuntimeError as exc:
            if "has no state" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(pause)
        pause = min(1.0, pause * 2)


async def _cancel(task_run_id: Any) -> None:
    try:
        async with shared_client() as client:
            await client.set_task_run_state(task_run_id, Cancelled(), force=True)
    except Exception:  # best effort: the flow is going away anyway
        traceback.print_exc()


def dask_runner(address: str) -> Any:
    """A prefect-dask task runner: on the cluster at ``address``, or ``local`` for a local cluster
    of ``WEFLOW_DASK_WORKERS`` (default 2) single-threaded worker processes."""
    from prefect_dask.task_runners import DaskTaskRunner

    if address == "local":
        workers = int(os.environ.get("WEFLOW_DASK_WORKERS", "2"))
        cluster = {"n_workers": workers, "threads_per_worker": 1, "processes": True}
        return DaskTaskRunner(cluster_kwargs={**cluster, "host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"})
    return DaskTaskRunner(address=address)
