"""Flow runs and their schedule slots: when a schedule started a run, and tags that say what queued one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Literal
from uuid import UUID

from prefect.context import FlowRunContext

from weflow.prefect_gateway.client import client, on_server, shared_client


async def started_by(flow_run_id: str | None) -> tuple[Literal["schedule", "automation", "other"], datetime | None]:
    """Who started a flow run weflow did not create: a deployment's schedule (and its slot, the expected
    start), an automation (an event trigger), or anyone else (the Prefect UI, ``prefect deployment run``).
    The run this code runs in is the engine's, read when it started: no request to the server."""
    if flow_run_id is None:
        return "other", None
    context = FlowRunContext.get()
    flow_run = context.flow_run if context is not None else None
    if flow_run is None or str(flow_run.id) != flow_run_id:  # not the run this code runs in: ask the server
        async with shared_client() as prefect:
            flow_run = await prefect.read_flow_run(UUID(flow_run_id))
    if flow_run.auto_scheduled:
        return "schedule", flow_run.expected_start_time
    automated = flow_run.created_by is not None and flow_run.created_by.type == "AUTOMATION"
    return ("automation" if automated else "other"), None


def tag(flow_run_id: str, tags: Sequence[str]) -> None:
    """Add ``tags`` to a flow run (a backfill's runs carry ``backfill:<id>`` in the Prefect UI)."""
    on_server(lambda: _tag(flow_run_id, tags))


async def _tag(flow_run_id: str, tags: Sequence[str]) -> None:
    async with client() as prefect:
        flow_run = await prefect.read_flow_run(UUID(flow_run_id))
        await prefect.update_flow_run(UUID(flow_run_id), tags=[*flow_run.tags, *tags])
