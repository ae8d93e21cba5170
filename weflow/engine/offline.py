"""Running a plan in this process with no Prefect server: steps one after another, no flow, no task runs.

For workflow tests (``weflow test``): the same ``PlanRun`` and in-process step executor as a real run
(node configs, contracts, records, failures), without the Prefect task around each step, so nothing
needs an API. Prefect's run logger is disabled (``disable_run_logger``, Prefect's own way to call task
code outside a run); contract warnings land in the records. No API is reachable inside: with no
``PREFECT_API_URL`` a contract failure's table artifact started an ephemeral server (~10 s) here, so
the URL is unset and ephemeral mode off (the executor skips the artifact). No timeouts or retries.
``given_sources`` makes the definition such a run needs: chosen sources read given frames (a test's rows,
pinned samples), sinks write nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import polars as pl
from prefect.logging import disable_run_logger
from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE, temporary_settings

from weflow.compile.plan import Plan
from weflow.core.entities import RunState
from weflow.core.model import Definition, Node
from weflow.engine.executors import InProcess
from weflow.engine.runtime import PlanResult, PlanRun, RunSpec
from weflow.nodes.base import NodeConfig, NodeInputs, NodeType, RunContext
from weflow.nodes.stop import settle
from weflow.prefect_gateway.client import blocking


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
        return blocking(_run(run))  # in a thread of its own where a loop already runs (a notebook's kernel)


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


class _NoConfig(NodeConfig):
    """The config of a stand-in node (given rows, a sink that writes nothing)."""


def given_sources(
    definition: Definition, types: Mapping[str, NodeType], frames: Mapping[str, pl.DataFrame]
) -> tuple[Definition, dict[str, NodeType]]:
    """``definition`` with each node named in ``frames`` reading those rows and every sink writing nothing.

    The nodes become stand-in types (``read_csv:given``, ``write_parquet:unwritten``) added to a copy
    of ``types``; their names, connections and contracts stay, so records and outputs read the same.
    """

    def given(config: Any, inputs: NodeInputs, ctx: RunContext) -> pl.LazyFrame:
        return frames[ctx.node].lazy()

    found = dict(types)
    nodes = []
    for node in definition.nodes:
        if node.name in frames:
            node = _stand_in(node, found, "given", given, "source")
        elif found[node.type].kind == "sink":
            node = _stand_in(node, found, "unwritten", _pass_through, "transform")
        nodes.append(node)
    return definition.model_copy(update={"nodes": tuple(nodes)}), found


def _pass_through(config: Any, inputs: NodeInputs, ctx: RunContext) -> pl.LazyFrame:
    return inputs.one()


def _stand_in(node: Node, types: dict[str, NodeType], role: str, run: Any, kind: Any) -> Node:
    name = f"{node.type}:{role}"
    types[name] = replace(types[node.type], name=name, config=_NoConfig, run=run, kind=kind, lazy=True, check=None)
    return node.model_copy(update={"type": name, "config": {}})
