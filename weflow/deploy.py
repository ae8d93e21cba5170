"""Prefect deployments of the generic entrypoint: one per ACTIVE (or PAUSED) catalog workflow.

Each deployment runs ``weflow.flow_entry.run_workflow`` with the workflow's name as a fixed
parameter, its cron schedules, a run form for its inputs, and a fingerprint of all that in its
``version`` field, so deploying twice changes nothing and a changed definition is picked up by
the entrypoint without any code being redeployed.

The entrypoint is a module (Prefect imports it from the installed package), and the deployment
names no source folder or working directory: a worker needs weflow installed, not a checkout. It
carries the weflow version that made it (a ``weflow-version:X`` tag); a run on a
worker with another version fails with that said (``check_version``), not with a crash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as distribution_version
from typing import Any
from uuid import UUID

from weflow.config import settings
from weflow.core.entities import Status, Workflow
from weflow.core.model import Definition
from weflow.errors import DeployError
from weflow.prefect_gateway import deployments, triggers
from weflow.prefect_gateway.deployments import (
    CRASH_AUTOMATION,
    FLOW_NAME,
    Action,
    deployment_name,
    execution_queue,
    heartbeat_seconds,
    work_pool,
)
from weflow.secrets import organization
from weflow.workflows import Scope, list_workflows, version

# A module and its flow: Prefect imports it (``import_object``) from wherever weflow is installed. The deployment's
# path is "." (where the worker runs, which Prefect then copies onto itself: nothing), never a source folder;
# a weflow worker loads ``Path(".") / ENTRYPOINT``, which is ENTRYPOINT again, once for all its runs.
ENTRYPOINT = "weflow.flow_entry:run_workflow"
VERSION_TAG = "weflow-version:"
# the deployment settings, re-exported: interfaces reach them through this service
__all__ = ["CRASH_AUTOMATION", "FLOW_NAME", "DeployError", "Deployed", "deploy", "deployment_name"]
__all__ += ["entrypoint_path", "execution_queue", "heartbeat_seconds", "job_env", "work_pool"]
__all__ += ["ENTRYPOINT", "check_version", "installed_version"]


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
            **({"enum": list(spec.allowed)} if spec.allowed else {}),  # a choice in the run form
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


def entrypoint_path() -> str:
    """The entrypoint a weflow worker loads once: the deployments' own, a module path (no file)."""
    return ENTRYPOINT


@cache
def installed_version() -> str:
    """The version of the weflow distribution this process imports (``0+unknown`` when it is not installed)."""
    try:
        return distribution_version("weflow")
    except PackageNotFoundError:
        return "0+unknown"


def check_version(tags: Iterable[str]) -> None:
    """Refuse a run deployed by another weflow version than this one (its ``weflow-version:`` tag)."""
    deployed = next((t.removeprefix(VERSION_TAG) for t in tags if t.startswith(VERSION_TAG)), None)
    mine = installed_version()
    if deployed is not None and deployed != mine:
        raise DeployError(
            f"this run was deployed with weflow {deployed} but this worker runs weflow {mine}: "
            f"install weflow=={deployed} on the worker, or run `weflow deploy` again with weflow {mine}"
        )


def job_env(api_url: str | None = None) -> dict[str, str]:
    """What the flow process needs to find the catalog and data, as absolute paths.

    A long-lived weflow worker sets the same in its own environment, so a deployment made here
    runs inside it; one whose env differs (another catalog or API) runs in a process of its own.

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
    workflow: Workflow, definition: Definition, version_number: int, api_url: str | None = None, org: str = ""
) -> dict[str, Any]:
    active = workflow.status is Status.ACTIVE
    spec: dict[str, Any] = {
        "name": workflow.name,
        "description": definition.description or f"weflow workflow {workflow.name}",
        "parameters": {"workflow": workflow.name},
        "parameter_openapi_schema": parameter_schema(definition),
        "tags": ["weflow", f"workflow:{workflow.name}", f"version:{version_number}", VERSION_TAG + installed_version()],
        "work_pool_name": work_pool(),
        "work_queue_name": execution_queue(),
        "entrypoint": ENTRYPOINT,
        "path": ".",
        "job_variables": {
            "env": job_env(api_url),
            "isolation": definition.settings.isolation,  # inside the weflow worker, or a fresh process
        },
        "paused": not active,
        "concurrency_limit": definition.settings.max_concurrent_runs,
        "schedules": [{"cron": c, "active": active} for c in definition.schedule],
        "triggers": triggers.specs(workflow.name, org, definition.triggers, active),  # Prefect automations
    }
    spec["version"] = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
    return spec


def deploy(scope: Scope, api_url: str | None = None) -> list[Deployed]:
    """Bring Prefect's deployments in line with the catalog; idempotent.

    ``api_url``: runs load definitions from, and report to, the weflow API there (workers on
    other machines, with ``WEFLOW_API_KEY``); by default they use the catalog file directly.
    """
    wanted = [w for w in list_workflows(scope) if w.status in (Status.ACTIVE, Status.PAUSED)]
    specs, org = [], organization(scope) if wanted else ""
    for wf in wanted:
        ver = version(wf.name, scope)
        specs.append(_spec(wf, ver.definition, ver.number, api_url, org))
    paused = {s["name"]: s["paused"] for s in specs}
    return [Deployed(name, action, id_, paused.get(name, False)) for name, action, id_ in deployments.apply(specs)]


def skipped(scope: Scope) -> list[tuple[str, str]]:
    """The workflows ``deploy`` leaves without a deployment, each with why (a DRAFT is not deployed until ACTIVE)."""
    why = {
        Status.DRAFT: "DRAFT: set status ACTIVE (or PAUSED) to deploy it",
        Status.ARCHIVED: "ARCHIVED: archived workflows are not deployed",
    }
    return [(w.name, why.get(w.status, w.status.value)) for w in list_workflows(scope) if w.status in why]
