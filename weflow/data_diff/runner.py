"""Running two versions of a workflow on the same input, in this process, and comparing node by node.

Both versions run through ``engine.offline`` (no Prefect server, nothing recorded), unfused so every
node's frame is kept, every sink a pass-through (nothing is written: its "output" is what it would
write). The input is read once: version A's sources read their first ``rows`` rows and each source
of B defined as in A gets A's frame, so a change in the frames comes from the definitions, never
from the data moving between two reads; with ``samples`` both read the pinned samples
(``samples.load_pins``, stale pins too: the point is the same rows for both).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import polars as pl

from weflow import samples as pins
from weflow import secrets, workflows
from weflow.compile import plan as planning
from weflow.core.diff import diff as structural_diff
from weflow.core.entities import RunState, Workflow
from weflow.core.model import Definition, Node
from weflow.data_diff.compare import compare
from weflow.data_diff.model import DataDiff, NodeDiff
from weflow.engine.offline import given_sources, run_plan
from weflow.engine.runtime import PlanResult, RunSpec
from weflow.errors import DefinitionError, NotFoundError
from weflow.execution.lifecycle import resolve_inputs
from weflow.nodes.registry import node_types
from weflow.workflows import Scope

DEFAULT_ROWS = 1_000
MAX_ROWS = 1_000_000
EXAMPLES = 3
T = TypeVar("T")


@dataclass(frozen=True)
class Side:
    """One version as run: its definition, its kept frames, its run result."""

    number: int
    definition: Definition
    result: PlanResult

    def frame(self, node: str) -> pl.DataFrame | None:
        return self.result.outputs.get(node)

    def why_missing(self, node: str) -> str:
        record = next((r for r in self.result.records if r.node == node), None)
        if record is None or record.status is RunState.SKIPPED:
            return f"not run in version {self.number} (an upstream node failed)"
        return f"failed in version {self.number}: {record.error or record.status.value}"


def for_versions(
    workflow: str | Workflow,
    a: int,
    b: int,
    scope: Scope,
    *,
    key: Sequence[str] | None = None,
    rows: int | None = None,
    samples: bool = False,
    input_data: Mapping[str, Any] | None = None,
    examples: int = EXAMPLES,
) -> DataDiff:
    """The data diff of versions ``a`` and ``b``: both run on the first ``rows`` rows of each source (or on
    the pinned ``samples``, stale or not: the same rows for both), compared per node both have; ``key``
    matches rows (else each node's contract unique column, else rows are multisets)."""
    rows = DEFAULT_ROWS if rows is None else rows
    if not 1 <= rows <= MAX_ROWS:
        raise DefinitionError([("rows", f"must be between 1 and {MAX_ROWS}, not {rows}")])
    wf = workflow if isinstance(workflow, Workflow) else workflows.get(workflow, scope)
    for number in (a, b):  # version_of reads 0 as the current version
        if not 1 <= number <= wf.current_version:
            raise NotFoundError(f"workflow {wf.name!r} has no version {number} (versions 1-{wf.current_version})")
    old, new = workflows.version_of(wf, scope, a).definition, workflows.version_of(wf, scope, b).definition
    key = [k.strip() for k in key or () if k.strip()] or None
    pinned = _pinned(scope, wf.name, old, new) if samples else {}
    side_a = _run(old, a, scope, pinned, rows, input_data)
    given = pinned if samples else _same_sources(side_a, new)
    side_b = _run(new, b, scope, given, rows, input_data)
    structure = structural_diff(old, new)
    shared = [n.name for n in new.nodes if n.name not in structure.nodes_added]
    return DataDiff(
        workflow=wf.name,
        a=a,
        b=b,
        input="the pinned samples" if samples else f"the first {rows} rows of each source",
        key=key,
        nodes_added=list(structure.nodes_added),
        nodes_removed=list(structure.nodes_removed),
        error_a=_error(side_a),
        error_b=_error(side_b),
        nodes=[_node(name, side_a, side_b, key, examples) for name in shared],
    )


def _pinned(scope: Scope, name: str, old: Definition, new: Definition) -> dict[str, pl.DataFrame]:
    """The pinned frame of every source of either version (a pin is per source node, whichever version made it)."""
    return {**pins.load_pins(scope, name, old, allow_stale=True), **pins.load_pins(scope, name, new, allow_stale=True)}


def _error(side: Side) -> str | None:
    error = side.result.error
    if error is None:
        return None
    text = str(error).strip().splitlines()
    return f"node {side.result.error_node!r}: {text[0] if text else type(error).__name__}"


def _node(name: str, side_a: Side, side_b: Side, key: list[str] | None, examples: int) -> NodeDiff:
    fa, fb = side_a.frame(name), side_b.frame(name)
    if fa is None or fb is None:
        notes = [s.why_missing(name) for s, f in ((side_a, fa), (side_b, fb)) if f is None]
        rows = {"rows_a": None if fa is None else fa.height, "rows_b": None if fb is None else fb.height}
        return NodeDiff(node=name, **rows, note="; ".join(notes))
    matched, note = _key_for(name, fa, fb, key, side_a, side_b)
    found = compare(name, fa, fb, matched, examples)
    return found.model_copy(update={"note": "; ".join(n for n in (note, found.note) if n)})


def _key_for(
    name: str, fa: pl.DataFrame, fb: pl.DataFrame, key: list[str] | None, side_a: Side, side_b: Side
) -> tuple[list[str] | None, str]:
    """The columns to match rows of ``name`` on, and a note when there are none."""
    if key:
        for column in key:
            for side, frame, other in ((side_a, fa, fb), (side_b, fb, fa)):
                if column not in frame.columns and column in other.columns:
                    problem = (
                        f"column {column!r} is not an output of node {name!r} in version {side.number} "
                        f"(its columns: {', '.join(frame.columns)})"
                    )
                    raise DefinitionError([("key", problem)], workflow=side.definition.name)
        if all(c in fa.columns for c in key):
            return key, ""
        return None, f"no key column {', '.join(key)} here: rows compared as multisets"
    for side in (side_b, side_a):
        contract = side.definition.node(name).contract
        unique = [c for c, spec in (contract.columns if contract else {}).items() if spec.unique]
        for column in unique:
            if column in fa.columns and column in fb.columns:
                return [column], ""
    return None, ""


def _same_sources(side_a: Side, new: Definition) -> dict[str, pl.DataFrame]:
    """A's source frames for B's sources defined exactly as in A (the same input, read once)."""
    fed = {c.to.node for c in new.connections}
    out = {}
    for node in new.nodes:
        frame = side_a.frame(node.name)
        if node.name not in fed and frame is not None and _node_or_none(side_a.definition, node.name) == node:
            out[node.name] = frame
    return out


def _node_or_none(definition: Definition, name: str) -> Node | None:
    return next((n for n in definition.nodes if n.name == name), None)


def _run(
    definition: Definition,
    number: int,
    scope: Scope,
    given: dict[str, pl.DataFrame],
    rows: int,
    input_data: Mapping[str, Any] | None,
) -> Side:
    """Run ``definition``, keeping every node's frame: sources in ``given`` give their frames; sinks write nothing."""
    part, types = given_sources(definition, node_types(), given)
    spec = RunSpec(
        workflow=definition.name,
        params=resolve_inputs(definition, input_data),
        data_roots=workflows.data_roots(scope),  # the scope's organization's, as a real run reads
        keep=frozenset(n.name for n in definition.nodes),
        limit=rows,
        organization=secrets.organization(scope) if secrets.referenced(definition) else None,
    )
    plan = planning.build(part, types, fuse=False)  # unfused: every node's frame is kept
    return Side(number, definition, _off_loop(lambda: run_plan(plan, types, spec)))


def _off_loop(fn: Callable[[], T]) -> T:
    """``fn()`` here, or in a thread when this thread runs an event loop (a notebook's): ``asyncio.run`` needs none."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return fn()
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()
