"""The generic Prefect entrypoint: every weflow deployment runs this flow (DESIGN decision 2).

It loads the pinned definition from the catalog, compiles it and runs it inside this flow run,
so a workflow saved from a notebook is deployable with no new file. Deployments name it by module
path (``weflow.flow_entry.run_workflow``): Prefect imports it from the installed package, so a
worker needs no checkout; ``flows/run_workflow.py`` re-exports it for ``prefect.yaml``.
"""

from __future__ import annotations

from typing import Any

from weflow import deploy, execution
from weflow.config import settings
from weflow.prefect_gateway.entrypoint import entry_flow, run_tags


@entry_flow(settings().runs_dir / "prefect-results")
async def run_workflow(
    workflow: str,
    input_data: dict[str, Any] | None = None,
    version: int | None = None,
    execution_id: str | None = None,
) -> dict[str, Any]:
    """Run a catalog workflow (its current version unless one is given) and record it."""
    deploy.check_version(run_tags())  # deployed by another weflow version: fail saying so, before any work
    result = await execution.run_deployed(workflow, input_data, version, execution_id)
    return {"execution_id": result.execution.id, "status": result.execution.status.value}
