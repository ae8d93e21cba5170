"""Secrets service: an organization's secrets, set, listed by name and deleted; read only where they are used.

A definition refers to a secret as ``{secret: NAME}`` (``weflow.core.secret_ref``) and never holds its
value; the run engine reads the value of a node's references when the node runs, the alert service
that of a webhook when it posts, both from the organization's Prefect Secret blocks
(``weflow.prefect_gateway.secrets``). An organization sees and uses only its own secrets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from weflow.core.model import Definition
from weflow.core.secret_ref import SecretRef, name_problem, scrub
from weflow.errors import NotFoundError, SecretError, SecretMissing
from weflow.workflows import Scope

if TYPE_CHECKING:
    from types import ModuleType


def _blocks() -> ModuleType:
    """Prefect's Secret blocks (``prefect_gateway.secrets``), imported when a secret is read or written: it imports
    Prefect (~1.5 s), which every command importing this module (alerts, the CLI) would otherwise pay."""
    from weflow.prefect_gateway import secrets

    return secrets


__all__ = [
    "SecretError",
    "SecretMissing",
    "delete",
    "list_names",
    "organization",
    "referenced",
    "resolve",
    "scrub",
    "set_value",
]
MAX_BYTES = 64 * 1024  # a credential, not a file


def organization(scope: Scope) -> str:
    """The name of the scope's organization (secrets are kept per organization name)."""
    found = scope.catalog.organizations()
    return next(o.name for o in found if o.id == scope.user.organization_id)


def _checked(name: str) -> str:
    problem = name_problem(name)
    if problem:
        raise SecretError(problem)
    return name


def set_value(scope: Scope, name: str, value: str) -> None:
    """Set (or replace) the secret ``name`` of the scope's organization."""
    _checked(name)
    if not value:
        raise SecretError(f"secret {name!r}: the value is empty")
    if len(value.encode()) > MAX_BYTES:
        raise SecretError(f"secret {name!r}: the value is over {MAX_BYTES // 1024} KiB")
    _blocks().save(organization(scope), name, value)


def list_names(scope: Scope) -> list[str]:
    """The names of the scope's organization's secrets, sorted (never a value)."""
    names: list[str] = _blocks().names(organization(scope))
    return names


def delete(scope: Scope, name: str) -> None:
    """Delete the secret ``name``; NotFoundError when the organization has none of that name."""
    if not _blocks().remove(organization(scope), _checked(name)):
        raise NotFoundError(f"no secret {name!r} in organization {organization(scope)!r}")


def referenced(definition: Definition) -> bool:
    """Whether any node config or alert of ``definition`` refers to a secret (as ``{secret: NAME}``)."""

    def has(value: Any) -> bool:
        if isinstance(value, SecretRef):
            return True
        if isinstance(value, dict):
            return set(value) == {"secret"} or any(has(v) for v in value.values())
        return isinstance(value, list) and any(has(v) for v in value)

    return any(has(n.config) for n in definition.nodes) or any(has(a.webhook) for a in definition.alerts)


def resolve(organization_name: str, text: str | SecretRef) -> tuple[str, dict[str, str]]:
    """``text``, or the value it refers to, with the values used (for ``scrub``); SecretMissing."""
    if isinstance(text, str):
        return text, {}
    found = _blocks().reveal(organization_name, [text.secret])
    return found[text.secret], found
