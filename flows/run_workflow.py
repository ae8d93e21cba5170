"""The generic Prefect entrypoint: every weflow deployment runs this flow (DESIGN decision 2).

It loads the pinned definition from the catalog, compiles it and runs it inside this flow run,
so a workflow saved from a notebook is deployable with no new file.
"""

from __future__ import annotations

from typing import Any

from prefect import flow

from weflow import execution
from weflow.config import settings

# Named storage, never written (persist_result=False): without it Prefect's engine asks the server for its
# default result storage (GET /admin/storage) for the flow run and again for its task run, every run.
RESULTS = settings().runs_dir / "prefect-results"


@flow(
    name="run_workflow", flow_run_name="{workflow}", persist_result=False, validate_parameters=False,
    result_storage=RESULTS,
)  # fmt: skip
async def run_workflow(
    workflow: str,
    input_data: dict[str, Any] | None = None,
    version: int | None = None,
    execution_id: str | None = None,
) -> dict[str, Any]:
    """Run a catalog workflow (its current version unless one is given) and record it."""
    result = await execution.run_deployed(workflow, input_data, version, execution_id)
    return {"execution_id": result.execution.id, "status": result.execution.status.value}
