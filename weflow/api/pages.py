"""The execution visualizer: plain HTML pages with the Mermaid graph, node states and failures.

No build step and nothing from the internet: Mermaid ships in ``static/``. A browser cannot send
a bearer header from a link, so these pages also accept the key as ``?key=...``.
"""

from __future__ import annotations

import os
from html import escape
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.security import HTTPAuthorizationCredentials

from weflow import execution, workflows
from weflow.api.html import cell, table
from weflow.api.insights import diff_section, lineage_section, link
from weflow.api.security import bearer, caller
from weflow.core import mermaid
from weflow.display import execution_graph
from weflow.errors import NotFoundError
from weflow.workflows import Scope

STATIC = Path(__file__).resolve().parent / "static"
MAX_PAGE_ROWS = 100_000  # a page runs both versions in the API process: a bounded read
router = APIRouter(prefix="/ui", include_in_schema=False)

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2rem; color: #212529; }
h1 { font-size: 1.4rem; margin-bottom: .2rem; } .muted { color: #6c757d; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { padding: .3rem .7rem; border-bottom: 1px solid #dee2e6; text-align: left; }
.state { font-weight: 600; } .SUCCEEDED { color: #2b8a3e; } .FAILED, .TIMED_OUT { color: #c92a2a; }
.SKIPPED, .CANCELLED { color: #868e96; }
.error { background: #fff5f5; border-left: 4px solid #c92a2a; padding: .5rem 1rem; }
pre.mermaid { background: #f8f9fa; padding: 1rem; }
"""


def page_caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    key: Annotated[str | None, Query(description="API key, for links opened in a browser")] = None,
) -> Scope:
    if credentials is None and key:
        credentials = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)
    return caller(request, credentials)


PageCaller = Annotated[Scope, Depends(page_caller)]


def _prefect_ui() -> str:
    api = os.environ.get("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    return os.environ.get("PREFECT_UI_URL", api.removesuffix("/api"))


def _page(title: str, body: str) -> HTMLResponse:
    html = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{escape(title)} · weflow</title>
<style>{_STYLE}</style></head>
<body>{body}
<script src="/ui/static/mermaid.min.js"></script>
<script>mermaid.initialize({{startOnLoad: true, securityLevel: "strict", flowchart: {{htmlLabels: true}}}});</script>
</body></html>"""
    return HTMLResponse(html)


_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}
docs = APIRouter(include_in_schema=False)


@router.get("/static/{name}")
def static(name: str) -> FileResponse:
    """The page assets shipped in the package (Mermaid, Swagger UI); nothing else is served."""
    path = STATIC / name
    if path.suffix not in _STATIC_TYPES or path.parent != STATIC or not path.is_file():
        raise NotFoundError(f"no asset {name!r}")
    return FileResponse(path, media_type=_STATIC_TYPES[path.suffix])


@docs.get("/docs")
def swagger() -> HTMLResponse:
    """Swagger UI over /openapi.json, from assets in the package (works offline)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="weflow API",
        swagger_js_url="/ui/static/swagger-ui-bundle.js",
        swagger_css_url="/ui/static/swagger-ui.css",
        swagger_favicon_url="data:,",
    )


Version = Annotated[int | None, Query(ge=1, le=2**31 - 1)]
Text = Annotated[str | None, Query(max_length=1000)]
Rows = Annotated[int | None, Query(ge=1, le=MAX_PAGE_ROWS, description="rows each source reads for the data diff")]


@router.get("/executions/{execution_id}", response_class=HTMLResponse)
def execution_page(
    scope: PageCaller,
    execution_id: str,
    key: Text = None,
    node: Text = None,
    column: Text = None,
    compare: Version = None,
    match: Text = None,
    rows: Rows = None,
) -> HTMLResponse:
    """One execution: graph coloured by node state, node table, error, contract failures, Prefect link;
    ``node`` (and ``column``): that node's column lineage; ``compare``: the data diff from that version to this one."""
    found = execution.find(execution_id, scope)
    workflow = workflows.by_id(found.workflow_id, scope)
    definition = workflows.version_of(workflow, scope, found.version).definition
    parts = [
        f"<h1>{escape(found.workflow)} <span class='muted'>v{found.version}</span></h1>",
        f"<p>execution <code>{escape(found.id)}</code> · {escape(found.mode.value)} · "
        f"<span id='status' class='state {found.status.value}'>{found.status.value}</span>"
        f" · {cell(round(found.duration_ms) if found.duration_ms is not None else None)} ms"
        f" · <a href='/ui/workflows/{found.workflow_id}'>workflow</a></p>",
    ]
    if found.flow_run_id:
        prefect = f"{_prefect_ui()}/runs/flow-run/{found.flow_run_id}"
        parts.append(f"<p><a id='prefect-link' href='{escape(prefect)}'>Prefect flow run</a></p>")
    if found.error_message:
        parts.append(
            f"<p class='error' id='error'><b>{cell(found.error_type)}</b> in node "
            f"<b>{cell(found.error_node)}</b>: {escape(found.error_message)}</p>"
        )
    parts.append(f"<pre class='mermaid'>{escape(execution_graph(definition, found))}</pre>")
    order = {n.name: i for i, n in enumerate(definition.nodes)}
    nodes = sorted(found.nodes, key=lambda n: order.get(n.node, len(order)))
    here = f"/ui/executions/{found.id}"
    table_rows = [
        [f"<a href='{link(here, key=key, node=n.node)}#lineage'>{escape(n.node)}</a>",
         f"<span class='state {n.status.value}'>{n.status.value}</span>", n.attempts,
         cell(n.rows_in), cell(n.rows_out),
         cell(round(n.duration_ms) if n.duration_ms is not None else None), cell(n.group), cell(n.error)]
        for n in nodes
    ]  # fmt: skip
    headers = ["node", "status", "attempts", "rows in", "rows out", "ms", "fused into", "error"]
    parts.append(table(headers, table_rows, [n.node for n in nodes]))
    if node:
        parts.append(lineage_section(scope, workflow, found.version, node, column, {"key": key}))
    if compare is not None:
        parts.append(diff_section(scope, workflow, compare, found.version, match, rows))
    failures = execution.contract_failures(found, scope)
    if failures:
        parts.append(f"<h2>Contract failures ({len(failures)})</h2>")
        cases = [[cell(f["node"]), cell(f["column"]), cell(f["check"]), cell(f["failure_case"]), cell(f["index"])]
                 for f in failures[:200]]  # fmt: skip
        parts.append(table(["node", "column", "check", "failure case", "row"], cases))
    return _page(f"{found.workflow} {found.status.value}", "\n".join(parts))


@router.get("/workflows/{workflow_id}", response_class=HTMLResponse)
def workflow_page(scope: PageCaller, workflow_id: int) -> HTMLResponse:
    """A workflow: its current graph and its recent executions."""
    workflow = workflows.by_id(workflow_id, scope)
    definition = workflows.version_of(workflow, scope).definition
    runs = execution.executions(scope, workflow, limit=50)
    rows = [
        [f"<a href='/ui/executions/{escape(e.id)}'>{escape(e.id[:8])}</a>", e.version, escape(e.mode.value),
         f"<span class='state {e.status.value}'>{e.status.value}</span>", cell(e.started_at),
         cell(round(e.duration_ms) if e.duration_ms is not None else None), cell(e.error_message)]
        for e in runs
    ]  # fmt: skip
    body = (
        f"<h1>{escape(workflow.name)} <span class='muted'>v{workflow.current_version} · "
        f"{workflow.status.value}</span></h1><p>{escape(workflow.description)}</p>"
        f"<pre class='mermaid'>{escape(mermaid.graph(*definition.outline()))}</pre>"
        "<h2>Executions</h2>" + table(["execution", "version", "mode", "status", "started", "ms", "error"], rows)
    )
    return _page(workflow.name, body)
