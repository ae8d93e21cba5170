"""``weflow backfill`` and ``weflow backfills``: runs of a scheduled workflow over past intervals."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from weflow.cli.console import (
    BadInput,
    Format,
    FormatOpt,
    _when,
    app,
    emit_json,
    note,
    out,
    scope,
    stderr_console,
    table,
)

if TYPE_CHECKING:
    from weflow.core.intervals import Backfill

DONE = ("SUCCEEDED", "FAILED", "TIMED_OUT", "CANCELLED")


def _follow(current: Backfill, name: str) -> Backfill:
    """Drive the backfill in this process, its progress on stderr, until every run ended."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from weflow import backfills

    columns = (
        TextColumn(f"{name} {current.id[:8]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[state]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=stderr_console(), transient=False) as bar:
        task = bar.add_task("slots", total=len(current.items) or 1, state="")

        def show(b: Backfill) -> None:
            c = b.counts()
            state = (
                f"pending {c.get('PENDING', 0)}  queued {c.get('QUEUED', 0)}  running {c.get('RUNNING', 0)}  "
                f"done {c.get('SUCCEEDED', 0)}  failed {c.get('FAILED', 0) + c.get('TIMED_OUT', 0)}"
                + (f"  cancelled {c['CANCELLED']}" if c.get("CANCELLED") else "")
            )
            bar.update(task, completed=sum(c.get(s, 0) for s in DONE), state=state)

        try:
            return backfills.drive(scope(), current.id, show)
        except KeyboardInterrupt:
            bar.stop()
            note.print(f"stopped: runs already queued go on; 'weflow backfill resume {current.id}' carries on")
            raise typer.Exit(130) from None


def _summary(b: Backfill, name: str, fmt: Format) -> None:
    if fmt is Format.json:
        emit_json({"workflow": name, **_plain(b)})
        return
    c = b.counts()
    out.print(
        f"backfill {b.id} of {name}: {b.status}, {b.slots} slots, {b.skipped} skipped (already run), "
        + ", ".join(f"{k.lower()} {v}" for k, v in sorted(c.items())),
        highlight=False,
    )
    if b.status == "FAILED":
        raise typer.Exit(1)


def _plain(b: Backfill) -> dict[str, object]:
    return {
        "id": b.id, "status": b.status, "start": b.start_at.isoformat(), "end": b.end_at.isoformat(),
        "max_parallel": b.max_parallel, "rerun": b.rerun, "slots": b.slots, "skipped": b.skipped, "counts": b.counts(),
        "created_at": b.created_at.isoformat() if b.created_at else None,
        "finished_at": b.finished_at.isoformat() if b.finished_at else None,
        "items": [{"interval_start": s.interval_start.isoformat(), "interval_end": s.interval_end.isoformat(),
                   "status": s.status, "execution_id": s.execution_id, "error": s.error} for s in b.items],
    }  # fmt: skip


@app.command(no_args_is_help=True)
def backfill(
    name: Annotated[str, typer.Argument(help="the workflow; or 'cancel ID' / 'resume ID' for a backfill")],
    backfill_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="after cancel or resume")] = None,
    start: Annotated[str | None, typer.Option("--start", help="first instant, ISO 8601 (UTC if no zone)")] = None,
    end: Annotated[str | None, typer.Option("--end", help="end of the range, excluded")] = None,
    max_parallel: Annotated[int, typer.Option("--max-parallel", min=1, help="most runs unfinished at once")] = 1,
    rerun: Annotated[bool, typer.Option("--rerun", help="run again slots that already have a successful run")] = False,
    fmt: FormatOpt = Format.table,
) -> None:
    """Queue one run per schedule slot in [--start, --end) and drive them from here, with progress.

    Each run gets the inputs interval_start and interval_end (declare them to use them).

    This command stays in the foreground and keeps --max-parallel runs going, like Airflow's backfill.
    Stopped, the runs already queued go on: 'weflow backfill resume ID' carries on, 'weflow backfill cancel ID' ends it.
    """
    from weflow import backfills

    if name in {"cancel", "resume"} and backfill_id is not None:
        if name == "cancel":
            done = backfills.cancel(scope(), backfill_id)
            _summary(done, _workflow_name(done), fmt)
            return
        current = backfills.show(scope(), backfill_id)
        _summary(_follow(current, _workflow_name(current)), _workflow_name(current), fmt)
        return
    if backfill_id is not None:
        raise BadInput(f"unexpected argument {backfill_id!r}: 'weflow backfill NAME --start T1 --end T2'")
    if start is None or end is None:
        raise BadInput(f"backfill {name}: give --start and --end (ISO 8601 timestamps)")
    current = backfills.create(scope(), name, start, end, max_parallel, rerun)
    note.print(f"backfill {current.id}: {current.slots} slots, {current.skipped} skipped (they already have a run)")
    _summary(_follow(current, name), name, fmt)


def _workflow_name(b: Backfill) -> str:
    from weflow import backfills

    return backfills.workflow_name(scope(), b)


@app.command("backfills")
def list_backfills(
    name: Annotated[str | None, typer.Argument(help="only this workflow's; or 'show ID'")] = None,
    backfill_id: Annotated[str | None, typer.Argument(metavar="[ID]", help="the backfill, after show")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Backfills, newest first, with their slots per status; 'weflow backfills show ID' lists one's slots."""
    from weflow import backfills

    if name == "show" and backfill_id is not None:
        b = backfills.show(scope(), backfill_id)
        if fmt is Format.json:
            emit_json({"workflow": _workflow_name(b), **_plain(b)})
            return
        _summary(b, _workflow_name(b), Format.table)
        table(None, ["interval_start", "interval_end", "status", "execution", "error"],
              [(_when(s.interval_start), _when(s.interval_end), s.status, s.execution_id or "", s.error or "")
               for s in b.items])  # fmt: skip
        return
    if backfill_id is not None:
        raise BadInput(f"unexpected argument {backfill_id!r}: 'weflow backfills [NAME]' or 'weflow backfills show ID'")
    found = backfills.listed(scope(), name)
    if fmt is Format.json:
        emit_json([{"workflow": w, **_plain(b)} for w, b in found])
        return
    table(None, ["id", "workflow", "status", "range", "slots", "skipped", "slots by status", "created"],
          [(b.id, w, b.status, f"{_when(b.start_at)} .. {_when(b.end_at)}", b.slots, b.skipped,
            ", ".join(f"{k.lower()} {v}" for k, v in sorted(b.counts().items())), _when(b.created_at))
           for w, b in found])  # fmt: skip
