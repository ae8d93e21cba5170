"""The ``weflow`` command line: thin parsing and rendering over the services.

Entry point ``run`` (the console script). Commands live by group in ``definitions``, ``runs``,
``stack`` and ``admin``; each adds its commands to ``console.app`` when imported here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from weflow.cli import admin, backfills, definitions, lineage, project, retention, runs, stack, testing, worker
from weflow.cli import catalog as catalog_commands
from weflow.cli import cursors as cursors_commands  # noqa: F401  (its import registers 'weflow cursors')
from weflow.cli import samples as samples_commands
from weflow.cli import secrets as secrets_commands
from weflow.cli.console import app, use
from weflow.config import project_env, project_root
from weflow.errors import WeflowError

T = TypeVar("T")
COMMAND_GROUPS = (definitions, lineage, runs, backfills, stack, worker, retention, testing, project)  # their commands


@app.callback()
def main(
    ctx: typer.Context,
    catalog: Annotated[
        Path | None,
        typer.Option("--catalog", envvar="WEFLOW_CATALOG", help="catalog file (default data/weflow.duckdb)"),
    ] = None,
    create_catalog: Annotated[
        bool, typer.Option("--create-catalog", help="create the folder of --catalog if it does not exist")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", help="show Prefect's console log and tracebacks while flows run")
    ] = False,
) -> None:
    source = ctx.get_parameter_source("catalog")  # typer's own vendored click: compare by name
    if catalog is not None and source is not None and source.name == "COMMANDLINE":
        _refuse_missing_folder(catalog, create_catalog)
    for name, value in project_env(project_root()).items():  # inside a project: its paths, for child processes too
        os.environ.setdefault(name, value)
    use(catalog, verbose)


def _refuse_missing_folder(catalog: Path, create: bool) -> None:
    """A typo in ``--catalog`` must not silently start an empty catalog (WEFLOW_CATALOG is left as it was)."""
    if create or catalog.parent.is_dir():
        return
    sys.stderr.write(
        f"error: --catalog {catalog}: folder {catalog.parent} does not exist (add --create-catalog to create it)\n"
    )
    raise SystemExit(2)


def _guard(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except WeflowError as exc:
        sys.stderr.write(f"error: {exc}\n")
        raise SystemExit(1) from None
    except Exception as exc:  # anything unforeseen: still one line (WEFLOW_DEBUG=1 for the traceback)
        if os.environ.get("WEFLOW_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sys.stderr.write(f"error: {type(exc).__name__}: {first}\n")
        raise SystemExit(1) from None


def run() -> None:
    """Console-script entry point: one clear line on stderr and exit 1 for any weflow error."""
    _guard(lambda: app(standalone_mode=True))


admin.register(app)
catalog_commands.register(app)
secrets_commands.register(app)
samples_commands.register(app)
