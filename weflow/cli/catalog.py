"""Catalog maintenance commands: ``weflow catalog backup|restore|check|compact`` over ``weflow.maintenance``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from weflow.cli.console import Format, FormatOpt, catalog_path, emit_json, out, table
from weflow.errors import CatalogError

catalog_app = typer.Typer(
    help="Back up, restore, check and compact the catalog file (each under the catalog's lock).", no_args_is_help=True
)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def _rows(counts: dict[str, int]) -> str:
    return f"{sum(counts.values())} rows in {len(counts)} tables"


@catalog_app.command()
def backup(
    path: Annotated[Path, typer.Argument(help="the backup file to write (outside the data roots)")],
    force: Annotated[bool, typer.Option("--force", help="replace PATH if it exists")] = False,
) -> None:
    """Copy the catalog to PATH while other processes keep using it (a consistent snapshot)."""
    from weflow import maintenance

    done = maintenance.backup(catalog_path(), path, force)
    out.print(f"backed up {catalog_path()} to {done.path}: {_rows(done.counts)}, {_size(done.size)}")


@catalog_app.command()
def restore(path: Annotated[Path, typer.Argument(help="a backup written by `weflow catalog backup`")]) -> None:
    """Replace the catalog with the backup PATH (refused while a stack runs against it); the old one is kept."""
    from weflow import maintenance

    done = maintenance.restore(catalog_path(), path)
    out.print(f"restored {done.catalog} from {path}: {_rows(done.counts)}")
    if done.aside is not None:
        out.print(f"the catalog it replaced is kept at {done.aside}")


@catalog_app.command()
def check(fmt: FormatOpt = Format.table) -> None:
    """Schema version, every table read whole, keys and parent rows checked, rows per table; exit 1 on a problem."""
    from weflow import maintenance

    cat = catalog_path()
    report = maintenance.check(cat)
    if fmt is Format.json:
        emit_json(report)
    else:
        out.print(f"catalog {cat}: schema version {report.version} of {report.latest}, {_size(report.size)}")
        table(None, ["table", "rows"], sorted(report.counts.items()))
        for problem in report.problems:
            out.print(f"problem: {problem}")
    if report.problems:
        more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
        raise CatalogError(f"catalog {cat}: {report.problems[0]}{more}")


@catalog_app.command()
def compact() -> None:
    """Rewrite the catalog into a new file without the space of deleted rows, and swap it in under the lock."""
    from weflow import maintenance

    done = maintenance.compact(catalog_path())
    out.print(
        f"compacted {done.catalog}: {_size(done.before)} -> {_size(done.after)} ({_rows(done.counts)}, every row kept)"
    )


def register(app: typer.Typer) -> None:
    """Add the ``catalog`` group to the ``weflow`` command."""
    app.add_typer(catalog_app, name="catalog")
