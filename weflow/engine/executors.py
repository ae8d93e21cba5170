"""The in-process step executor: a step's nodes build their lazy plans, collect once, check, persist.

This is where a step runs in the flow's own process, and on a node worker or Dask worker once
``remote`` has handed the step over. Every blocking call goes through ``threads`` with the
attempt's stop switch, so a timeout or the memory watchdog really stops the work.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import polars as pl
from prefect import get_run_logger
from prefect.artifacts import acreate_table_artifact

from weflow import contracts
from weflow.compile.plan import Step
from weflow.config import settings
from weflow.core.cursors import Window
from weflow.core.entities import RunState
from weflow.core.secret_ref import references, revealed, scrub
from weflow.engine.runtime import PlanRun, now
from weflow.engine.threads import NodeTimeout, collect, in_thread
from weflow.errors import ContractError, NodeError, SecretMissing
from weflow.nodes import incremental
from weflow.nodes.base import Frame, Inbound, NodeInputs, RunContext, path_input
from weflow.nodes.stop import MemoryLimitExceeded, Stop, fresh
from weflow.prefect_gateway import secrets


@dataclass(frozen=True)
class InProcess:
    """Run each step in this process (the default, and what node and Dask workers do with a step)."""

    def task_runner(self) -> Any | None:
        return None  # the flow's default task runner

    async def attempt(self, run: PlanRun, step: Step) -> None:
        """One attempt of a step: build its nodes' plans, collect once, check, persist."""
        stop = run.stop.child()
        try:
            stop.check()  # the run was stopped (memory limit) before this step started
            await _attempt(run, step, stop)
        except (asyncio.CancelledError, ContractError, NodeTimeout, MemoryLimitExceeded):
            raise
        except Exception as exc:
            if stop.reason is None:
                raise
            raise fresh(stop.reason) from exc  # DuckDB's "INTERRUPT Error" and the like: say why it stopped


async def _attempt(run: PlanRun, step: Step, stop: Stop) -> None:
    started = now()
    t0 = time.perf_counter()
    for name in step.nodes:
        rec = run.records[name]
        rec.attempts += 1
        rec.status = RunState.RUNNING
        rec.started_at = started
        rec.error = None
    local: dict[str, Frame] = {}
    for e in step.inputs:
        local[e.source] = run.frames[e.source]
    rows_in = sum(run.frames[e.source].height for e in step.inputs) if step.inputs else None
    out: Frame | None = None
    for name in step.nodes:
        out = await _run_node(run, name, local, stop)
        local[name] = out
    assert out is not None
    frame = await _collect_step(run, step, out, stop)
    finished = now()
    elapsed = (time.perf_counter() - t0) * 1000
    for name in step.nodes:
        r = run.records[name]
        r.status, r.finished_at, r.duration_ms = RunState.SUCCEEDED, finished, elapsed
    run.records[step.root].rows_out = frame.height
    first = run.records[step.nodes[0]]
    first.rows_in = rows_in


async def _run_node(run: PlanRun, name: str, local: dict[str, Frame], stop: Stop) -> Frame:
    """One node of the step: its inputs checked against their contracts, its run called (lazy or in a thread)."""
    node = run.nodes[name]
    node_type = run.types[node.type]
    items = []
    for e in run.incoming[name]:
        frame = local[e.source]
        contract = node.input_contracts.get(e.port)
        if contract is not None:
            frame = await _check(run, name, contract, frame, f"input {e.port!r}", stop)
        items.append(Inbound(e.source, e.port, frame.lazy()))
    ctx = RunContext(
        run.spec.workflow, name, run.spec.params, run.spec.data_roots, get_run_logger(),
        work_dir=run.spec.spill_dir, undo=run.registrar(name) if node.compensate else None, stop=stop,
        organization=run.spec.organization,
    )  # fmt: skip
    try:
        config = await _revealed(run, name, node_type.config.model_validate(_with_path(node.config, run.spec.params)))
        window = run.windows.get(name)
        if window is not None:
            config = incremental.narrowed_config(node.type, config, window)
        if node_type.lazy:
            out = node_type.run(config, NodeInputs(tuple(items)), ctx)
        else:
            out = await in_thread(node_type.run, config, NodeInputs(tuple(items)), ctx, stop=stop, threads=run.threads)
    except (ContractError, NodeTimeout, MemoryLimitExceeded):
        raise
    except Exception as exc:
        if isinstance(exc, NodeError) and not run.revealed:
            raise
        raise _failed(run, name, exc) from (None if run.revealed else exc)  # no chained error quotes a secret
    if window is not None:
        out = await _windowed(run, name, window, out, stop)
    run.effected.add(name)
    if run.spec.limit is not None and node_type.kind == "source":
        out = out.head(run.spec.limit)
    return out


async def _windowed(run: PlanRun, name: str, window: Window, out: Frame, stop: Stop) -> Frame:
    """An incremental source's output kept to its window; the highest cursor value read becomes the window's end.

    A scan is measured first (one more pass, over the cursor column only for Parquet) and bounded to
    that value, so rows appended while the run reads are left whole for the next run.
    """
    lazy = isinstance(out, pl.LazyFrame)  # its schema may read a file's header or footer: not in the loop
    schema = await in_thread(out.collect_schema, stop=stop, threads=run.threads) if lazy else out.schema
    wrong = incremental.problem(window, schema)
    if wrong is not None:
        raise NodeError(name, wrong)
    dtype = schema[window.column]
    if isinstance(out, pl.LazyFrame):
        if window.filters and run.nodes[name].type in incremental.SCAN_TYPES:
            out = out.filter(incremental.above_start(window, dtype))
        highest = (await collect(out.select(pl.col(window.column).max()), stop, run.threads)).item()
        if highest is not None:
            out = out.filter(incremental.up_to(window, highest, dtype))
    else:
        highest = out.get_column(window.column).max()
    run.windows[name] = incremental.end_of(window, highest)
    return out


def _with_path(config: Mapping[str, Any], params: Mapping[str, Any]) -> Mapping[str, Any]:
    """``config`` with a ``path: $name`` replaced by the run's value of input ``name`` (a string: apply checked)."""
    ref = path_input(config.get("path"))
    if ref is None:
        return config
    value = params.get(ref)
    if not isinstance(value, str) or not value:
        raise ValueError(f"path: input {ref!r} is {value!r}, not a path")
    return {**config, "path": value}


async def _revealed(run: PlanRun, name: str, config: Any) -> Any:
    """``config`` with its ``{secret: NAME}`` references replaced by the organization's values, read now."""
    refs = references(config)
    if not refs:
        return config
    organization = run.spec.organization or settings().organization
    try:
        found = await secrets.values(organization, [r.secret for r in refs])
    except SecretMissing as exc:
        raise NodeError(name, str(exc)) from None
    run.revealed.update(found)
    return revealed(config, found)


def _failed(run: PlanRun, name: str, exc: Exception) -> NodeError:
    """The NodeError for ``exc`` at node ``name``, every secret value read in this run scrubbed from it."""
    text = str(exc).removeprefix(f"node {name!r}: ") if isinstance(exc, NodeError) else f"{type(exc).__name__}: {exc}"
    return NodeError(name, scrub(text, run.revealed))


async def _collect_step(run: PlanRun, step: Step, out: Frame, stop: Stop) -> pl.DataFrame:
    """The step's one collect, its output contract, its Parquet output; the frame is kept for later steps."""
    root = run.nodes[step.root]
    try:
        frame = await collect(out, stop, run.threads) if isinstance(out, pl.LazyFrame) else out
    except (asyncio.CancelledError, NodeTimeout, MemoryLimitExceeded):
        raise
    except Exception as exc:
        raise _failed(run, step.root, exc) from (None if run.revealed else exc)
    if root.contract is not None:
        frame = await _check(run, step.root, root.contract, frame, "output", stop)
    if run.spec.persist is not None and (root.persist or run.plan.persist_all):
        path = await in_thread(run.spec.persist, step.root, frame, threads=run.threads)
        run.records[step.root].output_path = path
    run.frames[step.root] = frame
    return frame


async def _check(run: PlanRun, node: str, contract: Any, frame: Frame, where: str, stop: Stop) -> pl.DataFrame:
    if contract.checks_data and isinstance(frame, pl.LazyFrame):
        frame = await collect(frame, stop, run.threads)  # in a thread and stoppable, not in the loop
    outcome = contracts.apply(contract, frame)
    rec = run.records[node]
    rec.contract = {**outcome.summary(), "where": where}
    if outcome.ok:
        return await _materialised(run, outcome.frame, stop)
    run.failures.extend({**f, "node": node} for f in outcome.failures)
    message = outcome.message(run.spec.workflow, node)
    await _publish_failures(node, outcome.failures, message)
    if contract.on_failure == "fail":
        raise ContractError(message, workflow=run.spec.workflow, node=node, failure_cases=outcome.failures)
    get_run_logger().warning(message)
    return await _materialised(run, outcome.frame, stop)


async def _materialised(run: PlanRun, frame: Frame, stop: Stop) -> pl.DataFrame:
    return await collect(frame, stop, run.threads) if isinstance(frame, pl.LazyFrame) else frame


async def _publish_failures(node: str, failures: list[dict[str, Any]], message: str) -> None:
    try:
        rows = [{k: ("" if v is None else str(v)) for k, v in f.items()} for f in failures[:500]]
        await acreate_table_artifact(table=rows, key=f"contract-{node.lower().replace('_', '-')}", description=message)
    except Exception:  # an artifact is a view; never fail the node over it
        get_run_logger().debug("could not publish contract failures: %s", traceback.format_exc())
