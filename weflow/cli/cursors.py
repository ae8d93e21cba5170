"""``weflow cursors``: where each incremental source of a workflow got to; ``weflow cursors reset`` moves one."""

from __future__ import annotations

from typing import Annotated

import typer

from weflow.cli.console import BadInput, Format, FormatOpt, _when, app, emit_json, out, scope, table


@app.command("cursors", no_args_is_help=True)
def cursors_(
    name: Annotated[str, typer.Argument(help="the workflow; or 'reset NAME NODE' to move a cursor")],
    workflow: Annotated[str | None, typer.Argument(metavar="[NAME]", help="after reset: the workflow")] = None,
    node: Annotated[str | None, typer.Argument(metavar="[NODE]", help="after reset: the incremental source")] = None,
    to: Annotated[str | None, typer.Option("--to", help="reset: the value to continue after (default: clear)")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Show the cursors of a workflow's incremental sources (node, column, value, when, by which execution).

    'weflow cursors reset NAME NODE --to VALUE': the next run reads rows above VALUE (as the column holds it).

    Without --to the cursor is cleared: the next run reads every row.
    """
    from weflow import cursors

    if name == "reset" and workflow is not None:
        if node is None:
            raise BadInput(f"cursors reset {workflow}: name the node ('weflow cursors reset NAME NODE [--to VALUE]')")
        moved = cursors.reset(scope(), workflow, node, to)
        shown = f"{moved.value} ({moved.kind})" if moved else "cleared: the next run reads every row"
        if fmt is Format.json:
            emit_json({"workflow": workflow, "node": node, "value": moved.value if moved else None})
        else:
            out.print(f"{workflow}.{node}: cursor {shown}", highlight=False)
        return
    if workflow is not None or to is not None:
        raise BadInput("'weflow cursors NAME' shows; 'weflow cursors reset NAME NODE [--to VALUE]' moves one")
    found = cursors.listed(scope(), name)
    if fmt is Format.json:
        emit_json([
            {"node": s.node, "column": s.column, "kind": s.cursor.kind if s.cursor else None,
             "value": s.cursor.value if s.cursor else None,
             "updated_at": s.cursor.updated_at.isoformat() if s.cursor else None,
             "execution_id": s.cursor.execution_id if s.cursor else None}
            for s in found
        ])  # fmt: skip
        return
    rows = [
        (s.node, s.column, s.cursor.value if s.cursor else "(none: reads every row)",
         _when(s.cursor.updated_at) if s.cursor else "",
         (s.cursor.execution_id or "reset") if s.cursor else "")
        for s in found
    ]  # fmt: skip
    table(f"cursors of {name}", ["node", "column", "value", "updated", "by"], rows)
