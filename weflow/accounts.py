"""Accounts service: users, API keys and webhook tokens, over ``weflow.catalog.auth``.

Secrets (keys, tokens) are returned once, by the call that makes them; the catalog keeps only
their hashes. User and key commands act on a whole catalog (the operator's); webhook tokens act
in a scope (one organization).
"""

from __future__ import annotations

from pathlib import Path

from weflow.catalog import auth
from weflow.core.entities import ApiKey, User, WebhookToken, Workflow
from weflow.workflows import Catalog, Scope, open_catalog


def add_user(catalog: str | Path, organization: str, name: str) -> User:
    """User ``name`` of ``organization`` (both created if missing)."""
    return open_catalog(catalog).ensure_user(organization, name)


def users(catalog: str | Path) -> list[tuple[str, User]]:
    """Every user with the name of its organization."""
    return auth.users(open_catalog(catalog))


def create_key(catalog: str | Path, organization: str, user: str) -> tuple[ApiKey, str]:
    """A new API key for ``user`` of ``organization``: its record and the secret, shown only now."""
    found = open_catalog(catalog)
    return auth.create_key(found, auth.find_user(found, organization, user))


def keys(catalog: str | Path) -> list[ApiKey]:
    return auth.keys(open_catalog(catalog))


def revoke_key(catalog: str | Path, key_id: int) -> ApiKey:
    return auth.revoke_key(open_catalog(catalog), key_id)


def authenticate(catalog: Catalog, key: str) -> Scope | None:
    """The scope of the user a presented API key belongs to; None if malformed, unknown or revoked."""
    user = auth.authenticate(catalog, key)
    return None if user is None else Scope(catalog, user)


def create_hook(scope: Scope, workflow: Workflow) -> tuple[WebhookToken, str]:
    """A webhook token that runs ``workflow`` as the scope's user; the token is returned only here."""
    return auth.create_hook(scope.catalog, workflow, scope.user)


def hooks(scope: Scope, workflow: Workflow | None = None) -> list[WebhookToken]:
    """The webhook tokens of the organization's live workflows (of ``workflow``, if given)."""
    return auth.hooks(scope.catalog, scope.user.organization_id, workflow.id if workflow else None)


def revoke_hook(scope: Scope, hook_id: int, workflow: Workflow | None = None) -> WebhookToken:
    """Revoke a webhook token of the organization (of ``workflow``, if given)."""
    return auth.revoke_hook(scope.catalog, scope.user.organization_id, hook_id, workflow.id if workflow else None)


def resolve_hook(catalog: Catalog, token: str) -> tuple[WebhookToken, User] | None:
    """The live webhook token a presented token matches and the user it runs as; None otherwise."""
    return auth.resolve_hook(catalog, token)
