"""A deployment's event triggers as Prefect automations owned by the deployment.

The deploy service gives each trigger as plain data (the fields of Prefect's
``DeploymentEventTrigger``: ``name``, ``expect``, ``match``, ``parameters``, ``enabled``); here they
become automations whose action runs the deployment, owned by it (``prefect.deployment.<id>``), so
Prefect lists them on the deployment and they go when it is replaced or removed. This is what
``prefect deploy`` does with a ``triggers:`` section (``prefect.cli.deploy._triggers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.events import DeploymentEventTrigger, Event, get_events_client
from prefect.events.schemas.events import Resource

from weflow.core.triggers import Trigger
from weflow.prefect_gateway.client import on_server

FILE_EVENT = "weflow.file.arrived"
ENDED = "weflow.execution."  # + succeeded | failed: emitted by the run engine (``engine.results.announce``)
_STATUSES = {"succeeded": ["succeeded"], "failed": ["failed"], "any": ["succeeded", "failed"]}
# what an ``after`` trigger passes on: Jinja over the upstream's event, rendered by Prefect when it runs the deployment
_FIELDS = {
    "execution_id": "{{ event.resource['weflow.execution-id'] }}",
    "status": "{{ event.resource['weflow.status'] }}",
    "workflow": "{{ event.resource['weflow.workflow'] }}",
}


def _field(source: str) -> str:
    if source.startswith("inputs."):
        return "{{ event.payload.inputs['%s'] }}" % source.removeprefix("inputs.")  # noqa: UP031 (Jinja braces)
    return _FIELDS[source]


def specs(workflow: str, organization: str, triggers: Sequence[Trigger], active: bool) -> list[dict[str, Any]]:
    """Each trigger as a ``DeploymentEventTrigger``'s fields: the events it waits on and the run it starts.

    Only events of the same organization match; a PAUSED workflow's automations are disabled.
    """
    made = []
    for i, trigger in enumerate(triggers):
        common = {"weflow.organization": organization}
        if trigger.after is not None:
            after = trigger.after
            expect = [ENDED + s for s in _STATUSES[after.status]]
            match = {"prefect.resource.id": "weflow.execution.*", "weflow.workflow": after.workflow, **common}
            inputs = {name: _field(source) for name, source in after.inputs.items()}
            name = f"weflow: {workflow} after {after.workflow} {after.status}"
        else:
            assert trigger.file is not None
            expect = [FILE_EVENT]
            match = {"prefect.resource.id": "weflow.file.*", "weflow.workflow": workflow, "weflow.trigger": str(i)}
            match.update(common)
            inputs = {trigger.file.input: "{{ event.resource['weflow.path'] }}"}
            name = f"weflow: {workflow} on new file {trigger.file.pattern}"
        made.append({
            "name": name,
            "description": f"weflow trigger {i} of workflow {workflow!r}",
            "enabled": active,
            "expect": expect,
            "match": match,
            "parameters": {"workflow": workflow, "input_data": inputs},
        })  # fmt: skip
    return made


def automations(deployment_id: UUID, triggers: Sequence[dict[str, Any]]) -> list[Any]:
    """The automations (``AutomationCore``) that run ``deployment_id`` on each trigger's events."""
    made = []
    for spec in triggers:
        trigger = DeploymentEventTrigger.model_validate({**spec, "posture": "Reactive", "threshold": 1})
        trigger.set_deployment_id(deployment_id)
        made.append(trigger.as_automation())
    return made


async def attach(
    client: PrefectClient, deployment_id: UUID, triggers: Sequence[dict[str, Any]], replaced: UUID | None = None
) -> None:
    """Make ``deployment_id``'s automations exactly ``triggers`` (dropping those of the deployment it ``replaced``)."""
    for owner in {deployment_id, *([replaced] if replaced else [])}:
        await client.delete_resource_owned_automations(f"prefect.deployment.{owner}")
    for automation in automations(deployment_id, triggers):
        await client.create_automation(automation)


async def detach(client: PrefectClient, deployment_id: UUID) -> None:
    """Drop a removed deployment's automations."""
    await client.delete_resource_owned_automations(f"prefect.deployment.{deployment_id}")


Arrival = tuple[str, str, int, str]  # workflow, organization, trigger index, path


def files_arrived(arrivals: Sequence[Arrival]) -> None:
    """Tell Prefect each new file arrived, one event each (sent before this returns): their automations run."""
    if arrivals:
        on_server(lambda: _send(arrivals))


async def _send(arrivals: Sequence[Arrival]) -> None:
    async with get_events_client() as events:
        for workflow, organization, trigger, path in arrivals:
            resource = {
                "prefect.resource.id": f"weflow.file.{organization}.{workflow}.{trigger}.{path}",
                "prefect.resource.name": path,
                "weflow.workflow": workflow,
                "weflow.organization": organization,
                "weflow.trigger": str(trigger),
                "weflow.path": path,
            }
            await events.emit(Event(event=FILE_EVENT, resource=Resource(resource)))
