"""Sections of the visualizer pages: the column lineage of one node, the data diff of two versions.

Both are HTML built from the services' results (``column_lineage``, ``data_diff``); a problem with
what the page was asked (an unknown node, a key missing from a version) shows as the section's error,
not as a failed page.
"""

from __future__ import annotations

from html import escape
from urllib.parse import urlencode

from weflow import column_lineage, workflows
from weflow.api.html import cell, table
from weflow.column_lineage import Ref
from weflow.core.entities import Workflow
from weflow.data_diff.runner import for_versions
from weflow.errors import WeflowError
from weflow.workflows import Scope


def link(base: str, **params: str | int | None) -> str:
    """``base`` with the query ``params`` that are set (the page's key travels along when given)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    return escape(f"{base}?{query}" if query else base)


def lineage_section(
    scope: Scope, workflow: Workflow, version: int, node: str, column: str | None, links: dict[str, str | None]
) -> str:
    """The columns of ``node`` in ``version``: each one's sources and transforms (and a graph for ``column``)."""
    parts = [f"<h2 id='lineage'>Column lineage of <code>{escape(node)}</code></h2>"]
    try:
        found = column_lineage.of(
            workflows.version_of(workflow, scope, version).definition, workflows.data_roots(scope), version
        )
        own = found.node(node)
        picked = found.ref(f"{node}.{column}") if column else None
    except WeflowError as exc:
        return "\n".join([*parts, f"<p class='error' id='lineage-error'>{escape(str(exc))}</p>"])
    if own.note:
        parts.append(f"<p class='muted'>columns {escape(own.note)}</p>")
    rows = []
    for name in own.columns:
        origins = found.origins(Ref(node, name))
        sources = ", ".join(sorted({str(o.source) for o in origins})) or ("(source)" if own.kind == "source" else "")
        via = "; ".join(sorted({o.transforms for o in origins if o.transforms}))
        href = link("", **links, node=node, column=name) + "#lineage"
        rows.append(
            [f"<a href='{href}'>{escape(name)}</a>", cell((own.schema or {}).get(name)), cell(sources), cell(via)]
        )
    parts.append(table(["column", "dtype", "from", "via"], rows, table_id="lineage-table"))
    decided = sorted(f"{source} ({subtype.lower()})" for source, subtype in found.row_sources(node))
    if decided:
        parts.append(f"<p id='lineage-rows'>rows decided by: {cell(', '.join(decided))}</p>")
    if picked is not None:
        parts.append(f"<pre class='mermaid' id='lineage-graph'>{escape(found.mermaid(picked))}</pre>")
    return "\n".join(parts)


def diff_section(scope: Scope, workflow: Workflow, a: int, b: int, key: str | None, rows: int | None) -> str:
    """What each node shared by versions ``a`` and ``b`` outputs differently on the same input (nothing written)."""
    parts = [f"<h2 id='data-diff'>Data diff: version {a} → {b}</h2>"]
    try:
        found = for_versions(workflow, a, b, scope, key=key.split(",") if key else None, rows=rows)
    except WeflowError as exc:
        return "\n".join([*parts, f"<p class='error' id='diff-error'>{escape(str(exc))}</p>"])
    parts += [f"<p class='muted'>{cell(line)}</p>" for line in found.lines()]
    summaries = [n.summary() for n in found.nodes]
    headers = list(summaries[0]) if summaries else ["node"]
    parts.append(
        table(headers, [[cell(v) for v in s.values()] for s in summaries], [f"diff-{n.node}" for n in found.nodes])
    )
    return "\n".join(parts)
