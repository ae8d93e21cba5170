"""Prefect flow runs as the execution service sees them: created from a deployment, states, logs, cancel.

Each call goes to the Prefect server of this home through ``client.on_server``; the states a
flow run reports are mapped to weflow's by ``states.final_state``, the one map.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from prefect import runtime as prefect_runtime
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    LogFilter,
    LogFilterFlowRunId,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import LogSort
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.states import Cancelled, Cancelling

from weflow.core.entities import Execution
from weflow.errors import DeployError, ServerError
from weflow.prefect_gateway import deployments, states
from weflow.prefect_gateway.client import client, on_server, shared_client


@dataclass(frozen=True)
class LogLine:
    timestamp: datetime
    level: str
    node: str | None  # None: the flow's own lines
    message: str


def current_id() -> str | None:
    """The id of the flow run this code runs in (the deployment entrypoint's), if any."""
    return str(prefect_runtime.flow_run.id) if prefect_runtime.flow_run.id else None


CREATING_AT_ONCE = 4  # flow runs this process creates at the same time (Prefect on SQLite answers 503 past that)
RETRYING_SECONDS = 120.0  # how long a create refused with a 5xx is tried again, after Prefect's own client retries
_creating = threading.BoundedSemaphore(CREATING_AT_ONCE)


def create(execution: Execution, required: bool) -> str | None:
    """A flow run of the deployment for a QUEUED execution; None without a deployment (unless required).

    At most ``CREATING_AT_ONCE`` at a time per process: 200 API calls at once then queue here
    instead of all asking Prefect's server (SQLite: one writer) at once. A create the server
    still refuses (503: SQLite busy) is tried again for ``RETRYING_SECONDS``, with the execution's
    id as Prefect's idempotency key, so a retry never makes a second flow run; after that it is a
    ``ServerError`` (the API's 503), not a crash.
    """
    with _creating:  # the time queued here does not count against the retries
        deadline, pause = time.monotonic() + RETRYING_SECONDS, 0.5
        while True:
            try:
                return on_server(lambda: _create(execution, required))
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code < 500:
                    raise
                if time.monotonic() + pause > deadline:
                    raise ServerError(
                        f"the Prefect server could not create the flow run (HTTP {exc.response.status_code}): try again"
                    ) from None
                time.sleep(pause)  # holding the slot: the others wait too while the server is busy
                pause = min(pause * 2, 8.0)


_deployment_ids: dict[tuple[str, str], UUID] = {}  # (API URL, workflow) -> its deployment's id, found once


async def _create(execution: Execution, required: bool) -> str | None:
    """One Prefect call per run: the deployment's id is looked up once per process (again if it was removed)."""
    async with client() as prefect:
        key = (str(prefect.api_url), execution.workflow)
        for attempt in range(2):
            if key not in _deployment_ids:
                try:
                    _deployment_ids[key] = await deployments.find(prefect, execution.workflow)
                except DeployError:
                    if required:
                        raise
                    return None
            try:
                flow_run = await prefect.create_flow_run_from_deployment(
                    _deployment_ids[key],
                    parameters={
                        "workflow": execution.workflow,
                        "input_data": execution.input_data,
                        "version": execution.version,
                        "execution_id": execution.id,
                    },
                    name=execution.workflow,  # as the entrypoint's flow_run_name: the worker need not rename it
                    tags=[f"mode:{execution.mode.value.lower()}"],
                    idempotency_key=execution.id,  # a retry after a 5xx finds the flow run it may have made
                )
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code != 404 or attempt:
                    raise
                _deployment_ids.pop(key, None)  # redeployed or removed since: look it up again, once
                continue
            return str(flow_run.id)
    return None


async def auto_scheduled(flow_run_id: str | None) -> bool:
    """The flow run was started by a deployment's schedule."""
    if flow_run_id is None:
        return False
    async with shared_client() as client:
        flow_run = await client.read_flow_run(UUID(flow_run_id))
    return bool(flow_run.auto_scheduled)


IDS_PER_READ = 200  # flow runs asked for per read: the server's page (PREFECT_API_DEFAULT_LIMIT)


def ended(ids: list[str]) -> dict[str, tuple[str, str, str]]:
    """Flow run id -> (state type, state name, message) of those of these flow runs that ended (a final state).

    Read ``IDS_PER_READ`` ids at a time, only the ended ones: the server answers at most a page per read (all of a
    catalog's unfinished runs in one read saw the first 200 only), and the runs still going, most of them while a
    queue drains, are neither sent nor parsed."""
    return on_server(lambda: _ended(ids))


async def _ended(ids: list[str]) -> dict[str, tuple[str, str, str]]:
    final = FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType(kind) for kind in states.FINAL_TYPES]))
    found: dict[str, tuple[str, str, str]] = {}
    async with shared_client() as client:
        for start in range(0, len(ids), IDS_PER_READ):
            chunk = [UUID(i) for i in ids[start : start + IDS_PER_READ]]
            runs = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk), state=final), limit=len(chunk)
            )
            found |= {
                str(r.id): (r.state.type.value, r.state.name or "", r.state.message or "")
                for r in runs
                if r.state is not None
            }
    return found


def logs(flow_run_id: str, limit: int) -> list[LogLine]:
    """A flow run's log lines, oldest first, each named by its task run (a node or a fused step)."""
    return on_server(lambda: _read_logs(flow_run_id, limit))


async def _read_logs(flow_run_id: str, limit: int) -> list[LogLine]:
    async with shared_client() as client:
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


def delete(flow_run_id: str) -> None:
    """Remove a flow run weflow just created and could not record (nothing half-written); gone already is fine."""
    on_server(lambda: _delete(flow_run_id))


async def _delete(flow_run_id: str) -> None:
    async with client() as prefect:
        try:
            await prefect.delete_flow_run(UUID(flow_run_id))
        except ObjectNotFound:
            pass


def cancel(flow_run_id: str) -> None:
    """Cancel a flow run: Cancelling while it runs (its worker stops it), else Cancelled at once."""
    on_server(lambda: _cancel(flow_run_id))


async def _cancel(flow_run_id: str) -> None:
    async with shared_client() as client:
        flow_run = await client.read_flow_run(UUID(flow_run_id))
        running = flow_run.state is not None and flow_run.state.is_running()
        await client.set_flow_run_state(UUID(flow_run_id), Cancelling() if running else Cancelled(), force=True)
