"""``weflow secrets set|list|delete``: your organization's secrets, which definitions use as ``{secret: NAME}``.

A value is read from stdin when it is piped, else from a prompt that does not echo; never from an
argument (it would stay in the shell's history and in ``ps``). Nothing prints a value.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from weflow.cli.console import Format, FormatOpt, emit_json, out, scope
from weflow.errors import SecretError

secrets_app = typer.Typer(
    help="Secrets of your organization (Prefect Secret blocks); a definition uses one as {secret: NAME}.",
    no_args_is_help=True,
)
Name = Annotated[str, typer.Argument(help="lowercase letters, digits and dashes, as in {secret: NAME}")]


def _value(name: str) -> str:
    if sys.stdin is not None and not sys.stdin.isatty():
        text = sys.stdin.read()
        return text[:-1] if text.endswith("\n") else text  # `echo x |` adds one line break; keep the rest
    try:
        typed: str = typer.prompt(f"value of {name}", hide_input=True, confirmation_prompt=True, err=True)
    except typer.Abort:
        raise SecretError(f"secret {name!r}: no value given") from None
    return typed


@secrets_app.command("set")
def set_secret(name: Name) -> None:
    """Set (or replace) secret NAME; the value comes from stdin when piped, else from a hidden prompt."""
    from weflow import secrets

    sc = scope()
    secrets.set_value(sc, name, _value(name))
    out.print(f"secret {name} set", highlight=False)


@secrets_app.command("list")
def list_secrets(fmt: FormatOpt = Format.table) -> None:
    """List the names of your organization's secrets (never a value)."""
    from weflow import secrets

    names = secrets.list_names(scope())
    if fmt is Format.json:
        emit_json(names)
        return
    for name in names:
        out.print(name, highlight=False)


@secrets_app.command("delete")
def delete_secret(name: Name) -> None:
    """Delete secret NAME; a node still referring to it fails naming it."""
    from weflow import secrets

    secrets.delete(scope(), name)
    out.print(f"secret {name} deleted", highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``secrets`` to the ``weflow`` command."""
    app.add_typer(secrets_app, name="secrets")
