"""Definitions service: check, store, version, diff, roll back and export workflows.

``check`` raises or returns the definition; ``checked`` also returns the proof, a ``Checked``
that ``apply``/``apply_many``/``create`` store without checking again in the same data roots
(``weflow apply`` checks each file once). ``Scope`` carries the catalog as an opaque handle:
interfaces pass it to services (here, ``execution``, ``monitor``, ``accounts``), never call it.
The node types (Polars, httpx) load only when a definition is checked: the CLI's commands that only
read the catalog, and ``weflow run`` handing a run to a worker, do not pay for them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weflow.catalog import Catalog as Catalog  # the interfaces' opaque handle (see open_catalog)
from weflow.catalog import SaveResult as SaveResult
from weflow.config import ORGANIZATION, settings, using
from weflow.core import document, graph, triggers
from weflow.core.diff import DefinitionDiff
from weflow.core.diff import diff as diff_definitions
from weflow.core.entities import Status, User, Version, Workflow
from weflow.core.model import Definition
from weflow.errors import ConflictError, DefinitionError, NotFoundError

MAX_ID = 2**31 - 1  # ids are DuckDB INTEGERs; anything larger cannot exist


@dataclass(frozen=True)
class Scope:
    """Who is acting, on which catalog: every operation runs inside one organization."""

    catalog: Catalog
    user: User

    @classmethod
    def current(cls, catalog: Catalog | str | Path | None = None) -> Scope:
        cfg = settings()
        cat = catalog if isinstance(catalog, Catalog) else open_catalog(catalog)
        return cls(cat, cat.ensure_user(cfg.organization, cfg.user))


_PROOF = object()  # only ``checked`` holds it: a Checked cannot be made by hand


@dataclass(frozen=True)
class Checked:
    """A definition that passed every check against ``roots`` (made only by ``checked``).

    ``roots``: the data roots its paths were checked in, for ``organization`` (its buckets). Storing
    it in a scope with the same roots and organization checks nothing again: ``weflow apply`` checks
    each file once.
    """

    definition: Definition
    roots: tuple[Path, ...]
    organization: str
    proof: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.proof is not _PROOF:
            raise TypeError("a Checked is made by workflows.checked")


def open_catalog(path: str | Path | None = None) -> Catalog:
    """The catalog at ``path`` (default WEFLOW_CATALOG, else data/weflow.duckdb); interfaces hold it opaquely."""
    return Catalog(path or settings().catalog)


def data_roots(scope: Scope) -> tuple[Path, ...]:
    """The data roots open to the scope's organization's nodes (``Settings.roots_for``)."""
    return organization_roots(scope)[1]


def organization_roots(scope: Scope, named: bool = False) -> tuple[str, tuple[Path, ...]]:
    """The scope's organization's name and data roots, in one catalog read, or none when every organization
    has the same roots and buckets (then the name is the settings' unless ``named``)."""
    from weflow.nodes import objectstore  # deferred, like the node imports below: Polars (~0.2 s) is the nodes' alone

    cfg = settings()
    templated = [*map(str, cfg.data_roots), *objectstore.Store.from_env().buckets]
    if not named and cfg.shared_data_roots and not any(ORGANIZATION in t for t in templated):
        return cfg.organization, cfg.roots_for(cfg.organization)  # the same for everyone: no catalog session
    found = scope.catalog.organizations()
    name = next((o.name for o in found if o.id == scope.user.organization_id), "")
    return name, cfg.roots_for(name, len(found))


def check(definition: Definition, scope: Scope | None = None) -> Definition:
    """Run every graph and config check; raise DefinitionError naming each problem.

    With a scope, paths are checked against that organization's data roots (else the settings').
    """
    if scope is not None:
        name, roots = organization_roots(scope)
        with using(data_roots=roots, organization=name):
            return check(definition)
    from weflow import outbound  # deferred: the nodes, Polars and httpx load only where a definition is checked
    from weflow.nodes.registry import signatures

    policy = outbound.Policy.current()
    urls = [(i, r.webhook) for i, r in enumerate(definition.alerts) if isinstance(r.webhook, str)]  # not a secret's
    hooks = [(f"alerts[{i}].webhook", p) for i, url in urls if (p := policy.check_url(url))]
    found = [*graph.problems(definition, signatures()), *hooks, *_path_inputs(definition)]
    if found:
        raise DefinitionError(found, workflow=definition.name)
    return definition


def _path_inputs(definition: Definition) -> list[tuple[str, str]]:
    """A ``path: $name`` must name a string input of the workflow (its value is checked when the node runs)."""
    from weflow.nodes.base import path_input

    found = []
    for i, node in enumerate(definition.nodes):
        ref = path_input(node.config.get("path"))
        spec = definition.inputs.get(ref) if ref else None
        if ref and (spec is None or spec.type != "string"):
            what = "not an input of the workflow (declare it under inputs)" if spec is None else f"a {spec.type} input"
            found.append((f"nodes[{i}].config.path", f"${ref}: {what}; a path input must be a string"))
    return found


def checked(definition: Definition, scope: Scope | None = None) -> Checked:
    """``check``, remembering the data roots it checked paths in (the scope's, else the settings')."""
    if scope is not None:
        name, roots = organization_roots(scope)
        with using(data_roots=roots, organization=name):
            return checked(definition)
    cfg = settings()
    return Checked(check(definition), cfg.roots_for(cfg.organization), cfg.organization, _PROOF)


def _ready(items: Sequence[Definition | Checked], scope: Scope) -> list[Definition]:
    """The definitions to store in ``scope``: a Checked against the scope's data roots as is, the rest checked now."""
    name, roots = organization_roots(scope)
    ready = []
    with using(data_roots=roots, organization=name):
        for item in items:
            definition = item.definition if isinstance(item, Checked) else item
            same = isinstance(item, Checked) and (item.roots, item.organization) == (roots, name)
            ready.append(definition if same else check(definition))
    _no_trigger_cycle(ready, scope)
    return ready


def _no_trigger_cycle(ready: Sequence[Definition], scope: Scope) -> None:
    """Refuse ``after`` triggers that would run workflows in a circle (a after b after a), naming the circle."""
    if not any(t.after for d in ready for t in d.triggers):
        return
    upstreams = {d.name: [t.after.workflow for t in d.triggers if t.after] for d in ready}
    for wf in list_workflows(scope):  # the stored ones' current versions (a DRAFT may become ACTIVE)
        if wf.name not in upstreams:
            upstreams[wf.name] = [t.after.workflow for t in version_of(wf, scope).definition.triggers if t.after]
    circle = triggers.cycle(upstreams)
    if circle is None:
        return
    mine = {d.name: d for d in ready}
    start = next((i for i, n in enumerate(circle) if n in mine), 0)  # told from the workflow being applied
    circle = [*circle[start:-1], *circle[:start], circle[start]]
    name, up = circle[0], circle[1]
    at = [i for i, t in enumerate(mine[name].triggers if name in mine else ()) if t.after and t.after.workflow == up]
    where = f"triggers[{at[0]}].after.workflow" if at else "triggers"
    raise DefinitionError([(where, f"trigger cycle: {' after '.join(circle)}")], workflow=name)


def read(path: str | Path) -> Definition:
    """Parse and check a definition file (YAML or JSON) of at most WEFLOW_MAX_DEFINITION_BYTES."""
    return check(parse_file(path))


def parse_file(path: str | Path) -> Definition:
    """Parse a definition file (YAML or JSON) of at most WEFLOW_MAX_DEFINITION_BYTES, unchecked."""
    path = Path(path)
    limit = document.max_bytes(os.environ)
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)  # a larger file is refused unread
    except OSError as exc:
        raise DefinitionError([("", f"cannot read {path}: {exc.strerror}")]) from None
    return document.parse(raw, source=str(path), limit=limit)


def apply(definition: Definition | Checked | dict[str, Any], scope: Scope, message: str = "") -> SaveResult:
    """Check then store; a new version only if the content changed."""
    if isinstance(definition, dict):
        definition = document.from_data(definition)
    return scope.catalog.save(_ready([definition], scope)[0], scope.user, message)


def create(item: Definition | Checked, scope: Scope, message: str = "") -> SaveResult:
    """Store a new workflow (version 1); ConflictError if its name is taken in the organization."""
    definition = _ready([item], scope)[0]
    with scope.catalog.transaction() as con:
        taken = scope.catalog.find_workflow(con, scope.user.organization_id, definition.name)
        if taken is not None:
            raise ConflictError(f"a workflow named {definition.name!r} exists (id {taken.id})")
        return scope.catalog.save(definition, scope.user, message, con)


def replace(workflow: Workflow, item: dict[str, Any], scope: Scope, message: str = "") -> SaveResult:
    """Store a document (its name defaults to the workflow's) as the next version of ``workflow``; none if unchanged.

    The name is compared before the document is parsed: a rename is the error, whatever else is wrong.
    """
    data = {"name": workflow.name, **item}
    if data["name"] != workflow.name:
        raise DefinitionError([("name", f"must stay {workflow.name!r}: a workflow cannot be renamed")])
    definition = check(document.from_data(data), scope)
    _no_trigger_cycle([definition], scope)
    with scope.catalog.transaction() as con:
        current = scope.catalog.find_workflow(con, workflow.organization_id, workflow.name)
        if current is None or current.id != workflow.id:  # deleted (or replaced) since it was read
            raise NotFoundError(f"no workflow with id {workflow.id}")
        return scope.catalog.save(definition, scope.user, message, con)


def apply_many(definitions: Sequence[Definition | Checked], scope: Scope, message: str = "") -> list[SaveResult]:
    """Check all (a Checked against the scope's data roots is not checked again), then store all in one go."""
    ready = _ready(definitions, scope)
    with scope.catalog.transaction() as con:
        return [scope.catalog.save(d, scope.user, message, con) for d in ready]


def get(name: str, scope: Scope) -> Workflow:
    return scope.catalog.workflow(scope.user.organization_id, name)


def by_id(workflow_id: int, scope: Scope) -> Workflow:
    """A live workflow of the scope's organization by id; NotFoundError otherwise (also for ids out of range)."""
    if not 1 <= workflow_id <= MAX_ID:
        raise NotFoundError(f"no workflow with id {workflow_id}")
    return scope.catalog.workflow_by_id(scope.user.organization_id, workflow_id)


def version_of(workflow: Workflow, scope: Scope, number: int | None = None) -> Version:
    """One version of a workflow already found (the current one by default)."""
    return scope.catalog.version(workflow, number)


def version(name: str, scope: Scope, number: int | None = None) -> Version:
    return scope.catalog.workflow_version(scope.user.organization_id, name, number)[1]


def list_workflows(
    scope: Scope, status: Status | str | None = None, limit: int | None = None, offset: int = 0
) -> list[Workflow]:
    """The organization's workflows by name; ``limit``/``offset`` for a page."""
    return scope.catalog.workflows(scope.user.organization_id, Status(status) if status else None, limit, offset)


def versions(name: str, scope: Scope) -> list[Version]:
    return versions_of(get(name, scope), scope)


def versions_of(workflow: Workflow, scope: Scope) -> list[Version]:
    """Every version of a workflow already found, oldest first."""
    return scope.catalog.versions(workflow)


def diff(name: str, a: int, b: int, scope: Scope) -> DefinitionDiff:
    return diff_definitions(version(name, scope, a).definition, version(name, scope, b).definition)


def rollback(name: str, number: int, scope: Scope, message: str = "") -> SaveResult:
    """Make a new version whose content equals version ``number``."""
    target = version(name, scope, number)
    return scope.catalog.save(target.definition, scope.user, message or f"rollback to version {number}")


def delete(name: str, scope: Scope, purge: bool = False) -> None:
    remove(get(name, scope), scope, purge=purge)


def remove(workflow: Workflow, scope: Scope, purge: bool = False) -> None:
    """Soft delete (history kept) or purge a workflow already found."""
    scope.catalog.delete(workflow, purge=purge)


def export(name: str, scope: Scope, number: int | None = None) -> dict[str, Any]:
    """The normalised document of a stored version (the current one by default)."""
    return version(name, scope, number).definition.to_document()
