"""The Prefect side of weflow's one deployment entrypoint (``weflow.flow_entry.run_workflow``, DESIGN decision 2).

``entry_flow`` makes the entrypoint's body a Prefect flow with weflow's flow settings, so the module
that defines it (``weflow.flow_entry``, loaded by Prefect from the installed package) imports no
Prefect itself; ``run_tags`` are the tags of the flow run in progress (its deployment's, among them
the weflow version it was deployed with).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, flow
from prefect.context import FlowRunContext

from weflow.prefect_gateway.deployments import FLOW_NAME

P = ParamSpec("P")
R = TypeVar("R")


def entry_flow(results: Path) -> Callable[[Callable[P, Coroutine[Any, Any, R]]], Flow[P, Coroutine[Any, Any, R]]]:
    """The entrypoint flow: named ``run_workflow``, each run after its workflow, nothing persisted.

    ``results`` names storage that is never written (``persist_result=False``): without it Prefect's
    engine asks the server for its default result storage (GET /admin/storage) for the flow run and
    again for its task run, every run.
    """

    def wrap(fn: Callable[P, Coroutine[Any, Any, R]]) -> Flow[P, Coroutine[Any, Any, R]]:
        return flow(
            name=FLOW_NAME, flow_run_name="{workflow}", persist_result=False, validate_parameters=False,
            result_storage=results,
        )(fn)  # fmt: skip

    return wrap


def run_tags() -> list[str]:
    """The tags of the flow run in progress (none outside a flow run)."""
    context = FlowRunContext.get()
    return list(context.flow_run.tags) if context is not None and context.flow_run is not None else []
