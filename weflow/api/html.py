"""HTML pieces the visualizer pages share: escaped cells and tables."""

from __future__ import annotations

from html import escape
from typing import Any


def cell(value: Any) -> str:
    """A value as escaped text (None as nothing)."""
    return "" if value is None else escape(str(value))


def table(headers: list[str], rows: list[list[Any]], row_ids: list[str] | None = None, table_id: str = "") -> str:
    """A table of already escaped cells; ``row_ids`` give rows ids ``node-NAME``."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        rid = f' id="node-{escape(row_ids[i])}"' if row_ids else ""
        body.append(f"<tr{rid}>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>")
    tid = f' id="{escape(table_id)}"' if table_id else ""
    return f"<table{tid}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
