"""Execution service (the seed's startExecution/executeWorkflow): run a pinned version, record it.

The catalog is written twice per run, in short transactions: the RUNNING record before the
flow starts, then the final state with every node record, contract failures and the workflow's
counters in one batch (DESIGN decision 7). Prefect holds the run history and logs.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
from prefect import runtime as prefect_runtime
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
from prefect.client.schemas.objects import State
from prefect.client.schemas.sorting import LogSort
from prefect.states import Cancelled, Cancelling

from weflow import children, deploy, leases, monitor, server
from weflow.catalog import Catalog
from weflow.client import WeflowApi
from weflow.compile import plan as planning
from weflow.compile import remote
from weflow.compile.flow import call as call_flow
from weflow.compile.flow import compile_flow
from weflow.compile.runtime import PlanRun, RunSpec
from weflow.config import settings
from weflow.core import mermaid
from weflow.core.entities import Compensation, Execution, Mode, NodeExecution, RunState
from weflow.core.graph import downstream, upstream
from weflow.core.model import DEFAULT_TIMEOUT_SECONDS, Definition
from weflow.errors import ConflictError, DefinitionError, ExecutionTimeout
from weflow.nodes.registry import node_types
from weflow.workflows import Scope, check, data_roots, get, version


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
        return execution_graph(self.definition, self.execution)

    def _repr_markdown_(self) -> str:
        e = self.execution
        parts = [f"**{e.workflow}** v{e.version} — **{e.status.value}** in {(e.duration_ms or 0):.0f} ms"]
        if e.error_message:
            parts.append(f"> {e.error_message}")
        if self.definition is not None:
            parts.append(mermaid.markdown(self.graph()))
        rows = ["| node | status | attempts | rows in | rows out | ms |", "|---|---|---|---|---|---|"]
        for n in e.nodes:
            rows.append(
                f"| {n.node} | {n.status.value} | {n.attempts} | {_blank(n.rows_in)} | {_blank(n.rows_out)} "
                f"| {_blank(round(n.duration_ms) if n.duration_ms is not None else None)} |"
            )
        parts.append("\n".join(rows))
        if self.failures:
            cases = ["| node | column | check | failure case | row |", "|---|---|---|---|---|"]
            for f in self.failures[:50]:
                cases.append(
                    f"| {f.get('node')} | {_blank(f.get('column'))} | {f.get('check')} "
                    f"| {f.get('failure_case')} | {_blank(f.get('index'))} |"
                )
            parts.append("**Contract failures**\n\n" + "\n".join(cases))
        return "\n\n".join(parts)


def _blank(value: Any) -> str:
    return "" if value is None else str(value)


def execution_graph(definition: Definition, execution: Execution) -> str:
    """Mermaid text of an execution over its definition."""
    states = {
        n.node: mermaid.NodeState(
            n.status.value,
            ", ".join(
                x
                for x in (
                    f"{n.rows_out} rows" if n.rows_out is not None else "",
                    f"{n.duration_ms:.0f} ms" if n.duration_ms is not None else "",
                )
                if x
            ),
        )
        for n in execution.nodes
    }
    groups = {n.node: n.group for n in execution.nodes if n.group}
    return mermaid.graph(definition, states, groups)


def resolve_inputs(definition: Definition, input_data: Mapping[str, Any] | None) -> dict[str, Any]:
    """Input data checked against the definition's inputs, defaults filled in."""
    given = dict(input_data or {})
    problems = []
    kinds: dict[str, type | tuple[type, ...]] = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
    for key, value in given.items():
        spec = definition.inputs.get(key)
        if spec is None:
            known = ", ".join(definition.inputs) or "none"
            problems.append((f"input_data.{key}", f"unknown input (inputs of {definition.name!r}: {known})"))
        elif (isinstance(value, bool) and spec.type != "boolean") or not isinstance(value, kinds[spec.type]):
            problems.append((f"input_data.{key}", f"expected {spec.type}, got {type(value).__name__}"))
    for key, spec in definition.inputs.items():
        if key not in given:
            if spec.default is None:
                problems.append((f"input_data.{key}", "required input not given"))
            else:
                given[key] = spec.default
    if problems:
        raise DefinitionError(problems, workflow=definition.name)
    return given


def persist_output(runs_dir: Path) -> Any:
    """A persister writing Parquet content-addressed under ``runs_dir``."""

    def persist(node: str, frame: pl.DataFrame) -> str:
        runs_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{node}.", suffix=".parquet", dir=runs_dir)
        os.close(fd)
        frame.write_parquet(tmp)
        digest = hashlib.sha256(Path(tmp).read_bytes()).hexdigest()
        target = runs_dir / f"{digest}.parquet"
        os.replace(tmp, target)
        return str(target)

    return persist


def _state_to_run_state(state: State[Any] | None, fallback: RunState) -> RunState:
    if state is None:
        return fallback
    if state.name == "TimedOut":
        return RunState.TIMED_OUT
    if state.is_cancelled():
        return RunState.CANCELLED
    if state.is_completed():
        return RunState.SUCCEEDED
    return fallback if fallback is not RunState.SUCCEEDED else RunState.FAILED


@dataclass
class Prepared:
    """A run ready to go: its plan run, its record and its timeout."""

    definition: Definition
    execution: Execution
    run: PlanRun
    params: dict[str, Any]
    timeout: float
    report: Callable[[Execution, list[NodeExecution], list[dict[str, Any]]], None] | None = None  # remote worker


def prepare(
    definition: Definition,
    execution: Execution,
    *,
    persist: bool = False,
    fuse: bool | None = None,
    limit: int | None = None,
    node_queue: bool | None = None,
    reuse: Mapping[str, str] | None = None,
    dask: str | None = None,
    scope: Scope | None = None,
) -> Prepared:
    cfg = settings()
    on_queue = definition.settings.node_queue if node_queue is None else node_queue
    types = node_types()
    params = resolve_inputs(definition, execution.input_data)
    plan = planning.build(definition, types, fuse=fuse, persist_all=persist)
    spec = RunSpec(
        workflow=definition.name,
        params=params,
        data_roots=data_roots(scope) if scope else cfg.roots_for(cfg.organization),  # the organization's
        persist=persist_output(cfg.runs_dir) if (persist or _persists(definition)) else None,
        limit=limit,
        node_queue=remote.node_queue() if on_queue else None,
        dask=None if on_queue else (dask or definition.settings.dask),
        spill_dir=(cfg.runs_dir / "executions" / execution.id).resolve() if limit is None else None,
        reuse=dict(reuse or {}),
        max_memory_mb=definition.settings.max_memory_mb,
    )
    timeout = execution.timeout_seconds or definition.settings.timeout_seconds
    return Prepared(definition, execution, PlanRun(plan, types, spec), params, timeout)


def begin(
    prepared: Prepared, scope: Scope | None, queued: bool, flow_run_id: str | None = None, from_node: str | None = None
) -> None:
    """Record the execution RUNNING (insert it, or move a QUEUED record on), leased to this process."""
    started = datetime.now(UTC)
    prepared.execution = replace(
        prepared.execution, status=RunState.RUNNING, started_at=started, flow_run_id=flow_run_id
    )
    if scope is None:
        return
    if queued:
        fields: dict[str, Any] = {"status": RunState.RUNNING, "started_at": started}
        if flow_run_id:
            fields["flow_run_id"] = flow_run_id
        scope.catalog.update_execution(prepared.execution.id, lease=leases.here(started), **fields)
    else:
        scope.catalog.insert_execution(prepared.execution, from_node, lease=leases.here(started))


def conclude(
    prepared: Prepared, status: RunState, flow_run_id: str | None, elapsed_ms: float, scope: Scope | None
) -> RunResult:
    """Write the final state and every node record in one catalog transaction."""
    run, timeout = prepared.run, prepared.timeout
    if status is RunState.TIMED_OUT:
        run.mark_unfinished(RunState.TIMED_OUT, f"execution timed out after {timeout:g} s")
    elif status is RunState.CANCELLED:
        run.mark_unfinished(RunState.CANCELLED, "execution cancelled")
    ok = status is RunState.SUCCEEDED
    compensations: tuple[Compensation, ...] = ()
    if not ok:
        run.spill()  # what succeeded stays on disk for `weflow resume`
        compensations = tuple(run.compensate())
    final = replace(
        prepared.execution,
        status=status,
        flow_run_id=flow_run_id or prepared.execution.flow_run_id,
        finished_at=datetime.now(UTC),
        duration_ms=elapsed_ms,
        error_type=None if ok else _error_type(run.error, status),
        error_message=None if ok else _error_message(run.error, status, timeout),
        error_node=None if ok else run.error_node,
        output={n: {"rows": f.height, "columns": f.columns} for n, f in run.frames.items() if n in run.keep},
        compensations=compensations,
    )
    nodes = [rec.frozen(final.id) for rec in run.records.values()]
    if scope is not None:
        scope.catalog.finish_execution(final, nodes, run.failures)
        monitor.alert(final, prepared.definition, scope)
    elif prepared.report is not None:
        prepared.report(final, nodes, run.failures)
    outputs = {n: f for n, f in run.frames.items() if n in run.keep}
    return RunResult(replace(final, nodes=tuple(nodes)), outputs, prepared.definition, list(run.failures))


async def run_in_flow(prepared: Prepared, scope: Scope | None, flow_run_id: str | None) -> RunResult:
    """Run inside an already running flow (the deployment entrypoint); the timeout is enforced here."""
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(prepared.timeout):
            await prepared.run.run()
        status = run_status(prepared.run)
    except TimeoutError:
        status = RunState.TIMED_OUT
    except asyncio.CancelledError:
        conclude(prepared, RunState.CANCELLED, flow_run_id, (time.perf_counter() - t0) * 1000, scope)
        raise
    return conclude(prepared, status, flow_run_id, (time.perf_counter() - t0) * 1000, scope)


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
) -> RunResult:
    """Run a checked definition in this process as a Prefect flow; record it when given a scope.

    ``queued``: the execution was already recorded QUEUED (by ``submit``); move it to RUNNING.
    """
    prepared = prepare(
        definition,
        execution,
        persist=persist,
        fuse=fuse,
        limit=limit,
        node_queue=node_queue,
        reuse=reuse,
        dask=dask,
        scope=scope,
    )
    begin(prepared, scope, queued, from_node=from_node)
    with leases.beating(scope.catalog if scope else None, [execution.id]):
        api = server.ensure()
        t0 = time.perf_counter()
        with server.pointed_at(api.api_url):
            flow = compile_flow(prepared.run, prepared.timeout).with_options(
                flow_run_name=f"{definition.name}-{execution.id[:8]}"
            )
            state = server.blocking(call_flow(flow, execution.id, prepared.params))
        status = _state_to_run_state(state, run_status(prepared.run))
        flow_run_id = str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None
        return conclude(prepared, status, flow_run_id, (time.perf_counter() - t0) * 1000, scope)


def run_status(run: PlanRun) -> RunState:
    states = {r.status for r in run.records.values()}
    for bad in (RunState.TIMED_OUT, RunState.FAILED, RunState.CANCELLED):
        if bad in states:
            return bad
    return RunState.SUCCEEDED


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


def new_execution(
    scope: Scope, name: str, *, mode: Mode, input_data: Mapping[str, Any] | None, timeout: float | None,
    version_number: int | None = None,
) -> tuple[Definition, Execution]:  # fmt: skip
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
    return check(ver.definition, scope), execution


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
) -> RunResult:
    """Run a stored workflow in this process (on its current or a pinned version) and record it."""
    definition, execution = new_execution(
        scope, name, mode=mode, input_data=input_data, timeout=timeout, version_number=version_number
    )
    resolve_inputs(definition, input_data)  # refuse bad input before anything is recorded
    return execute(definition, execution, scope=scope, persist=persist, fuse=fuse)


def resume(execution_id: str, scope: Scope, *, from_node: str | None = None, latest_version: bool = False) -> RunResult:
    """Run a failed (or any ended) execution again, reusing the outputs of the steps that succeeded.

    The new execution is linked to the old one, on the old one's pinned version unless
    ``latest_version``; it re-runs the failed steps, ``from_node`` and everything downstream of
    it, and any step whose output is not on disk. On the latest version a step is reused only
    if it and everything upstream of it are unchanged.
    """
    old = scope.catalog.execution(execution_id, scope.user.organization_id)
    if not old.status.final:
        raise ConflictError(f"execution {execution_id} is still {old.status.value}: wait for it or cancel it")
    if old.status is RunState.SUCCEEDED and from_node is None:
        raise ConflictError(f"execution {execution_id} succeeded: nothing to resume (name a node with --from)")
    before = check(version(old.workflow, scope, old.version).definition, scope)
    pinned = version(old.workflow, scope, None if latest_version else old.version)
    definition = check(pinned.definition, scope)
    names = {n.name for n in definition.nodes}
    if from_node is not None and from_node not in names:
        raise DefinitionError(
            [("from", f"no node {from_node!r} in {old.workflow} v{pinned.number} (nodes: {', '.join(sorted(names))})")],
            workflow=old.workflow,
        )
    rerun = downstream(definition, from_node) if from_node is not None else set()
    previous = {n.node: n for n in old.nodes}
    reuse: dict[str, str] = {}
    for step in planning.build(definition, node_types()).steps:
        records = [previous.get(n) for n in step.nodes]
        path = previous[step.root].output_path if step.root in previous else None
        if rerun.intersection(step.nodes) or path is None or not Path(path).is_file():
            continue
        if not all(r is not None and r.status in (RunState.SUCCEEDED, RunState.REUSED) for r in records):
            continue
        if pinned.number != old.version and not _same_lineage(before, definition, step.root):
            continue
        reuse[step.root] = path
    wf = get(old.workflow, scope)
    execution = Execution(
        id=str(uuid.uuid4()), workflow_id=wf.id, workflow=wf.name, version=pinned.number, mode=Mode.MANUAL,
        user_id=scope.user.id, status=RunState.QUEUED, input_data=old.input_data, created_at=datetime.now(UTC),
        timeout_seconds=old.timeout_seconds, resumed_from=old.id,
    )  # fmt: skip
    return execute(definition, execution, scope=scope, reuse=reuse, from_node=from_node)


def _same_lineage(before: Definition, after: Definition, node: str) -> bool:
    """``node`` and everything upstream of it are the same in both definitions."""
    lineage = upstream(after, node)
    if node not in {n.name for n in before.nodes} or upstream(before, node) != lineage:
        return False
    same_nodes = all(before.node(n) == after.node(n) for n in lineage)
    wires = {(c.from_, c.to) for c in after.connections if c.to.node in lineage}
    return same_nodes and wires == {(c.from_, c.to) for c in before.connections if c.to.node in lineage}


def submit(
    name: str,
    scope: Scope,
    mode: Mode = Mode.API,
    input_data: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    queue: bool | None = None,
) -> Execution:
    """Record a QUEUED execution and return at once; the input is checked before anything is stored.

    With ``queue`` a Prefect flow run is created from the workflow's deployment and a worker
    runs it; without, a child process runs it (``weflow.children``): workflow code never runs in
    the calling process, which is the API's. By default the queue is used when the workflow is deployed.
    """
    definition, execution = new_execution(scope, name, mode=mode, input_data=input_data, timeout=timeout)
    resolve_inputs(definition, input_data)
    if queue is not False:
        api = server.ensure()
        with server.pointed_at(api.api_url):
            flow_run_id = server.blocking(_create_flow_run(execution, required=bool(queue)))
        if flow_run_id is not None:
            execution = replace(execution, flow_run_id=flow_run_id)
            scope.catalog.insert_execution(execution)
            return execution
    processes = children.default()
    scope.catalog.insert_execution(execution, lease=leases.here())  # held here until its child takes it
    processes.start(execution.id, scope)
    return execution


def run_queued(execution_id: str) -> RunResult | None:
    """Run an execution ``submit`` recorded QUEUED, in this process (the body of ``python -m weflow.child``).

    Whatever stops it before it runs (its workflow deleted, its input no longer valid) ends the
    record FAILED with that error; None then.
    """
    catalog = Catalog(settings().catalog)
    found = catalog.execution(execution_id)
    scope = Scope(catalog, catalog.user(found.user_id))
    try:
        definition = check(version(found.workflow, scope, found.version).definition, scope)
        return execute(definition, found, scope=scope, queued=True)
    except Exception as exc:  # the top of a process: record why, then exit
        text = str(exc).strip() or type(exc).__name__
        leases.abandon(scope, [found.id], type(exc).__name__, text.splitlines()[0][:2000])
        return None


async def _create_flow_run(execution: Execution, required: bool) -> str | None:
    async with get_client() as client:
        try:
            deployment_id = await deploy.find_deployment(client, execution.workflow)
        except deploy.DeployError:
            if required:
                raise
            return None
        flow_run = await client.create_flow_run_from_deployment(
            deployment_id,
            parameters={
                "workflow": execution.workflow,
                "input_data": execution.input_data,
                "version": execution.version,
                "execution_id": execution.id,
            },
            tags=[f"mode:{execution.mode.value.lower()}"],
        )
    return str(flow_run.id)


async def run_deployed(
    workflow: str,
    input_data: dict[str, Any] | None,
    version_number: int | None,
    execution_id: str | None,
) -> RunResult:
    """The body of the deployment entrypoint: find or make the record, run, record the end."""
    flow_run_id = str(prefect_runtime.flow_run.id) if prefect_runtime.flow_run.id else None
    remote = WeflowApi.from_env()
    if remote is not None:
        return await _run_reporting(remote, workflow, input_data, version_number, execution_id, flow_run_id)
    scope = Scope.current()
    if execution_id is not None:
        execution = scope.catalog.execution(execution_id, scope.user.organization_id)
        definition = check(version(workflow, scope, execution.version).definition, scope)
        queued = True
    else:  # started outside weflow: the Prefect UI, `prefect deployment run`, a schedule
        mode = Mode.CRON if await _auto_scheduled(flow_run_id) else Mode.MANUAL
        definition, execution = new_execution(
            scope, workflow, mode=mode, input_data=input_data, timeout=None, version_number=version_number
        )
        queued = False
    prepared = prepare(definition, execution, scope=scope)
    begin(prepared, scope, queued, flow_run_id)
    with leases.beating(scope.catalog, [execution.id]):
        result = await run_in_flow(prepared, scope, flow_run_id)
    if not result.ok:
        raise RuntimeError(result.execution.error_message or result.execution.status.value)
    return result


async def _run_reporting(
    remote: WeflowApi,
    workflow: str,
    input_data: dict[str, Any] | None,
    version_number: int | None,
    execution_id: str | None,
    flow_run_id: str | None,
) -> RunResult:
    """The entrypoint on a remote worker: definition from the weflow API, records reported to it."""
    if execution_id is not None:
        execution = remote.execution(execution_id)
        definition, _ = remote.definition(workflow, execution.version)
        queued = True
    else:
        mode = Mode.CRON if await _auto_scheduled(flow_run_id) else Mode.MANUAL
        definition, number = remote.definition(workflow, version_number)
        execution = remote.create_execution(workflow, number, mode, input_data, flow_run_id)
        queued = False
    prepared = prepare(check(definition), execution)
    prepared.report = remote.finish
    begin(prepared, None, queued, flow_run_id)
    remote.running(execution.id, flow_run_id)
    result = await run_in_flow(prepared, None, flow_run_id)
    if not result.ok:
        raise RuntimeError(result.execution.error_message or result.execution.status.value)
    return result


async def _auto_scheduled(flow_run_id: str | None) -> bool:
    if flow_run_id is None:
        return False
    async with get_client() as client:
        flow_run = await client.read_flow_run(UUID(flow_run_id))
    return bool(flow_run.auto_scheduled)


_PREFECT_FINAL = {
    "COMPLETED": RunState.SUCCEEDED,
    "FAILED": RunState.FAILED,
    "CRASHED": RunState.FAILED,
    "CANCELLED": RunState.CANCELLED,
}


def sync(scope: Scope) -> list[Execution]:
    """Repair the catalog mirror: unfinished records whose flow run has ended, or whose process died.

    Prefect first: a deployed run that was cancelled or crashed ends with the state its worker reported.
    """
    pending = [
        e
        for e in scope.catalog.executions(scope.user.organization_id, limit=10_000)
        if not e.status.final and e.flow_run_id
    ]
    repaired = _sync_from_prefect(scope, pending) if pending else []
    return repaired + leases.reap(scope)


def _sync_from_prefect(scope: Scope, pending: list[Execution]) -> list[Execution]:
    repaired = []
    api = server.ensure()
    with server.pointed_at(api.api_url):
        states = server.blocking(_flow_run_states([e.flow_run_id for e in pending if e.flow_run_id]))
    for e in pending:
        state = states.get(e.flow_run_id or "")
        if state is None or state[0] not in _PREFECT_FINAL:
            continue
        kind, name, message = state
        status = RunState.TIMED_OUT if name == "TimedOut" else _PREFECT_FINAL[kind]
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


async def _flow_run_states(ids: list[str]) -> dict[str, tuple[str, str, str]]:
    async with get_client() as client:
        runs = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(i) for i in ids]))
        )
    return {
        str(r.id): (r.state.type.value, r.state.name or "", r.state.message or "") for r in runs if r.state is not None
    }


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    node: str | None  # None: the flow's own lines
    message: str


def logs(execution_id: str, scope: Scope, node: str | None = None, limit: int = 5000) -> list[LogLine]:
    """An execution's log lines from Prefect (the system of record), oldest first, per node if asked."""
    execution = scope.catalog.execution(execution_id, scope.user.organization_id)
    if execution.flow_run_id is None:
        return []
    api = server.ensure()
    with server.pointed_at(api.api_url):
        lines = server.blocking(_read_logs(execution.flow_run_id, limit))
    if node is not None:
        lines = [line for line in lines if line.node == node or (line.node or "").startswith(f"{node} (+")]
    return lines


async def _read_logs(flow_run_id: str, limit: int) -> list[LogLine]:
    async with get_client() as client:
        task_runs = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)]))
        )
        names = {str(t.id): t.name for t in task_runs}
        found: list[Any] = []
        while len(found) < limit:  # the API pages by at most 200
            page = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)])),
                limit=min(200, limit - len(found)),
                offset=len(found),
                sort=LogSort.TIMESTAMP_ASC,
            )
            found.extend(page)
            if len(page) < 200:
                break
    return [
        LogLine(
            log.timestamp,
            logging.getLevelName(log.level),
            names.get(str(log.task_run_id)) if log.task_run_id else None,
            log.message,
        )
        for log in found
    ]


current = leases.current  # the API's and CLI's read of one execution


def wait(execution_id: str, scope: Scope, timeout: float = 600.0, poll: float = 0.5) -> Execution:
    """Block until an execution ends (syncing from Prefect meanwhile); ExecutionTimeout past ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        found = scope.catalog.execution(execution_id)
        if found.status.final:
            return found
        if time.monotonic() > deadline:
            raise ExecutionTimeout(f"execution {execution_id} still {found.status.value} after {timeout:g} s")
        sync(scope)
        time.sleep(poll)


def cancel(execution_id: str, scope: Scope) -> Execution:
    """Cancel a queued or running execution through Prefect; the record ends CANCELLED."""
    execution = scope.catalog.execution(execution_id, scope.user.organization_id)
    if execution.status.final:
        raise ConflictError(f"execution {execution_id} already ended {execution.status.value}")
    if execution.flow_run_id is None:
        if children.cancel(execution.id):  # a run this process (the API) handed to a child
            return scope.catalog.execution(execution_id)
        raise ConflictError(f"execution {execution_id} runs in a process weflow cannot reach; it cannot be cancelled")
    api = server.ensure()
    with server.pointed_at(api.api_url):
        server.blocking(_cancel_flow_run(execution.flow_run_id))
    if execution.status is RunState.QUEUED:
        scope.catalog.update_execution(execution.id, status=RunState.CANCELLED, finished_at=datetime.now(UTC))
    return scope.catalog.execution(execution_id)


async def _cancel_flow_run(flow_run_id: str) -> None:
    async with get_client() as client:
        flow_run = await client.read_flow_run(UUID(flow_run_id))
        running = flow_run.state is not None and flow_run.state.is_running()
        await client.set_flow_run_state(UUID(flow_run_id), Cancelling() if running else Cancelled(), force=True)


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
