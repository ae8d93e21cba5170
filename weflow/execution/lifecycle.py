"""The run lifecycle (the seed's startExecution/executeWorkflow): prepare, begin, run the flow, conclude.

A run is prepared once (inputs resolved, plan built, where outputs go), recorded RUNNING through
its ``Recorder``, run as a Prefect flow (in this process by ``execute``, or inside the deployment
entrypoint's flow by ``run_in_flow``), and concluded: the final state and every node record go to
the recorder in one batch. Prefect holds the run history and logs.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from weflow import display
from weflow.catalog.cursors import Cursors
from weflow.compile import plan as planning
from weflow.compile.flow import compile_flow
from weflow.config import settings
from weflow.core import input_types
from weflow.core.cursors import Window
from weflow.core.entities import Execution, Mode, RunState
from weflow.core.graph import upstream
from weflow.core.model import DEFAULT_TIMEOUT_SECONDS, Definition
from weflow.engine import remote, results
from weflow.engine.runtime import PlanRun, RunSpec
from weflow.errors import DefinitionError
from weflow.execution.record import UNRECORDED, ApiRecorder, CatalogRecorder, Recorder, new_execution
from weflow.files import write_addressed
from weflow.nodes.registry import node_types
from weflow.prefect_gateway.client import run_flow
from weflow.prefect_gateway.states import ended
from weflow.secrets import referenced
from weflow.workflows import Scope, check, organization_roots


@dataclass(frozen=True)
class RunResult:
    """An in-process run: the execution record and the frames of the terminal nodes."""

    execution: Execution
    outputs: dict[str, pl.DataFrame] = field(default_factory=dict)
    definition: Definition | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.execution.status is RunState.SUCCEEDED

    def __getitem__(self, node: str) -> pl.DataFrame:
        return self.outputs[node]

    def graph(self) -> str:
        """Mermaid text of the run: every node coloured by its state, fused steps grouped."""
        assert self.definition is not None
        return display.execution_graph(self.definition, self.execution)

    def _repr_markdown_(self) -> str:
        return display.run_markdown(self.execution, self.definition, self.failures)


def resolve_inputs(definition: Definition, input_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Input data checked against the definition's inputs, defaults filled in."""
    given = dict(input_data or {})
    problems = []
    for key, value in given.items():
        spec = definition.inputs.get(key)
        if spec is None:
            known = ", ".join(definition.inputs) or "none"
            problems.append((f"input_data.{key}", f"unknown input (inputs of {definition.name!r}: {known})"))
        elif wrong := input_types.mismatch(spec.type, value):
            problems.append((f"input_data.{key}", wrong))
        elif spec.allowed and value not in spec.allowed:
            problems.append((f"input_data.{key}", f"{value!r} is not one of the allowed values {list(spec.allowed)}"))
    for key, spec in definition.inputs.items():
        if key not in given:
            if spec.default is None:
                problems.append((f"input_data.{key}", "required input not given"))
            else:
                given[key] = spec.default
    if problems:
        raise DefinitionError(problems, workflow=definition.name)
    return given


def persist_output(runs_dir: Path) -> Callable[[str, pl.DataFrame], str]:
    """A persister writing Parquet content-addressed under ``runs_dir``."""

    def persist(node: str, frame: pl.DataFrame) -> str:
        return str(write_addressed(runs_dir, ".parquet", frame.write_parquet, label=node))

    return persist


@dataclass
class Prepared:
    """A run ready to go: its plan run, its record, its timeout and where its records go."""

    definition: Definition
    execution: Execution
    run: PlanRun
    params: dict[str, Any]
    timeout: float
    recorder: Recorder = UNRECORDED


def prepare(
    definition: Definition,
    execution: Execution,
    *,
    recorder: Recorder = UNRECORDED,
    persist: bool = False,
    fuse: bool | None = None,
    limit: int | None = None,
    node_queue: bool | None = None,
    reuse: Mapping[str, str] | None = None,
    dask: str | None = None,
    scope: Scope | None = None,
    full_refresh: bool = False,
) -> Prepared:
    cfg = settings()
    on_queue = definition.settings.node_queue if node_queue is None else node_queue
    types = node_types()
    params = resolve_inputs(definition, execution.input_data)
    plan = planning.build(definition, types, fuse=fuse, persist_all=persist)
    remote_steps = on_queue or bool(dask or definition.settings.dask)
    windows = _windows(definition, execution, recorder, scope, full_refresh, remote_steps) if limit is None else {}
    # whose roots, buckets and secrets {secret: NAME}: the scope's organization (its name read only when needed)
    org, roots = organization_roots(scope, named=referenced(definition)) if scope else (None, None)
    spec = RunSpec(
        workflow=definition.name,
        params=params,
        data_roots=roots if roots is not None else cfg.roots_for(cfg.organization),
        persist=persist_output(cfg.runs_dir) if (persist or _persists(definition)) else None,
        limit=limit,
        spill_dir=(cfg.runs_dir / "executions" / execution.id).resolve() if limit is None else None,
        reuse=dict(reuse or {}),
        max_memory_mb=definition.settings.max_memory_mb,
        organization=org if org is not None else cfg.organization,
        windows=windows,
        execution_id=execution.id if limit is None else None,
    )
    timeout = execution.timeout_seconds or definition.settings.timeout_seconds
    executor = remote.executor_for(on_queue, dask or definition.settings.dask)  # where steps run, chosen once
    return Prepared(definition, execution, PlanRun(plan, types, spec, executor), params, timeout, recorder)


def _windows(
    definition: Definition, execution: Execution, recorder: Recorder, scope: Scope | None, full_refresh: bool,
    remote_steps: bool,
) -> dict[str, Window]:  # fmt: skip
    """What each incremental source reads in this run (one catalog session; none for a workflow without any)."""
    sources = {n.name: n.incremental.cursor for n in definition.nodes if n.incremental is not None}
    if not sources:
        return {}
    where = f"nodes[{[n.name for n in definition.nodes].index(next(iter(sources)))}].incremental"
    if remote_steps:
        raise DefinitionError([(where, "an incremental source cannot run on the node queue or Dask yet")],
                              workflow=definition.name)  # fmt: skip
    if isinstance(recorder, ApiRecorder):
        raise DefinitionError([(where, "an incremental source needs the catalog: a remote worker (WEFLOW_API_URL) "
                                       "cannot run it yet")], workflow=definition.name)  # fmt: skip
    if scope is None:
        return {}  # an unrecorded run (a test, a benchmark): reads everything, moves nothing
    return Cursors(scope.catalog.path).windows(execution, sources, full_refresh)


def begin(prepared: Prepared, queued: bool, flow_run_id: str | None = None, from_node: str | None = None) -> None:
    """Record the execution RUNNING (``queued``: move a QUEUED record on, else insert it)."""
    prepared.execution = replace(
        prepared.execution, status=RunState.RUNNING, started_at=datetime.now(UTC), flow_run_id=flow_run_id
    )
    prepared.recorder.begin(prepared.execution, queued, from_node)
    if settings().openlineage_url:  # imported only then: sqlglot and the lineage code cost ~0.3 s per process
        from weflow import lineage_events

        lineage_events.started(prepared.definition, prepared.execution, prepared.run.spec)


def conclude(prepared: Prepared, status: RunState, flow_run_id: str | None, elapsed_ms: float) -> RunResult:
    """End the run (``PlanRun.end``) and write its final state and every node record in one batch."""
    timeout = prepared.timeout
    message = {
        RunState.TIMED_OUT: f"execution timed out after {timeout:g} s",
        RunState.CANCELLED: "execution cancelled",
    }.get(status)
    result = prepared.run.end(status, message)
    ok = status is RunState.SUCCEEDED
    final = replace(
        prepared.execution,
        status=status,
        flow_run_id=flow_run_id or prepared.execution.flow_run_id,
        finished_at=datetime.now(UTC),
        duration_ms=elapsed_ms,
        error_type=None if ok else _error_type(result.error, status),
        error_message=None if ok else _error_message(result.error, status, timeout),
        error_node=None if ok else result.error_node,
        output={n: {"rows": f.height, "columns": f.columns} for n, f in result.outputs.items()},
        compensations=result.compensations,
    )
    nodes = [replace(rec, execution_id=final.id) for rec in result.records]
    prepared.recorder.finish(final, nodes, result.failures, prepared.definition, result.windows)
    if settings().openlineage_url:
        from weflow import lineage_events

        lineage_events.ended(prepared.definition, final, prepared.run.spec)
    return RunResult(replace(final, nodes=tuple(nodes)), result.outputs, prepared.definition, result.failures)


async def run_in_flow(prepared: Prepared, flow_run_id: str | None) -> RunResult:
    """Run inside an already running flow (the deployment entrypoint); the timeout is enforced here.

    The result artifact is published once the end is recorded (with a batched recorder, while it is
    written): it is a view of the run, and ~15-45 ms of Prefect's server that the record need not wait for.
    """
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(prepared.timeout):
            status = (await prepared.run.run(publish=False)).status
    except TimeoutError:
        return conclude(prepared, RunState.TIMED_OUT, flow_run_id, (time.perf_counter() - t0) * 1000)
    except asyncio.CancelledError:
        conclude(prepared, RunState.CANCELLED, flow_run_id, (time.perf_counter() - t0) * 1000)
        raise
    done = conclude(prepared, status, flow_run_id, (time.perf_counter() - t0) * 1000)
    await results.publish(prepared.run)
    return done


def execute(
    definition: Definition,
    execution: Execution,
    *,
    scope: Scope | None = None,
    persist: bool = False,
    fuse: bool | None = None,
    limit: int | None = None,
    queued: bool = False,
    node_queue: bool | None = None,
    reuse: Mapping[str, str] | None = None,
    from_node: str | None = None,
    dask: str | None = None,
    full_refresh: bool = False,
) -> RunResult:
    """Run a checked definition in this process as a Prefect flow; record it when given a scope.

    ``queued``: the execution was already recorded QUEUED (by ``submit``); move it to RUNNING.
    ``full_refresh``: incremental sources read every row (their cursors still only move forward).
    """
    recorder = CatalogRecorder(scope) if scope is not None else UNRECORDED
    prepared = prepare(
        definition, execution, recorder=recorder, persist=persist, fuse=fuse, limit=limit, node_queue=node_queue,
        reuse=reuse, dask=dask, scope=scope, full_refresh=full_refresh,
    )  # fmt: skip
    begin(prepared, queued, from_node=from_node)
    flow_run_name = f"{definition.name}-{execution.id[:8]}"
    with recorder.holding(execution.id):
        t0 = time.perf_counter()
        run = prepared.run
        flow = compile_flow(run.run, definition.name, prepared.timeout, run.executor.task_runner())
        state = run_flow(flow.with_options(flow_run_name=flow_run_name), execution.id, prepared.params)
        status = ended(state, run.result().status)
        flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        return conclude(prepared, status, flow_run_id, (time.perf_counter() - t0) * 1000)


def _persists(definition: Definition) -> bool:
    return definition.settings.persist_outputs or any(n.persist for n in definition.nodes)


def _error_type(error: BaseException | None, status: RunState) -> str:
    if status is RunState.TIMED_OUT:
        return "TimeoutError" if error is None or not isinstance(error, TimeoutError) else type(error).__name__
    return type(error).__name__ if error is not None else status.value


def _error_message(error: BaseException | None, status: RunState, timeout: float) -> str:
    if status is RunState.TIMED_OUT and (error is None or "timed out" not in str(error)):
        return f"execution timed out after {timeout:g} s"
    return str(error) if error is not None else status.value


def run(
    name: str,
    scope: Scope,
    *,
    input_data: Mapping[str, Any] | None = None,
    mode: Mode = Mode.MANUAL,
    timeout: float | None = None,
    version_number: int | None = None,
    persist: bool = False,
    fuse: bool | None = None,
    full_refresh: bool = False,
) -> RunResult:
    """Run a stored workflow in this process (on its current or a pinned version) and record it.

    ``full_refresh``: incremental sources ignore their cursors and read every row.
    """
    definition, execution = new_execution(
        scope, name, mode=mode, input_data=input_data, timeout=timeout, version_number=version_number
    )
    resolve_inputs(definition, input_data)  # refuse bad input before anything is recorded
    return execute(definition, execution, scope=scope, persist=persist, fuse=fuse, full_refresh=full_refresh)


def start_execution(
    name: str,
    scope: Scope,
    mode: Mode = Mode.MANUAL,
    input_data: Mapping[str, Any] | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Execution:
    """The seed's startExecution: run ``name`` for ``scope.user`` and return its execution record."""
    return run(name, scope, input_data=input_data, mode=mode, timeout=timeout).execution


def preview(
    definition: Definition, node: str, n: int = 20, input_data: Mapping[str, Any] | None = None
) -> pl.DataFrame:
    """Run only ``node`` and what it depends on, every source capped at ``n`` rows; nothing recorded."""
    check(definition)
    if node_types()[definition.node(node).type].kind == "sink":
        raise DefinitionError([("", f"{node!r} is a sink: preview its input instead (nothing is written)")])
    keep = upstream(definition, node)
    part = definition.model_copy(
        update={
            "nodes": tuple(x for x in definition.nodes if x.name in keep),
            "connections": tuple(c for c in definition.connections if c.to.node in keep),
        }
    )
    execution = Execution(
        id=str(uuid.uuid4()), workflow_id=0, workflow=definition.name, version=0, mode=Mode.MANUAL,
        user_id=0, status=RunState.QUEUED, input_data=dict(input_data or {}) or None,
    )  # fmt: skip
    result = execute(part, execution, limit=n)
    if not result.ok:
        raise DefinitionError([("", result.execution.error_message or "preview failed")], workflow=definition.name)
    return result[node].head(n)
