"""``weflow prune``: apply the retention policies to the catalog (see ``weflow.retention``)."""

from __future__ import annotations

from typing import Annotated

import typer

from weflow.cli.console import Format, FormatOpt, app, catalog_path, emit_json, note, out, table


def _size(count: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:,} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    return str(count)


@app.command()
def prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show what would be removed; remove nothing")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Remove executions past their workflow's retention (default 14 days, 10,000 each), with their rows and files."""
    from weflow import retention

    report = retention.prune(catalog_path(), dry_run=dry_run, progress=note.print)
    if fmt is Format.json:
        emit_json({
            "dry_run": dry_run, "executions": report.executions, "files": report.files, "bytes": report.bytes,
            "left_outside_runs_folder": report.left,
            "workflows": [{"organization": p.organization, "workflow": p.workflow, "policy": p.policy,
                           "rows": p.rows, "files": p.files, "bytes": p.bytes} for p in report.workflows],
        })  # fmt: skip
        return
    if report.workflows:
        table(
            None, ["workflow", "keeps", "executions", "node executions", "other rows", "files", "size"],
            [(f"{p.organization}/{p.workflow}", p.policy.text(), p.executions, p.rows.get("node_executions", 0),
              sum(p.rows.values()) - p.executions - p.rows.get("node_executions", 0), p.files, _size(p.bytes))
             for p in report.workflows],
        )  # fmt: skip
    verb = "would remove" if dry_run else "removed"
    out.print(
        f"{verb} {report.executions:,} executions and {report.files:,} files ({_size(report.bytes)})", highlight=False
    )
    for path in report.left:
        note.print(f"kept {path}: outside the runs folder")
