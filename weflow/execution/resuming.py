"""Resume planning: run an ended execution again, reusing the outputs of the steps that succeeded."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

from weflow.compile import plan as planning
from weflow.core.entities import Execution, Mode, RunState
from weflow.core.graph import downstream, upstream
from weflow.core.model import Definition
from weflow.errors import ConflictError, DefinitionError
from weflow.execution.lifecycle import RunResult, execute
from weflow.nodes.registry import node_types
from weflow.workflows import Scope, check, get, version


def resume(execution_id: str, scope: Scope, *, from_node: str | None = None, latest_version: bool = False) -> RunResult:
    """Run a failed (or any ended) execution again, reusing the outputs of the steps that succeeded.

    The new execution is linked to the old one, on the old one's pinned version unless
    ``latest_version``; it re-runs the failed steps, ``from_node`` and everything downstream of
    it, and any step whose output is not on disk. On the latest version a step is reused only
    if it and everything upstream of it are unchanged.
    """
    old = scope.catalog.execution(execution_id, scope.user.organization_id)
    if not old.status.final:
        raise ConflictError(f"execution {execution_id} is still {old.status.value}: wait for it or cancel it")
    if old.status is RunState.SUCCEEDED and from_node is None:
        raise ConflictError(f"execution {execution_id} succeeded: nothing to resume (name a node with --from)")
    before = check(version(old.workflow, scope, old.version).definition, scope)
    pinned = version(old.workflow, scope, None if latest_version else old.version)
    definition = check(pinned.definition, scope)
    names = {n.name for n in definition.nodes}
    if from_node is not None and from_node not in names:
        raise DefinitionError(
            [("from", f"no node {from_node!r} in {old.workflow} v{pinned.number} (nodes: {', '.join(sorted(names))})")],
            workflow=old.workflow,
        )
    reuse = _reusable(old, before, definition, pinned.number, from_node)
    wf = get(old.workflow, scope)
    execution = Execution(
        id=str(uuid.uuid4()), workflow_id=wf.id, workflow=wf.name, version=pinned.number, mode=Mode.MANUAL,
        user_id=scope.user.id, status=RunState.QUEUED, input_data=old.input_data, created_at=datetime.now(UTC),
        timeout_seconds=old.timeout_seconds, resumed_from=old.id,
    )  # fmt: skip
    return execute(definition, execution, scope=scope, reuse=reuse, from_node=from_node)


def _reusable(
    old: Execution, before: Definition, definition: Definition, number: int, from_node: str | None
) -> dict[str, str]:
    """Step root -> the Parquet file of its output, for every step the new run may skip."""
    rerun = downstream(definition, from_node) if from_node is not None else set()
    previous = {n.node: n for n in old.nodes}
    reuse: dict[str, str] = {}
    for step in planning.build(definition, node_types()).steps:
        records = [previous.get(n) for n in step.nodes]
        path = previous[step.root].output_path if step.root in previous else None
        if rerun.intersection(step.nodes) or path is None or not Path(path).is_file():
            continue
        if not all(r is not None and r.status in (RunState.SUCCEEDED, RunState.REUSED) for r in records):
            continue
        if number != old.version and not _same_lineage(before, definition, step.root):
            continue
        reuse[step.root] = path
    return reuse


def _same_lineage(before: Definition, after: Definition, node: str) -> bool:
    """``node`` and everything upstream of it are the same in both definitions."""
    lineage = upstream(after, node)
    if node not in {n.name for n in before.nodes} or upstream(before, node) != lineage:
        return False
    same_nodes = all(before.node(n) == after.node(n) for n in lineage)
    wires = {(c.from_, c.to) for c in after.connections if c.to.node in lineage}
    return same_nodes and wires == {(c.from_, c.to) for c in before.connections if c.to.node in lineage}
