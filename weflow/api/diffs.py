"""The diff of two versions of a workflow: what the definition changes, and (``data=true``) what its nodes output."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from weflow import workflows
from weflow.api.definitions import WorkflowId, find
from weflow.api.http import StrictJSONRoute, documented
from weflow.api.models import Body
from weflow.api.security import Caller
from weflow.data_diff import DataDiff
from weflow.data_diff.runner import DEFAULT_ROWS, for_versions
from weflow.workflows import MAX_ID

MAX_API_ROWS = 100_000  # both versions run in the API process: a bounded read
router = APIRouter(route_class=StrictJSONRoute, tags=["workflows"], responses=documented(400, 401, 413, 422, 503))
VersionNumber = Annotated[int, Path(ge=1, le=MAX_ID, description="a version number of the workflow")]


class NodeChangeOut(Body):
    node: str
    fields: list[str]


class StructureOut(Body):
    """What the definition changes: nodes, connections and top-level fields."""

    nodes_added: list[str]
    nodes_removed: list[str]
    nodes_changed: list[NodeChangeOut]
    connections_added: list[str]
    connections_removed: list[str]
    fields_changed: list[str]
    schedule: list[list[str]] | None
    contracts_changed: list[str]


class VersionsDiff(Body):
    """Versions ``a`` and ``b`` compared: always the definition, the node outputs when asked (``data=true``)."""

    a: int
    b: int
    structure: StructureOut
    data: DataDiff | None = None


@router.get("/workflows/{workflow_id}/versions/{a}/diff/{b}", response_model=VersionsDiff, responses=documented(404))
def diff_versions(
    scope: Caller,
    workflow_id: WorkflowId,
    a: VersionNumber,
    b: VersionNumber,
    data: Annotated[bool, Query(description="also run both versions on the same input and compare nodes")] = False,
    key: Annotated[
        str | None, Query(max_length=1000, description="columns matching rows, comma-separated (with data=true)")
    ] = None,
    samples: Annotated[bool, Query(description="run both on the pinned samples (with data=true)")] = False,
    rows: Annotated[int, Query(ge=1, le=MAX_API_ROWS, description="rows each source reads (with data=true)")] = (
        DEFAULT_ROWS
    ),
) -> VersionsDiff:
    """What changed from version ``a`` to ``b``; with ``data=true`` both run in-process on the first ``rows`` rows
    of each source (nothing written, nothing recorded) and each shared node's output is compared."""
    workflow = find(scope, workflow_id)
    structure = StructureOut.model_validate(workflows.diff(workflow.name, a, b, scope).to_dict())
    columns = [c for c in (key or "").split(",") if c.strip()] or None
    found = for_versions(workflow, a, b, scope, key=columns, rows=rows, samples=samples) if data else None
    return VersionsDiff(a=a, b=b, structure=structure, data=found)
