"""Prefect deployments of the generic entrypoint, their work pool and queue, and crash detection.

The deploy service (``weflow.deploy``) says what each workflow's deployment should be, as a spec
whose keys are the API's names plus a ``version`` fingerprint; ``apply`` makes Prefect match the
specs: unchanged fingerprints are left alone, changed ones replaced whole, the rest removed.
"""

from __future__ import annotations

import os
from contextlib import suppress
from datetime import timedelta
from typing import Any, Literal
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import CronSchedule
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from weflow.errors import DeployError
from weflow.prefect_gateway import triggers
from weflow.prefect_gateway.client import on_server, shared_client

FLOW_NAME = "run_workflow"
CRASH_AUTOMATION = "weflow: crashed flow runs"
HEARTBEAT = "prefect.flow-run.heartbeat"
WATCH_ENDED = "weflow.flow-run.watch-ended"  # a run that sent a heartbeat ended (``crash_detection``)

Action = Literal["created", "updated", "unchanged", "removed"]
Applied = tuple[str, Action, UUID]  # workflow, what changed, deployment id


def work_pool() -> str:
    return os.environ.get("WEFLOW_WORK_POOL", "weflow")


def execution_queue() -> str:
    return os.environ.get("WORKFLOW_EXECUTION_QUEUE", "workflow-executions")


def heartbeat_seconds() -> int:
    """How often a deployed run tells Prefect it is alive (Prefect's minimum is 30 s)."""
    return max(30, int(os.environ.get("WEFLOW_HEARTBEAT_SECONDS", "30")))


def crash_after_seconds() -> int:
    """Silence after which a deployed run is declared CRASHED (default: three missed heartbeats)."""
    return max(10, int(os.environ.get("WEFLOW_CRASH_AFTER_SECONDS", str(3 * heartbeat_seconds()))))


def deployment_name(workflow: str) -> str:
    return f"{FLOW_NAME}/{workflow}"


def crash_detection() -> AutomationCore:
    """A Prefect automation: a run of the entrypoint silent for ``crash_after_seconds`` is CRASHED.

    A worker (or its flow process) killed mid-run leaves the flow run RUNNING forever: nothing is
    left to report the end. A deployed run sends a heartbeat event while it runs; this proactive
    trigger fires when a run that sent one sends neither another nor ``WATCH_ENDED`` in time, and
    sets it CRASHED, which ``weflow sync`` then mirrors into the catalog. Prefect refuses CRASHED
    for a run already in a final state, so a run that ended without ``WATCH_ENDED`` is left as it is.

    The watch is closed by ``WATCH_ENDED`` rather than by the run's final state, which every run sends: Prefect holds
    each such event of a run that opened no watch (in case its heartbeat arrives late), a write transaction of ~5
    statements on the server per run (~20 ms of its CPU). A run in a weflow worker's threads sends its first heartbeat
    only half a heartbeat period in (``worker._Engine``), so most runs there end before it and the automation sees
    none of their events at all; one that dies with its worker before is ended by the worker's supervisor, or by the
    next ``weflow worker`` on the home when the whole worker tree died (``weflow.workers``). The weflow worker sends
    ``WATCH_ENDED`` once a run that sent a heartbeat ended in its threads, or once a run's own process exited
    (``worker.WeflowWorker.run``; Prefect's worker then reports a process that did not exit cleanly CRASHED), and a
    supervisor once it ended the runs of a worker that died (``worker.crash``). Measured
    on 400-run drains, one weflow worker, alternated on fresh servers: the bucket per run cost ~14 ms of the server's
    CPU, the hold of the final states ~20 ms more.
    """
    within = crash_after_seconds()
    return AutomationCore(
        name=CRASH_AUTOMATION,
        description=f"weflow: a run_workflow flow run with no heartbeat for {within} s is marked CRASHED",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},  # type: ignore[dict-item]
            after={HEARTBEAT},
            expect={HEARTBEAT, WATCH_ENDED},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=within),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within} s: the worker or the flow process died",
            )
        ],
    )


async def _ensure_crash_detection(client: PrefectClient) -> None:
    wanted = crash_detection()
    found = await client.read_automations_by_name(CRASH_AUTOMATION)
    same = [a for a in found if AutomationCore.model_validate(a, from_attributes=True) == wanted]
    if same and len(found) == 1:
        return
    for stale in found:
        await client.delete_automation(stale.id)
    await client.create_automation(wanted)


POOL_TYPE = "weflow"  # the work pool's worker type: weflow's long-lived worker (worker.WeflowWorker)


def _pool_template() -> dict[str, Any]:
    """The ``weflow`` worker type's job template (the process worker's, plus ``isolation``), without importing it."""
    from weflow.prefect_gateway.worker import WeflowWorker  # ~0.1 s of Prefect's worker modules, deploy only

    return WeflowWorker.get_default_base_job_template()


async def _ensure_pool(client: PrefectClient) -> bool:
    """The execution pool (type ``weflow``) and queue; True when an older stack's pool was replaced.

    A pool made by an older weflow is of type ``process``: Prefect cannot change a pool's type, so
    it is deleted and made again (its queues go with it, so every deployment is made again too).
    One made meanwhile by another process (a `weflow worker` starting, another deploy) is taken as is.
    """
    try:
        found = await client.read_work_pool(work_pool())
    except ObjectNotFound:
        found = None
    replaced = found is not None and found.type != POOL_TYPE
    if replaced:
        await client.delete_work_pool(work_pool())
    if found is None or replaced:
        template = _pool_template()
        with suppress(ObjectAlreadyExists):
            await client.create_work_pool(WorkPoolCreate(name=work_pool(), type=POOL_TYPE, base_job_template=template))
    try:
        await client.read_work_queue_by_name(execution_queue(), work_pool_name=work_pool())
    except ObjectNotFound:
        with suppress(ObjectAlreadyExists):
            await client.create_work_queue(name=execution_queue(), work_pool_name=work_pool())
    return replaced


def managed(deployment: DeploymentResponse) -> bool:
    """Whether weflow manages ``deployment`` (the entrypoint's, tagged with a workflow; not prefect.yaml's): ``apply``
    never changes one in place, it replaces it (a new id) when its fingerprint changes."""
    return any(t.startswith("workflow:") for t in deployment.tags or [])


async def _existing(client: PrefectClient) -> dict[str, Any]:
    """The deployments weflow manages, by name."""
    found = await client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])))
    return {d.name: d for d in found if managed(d)}


async def _apply(specs: list[dict[str, Any]]) -> list[Applied]:
    results: list[Applied] = []
    async with shared_client() as client:
        replaced = await _ensure_pool(client)
        await _ensure_crash_detection(client)
        flow_id = await client.create_flow_from_name(FLOW_NAME)
        existing = await _existing(client)
        for spec in specs:
            current = existing.pop(spec["name"], None)
            if current is not None and current.version == spec["version"] and not replaced:
                results.append((spec["name"], "unchanged", current.id))
                continue
            if current is not None:  # schedules are replaced whole: drop the old ones first
                await client.delete_deployment(current.id)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                **{k: v for k, v in spec.items() if k not in ("schedules", "triggers")},  # the API's names
                concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
                enforce_parameter_schema=False,
                schedules=[
                    DeploymentScheduleCreate(schedule=CronSchedule(cron=s["cron"], timezone="UTC"), active=s["active"])
                    for s in spec["schedules"]
                ],
            )
            await triggers.attach(client, deployment_id, spec.get("triggers", []), current.id if current else None)
            results.append((spec["name"], "updated" if current is not None else "created", deployment_id))
        for name, stale in existing.items():  # archived, draft, deleted or gone from the catalog
            await triggers.detach(client, stale.id)
            await client.delete_deployment(stale.id)
            results.append((name, "removed", stale.id))
    return results


def apply(specs: list[dict[str, Any]]) -> list[Applied]:
    """Make the entrypoint's workflow deployments on this home's server exactly ``specs``; idempotent."""
    return on_server(lambda: _apply(specs))


async def find(client: PrefectClient, workflow: str) -> UUID:
    """The id of ``workflow``'s deployment."""
    try:
        found = await client.read_deployment_by_name(deployment_name(workflow))
    except ObjectNotFound:
        raise DeployError(f"workflow {workflow!r} has no deployment: run 'weflow deploy'") from None
    return found.id
