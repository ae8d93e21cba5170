"""API keys of users and webhook tokens of workflows: random secrets, stored only as sha256 hashes.

A secret reads ``<kind>_<lookup>_<secret>``: the lookup (public, 16 hex digits) finds the row,
and the sha256 of the secret is compared with the stored hash in constant time. Neither the
key nor the token can be read back from the catalog; revoking keeps the row for the record.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from weflow.catalog.store import Catalog
from weflow.core.entities import User, Workflow
from weflow.errors import NotFoundError

KEY_KIND = "wfk"
HOOK_KIND = "wfh"
_TOKEN = re.compile(r"^(wfk|wfh)_([0-9a-f]{16})_([0-9a-f]{64})$")
_MAX_ID = 2**31 - 1  # ids are DuckDB INTEGERs
_UNKNOWN = hashlib.sha256(b"no such secret").hexdigest()  # compared against when no row matches


@dataclass(frozen=True)
class ApiKey:
    """A user's key for the REST API (the secret itself is never stored)."""

    id: int
    user_id: int
    user: str
    organization: str
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True)
class WebhookToken:
    """A token that starts one workflow as the user who created it."""

    id: int
    workflow_id: int
    workflow: str
    user_id: int
    prefix: str
    created_at: datetime
    revoked_at: datetime | None = None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _mint(kind: str) -> tuple[str, str, str]:
    """A new (lookup, secret hash, full token) triple."""
    lookup, secret = secrets.token_hex(8), secrets.token_hex(32)
    return lookup, _digest(secret), f"{kind}_{lookup}_{secret}"


def _split(token: str, kind: str) -> tuple[str, str] | None:
    found = _TOKEN.match(token)
    if found is None or found.group(1) != kind:
        return None
    return found.group(2), found.group(3)


def _matches(secret: str, stored: str | None) -> bool:
    # Always compare, also when no row matched, so unknown and wrong secrets take the same time.
    return hmac.compare_digest(_digest(secret), stored or _UNKNOWN) and stored is not None


def _user(row: Sequence[Any]) -> User:
    return User(id=row[0], name=row[1], organization_id=row[2], created_at=row[3])


# --- users ---------------------------------------------------------------------------


def users(catalog: Catalog) -> list[tuple[str, User]]:
    """Every user with the name of its organization, by organization then name."""
    with catalog.transaction() as con:
        rows = con.execute(
            "SELECT u.id, u.name, u.organization_id, u.created_at, o.name FROM users u "
            "JOIN organizations o ON o.id = u.organization_id ORDER BY o.name, u.name"
        ).fetchall()
    return [(r[4], _user(r)) for r in rows]


def find_user(catalog: Catalog, organization: str, name: str) -> User:
    """The user ``name`` of ``organization``; NotFoundError if either is missing."""
    with catalog.transaction() as con:
        row = con.execute(
            "SELECT u.id, u.name, u.organization_id, u.created_at FROM users u "
            "JOIN organizations o ON o.id = u.organization_id WHERE o.name = ? AND u.name = ?",
            [organization, name],
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no user {name!r} in organization {organization!r} (add one: weflow users add)")
    return _user(row)


# --- API keys ------------------------------------------------------------------------

_KEY_COLUMNS = (
    "k.id, k.user_id, u.name, o.name, k.lookup, k.created_at, k.revoked_at FROM api_keys k "
    "JOIN users u ON u.id = k.user_id JOIN organizations o ON o.id = u.organization_id"
)


def _key(row: Sequence[Any]) -> ApiKey:
    return ApiKey(row[0], row[1], row[2], row[3], f"{KEY_KIND}_{row[4]}", row[5], row[6])


def create_key(catalog: Catalog, user: User) -> tuple[ApiKey, str]:
    """A new key for ``user``: its record and the secret key, which only this call ever returns."""
    lookup, digest, token = _mint(KEY_KIND)
    with catalog.transaction() as con:
        row = con.execute(
            "INSERT INTO api_keys (user_id, lookup, secret_hash) VALUES (?, ?, ?) RETURNING id",
            [user.id, lookup, digest],
        ).fetchone()
        assert row is not None
        found = con.execute(f"SELECT {_KEY_COLUMNS} WHERE k.id = ?", [row[0]]).fetchone()
    assert found is not None
    return _key(found), token


def keys(catalog: Catalog) -> list[ApiKey]:
    """Every key, revoked ones included, by id."""
    with catalog.transaction() as con:
        rows = con.execute(f"SELECT {_KEY_COLUMNS} ORDER BY k.id").fetchall()
    return [_key(r) for r in rows]


def revoke_key(catalog: Catalog, key_id: int) -> ApiKey:
    """Revoke a key (a revoked key stays revoked; its row is kept)."""
    if not 1 <= key_id <= _MAX_ID:
        raise NotFoundError(f"no API key with id {key_id}")
    with catalog.transaction() as con:
        con.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [datetime.now(UTC), key_id]
        )
        row = con.execute(f"SELECT {_KEY_COLUMNS} WHERE k.id = ?", [key_id]).fetchone()
    if row is None:
        raise NotFoundError(f"no API key with id {key_id}")
    return _key(row)


def authenticate(catalog: Catalog, token: str) -> User | None:
    """The user a presented key belongs to, or None if it is malformed, unknown or revoked."""
    parts = _split(token, KEY_KIND)
    if parts is None:
        return None
    with catalog.transaction() as con:
        row = con.execute(
            "SELECT u.id, u.name, u.organization_id, u.created_at, k.secret_hash FROM api_keys k "
            "JOIN users u ON u.id = k.user_id WHERE k.lookup = ? AND k.revoked_at IS NULL",
            [parts[0]],
        ).fetchone()
    if not _matches(parts[1], row[4] if row else None):
        return None
    assert row is not None
    return _user(row)


# --- webhook tokens ------------------------------------------------------------------

_HOOK_FIELDS = "h.id, h.workflow_id, w.name, h.user_id, h.lookup, h.created_at, h.revoked_at"
_HOOK_COLUMNS = f"{_HOOK_FIELDS} FROM webhook_tokens h JOIN workflows w ON w.id = h.workflow_id"


def _hook(row: Sequence[Any]) -> WebhookToken:
    return WebhookToken(row[0], row[1], row[2], row[3], f"{HOOK_KIND}_{row[4]}", row[5], row[6])


def create_hook(catalog: Catalog, workflow: Workflow, user: User) -> tuple[WebhookToken, str]:
    """A new webhook token for ``workflow``, run as ``user``; the token is returned only here."""
    lookup, digest, token = _mint(HOOK_KIND)
    with catalog.transaction() as con:
        row = con.execute(
            "INSERT INTO webhook_tokens (workflow_id, user_id, lookup, secret_hash) VALUES (?, ?, ?, ?) RETURNING id",
            [workflow.id, user.id, lookup, digest],
        ).fetchone()
        assert row is not None
        found = con.execute(f"SELECT {_HOOK_COLUMNS} WHERE h.id = ?", [row[0]]).fetchone()
    assert found is not None
    return _hook(found), token


def hooks(catalog: Catalog, organization_id: int, workflow_id: int | None = None) -> list[WebhookToken]:
    """The webhook tokens of an organization's live workflows (of one, if given), by id."""
    sql = f"SELECT {_HOOK_COLUMNS} WHERE w.organization_id = ? AND w.deleted_at IS NULL"
    params: list[Any] = [organization_id]
    if workflow_id is not None:
        sql += " AND h.workflow_id = ?"
        params.append(workflow_id)
    with catalog.transaction() as con:
        rows = con.execute(sql + " ORDER BY h.id", params).fetchall()
    return [_hook(r) for r in rows]


def revoke_hook(catalog: Catalog, organization_id: int, hook_id: int, workflow_id: int | None = None) -> WebhookToken:
    """Revoke a webhook token of the organization (of one workflow, if given)."""
    if not 1 <= hook_id <= _MAX_ID:
        raise NotFoundError(f"no webhook token with id {hook_id}")
    sql = f"SELECT {_HOOK_COLUMNS} WHERE h.id = ? AND w.organization_id = ? AND w.deleted_at IS NULL"
    params: list[Any] = [hook_id, organization_id]
    if workflow_id is not None:
        sql += " AND h.workflow_id = ?"
        params.append(workflow_id)
    with catalog.transaction() as con:
        if con.execute(sql, params).fetchone() is None:
            raise NotFoundError(f"no webhook token with id {hook_id}")
        con.execute(
            "UPDATE webhook_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
            [datetime.now(UTC), hook_id],
        )
        row = con.execute(sql, params).fetchone()
    assert row is not None
    return _hook(row)


def resolve_hook(catalog: Catalog, token: str) -> tuple[WebhookToken, User] | None:
    """The live token a presented webhook token matches and the user it runs as, else None."""
    parts = _split(token, HOOK_KIND)
    if parts is None:
        return None
    with catalog.transaction() as con:
        row = con.execute(
            f"SELECT {_HOOK_FIELDS}, h.secret_hash FROM webhook_tokens h JOIN workflows w ON w.id = h.workflow_id "
            "WHERE h.lookup = ? AND h.revoked_at IS NULL AND w.deleted_at IS NULL",
            [parts[0]],
        ).fetchone()
        if not _matches(parts[1], row[7] if row else None):
            return None
        assert row is not None
        user = con.execute("SELECT id, name, organization_id, created_at FROM users WHERE id = ?", [row[3]]).fetchone()
    assert user is not None
    return _hook(row), _user(user)


def delete_hooks(catalog: Catalog, workflow_id: int) -> None:
    """Remove every webhook token of a workflow (before purging it: DuckDB has no cascading deletes)."""
    with catalog.transaction() as con:
        con.execute("DELETE FROM webhook_tokens WHERE workflow_id = ?", [workflow_id])
