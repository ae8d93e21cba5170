"""Interface: the ``weflow`` CLI (typer). Entry point: ``weflow.cli.app:run`` (the console script).

Modules: ``app`` (global options, the one-line error guard), ``console`` (the Typer app, output,
``scope()``), and the commands by group: ``definitions``, ``runs``, ``stack`` (deploy, up,
node-worker, alerts, server), ``admin`` (serve, users, keys, hooks).

Contract: errors are one line on stderr with exit 1; every listing takes ``--format json``;
commands call services (``weflow.workflows``, ``execution``, ``monitor``, ``accounts``,
``stack``, ``deploy``) and never import ``weflow.catalog`` or ``prefect`` (an import-linter contract).
A command imports the services it calls in its own body, never at the top of its module: every
command is imported to build the CLI, so ``weflow run NAME`` handing a run to a worker loads no
DuckDB, Polars, Prefect or definition model (0.18 s of imports instead of 0.33 s; test_handoff checks it).
"""
