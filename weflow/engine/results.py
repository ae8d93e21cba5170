"""What a run shows in the Prefect UI and tells Prefect's event bus when it ends.

- ``publish``: a Markdown artifact on the run's flow run (key ``result-<workflow>``, so the Artifacts
  page also lists each workflow's latest): every terminal node's row count and first rows, each
  contract's outcome, and a link to the execution's page in the weflow UI (``WEFLOW_UI_URL``).
  Off with ``settings: {result_preview: false}``; secret values read in the run are masked.
- ``announce``: a ``weflow.execution.<succeeded|failed>`` event naming the workflow, its
  organization, the execution and its inputs: what ``after`` triggers of other workflows wait on.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl
from prefect.artifacts import acreate_markdown_artifact
from prefect.context import FlowRunContext
from prefect.events import emit_event
from prefect.logging import get_run_logger

from weflow.core.entities import RunState

if TYPE_CHECKING:
    from weflow.engine.runtime import PlanRun

DEFAULT_ROWS = 10
MAX_COLUMNS = 20
MAX_CELL = 80
EVENT_PREFIX = "weflow.execution."
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|#!~])")


def ui_url() -> str:
    """Where the weflow UI is served (``weflow serve``), for links from the Prefect UI."""
    return os.environ.get("WEFLOW_UI_URL", "http://127.0.0.1:8000").rstrip("/")


def execution_id(run: PlanRun) -> str | None:
    """The execution a run records (none for a preview)."""
    return run.spec.execution_id


def _cell(value: Any) -> str:
    text = "" if value is None else str(value).replace("\n", " ").replace("\r", " ")
    text = text if len(text) <= MAX_CELL else text[: MAX_CELL - 1] + "…"
    return _MARKDOWN.sub(r"\\\1", text)


def rows_table(frame: pl.DataFrame, rows: int) -> str:
    """The frame's first ``rows`` rows (and first MAX_COLUMNS columns) as a Markdown table, cells escaped."""
    head = frame.head(rows).select(frame.columns[:MAX_COLUMNS])
    lines = ["| " + " | ".join(_cell(c) for c in head.columns) + " |", "|" + "---|" * head.width]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in head.iter_rows()]
    more = frame.width - head.width
    return "\n".join(lines) + (f"\n\n({more} more columns)" if more > 0 else "")


def markdown(run: PlanRun, rows: int) -> str:
    """The run's result as Markdown: terminal nodes' counts and first rows, contracts, the weflow link."""
    definition = run.plan.definition
    parts = [f"# {_cell(definition.name)}: result"]
    if (found := execution_id(run)) is not None:
        parts.append(f"[Execution {found} in the weflow UI]({ui_url()}/ui/executions/{found})")
    for node in sorted(run.keep):
        record = run.records[node]
        frame = run.frames.get(node)
        if frame is None:
            parts.append(f"## {_cell(node)}: {record.status.value}, no output")
            continue
        parts.append(f"## {_cell(node)}: {frame.height} rows ({record.status.value})")
        parts.append(rows_table(frame, rows))
    checked = [(name, rec.contract) for name, rec in run.records.items() if rec.contract]
    if checked:
        parts.append("## Contracts")
        lines = ["| node | where | passed | rows checked | failures |", "|---|---|---|---|---|"]
        for name, outcome in checked:
            fields = [name, outcome.get("where"), outcome.get("ok"), outcome.get("rows_checked"), outcome["failures"]]
            lines.append("| " + " | ".join(_cell(v) for v in fields) + " |")
        parts.append("\n".join(lines))
    text = "\n\n".join(parts)
    for value in run.revealed.values():  # a secret read for a node never reaches the artifact
        if value:
            text = text.replace(value, "***").replace(_cell(value), "***")
    return text


def _key(workflow: str) -> str:
    """An artifact key (lowercase letters, digits, dashes) for the workflow."""
    return "result-" + (re.sub(r"[^a-z0-9]+", "-", workflow.lower()).strip("-") or "workflow")


async def publish(run: PlanRun) -> None:
    """The result artifact on the current flow run, unless the workflow turned it off; never fails the run."""
    preview = run.plan.definition.settings.result_preview
    if preview is False or run.spec.limit is not None or FlowRunContext.get() is None:  # off, a preview, no run
        return
    rows = DEFAULT_ROWS if preview is True else int(preview)
    try:
        text = markdown(run, rows)
        await acreate_markdown_artifact(text, key=_key(run.spec.workflow), description="weflow run result")
    except Exception as exc:  # an artifact is a view of the run, never a reason to fail it
        get_run_logger().warning("could not publish the result artifact: %s", type(exc).__name__)


def announce(run: PlanRun, status: RunState) -> None:
    """Emit the end of the execution as a Prefect event (queued; sent by Prefect's events worker)."""
    found = execution_id(run)
    if found is None:
        return
    outcome = "succeeded" if status is RunState.SUCCEEDED else "failed"
    labels: Mapping[str, str] = {
        "prefect.resource.id": f"weflow.execution.{found}",
        "prefect.resource.name": run.spec.workflow,
        "weflow.execution-id": found,
        "weflow.workflow": run.spec.workflow,
        "weflow.organization": run.spec.organization or "",
        "weflow.status": status.value,
    }
    inputs = {k: v for k, v in run.spec.params.items() if isinstance(v, str | int | float | bool)}
    emit_event(EVENT_PREFIX + outcome, resource=dict(labels), payload={"inputs": inputs})
