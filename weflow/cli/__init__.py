"""Interface: the ``weflow`` CLI (typer). Entry point: ``weflow.cli.app:run``.

Contract: errors are one line on stderr with exit 1; every listing takes ``--format json``.
"""
