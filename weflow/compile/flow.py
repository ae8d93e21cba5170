"""A plan becomes a Prefect flow: async (no heartbeat join), no result persistence, timed out."""

from __future__ import annotations

from typing import Any

from prefect import Flow, flow

from weflow.compile.runtime import PlanResult, PlanRun
from weflow.core.entities import RunState


class RunFailed(Exception):
    """The flow's run did not succeed; the PlanRun holds the records."""


def compile_flow(run: PlanRun, timeout_seconds: float, name: str | None = None) -> Flow[..., Any]:
    """A flow named after the workflow whose body runs every step of ``run``."""

    async def body(execution_id: str, input_data: dict[str, Any] | None = None) -> PlanResult:
        result = await run.run()
        if result.status is not RunState.SUCCEEDED:
            raise RunFailed(str(result.error) if result.error else result.status.value)
        return result

    extra: dict[str, Any] = {}
    if run.spec.dask is not None:
        from weflow.compile.remote import dask_runner

        extra["task_runner"] = dask_runner(run.spec.dask)
    decorate = flow(
        **extra,
        name=name or run.plan.definition.name,
        timeout_seconds=timeout_seconds,
        persist_result=False,
        validate_parameters=False,
        log_prints=True,
    )
    return decorate(body)  # type: ignore[return-value]
