"""Interface: the ``weflow`` CLI (typer). Entry point: ``weflow.cli:main`` (the console script).

Modules: ``app`` (global options, the one-line error guard, which module adds which command),
``console`` (the Typer app, output, ``scope()``), and the commands by group: ``definitions``, ``runs``,
``stack`` (deploy, up, node-worker, alerts, server), ``admin`` (serve, users, keys, hooks) and the
others of ``app.MODULES``.

Contract: errors are one line on stderr with exit 1; every listing takes ``--format json``;
commands call services (``weflow.workflows``, ``execution``, ``monitor``, ``accounts``,
``stack``, ``deploy``) and never import ``weflow.catalog`` or ``prefect`` (an import-linter contract).
The console script loads only the module of the command asked for (``app.COMMANDS``; every module for
``--help`` or an unknown name), and a command imports the services it calls in its own body, never at
the top of its module (a module's other commands are built too): ``weflow run NAME`` handing a run to a
worker loads no other command module, DuckDB, Polars, Prefect or definition model (test_handoff checks it).
A new top-level command or group goes in ``app.COMMANDS`` (test_cli checks the table against the whole CLI).
``main`` loads the command with Python's cyclic collector off and freezes what loading made; rich loads on first
output (``console.out``/``note`` are made on first use), which ``weflow run`` does while its run runs on a worker.
"""

import gc
import sys


def main() -> None:
    """The ``weflow`` console script: ``weflow.cli.app.run`` with Python's cyclic garbage collector off while the CLI
    and its command's module load (~45k objects for ``weflow run``, none of them garbage, walked over and over by the
    collector), then what they made frozen (no later collection walks it, nor the interpreter's exit) before the
    command runs."""
    gc.disable()
    try:
        from weflow.cli import app

        app.load(*app.modules_for(sys.argv[1:]))
    finally:
        gc.freeze()
        gc.enable()
    app.run()
