"""A run becomes a Prefect flow: async (no heartbeat join), no result persistence, timed out.

The flow's body is the run engine's ``run`` (``engine.runtime.PlanRun.run``), passed in: compile
knows the shape of its outcome, not the engine. ``prefect_gateway.client.run_flow`` runs the flow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from prefect import Flow, flow

from weflow.config import settings
from weflow.core.entities import RunState


class Outcome(Protocol):
    """What a run's body returns: its status, and the error that ended it."""

    @property
    def status(self) -> RunState: ...

    @property
    def error(self) -> BaseException | None: ...


class RunFailed(Exception):
    """The flow's run did not succeed; the run engine holds the records."""


def compile_flow(
    body: Callable[[], Awaitable[Outcome]], name: str, timeout_seconds: float, task_runner: Any = None
) -> Flow[..., Any]:
    """A flow named after the workflow whose body awaits ``body()``; a run that did not succeed fails the flow."""

    async def run(execution_id: str, input_data: dict[str, Any] | None = None) -> Outcome:
        result = await body()
        if result.status is not RunState.SUCCEEDED:
            raise RunFailed(str(result.error) if result.error else result.status.value)
        return result

    extra: dict[str, Any] = {"task_runner": task_runner} if task_runner is not None else {}
    decorate = flow(
        **extra,
        name=name,
        timeout_seconds=timeout_seconds,
        persist_result=False,
        # Named storage, never written (persist_result=False): without it the engine asks the server for its
        # default result storage twice per flow run, each time through a new sync client.
        result_storage=settings().runs_dir / "prefect-results",
        validate_parameters=False,
        log_prints=True,
    )
    return decorate(run)  # type: ignore[return-value]
