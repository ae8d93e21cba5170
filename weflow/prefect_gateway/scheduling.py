"""Flow runs and their schedule slots: when a schedule started a run, and tags that say what queued one."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from prefect.client.orchestration import get_client

from weflow.prefect_gateway.client import client, on_server


async def scheduled_at(flow_run_id: str | None) -> datetime | None:
    """The slot of a flow run a deployment's schedule started (its expected start); None for any other run."""
    if flow_run_id is None:
        return None
    async with get_client() as prefect:
        flow_run = await prefect.read_flow_run(UUID(flow_run_id))
    return flow_run.expected_start_time if flow_run.auto_scheduled else None


def tag(flow_run_id: str, tags: Sequence[str]) -> None:
    """Add ``tags`` to a flow run (a backfill's runs carry ``backfill:<id>`` in the Prefect UI)."""
    on_server(lambda: _tag(flow_run_id, tags))


async def _tag(flow_run_id: str, tags: Sequence[str]) -> None:
    async with client() as prefect:
        flow_run = await prefect.read_flow_run(UUID(flow_run_id))
        await prefect.update_flow_run(UUID(flow_run_id), tags=[*flow_run.tags, *tags])
