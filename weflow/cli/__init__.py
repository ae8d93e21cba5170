"""Interface: the ``weflow`` CLI (typer). Entry point: ``weflow.cli.app:run`` (the console script).

Modules: ``app`` (global options, the one-line error guard), ``console`` (the Typer app, output,
``scope()``), and the commands by group: ``definitions``, ``runs``, ``stack`` (deploy, up,
node-worker, alerts, server), ``admin`` (serve, users, keys, hooks).

Contract: errors are one line on stderr with exit 1; every listing takes ``--format json``;
commands call services (``weflow.workflows``, ``execution``, ``monitor``, ``accounts``,
``stack``, ``deploy``) and never import ``weflow.catalog`` or ``prefect`` (an import-linter contract).
"""
