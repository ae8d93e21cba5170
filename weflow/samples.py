"""Pinned samples: a small Parquet sample of each source node's output, so a workflow can run without its sources.

A source is a node no connection feeds. ``pin`` takes each source's first N rows from a run's kept output
(``--from-execution``, when the run persisted it) or from a bounded read (the source alone, capped at N
rows on its lazy scan, in this process), and stores them in the catalog's samples folder
(``<catalog>.samples/<organization id>/<workflow id>/``: weflow's own state, which no node may read, one
folder per organization), indexed in the catalog (``catalog.samples``, migration 8) so that pins are
listed, scoped and purged with the workflow, as executions and versions are. A pin records the hash of
its source's definition (type and config): when the source changes, the pin is stale.

Contract for other services (data diff, the notebook API):

- ``load_pins(scope, name, definition=None, *, allow_stale=False) -> dict[str, pl.DataFrame]``: the
  pinned frame of every source of ``definition`` (default: the workflow's current version), by node
  name. Raises ``NotFoundError`` (unknown workflow, or a source with no pin: one line naming the node),
  ``ConflictError`` (a stale pin, naming the node; ``allow_stale`` returns it anyway, e.g. to run two
  versions on the same rows) and ``WeflowError`` (a pin's file missing or outside the samples folder).
  It reads files only; nothing runs.
- ``run_on(definition, frames, *, keep=(), input_data=None) -> PlanResult``: run ``definition`` in this
  process (``engine.offline``: no Prefect server, nothing recorded), each source named in ``frames``
  reading those rows and every sink writing nothing; ``keep`` names the nodes whose frames to return
  (default: the terminal nodes). Unfused, so every kept node's frame is there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from weflow.catalog.samples import Pin, Pins
from weflow.compile import plan as planning
from weflow.core import mermaid
from weflow.core.graph import upstream
from weflow.core.model import Definition, Node
from weflow.errors import ConflictError, NotFoundError, WeflowError
from weflow.files import write_addressed
from weflow.nodes.registry import node_types
from weflow.workflows import Scope, data_roots

if TYPE_CHECKING:  # the engine imports Prefect (~1.5 s): only reading a source or running pays for it
    from weflow.engine.runtime import PlanResult

DEFAULT_ROWS = 100
MAX_ROWS = 100_000  # a sample, not a copy: a pin is read whole into memory by every run on pins


@dataclass(frozen=True)
class SamplesRun:
    """A run on pinned samples: its definition, every node's record, the kept frames; nothing was recorded."""

    definition: Definition
    result: PlanResult

    @property
    def ok(self) -> bool:
        return self.result.error is None

    @property
    def outputs(self) -> dict[str, pl.DataFrame]:
        return self.result.outputs

    def __getitem__(self, node: str) -> pl.DataFrame:
        return self.result.outputs[node]

    def graph(self) -> str:
        """Mermaid text of the run: every node coloured by its state, with its rows out."""
        states = {
            r.node: mermaid.NodeState(r.status.value, f"{r.rows_out} rows" if r.rows_out is not None else "")
            for r in self.result.records
        }
        return mermaid.graph(*self.definition.outline(), states)

    def _repr_markdown_(self) -> str:
        status = "SUCCEEDED" if self.ok else f"FAILED at {self.result.error_node}: {self.result.error}"
        rows = ["| node | status | rows in | rows out |", "|---|---|---|---|"]
        rows += [f"| {r.node} | {r.status.value} | {_blank(r.rows_in)} | {_blank(r.rows_out)} |"
                 for r in self.result.records]  # fmt: skip
        head = f"**{self.definition.name}** on pinned samples — **{status}** (not recorded, no sink written)"
        return "\n\n".join([head, mermaid.markdown(self.graph()), "\n".join(rows)])


@dataclass(frozen=True)
class PinStatus:
    """One source of a workflow's current version and its pin (``pin`` None: not pinned)."""

    node: str
    pin: Pin | None
    stale: bool  # pinned from another definition of the source (or the node is no longer a source)

    @property
    def origin(self) -> str:
        if self.pin is None:
            return ""
        return f"execution {self.pin.execution_id}" if self.pin.execution_id else "bounded read"


def source_hash(node: Node) -> str:
    """The hash of a source's definition: its type and config (its name, contract and position do not count)."""
    text = json.dumps({"type": node.type, "config": node.config}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def sources(definition: Definition) -> list[Node]:
    """The nodes no connection feeds, in definition order."""
    fed = {c.to.node for c in definition.connections}
    return [n for n in definition.nodes if n.name not in fed]


def folder(scope: Scope, workflow_id: int) -> Path:
    """The samples folder of one workflow: beside the catalog, named after it (so nodes may never read it)."""
    catalog = scope.catalog.path.resolve()
    return catalog.with_name(catalog.name + ".samples") / str(scope.user.organization_id) / str(workflow_id)


def _pins(scope: Scope) -> Pins:
    return Pins(scope.catalog.path, scope.catalog.lock_timeout)


def _workflow(scope: Scope, name: str, version: int | None = None) -> tuple[int, int, Definition]:
    """The workflow's id, the version's number and definition (NotFoundError names what is missing)."""
    workflow, found = scope.catalog.workflow_version(scope.user.organization_id, name, version)
    return workflow.id, found.number, found.definition


# --- pinning ------------------------------------------------------------------------------------------


def pin(
    name: str, scope: Scope, rows: int = DEFAULT_ROWS, from_execution: str | None = None, node: str | None = None
) -> list[PinStatus]:
    """Pin the first ``rows`` rows of every source (or of ``node``) of ``name``; the new pins' statuses."""
    if not 1 <= rows <= MAX_ROWS:
        raise WeflowError(f"--rows {rows}: a sample holds 1 to {MAX_ROWS} rows")
    workflow_id, number, definition = _workflow(scope, name)
    kept: dict[str, str] = {}
    execution_id = None
    if from_execution is not None:
        run = scope.catalog.execution(from_execution, scope.user.organization_id)
        if run.workflow_id != workflow_id:
            raise NotFoundError(f"execution {from_execution!r} is a run of {run.workflow!r}, not of {name!r}")
        _, number, definition = _workflow(scope, name, run.version)
        kept = {n.node: n.output_path for n in run.nodes if n.output_path and Path(n.output_path).is_file()}
        execution_id = run.id
    chosen = sources(definition)
    if node is not None:
        chosen = [n for n in chosen if n.name == node]
        if not chosen:
            raise NotFoundError(f"{node!r} is not a source of {name!r} v{number} (sources: {_names(definition)})")
    frames = {n.name: pl.read_parquet(kept[n.name]).head(rows) for n in chosen if n.name in kept}
    read = [n for n in chosen if n.name not in kept]
    if read:
        frames |= bounded_read(definition, [n.name for n in read], rows, data_roots(scope))
    where = folder(scope, workflow_id)
    now = datetime.now(UTC)
    new = []
    for n in chosen:
        frame = frames[n.name]
        path = write_addressed(where, ".parquet", frame.write_parquet, label=n.name)
        columns = tuple((c, str(t)) for c, t in frame.schema.items())
        origin = execution_id if n.name in kept else None
        new.append(Pin(n.name, source_hash(n), path.name, frame.height, columns, number, origin, now))
    repository = _pins(scope)
    old = {p.path for p in repository.pins(workflow_id) if p.node in frames}
    repository.put_pins(workflow_id, new)
    _forget(where, old, repository.pinned_paths(workflow_id))
    return [PinStatus(p.node, p, stale=False) for p in new]


def bounded_read(
    definition: Definition, nodes: Iterable[str], rows: int, roots: tuple[Path, ...]
) -> dict[str, pl.DataFrame]:
    """The first ``rows`` rows of each source in ``nodes``, read alone in this process (its scan capped)."""
    from weflow.engine.offline import run_plan
    from weflow.engine.runtime import RunSpec
    from weflow.execution.lifecycle import resolve_inputs

    names = set(nodes)
    part = definition.model_copy(
        update={"nodes": tuple(n for n in definition.nodes if n.name in names), "connections": (), "tests": ()}
    )
    types = node_types()
    spec = RunSpec(
        workflow=definition.name,
        params=resolve_inputs(definition, None),
        data_roots=roots,
        keep=frozenset(names),
        limit=rows,
    )
    result = run_plan(planning.build(part, types, fuse=False), types, spec)
    if result.error is not None:
        raise WeflowError(
            f"source {result.error_node!r} of {definition.name!r} could not be read: {_line(result.error)}"
        )
    return {name: result.outputs[name].head(rows) for name in names}


def _forget(where: Path, old: set[str], still: set[str]) -> None:
    """Delete the files of replaced or dropped pins that no pin names any more (one file may serve two)."""
    for path in old - still:
        (where / Path(path).name).unlink(missing_ok=True)


# --- listing, dropping, loading --------------------------------------------------------------------------


def status(name: str, scope: Scope) -> list[PinStatus]:
    """Every source of the current version with its pin, then pins of nodes that are no longer sources (stale)."""
    workflow_id, _, definition = _workflow(scope, name)
    pinned = {p.node: p for p in _pins(scope).pins(workflow_id)}
    found = []
    for n in sources(definition):
        p = pinned.pop(n.name, None)
        found.append(PinStatus(n.name, p, stale=p is not None and p.source_hash != source_hash(n)))
    return found + [PinStatus(node, p, stale=True) for node, p in pinned.items()]


def drop(name: str, scope: Scope, node: str | None = None) -> list[str]:
    """Drop the workflow's pins (or one node's), files included; the nodes whose pins went."""
    workflow_id, _, _ = _workflow(scope, name)
    repository = _pins(scope)
    gone = repository.drop_pins(workflow_id, node)
    if node is not None and not gone:
        raise NotFoundError(f"{name!r} has no pin of node {node!r} (weflow samples list {name})")
    _forget(folder(scope, workflow_id), {p.path for p in gone}, repository.pinned_paths(workflow_id))
    return [p.node for p in gone]


def load_pins(
    scope: Scope, name: str, definition: Definition | None = None, *, allow_stale: bool = False
) -> dict[str, pl.DataFrame]:
    """The pinned frame of every source of ``definition`` (default: the current version) of ``name``."""
    workflow_id, _, current = _workflow(scope, name)
    definition = definition or current
    pinned = {p.node: p for p in _pins(scope).pins(workflow_id)}
    where = folder(scope, workflow_id)
    frames = {}
    for n in sources(definition):
        p = pinned.get(n.name)
        if p is None:
            raise NotFoundError(f"source {n.name!r} of {name!r} has no pinned sample (weflow samples pin {name})")
        if p.source_hash != source_hash(n) and not allow_stale:
            raise ConflictError(
                f"the pinned sample of source {n.name!r} of {name!r} is stale: the source changed since "
                f"v{p.version} (weflow samples pin {name} --node {n.name})"
            )
        frames[n.name] = _read(where, p, name)
    return frames


def _read(where: Path, p: Pin, name: str) -> pl.DataFrame:
    """A pin's file, refused unless it is a file directly in the workflow's samples folder."""
    path = (where / p.path).resolve()
    if Path(p.path).name != p.path or path.parent != where.resolve():  # a bare file name, no link out
        raise WeflowError(f"the pinned sample of node {p.node!r} of {name!r} names a file outside its samples folder")
    if not path.is_file():
        raise WeflowError(f"the pinned sample of node {p.node!r} of {name!r} is gone (weflow samples pin {name})")
    return pl.read_parquet(path)


# --- running on pins --------------------------------------------------------------------------------------


def run_on(
    definition: Definition,
    frames: Mapping[str, pl.DataFrame],
    *,
    keep: Iterable[str] = (),
    input_data: Mapping[str, Any] | None = None,
    roots: tuple[Path, ...] = (),
) -> PlanResult:
    """Run ``definition`` in this process, the sources in ``frames`` reading those rows, sinks writing nothing."""
    from weflow.engine.offline import given_sources, run_plan
    from weflow.engine.runtime import RunSpec
    from weflow.execution.lifecycle import resolve_inputs

    part, types = given_sources(definition.model_copy(update={"tests": ()}), node_types(), frames)
    spec = RunSpec(
        workflow=definition.name,
        params=resolve_inputs(definition, input_data),
        data_roots=roots,
        keep=frozenset(keep),
    )
    return run_plan(planning.build(part, types, fuse=False), types, spec)


def run_on_pins(
    name: str,
    scope: Scope,
    *,
    version: int | None = None,
    node: str | None = None,
    input_data: Mapping[str, Any] | None = None,
    definition: Definition | None = None,
) -> SamplesRun:
    """Run a stored version (or ``definition``, e.g. edited in a notebook) on the pins of ``name``.

    With ``node``, only it and its upstream run and its frame is kept. Nothing is recorded or written.
    """
    if definition is None:
        _, _, definition = _workflow(scope, name, version)
    if node is not None:
        if node not in {n.name for n in definition.nodes}:
            raise NotFoundError(f"{name!r} has no node {node!r}")
        needed = upstream(definition, node)
        definition = definition.model_copy(
            update={
                "nodes": tuple(n for n in definition.nodes if n.name in needed),
                "connections": tuple(c for c in definition.connections if c.to.node in needed),
            }
        )
    frames = load_pins(scope, name, definition)
    result = run_on(definition, frames, keep=(node,) if node else (), input_data=input_data, roots=data_roots(scope))
    return SamplesRun(definition, result)


def _blank(value: Any) -> str:
    return "" if value is None else str(value)


def _names(definition: Definition) -> str:
    return ", ".join(n.name for n in sources(definition)) or "none"


def _line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
