"""Admin commands: ``serve`` the REST API, and the ``users``, ``keys`` and ``hooks`` it authenticates with.

Secrets (API keys, webhook tokens) go alone to stdout, once, so scripts can capture them;
what they are goes to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from weflow.cli.console import Format, FormatOpt, _when, catalog_path, note, out, scope

BODY_LIMIT_ENV = "WEFLOW_API_BODY_LIMIT"  # read by weflow.api.app.create_app in the server process

users_app = typer.Typer(help="Users of organizations; API keys belong to users.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the REST API (stored hashed, shown once).", no_args_is_help=True)
hooks_app = typer.Typer(help="Webhook tokens: POST /hooks/TOKEN starts a workflow.", no_args_is_help=True)


def _show(fmt: Format, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    if fmt is Format.json:
        records = [dict(zip(columns, (v.isoformat() if isinstance(v, datetime) else v for v in r), strict=True))
                   for r in rows]  # fmt: skip
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
        return
    table = Table(header_style="bold")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*[Text(_when(v) if isinstance(v, datetime) else ("" if v is None else str(v))) for v in r])
    out.print(table)


def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    body_limit: Annotated[
        int, typer.Option(min=1, envvar=BODY_LIMIT_ENV, help="largest request body in bytes (413 above)")
    ] = 1 << 20,
) -> None:
    """Serve the REST API with uvicorn (OpenAPI at /docs); all but /health and webhooks need an API key."""
    import uvicorn  # deferred: only this command needs a web server

    # The server process builds the app from its environment (uvicorn's factory takes no arguments).
    os.environ["WEFLOW_CATALOG"] = str(catalog_path())
    os.environ[BODY_LIMIT_ENV] = str(body_limit)
    note.print(f"weflow API starting on http://{host}:{port} (OpenAPI: /docs); Ctrl-C stops it")
    uvicorn.run("weflow.api.app:create_app", factory=True, host=host, port=port)


@users_app.command("add")
def users_add(organization: str, name: str) -> None:
    """Add user NAME to ORGANIZATION (both created if missing)."""
    from weflow import accounts

    user = accounts.add_user(catalog_path(), organization, name)
    out.print(f"user {user.name} (id {user.id}) in organization {organization}", highlight=False)


@users_app.command("list")
def users_list(fmt: FormatOpt = Format.table) -> None:
    """List users with their organizations."""
    from weflow import accounts

    found = accounts.users(catalog_path())
    _show(fmt, ["id", "organization", "user", "created"], [(u.id, org, u.name, u.created_at) for org, u in found])


@keys_app.command("create")
def keys_create(organization: str, user: str) -> None:
    """Make an API key for USER of ORGANIZATION; the key is printed once and cannot be shown again."""
    from weflow import accounts

    key, secret = accounts.create_key(catalog_path(), organization, user)
    sys.stdout.write(secret + "\n")
    note.print(f"API key {key.id} ({key.prefix}) for {organization}/{user}: store it now, it is not kept")


@keys_app.command("list")
def keys_list(fmt: FormatOpt = Format.table) -> None:
    """List API keys (their public prefix, never the key)."""
    from weflow import accounts

    found = accounts.keys(catalog_path())
    _show(fmt, ["id", "organization", "user", "prefix", "created", "revoked"],
          [(k.id, k.organization, k.user, k.prefix, k.created_at, k.revoked_at) for k in found])  # fmt: skip


@keys_app.command("revoke")
def keys_revoke(key_id: int) -> None:
    """Revoke API key KEY_ID: requests with it get 401 from now on."""
    from weflow import accounts

    key = accounts.revoke_key(catalog_path(), key_id)
    out.print(f"API key {key.id} ({key.organization}/{key.user}) revoked at {_when(key.revoked_at)}", highlight=False)


@hooks_app.command("create")
def hooks_create(workflow: str) -> None:
    """Make a webhook token for WORKFLOW (of WEFLOW_ORG, run as WEFLOW_USER); printed once."""
    from weflow import accounts, workflows

    sc = scope()
    hook, token = accounts.create_hook(sc, workflows.get(workflow, sc))
    sys.stdout.write(token + "\n")
    note.print(f"webhook {hook.id} for {workflow}: POST /hooks/<token> starts it; store the token now")


@hooks_app.command("list")
def hooks_list(
    workflow: Annotated[str | None, typer.Argument(help="only this workflow")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """List the webhook tokens of your organization's workflows."""
    from weflow import accounts, workflows

    sc = scope()
    found = accounts.hooks(sc, workflows.get(workflow, sc) if workflow else None)
    _show(fmt, ["id", "workflow", "prefix", "created", "revoked"],
          [(h.id, h.workflow, h.prefix, h.created_at, h.revoked_at) for h in found])  # fmt: skip


@hooks_app.command("revoke")
def hooks_revoke(hook_id: int) -> None:
    """Revoke webhook token HOOK_ID: its URL answers 404 from now on."""
    from weflow import accounts

    hook = accounts.revoke_hook(scope(), hook_id)
    out.print(f"webhook {hook.id} of {hook.workflow} revoked at {_when(hook.revoked_at)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``users``, ``keys`` and ``hooks`` to the ``weflow`` command."""
    app.command()(serve)
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(hooks_app, name="hooks")
