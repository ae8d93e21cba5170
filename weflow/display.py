"""What a run looks like to a person: the Mermaid graph of an execution and a notebook's Markdown.

Plain text over the core types, shared by a notebook's ``RunResult`` and the API's execution page.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from weflow.core import mermaid
from weflow.core.entities import Execution
from weflow.core.model import Definition


def execution_graph(definition: Definition, execution: Execution) -> str:
    """Mermaid text of an execution over its definition: every node coloured by its state, fused steps grouped."""
    states = {
        n.node: mermaid.NodeState(
            n.status.value,
            ", ".join(
                x
                for x in (
                    f"{n.rows_out} rows" if n.rows_out is not None else "",
                    f"{n.duration_ms:.0f} ms" if n.duration_ms is not None else "",
                )
                if x
            ),
        )
        for n in execution.nodes
    }
    groups = {n.node: n.group for n in execution.nodes if n.group}
    return mermaid.graph(*definition.outline(), states, groups)


def run_markdown(e: Execution, definition: Definition | None, failures: Sequence[dict[str, Any]]) -> str:
    """A run in a notebook: status line, error, graph, node table and the first contract failures."""
    parts = [f"**{e.workflow}** v{e.version} — **{e.status.value}** in {(e.duration_ms or 0):.0f} ms"]
    if e.error_message:
        parts.append(f"> {e.error_message}")
    if definition is not None:
        parts.append(mermaid.markdown(execution_graph(definition, e)))
    rows = ["| node | status | attempts | rows in | rows out | ms |", "|---|---|---|---|---|---|"]
    for n in e.nodes:
        rows.append(
            f"| {n.node} | {n.status.value} | {n.attempts} | {_blank(n.rows_in)} | {_blank(n.rows_out)} "
            f"| {_blank(round(n.duration_ms) if n.duration_ms is not None else None)} |"
        )
    parts.append("\n".join(rows))
    if failures:
        cases = ["| node | column | check | failure case | row |", "|---|---|---|---|---|"]
        for f in failures[:50]:
            cases.append(
                f"| {f.get('node')} | {_blank(f.get('column'))} | {f.get('check')} "
                f"| {f.get('failure_case')} | {_blank(f.get('index'))} |"
            )
        parts.append("**Contract failures**\n\n" + "\n".join(cases))
    return "\n\n".join(parts)


def _blank(value: Any) -> str:
    return "" if value is None else str(value)
