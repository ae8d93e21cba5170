"""Prefect deployments of the generic entrypoint: one per ACTIVE (or PAUSED) catalog workflow.

Each deployment runs ``flows/run_workflow.py:run_workflow`` with the workflow's name as a fixed
parameter, its cron schedules, a run form for its inputs, and a fingerprint of all that in its
``version`` field, so deploying twice changes nothing and a changed definition is picked up by
the entrypoint without any code being redeployed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate, WorkPoolCreate
from prefect.client.schemas.filters import FlowFilter, FlowFilterName
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectNotFound

from weflow import server
from weflow.config import settings
from weflow.core.entities import Status, Workflow
from weflow.core.model import Definition
from weflow.errors import WeflowError
from weflow.workflows import Scope, list_workflows, version

FLOW_NAME = "run_workflow"
ENTRYPOINT = "flows/run_workflow.py:run_workflow"
ROOT = Path(__file__).resolve().parent.parent

Action = Literal["created", "updated", "unchanged", "removed"]


class DeployError(WeflowError):
    """A workflow could not be deployed or queued."""


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


CRASH_AUTOMATION = "weflow: crashed flow runs"
_FINAL_EVENTS = {f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Crashed", "Cancelled", "TimedOut")}


def crash_detection() -> AutomationCore:
    """A Prefect automation: a run of the entrypoint silent for ``crash_after_seconds`` is CRASHED.

    A worker (or its flow process) killed mid-run leaves the flow run RUNNING forever: nothing is
    left to report the end. Every deployed run sends a heartbeat event; this proactive trigger
    fires when a run that sent one sends neither another nor a final state in time, and sets it
    CRASHED, which ``weflow sync`` then mirrors into the catalog.
    """
    within = crash_after_seconds()
    return AutomationCore(
        name=CRASH_AUTOMATION,
        description=f"weflow: a run_workflow flow run with no heartbeat for {within} s is marked CRASHED",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": FLOW_NAME},  # type: ignore[dict-item]
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *_FINAL_EVENTS},
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


def deployment_name(workflow: str) -> str:
    return f"{FLOW_NAME}/{workflow}"


@dataclass(frozen=True)
class Deployed:
    workflow: str
    action: Action
    deployment_id: UUID | None = None
    paused: bool = False


def parameter_schema(definition: Definition) -> dict[str, Any]:
    """The run form the Prefect UI shows: the workflow's inputs, typed, with their defaults."""
    inputs = {
        key: {
            "type": spec.type,  # input type names are JSON Schema types (core/input_types)
            "title": key,
            "description": spec.description,
            **({"default": spec.default} if spec.default is not None else {}),
        }
        for key, spec in definition.inputs.items()
    }
    return {
        "type": "object",
        "title": "Parameters",
        "properties": {
            "workflow": {"type": "string", "title": "workflow", "default": definition.name, "position": 0},
            "input_data": {
                "type": "object",
                "title": "input_data",
                "position": 1,
                "properties": inputs,
                "required": [k for k, s in definition.inputs.items() if s.default is None],
                "default": {k: s.default for k, s in definition.inputs.items() if s.default is not None},
            },
            "version": {"anyOf": [{"type": "integer"}, {"type": "null"}], "title": "version", "position": 2},
        },
        "required": ["workflow"],
    }


def _job_env(api_url: str | None = None) -> dict[str, str]:
    """What the flow process needs to find the catalog and data, as absolute paths.

    With ``api_url`` the runs report to the weflow API instead: the job names no catalog, data
    roots or allow-list, so each worker applies its own (and holds its own API key).
    """
    if api_url:
        return {"WEFLOW_API_URL": api_url, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds())}
    cfg = settings()
    env = {
        "WEFLOW_CATALOG": str(cfg.catalog.resolve()),
        "WEFLOW_DATA_ROOTS": ":".join(str(r) for r in cfg.data_roots),
        "WEFLOW_SHARED_DATA_ROOTS": "true" if cfg.shared_data_roots else "false",
        "WEFLOW_RUNS_DIR": str(cfg.runs_dir.resolve()),
        "WEFLOW_ORG": cfg.organization,
        "WEFLOW_USER": cfg.user,
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(heartbeat_seconds()),
    }
    if cfg.python_node_modules:
        env["WEFLOW_PYTHON_NODE_MODULES"] = ",".join(cfg.python_node_modules)
    return env


def _spec(
    workflow: Workflow, definition: Definition, version_number: int, api_url: str | None = None
) -> dict[str, Any]:
    active = workflow.status is Status.ACTIVE
    spec: dict[str, Any] = {
        "name": workflow.name,
        "description": definition.description or f"weflow workflow {workflow.name}",
        "parameters": {"workflow": workflow.name},
        "parameter_openapi_schema": parameter_schema(definition),
        "tags": ["weflow", f"workflow:{workflow.name}", f"version:{version_number}"],
        "work_pool_name": work_pool(),
        "work_queue_name": execution_queue(),
        "entrypoint": ENTRYPOINT,
        "path": str(ROOT),
        "job_variables": {"working_dir": str(ROOT), "env": _job_env(api_url)},
        "paused": not active,
        "concurrency_limit": definition.settings.max_concurrent_runs,
        "schedules": [{"cron": c, "active": active} for c in definition.schedule],
    }
    spec["version"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return spec


async def _ensure_pool(client: PrefectClient) -> None:
    try:
        await client.read_work_pool(work_pool())
    except ObjectNotFound:
        await client.create_work_pool(WorkPoolCreate(name=work_pool(), type="process"))
    try:
        await client.read_work_queue_by_name(execution_queue(), work_pool_name=work_pool())
    except ObjectNotFound:
        await client.create_work_queue(name=execution_queue(), work_pool_name=work_pool())


async def _existing(client: PrefectClient) -> dict[str, Any]:
    """The deployments weflow manages: the entrypoint's, tagged with a workflow (not prefect.yaml's)."""
    found = await client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[FLOW_NAME])))
    return {d.name: d for d in found if any(t.startswith("workflow:") for t in d.tags or [])}


async def _deploy(scope: Scope, api_url: str | None) -> list[Deployed]:
    results: list[Deployed] = []
    async with get_client() as client:
        await _ensure_pool(client)
        await _ensure_crash_detection(client)
        flow_id = await client.create_flow_from_name(FLOW_NAME)
        existing = await _existing(client)
        wanted = [w for w in list_workflows(scope) if w.status in (Status.ACTIVE, Status.PAUSED)]
        for wf in wanted:
            ver = version(wf.name, scope)
            spec = _spec(wf, ver.definition, ver.number, api_url)
            current = existing.pop(wf.name, None)
            if current is not None and current.version == spec["version"]:
                results.append(Deployed(wf.name, "unchanged", current.id, spec["paused"]))
                continue
            if current is not None:  # schedules are replaced whole: drop the old ones first
                await client.delete_deployment(current.id)
            deployment_id = await client.create_deployment(
                flow_id=flow_id,
                **{k: v for k, v in spec.items() if k != "schedules"},  # the spec's keys are the API's names
                concurrency_options=ConcurrencyOptions(collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
                enforce_parameter_schema=False,
                schedules=[
                    DeploymentScheduleCreate(schedule=CronSchedule(cron=s["cron"], timezone="UTC"), active=s["active"])
                    for s in spec["schedules"]
                ],
            )
            action: Action = "updated" if current is not None else "created"
            results.append(Deployed(wf.name, action, deployment_id, spec["paused"]))
        for name, stale in existing.items():  # archived, draft, deleted or gone from the catalog
            await client.delete_deployment(stale.id)
            results.append(Deployed(name, "removed", stale.id))
    return results


def deploy(scope: Scope, api_url: str | None = None) -> list[Deployed]:
    """Bring Prefect's deployments in line with the catalog; idempotent.

    ``api_url``: runs load definitions from, and report to, the weflow API there (workers on
    other machines, with ``WEFLOW_API_KEY``); by default they use the catalog file directly.
    """
    api = server.ensure()
    with server.pointed_at(api.api_url):
        return server.blocking(_deploy(scope, api_url))


async def find_deployment(client: PrefectClient, workflow: str) -> UUID:
    try:
        found = await client.read_deployment_by_name(deployment_name(workflow))
    except ObjectNotFound:
        raise DeployError(f"workflow {workflow!r} has no deployment: run 'weflow deploy'") from None
    return found.id
