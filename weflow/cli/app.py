"""The ``weflow`` command line: thin parsing and rendering over the services.

Entry point ``run`` (the console script). Commands live by group in ``definitions``, ``runs``,
``stack``, ``admin`` and the other modules of ``MODULES``; each adds its commands to ``console.app``
when loaded (``load``): ``run`` loads only the module of the command asked for (``COMMANDS``), and
every module for ``--help``, no command or an unknown one; ``weflow.cli.app.app`` is the whole CLI.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from weflow.cli import console
from weflow.cli.console import use
from weflow.config import project_env, project_root
from weflow.errors import WeflowError

T = TypeVar("T")
# The command modules, in the order their commands appear in ``weflow --help`` (those with a ``register`` last).
MODULES = ("backfills", "definitions", "lineage", "project", "retention", "runs", "stack", "testing", "worker",
           "cursors", "admin", "catalog", "secrets", "samples")  # fmt: skip
# Each top-level command or group and the module that adds it (a test checks this against the whole CLI): a command
# builds only its own module's, not all 54 with their modules' imports (~0.15 s of every `weflow NAME`).
COMMANDS = {
    "alerts": "stack", "apply": "definitions", "backfill": "backfills", "backfills": "backfills", "cancel": "runs",
    "catalog": "catalog", "cursors": "cursors", "delete": "definitions", "deploy": "stack", "diff": "definitions",
    "execution": "runs", "executions": "runs", "export": "definitions", "hooks": "admin", "init": "project",
    "keys": "admin", "lineage": "lineage", "list": "definitions", "logs": "runs", "node-worker": "stack",
    "nodes": "definitions", "prune": "retention", "resume": "runs", "rollback": "definitions", "run": "runs",
    "samples": "samples", "secrets": "secrets", "serve": "admin", "server": "stack", "show": "definitions",
    "stats": "runs", "sync": "runs", "test": "testing", "up": "stack", "users": "admin", "versions": "definitions",
    "watch-files": "stack", "worker": "worker",
}  # fmt: skip
VALUED = frozenset({"--catalog"})  # the global options that take a value (the rest are flags)
_loaded: list[str] = []


def load(*modules: str) -> None:
    """Add these command modules' commands to the CLI (once each)."""
    for name in modules:
        if name in _loaded:
            continue
        module = importlib.import_module(f"weflow.cli.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(console.app)
        _loaded.append(name)


def modules_for(args: Sequence[str]) -> tuple[str, ...]:
    """The command modules a command line needs: its command's, or all of them (help, no command, an unknown one)."""
    rest = iter(args)
    for arg in rest:
        if arg == "--help":
            break
        if arg in VALUED:
            next(rest, None)
        elif not arg.startswith("-"):
            return (COMMANDS[arg],) if arg in COMMANDS else MODULES
    return MODULES


def __getattr__(name: str) -> Any:
    if name == "app":  # the whole CLI, every command loaded (typer's CliRunner in tests, documentation)
        load(*MODULES)
        return console.app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@console.app.callback()
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
    load(*modules_for(sys.argv[1:]))
    _guard(lambda: console.app(standalone_mode=True))
