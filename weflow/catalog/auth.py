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
from datetime import UTC, datetime
from typing import Any

import duckdb

from weflow.catalog.owners import USER, find_users
from weflow.catalog.rows import Columns, first, named
from weflow.catalog.store import Catalog
from weflow.core.entities import ApiKey, User, WebhookToken, Workflow
from weflow.errors import NotFoundError

KEY_KIND = "wfk"
HOOK_KIND = "wfh"
_TOKEN = re.compile(r"^(wfk|wfh)_([0-9a-f]{16})_([0-9a-f]{64})$")
_MAX_ID = 2**31 - 1  # ids are DuckDB INTEGERs
_UNKNOWN = hashlib.sha256(b"no such secret").hexdigest()  # compared against when no row matches


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


def _prefix(kind: str, table: str) -> str:
    """The SQL of a secret's public start, ``<kind>_<lookup>``."""
    return f"'{kind}_' || {table}.lookup"


def _matches(secret: str, stored: str | None) -> bool:
    # Always compare, also when no row matched, so unknown and wrong secrets take the same time.
    return hmac.compare_digest(_digest(secret), stored or _UNKNOWN) and stored is not None


def _live(con: duckdb.DuckDBPyConnection, parts: tuple[str, str], sql: str) -> dict[str, Any] | None:
    """The row ``sql`` finds by the lookup (its one parameter), if the secret matches its ``secret_hash``."""
    row = first(con.execute(sql, [parts[0]]))
    return row if _matches(parts[1], row["secret_hash"] if row else None) else None


# --- users ---------------------------------------------------------------------------


def users(catalog: Catalog) -> list[tuple[str, User]]:
    """Every user with the name of its organization, by organization then name."""
    with catalog.transaction() as con:
        rows = named(
            con.execute(
                f"SELECT {USER.select}, o.name AS organization FROM users u "
                "JOIN organizations o ON o.id = u.organization_id ORDER BY o.name, u.name"
            )
        )
    return [(r["organization"], USER.build(r)) for r in rows]


def find_user(catalog: Catalog, organization: str, name: str) -> User:
    """The user ``name`` of ``organization``; NotFoundError if either is missing."""
    with catalog.transaction() as con:
        found = find_users(con, "o.name = ? AND u.name = ?", [organization, name])
    if not found:
        raise NotFoundError(f"no user {name!r} in organization {organization!r} (add one: weflow users add)")
    return found[0]


# --- API keys ------------------------------------------------------------------------

_KEY = Columns(
    ApiKey, prefix="k.", sources={"user": "u.name", "organization": "o.name", "prefix": _prefix(KEY_KIND, "k")}
)
_KEY_COLUMNS = (
    f"{_KEY.select} FROM api_keys k JOIN users u ON u.id = k.user_id JOIN organizations o ON o.id = u.organization_id"
)

_KEY_SECRET = (
    f"SELECT {USER.select}, k.secret_hash FROM api_keys k "
    "JOIN users u ON u.id = k.user_id WHERE k.lookup = ? AND k.revoked_at IS NULL"
)


def create_key(catalog: Catalog, user: User) -> tuple[ApiKey, str]:
    """A new key for ``user``: its record and the secret key, which only this call ever returns."""
    lookup, digest, token = _mint(KEY_KIND)
    with catalog.transaction() as con:
        row = con.execute(
            "INSERT INTO api_keys (user_id, lookup, secret_hash) VALUES (?, ?, ?) RETURNING id",
            [user.id, lookup, digest],
        ).fetchone()
        assert row is not None
        found = _KEY.one(con.execute(f"SELECT {_KEY_COLUMNS} WHERE k.id = ?", [row[0]]))
    assert found is not None
    return found, token


def keys(catalog: Catalog) -> list[ApiKey]:
    """Every key, revoked ones included, by id."""
    with catalog.transaction() as con:
        return _KEY.all(con.execute(f"SELECT {_KEY_COLUMNS} ORDER BY k.id"))


def revoke_key(catalog: Catalog, key_id: int) -> ApiKey:
    """Revoke a key (a revoked key stays revoked; its row is kept)."""
    if not 1 <= key_id <= _MAX_ID:
        raise NotFoundError(f"no API key with id {key_id}")
    with catalog.transaction() as con:
        con.execute(
            "UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", [datetime.now(UTC), key_id]
        )
        found = _KEY.one(con.execute(f"SELECT {_KEY_COLUMNS} WHERE k.id = ?", [key_id]))
    if found is None:
        raise NotFoundError(f"no API key with id {key_id}")
    return found


def authenticate(catalog: Catalog, token: str) -> User | None:
    """The user a presented key belongs to, or None if it is malformed, unknown or revoked."""
    parts = _split(token, KEY_KIND)
    if parts is None:
        return None
    with catalog.transaction() as con:
        row = _live(con, parts, _KEY_SECRET)
    return None if row is None else USER.build(row)


# --- webhook tokens ------------------------------------------------------------------

_HOOK = Columns(WebhookToken, prefix="h.", sources={"workflow": "w.name", "prefix": _prefix(HOOK_KIND, "h")})
_HOOK_COLUMNS = f"{_HOOK.select} FROM webhook_tokens h JOIN workflows w ON w.id = h.workflow_id"
_HOOK_SECRET = (
    f"SELECT {_HOOK.select}, h.secret_hash FROM webhook_tokens h JOIN workflows w ON w.id = h.workflow_id "
    "WHERE h.lookup = ? AND h.revoked_at IS NULL AND w.deleted_at IS NULL"
)


def create_hook(catalog: Catalog, workflow: Workflow, user: User) -> tuple[WebhookToken, str]:
    """A new webhook token for ``workflow``, run as ``user``; the token is returned only here."""
    lookup, digest, token = _mint(HOOK_KIND)
    with catalog.transaction() as con:
        row = con.execute(
            "INSERT INTO webhook_tokens (workflow_id, user_id, lookup, secret_hash) VALUES (?, ?, ?, ?) RETURNING id",
            [workflow.id, user.id, lookup, digest],
        ).fetchone()
        assert row is not None
        found = _HOOK.one(con.execute(f"SELECT {_HOOK_COLUMNS} WHERE h.id = ?", [row[0]]))
    assert found is not None
    return found, token


def hooks(catalog: Catalog, organization_id: int, workflow_id: int | None = None) -> list[WebhookToken]:
    """The webhook tokens of an organization's live workflows (of one, if given), by id."""
    sql = f"SELECT {_HOOK_COLUMNS} WHERE w.organization_id = ? AND w.deleted_at IS NULL"
    params: list[Any] = [organization_id]
    if workflow_id is not None:
        sql += " AND h.workflow_id = ?"
        params.append(workflow_id)
    with catalog.transaction() as con:
        return _HOOK.all(con.execute(sql + " ORDER BY h.id", params))


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
        found = _HOOK.one(con.execute(sql, params))
    assert found is not None
    return found


def resolve_hook(catalog: Catalog, token: str) -> tuple[WebhookToken, User] | None:
    """The live token a presented webhook token matches and the user it runs as, else None."""
    parts = _split(token, HOOK_KIND)
    if parts is None:
        return None
    with catalog.transaction() as con:
        row = _live(con, parts, _HOOK_SECRET)
        if row is None:
            return None
        user = find_users(con, "u.id = ?", [row["user_id"]])[0]
    return _HOOK.build(row), user


def delete_hooks(catalog: Catalog, workflow_id: int) -> None:
    """Remove every webhook token of a workflow (before purging it: DuckDB has no cascading deletes)."""
    with catalog.transaction() as con:
        con.execute("DELETE FROM webhook_tokens WHERE workflow_id = ?", [workflow_id])
