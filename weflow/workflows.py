"""Definitions service: check, store, version, diff, roll back and export workflows."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weflow import outbound
from weflow.catalog import Catalog, SaveResult
from weflow.config import ORGANIZATION, settings, using
from weflow.core import document, graph
from weflow.core.diff import DefinitionDiff
from weflow.core.diff import diff as diff_definitions
from weflow.core.entities import Status, User, Version, Workflow
from weflow.core.model import Definition
from weflow.errors import ConflictError, DefinitionError, NotFoundError
from weflow.nodes.registry import signatures


@dataclass(frozen=True)
class Scope:
    """Who is acting, on which catalog: every operation runs inside one organization."""

    catalog: Catalog
    user: User

    @classmethod
    def current(cls, catalog: Catalog | str | Path | None = None) -> Scope:
        cfg = settings()
        cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog or cfg.catalog)
        return cls(cat, cat.ensure_user(cfg.organization, cfg.user))


def data_roots(scope: Scope) -> tuple[Path, ...]:
    """The data roots open to the scope's organization's nodes (``Settings.roots_for``)."""
    cfg = settings()
    if cfg.shared_data_roots and not any(ORGANIZATION in str(r) for r in cfg.data_roots):
        return cfg.roots_for(cfg.organization)  # the same for everyone: no catalog session
    found = scope.catalog.organizations()
    name = next((o.name for o in found if o.id == scope.user.organization_id), "")
    return cfg.roots_for(name, len(found))


def check(definition: Definition, scope: Scope | None = None) -> Definition:
    """Run every graph and config check; raise DefinitionError naming each problem.

    With a scope, paths are checked against that organization's data roots (else the settings').
    """
    if scope is not None:
        with using(data_roots=data_roots(scope)):
            return check(definition)
    policy = outbound.Policy.current()
    hooks = [(f"alerts[{i}].webhook", p) for i, r in enumerate(definition.alerts) if (p := policy.check_url(r.webhook))]
    try:
        graph.check(definition, signatures())
    except DefinitionError as exc:
        raise DefinitionError([*exc.problems, *hooks], workflow=definition.name) from None
    if hooks:
        raise DefinitionError(hooks, workflow=definition.name)
    return definition


def read(path: str | Path) -> Definition:
    """Parse and check a definition file (YAML or JSON) of at most WEFLOW_MAX_DEFINITION_BYTES."""
    path = Path(path)
    limit = document.max_bytes(os.environ)
    try:
        with path.open("rb") as file:
            raw = file.read(limit + 1)  # a larger file is refused unread
    except OSError as exc:
        raise DefinitionError([("", f"cannot read {path}: {exc.strerror}")]) from None
    return check(document.parse(raw, source=str(path), limit=limit))


def apply(definition: Definition | dict[str, Any], scope: Scope, message: str = "") -> SaveResult:
    """Check then store; a new version only if the content changed."""
    if not isinstance(definition, Definition):
        definition = document.from_data(definition)
    check(definition, scope)
    return scope.catalog.save(definition, scope.user, message)


def create(definition: Definition, scope: Scope, message: str = "") -> SaveResult:
    """Store a new workflow (version 1); ConflictError if its name is taken in the organization."""
    check(definition, scope)
    with scope.catalog.transaction() as con:
        taken = scope.catalog.find_workflow(con, scope.user.organization_id, definition.name)
        if taken is not None:
            raise ConflictError(f"a workflow named {definition.name!r} exists (id {taken.id})")
        return scope.catalog.save(definition, scope.user, message, con)


def replace(workflow: Workflow, definition: Definition, scope: Scope, message: str = "") -> SaveResult:
    """Store ``definition`` as the next version of ``workflow`` (same name); none if unchanged."""
    if definition.name != workflow.name:
        raise DefinitionError([("name", f"must stay {workflow.name!r}: a workflow cannot be renamed")])
    check(definition, scope)
    with scope.catalog.transaction() as con:
        current = scope.catalog.find_workflow(con, workflow.organization_id, workflow.name)
        if current is None or current.id != workflow.id:  # deleted (or replaced) since it was read
            raise NotFoundError(f"no workflow with id {workflow.id}")
        return scope.catalog.save(definition, scope.user, message, con)


def apply_many(definitions: Sequence[Definition], scope: Scope, message: str = "") -> list[SaveResult]:
    """Check all, then store all in one transaction: all or nothing."""
    for d in definitions:
        check(d, scope)
    with scope.catalog.transaction() as con:
        return [scope.catalog.save(d, scope.user, message, con) for d in definitions]


def get(name: str, scope: Scope) -> Workflow:
    return scope.catalog.workflow(scope.user.organization_id, name)


def version(name: str, scope: Scope, number: int | None = None) -> Version:
    return scope.catalog.workflow_version(scope.user.organization_id, name, number)[1]


def list_workflows(scope: Scope, status: Status | str | None = None) -> list[Workflow]:
    return scope.catalog.workflows(scope.user.organization_id, Status(status) if status else None)


def versions(name: str, scope: Scope) -> list[Version]:
    return scope.catalog.versions(get(name, scope))


def diff(name: str, a: int, b: int, scope: Scope) -> DefinitionDiff:
    return diff_definitions(version(name, scope, a).definition, version(name, scope, b).definition)


def rollback(name: str, number: int, scope: Scope, message: str = "") -> SaveResult:
    """Make a new version whose content equals version ``number``."""
    target = version(name, scope, number)
    return scope.catalog.save(target.definition, scope.user, message or f"rollback to version {number}")


def delete(name: str, scope: Scope, purge: bool = False) -> None:
    scope.catalog.delete(get(name, scope), purge=purge)


def export(name: str, scope: Scope, number: int | None = None) -> dict[str, Any]:
    """The normalised document of a stored version (the current one by default)."""
    return version(name, scope, number).definition.to_document()
