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
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from weflow import workflows
from weflow.catalog import Catalog, auth
from weflow.config import settings
from weflow.workflows import Scope

BODY_LIMIT_ENV = "WEFLOW_API_BODY_LIMIT"  # read by weflow.api.app.create_app in the server process
# Markup and emoji codes off: organization, user and workflow names are user text (see cli.app).
out = Console(soft_wrap=True, markup=False, emoji=False)
if not out.is_terminal:
    out.width = 200
note = Console(stderr=True, soft_wrap=True, highlight=False, markup=False, emoji=False)

users_app = typer.Typer(help="Users of organizations; API keys belong to users.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys of the REST API (stored hashed, shown once).", no_args_is_help=True)
hooks_app = typer.Typer(help="Webhook tokens: POST /hooks/TOKEN starts a workflow.", no_args_is_help=True)


class Format(StrEnum):
    table = "table"
    json = "json"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts")]


def _catalog_path(ctx: typer.Context) -> Path:
    """The ``--catalog`` given to ``weflow`` (or WEFLOW_CATALOG), else the default catalog."""
    given = ctx.find_root().params.get("catalog")
    return Path(given) if given else settings().catalog


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


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
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    body_limit: Annotated[
        int, typer.Option(min=1, envvar=BODY_LIMIT_ENV, help="largest request body in bytes (413 above)")
    ] = 1 << 20,
) -> None:
    """Serve the REST API with uvicorn (OpenAPI at /docs); all but /health and webhooks need an API key."""
    import uvicorn  # deferred: only this command needs a web server

    # The server process builds the app from its environment (uvicorn's factory takes no arguments).
    os.environ["WEFLOW_CATALOG"] = str(_catalog_path(ctx))
    os.environ[BODY_LIMIT_ENV] = str(body_limit)
    note.print(f"weflow API starting on http://{host}:{port} (OpenAPI: /docs); Ctrl-C stops it")
    uvicorn.run("weflow.api.app:create_app", factory=True, host=host, port=port)


@users_app.command("add")
def users_add(ctx: typer.Context, organization: str, name: str) -> None:
    """Add user NAME to ORGANIZATION (both created if missing)."""
    user = Catalog(_catalog_path(ctx)).ensure_user(organization, name)
    out.print(f"user {user.name} (id {user.id}) in organization {organization}", highlight=False)


@users_app.command("list")
def users_list(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """List users with their organizations."""
    found = auth.users(Catalog(_catalog_path(ctx)))
    _show(fmt, ["id", "organization", "user", "created"], [(u.id, org, u.name, u.created_at) for org, u in found])


@keys_app.command("create")
def keys_create(ctx: typer.Context, organization: str, user: str) -> None:
    """Make an API key for USER of ORGANIZATION; the key is printed once and cannot be shown again."""
    catalog = Catalog(_catalog_path(ctx))
    key, secret = auth.create_key(catalog, auth.find_user(catalog, organization, user))
    sys.stdout.write(secret + "\n")
    note.print(f"API key {key.id} ({key.prefix}) for {organization}/{user}: store it now, it is not kept")


@keys_app.command("list")
def keys_list(ctx: typer.Context, fmt: FormatOpt = Format.table) -> None:
    """List API keys (their public prefix, never the key)."""
    found = auth.keys(Catalog(_catalog_path(ctx)))
    _show(fmt, ["id", "organization", "user", "prefix", "created", "revoked"],
          [(k.id, k.organization, k.user, k.prefix, k.created_at, k.revoked_at) for k in found])  # fmt: skip


@keys_app.command("revoke")
def keys_revoke(ctx: typer.Context, key_id: int) -> None:
    """Revoke API key KEY_ID: requests with it get 401 from now on."""
    key = auth.revoke_key(Catalog(_catalog_path(ctx)), key_id)
    out.print(f"API key {key.id} ({key.organization}/{key.user}) revoked at {_when(key.revoked_at)}", highlight=False)


@hooks_app.command("create")
def hooks_create(ctx: typer.Context, workflow: str) -> None:
    """Make a webhook token for WORKFLOW (of WEFLOW_ORG, run as WEFLOW_USER); printed once."""
    scope = Scope.current(_catalog_path(ctx))
    hook, token = auth.create_hook(scope.catalog, workflows.get(workflow, scope), scope.user)
    sys.stdout.write(token + "\n")
    note.print(f"webhook {hook.id} for {workflow}: POST /hooks/<token> starts it; store the token now")


@hooks_app.command("list")
def hooks_list(
    ctx: typer.Context,
    workflow: Annotated[str | None, typer.Argument(help="only this workflow")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """List the webhook tokens of your organization's workflows."""
    scope = Scope.current(_catalog_path(ctx))
    wf_id = workflows.get(workflow, scope).id if workflow else None
    found = auth.hooks(scope.catalog, scope.user.organization_id, wf_id)
    _show(fmt, ["id", "workflow", "prefix", "created", "revoked"],
          [(h.id, h.workflow, h.prefix, h.created_at, h.revoked_at) for h in found])  # fmt: skip


@hooks_app.command("revoke")
def hooks_revoke(ctx: typer.Context, hook_id: int) -> None:
    """Revoke webhook token HOOK_ID: its URL answers 404 from now on."""
    scope = Scope.current(_catalog_path(ctx))
    hook = auth.revoke_hook(scope.catalog, scope.user.organization_id, hook_id)
    out.print(f"webhook {hook.id} of {hook.workflow} revoked at {_when(hook.revoked_at)}", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``serve``, ``users``, ``keys`` and ``hooks`` to the ``weflow`` command."""
    app.command()(serve)
    app.add_typer(users_app, name="users")
    app.add_typer(keys_app, name="keys")
    app.add_typer(hooks_app, name="hooks")
