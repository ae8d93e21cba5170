"""What a notebook shows: workflows and builders as Mermaid graphs with every node and edge."""

from __future__ import annotations

from weflow import parse, workflow
from weflow.core import mermaid

from .conftest import REPO


def test_definition_displays_as_a_mermaid_graph() -> None:
    d = parse((REPO / "data/workflows/customer_revenue.yaml").read_text())
    shown = d._repr_markdown_()
    assert shown.startswith("**customer_revenue** (ACTIVE, 7 nodes)")
    assert "```mermaid\nflowchart LR" in shown
    for node in d.nodes:
        assert f'    {node.name}["{node.name}<br/><small>{node.type}</small>"]' in shown
    assert "    paid -->|left| joined" in shown and "    customers -->|right| joined" in shown
    assert "    joined --> by_segment" in shown


def test_states_colour_nodes_and_fused_steps_are_groups() -> None:
    d = parse((REPO / "data/workflows/daily_sales.yaml").read_text())
    text = mermaid.graph(
        *d.outline(),
        {"orders": mermaid.NodeState("FAILED"), "paid": mermaid.NodeState("SKIPPED")},
        {"paid": "ranked", "by_region": "ranked", "ranked": "ranked"},
    )
    assert '  subgraph step_ranked["fused: ranked"]' in text
    assert "    class orders failed" in text and "    class paid skipped" in text
    assert "classDef failed fill:#ffe3e3" in text


def test_an_unfinished_builder_says_what_is_missing() -> None:
    wf = workflow("draft")
    wf.node("orders", "read_csv", path="x.csv") >> wf.node("paid", "filter", condition="amount > 0")
    assert "orders --> paid" in wf._repr_markdown_()
    empty = workflow("empty")
    assert "not valid yet: nodes" in empty._repr_markdown_()


def test_mermaid_draws_plain_data() -> None:
    boxes = [("a", "read_csv"), ("b", "read_csv"), ("j", "join")]
    text = mermaid.graph(boxes, [("a", "j", "left"), ("b", "j", "right")])
    assert text.splitlines() == [
        "flowchart LR",
        '    a["a<br/><small>read_csv</small>"]',
        '    b["b<br/><small>read_csv</small>"]',
        '    j["j<br/><small>join</small>"]',
        "    a -->|left| j",
        "    b -->|right| j",
    ]
