"""Graphs as Mermaid text: a workflow's nodes and connections, an execution's per-node state.

JupyterLab renders a ```mermaid block in Markdown output natively; the visualizer page renders
the same text. Fused steps show as subgraphs. The renderer takes plain data (``Definition.outline()``
gives a definition's), so it knows nothing of the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

Box = tuple[str, str]  # a node: its name, its type
Arrow = tuple[str, str, str | None]  # a connection: from node, to node, input port (None: the default)

STATE_STYLES = {
    "SUCCEEDED": "fill:#d3f9d8,stroke:#2b8a3e,color:#1b4332",
    "FAILED": "fill:#ffe3e3,stroke:#c92a2a,color:#7d1a1a",
    "TIMED_OUT": "fill:#fff3bf,stroke:#e67700,color:#5c3c00",
    "CANCELLED": "fill:#e9ecef,stroke:#495057,color:#212529",
    "SKIPPED": "fill:#f8f9fa,stroke:#adb5bd,color:#868e96,stroke-dasharray:4 3",
    "RUNNING": "fill:#d0ebff,stroke:#1971c2,color:#0b3d66",
    "QUEUED": "fill:#f1f3f5,stroke:#868e96,color:#495057",
}


@dataclass(frozen=True)
class NodeState:
    status: str
    detail: str = ""  # e.g. "120 rows, 35 ms"


def _label(text: str) -> str:
    return text.replace('"', "'").replace("\n", " ")


def graph(
    boxes: Sequence[Box],
    arrows: Sequence[Arrow],
    states: Mapping[str, NodeState] | None = None,
    groups: Mapping[str, str] | None = None,
    direction: str = "LR",
) -> str:
    """Mermaid flowchart text; ``states`` colours nodes, ``groups`` (node -> step) draws fused steps."""
    states = states or {}
    lines = [f"flowchart {direction}"]
    members: dict[str, list[str]] = {}
    for name, _ in boxes:
        group = (groups or {}).get(name)
        members.setdefault(group or "", []).append(name)

    types = dict(boxes)

    def node_line(name: str) -> str:
        label = f"{name}<br/><small>{types[name]}</small>"
        state = states.get(name)
        if state is not None:
            label += f"<br/><small>{state.status}{' · ' + state.detail if state.detail else ''}</small>"
        return f'    {name}["{_label(label)}"]'

    for group, names in members.items():
        if group and len(names) > 1:
            lines.append(f'  subgraph step_{group}["fused: {group}"]')
            lines.extend("  " + node_line(n) for n in names)
            lines.append("  end")
        else:
            lines.extend(node_line(n) for n in names)
    for source, target, port in arrows:
        arrow = f" -->|{port}| " if port else " --> "
        lines.append(f"    {source}{arrow}{target}")
    used = sorted({s.status for s in states.values() if s.status in STATE_STYLES})
    for status in used:
        lines.append(f"    classDef {status.lower()} {STATE_STYLES[status]}")
    for name, state in states.items():
        if state.status in STATE_STYLES:
            lines.append(f"    class {name} {state.status.lower()}")
    return "\n".join(lines)


def markdown(text: str) -> str:
    return f"```mermaid\n{text}\n```"
