"""Running a plan in this process with no Prefect server: steps one after another, no flow, no task runs.

For workflow tests (``weflow test``): the same ``PlanRun`` and in-process step executor as a real run
(node configs, contracts, records, failures), without the Prefect task around each step, so nothing
needs an API. Prefect's run logger is disabled (``disable_run_logger``, Prefect's own way to call task
code outside a run); contract warnings land in the records. No API is reachable inside: with no
``PREFECT_API_URL`` a contract failure's table artifact started an ephemeral server (~10 s) here, so
the URL is unset and ephemeral mode off (the executor skips the artifact). No timeouts or retries.
"""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from prefect.logging import disable_run_logger
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings

from weflow.compile.plan import Plan
from weflow.core.entities import RunState
from weflow.engine.executors import InProcess
from weflow.engine.runtime import PlanResult, PlanRun, RunSpec
from weflow.nodes.base import NodeType
from weflow.nodes.stop import settle


async def _run(run: PlanRun) -> PlanResult:
    for step in run.plan.steps:  # topological order: every input step has ended
        if any(e.source not in run.succeeded for e in step.inputs):
            for node in step.nodes:
                run.records[node].status = RunState.SKIPPED
            continue
        try:
            await run.attempt(step)
        except Exception as exc:
            run.fail(step, exc)  # the engine's one way to record a failed step
            continue
        run.succeeded.add(step.root)
    settle(run.threads, run.stop)
    return run.result()


def run_plan(plan: Plan, types: Mapping[str, NodeType], spec: RunSpec) -> PlanResult:
    """Run ``plan`` to its end in this process, keeping the outputs ``spec.keep`` names."""
    run = PlanRun(plan, types, spec, InProcess())
    with _no_api():
        return asyncio.run(_run(run))


@contextmanager
def _no_api() -> Iterator[None]:
    """No Prefect API, no ephemeral server, no run logger, no warning about artifacts outside a run."""
    off = {PREFECT_SERVER_ALLOW_EPHEMERAL_MODE: False}
    with (
        temporary_settings(updates=off, restore_defaults={PREFECT_API_URL}),
        disable_run_logger(),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore", FutureWarning)
        yield
