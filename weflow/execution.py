"""Execution service (the seed's startExecution/executeWorkflow): run a pinned version, record it.

The catalog is written twice per run, in short transactions: the RUNNING record before the
flow starts, then the final state with every node record, contract failures and the workflow's
counters in one batch (DESIGN decision 7). Prefect holds the run history and logs.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from prefect.client.schemas.objects import State
from prefect.settings import PREFECT_API_URL, temporary_settings

from weflow import server
from weflow.compile import plan as planning
from weflow.compile.flow import compile_flow
from weflow.compile.runtime import PlanRun, RunSpec
from weflow.config import settings
from weflow.core.entities import Execution, Mode, RunState
from weflow.core.graph import upstream
from weflow.core.model import DEFAULT_TIMEOUT_SECONDS, Definition
from weflow.errors import DefinitionError
from weflow.nodes.registry import node_types
from weflow.workflows import Scope, check, get, version


@dataclass(frozen=True)
class RunResult:
    """An in-process run: the execution record and the frames of the terminal nodes."""

    execution: Execution
    outputs: dict[str, pl.DataFrame] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.execution.status is RunState.SUCCEEDED

    def __getitem__(self, node: str) -> pl.DataFrame:
        return self.outputs[node]


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


def execute(
    definition: Definition,
    execution: Execution,
    *,
    scope: Scope | None = None,
    persist: bool = False,
    fuse: bool | None = None,
    limit: int | None = None,
    queued: bool = False,
) -> RunResult:
    """Run a checked definition as a Prefect flow and record it (when a scope is given).

    ``queued``: the execution was already recorded QUEUED (by ``submit``); move it to RUNNING.
    """
    cfg = settings()
    types = node_types()
    params = resolve_inputs(definition, execution.input_data)
    plan = planning.build(definition, types, fuse=fuse, persist_all=persist)
    spec = RunSpec(
        workflow=definition.name,
        params=params,
        data_roots=cfg.data_roots,
        persist=persist_output(cfg.runs_dir) if (persist or _persists(definition)) else None,
        limit=limit,
    )
    run = PlanRun(plan, types, spec)
    timeout = execution.timeout_seconds or definition.settings.timeout_seconds
    started = datetime.now(UTC)
    execution = replace(execution, status=RunState.RUNNING, started_at=started)
    if scope is not None:
        if queued:
            scope.catalog.update_execution(execution.id, status=RunState.RUNNING, started_at=started)
        else:
            scope.catalog.insert_execution(execution)
    api = server.ensure()
    t0 = time.perf_counter()
    with temporary_settings(updates={PREFECT_API_URL: api.api_url}):
        flow = compile_flow(run, timeout).with_options(flow_run_name=f"{definition.name}-{execution.id[:8]}")
        state: State[Any] = asyncio.run(flow(execution.id, params, return_state=True))  # type: ignore[arg-type]
    elapsed = (time.perf_counter() - t0) * 1000
    status = _state_to_run_state(state, run_status(run))
    if status is RunState.TIMED_OUT:
        run.mark_unfinished(RunState.TIMED_OUT, f"execution timed out after {timeout:g} s")
    elif status is RunState.CANCELLED:
        run.mark_unfinished(RunState.CANCELLED)
    result_error = run.error
    finished = datetime.now(UTC)
    final = replace(
        execution,
        status=status,
        flow_run_id=str(state.state_details.flow_run_id) if state.state_details.flow_run_id else None,
        finished_at=finished,
        duration_ms=elapsed,
        error_type=None if status is RunState.SUCCEEDED else _error_type(result_error, status),
        error_message=None if status is RunState.SUCCEEDED else _error_message(result_error, status, timeout),
        error_node=run.error_node if status is not RunState.SUCCEEDED else None,
        output={n: {"rows": f.height, "columns": f.columns} for n, f in run.frames.items() if n in run.keep},
    )
    nodes = [rec.frozen(execution.id) for rec in run.records.values()]
    if scope is not None:
        scope.catalog.finish_execution(final, nodes, run.failures)
    outputs = {n: f for n, f in run.frames.items() if n in run.keep}
    return RunResult(replace(final, nodes=tuple(nodes)), outputs)


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
    wf = get(name, scope)
    ver = version(name, scope, version_number)
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
    return check(ver.definition), execution


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


_background: list[threading.Thread] = []


def submit(
    name: str,
    scope: Scope,
    mode: Mode = Mode.API,
    input_data: Mapping[str, Any] | None = None,
    timeout: float | None = None,
) -> Execution:
    """Record a QUEUED execution and return at once; the run happens elsewhere.

    The input is checked before anything is recorded. The run happens in a background thread
    of this process.
    """
    definition, execution = new_execution(scope, name, mode=mode, input_data=input_data, timeout=timeout)
    resolve_inputs(definition, input_data)
    scope.catalog.insert_execution(execution)

    def work() -> None:
        execute(definition, execution, scope=scope, queued=True)

    context = contextvars.copy_context()  # keep settings overrides (tests, notebooks) in the thread
    thread = threading.Thread(target=context.run, args=(work,), name=f"weflow-run-{execution.id[:8]}", daemon=True)
    _background.append(thread)
    thread.start()
    return execution


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
