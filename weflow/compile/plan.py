"""Execution plan: nodes grouped into steps, each step one Prefect task (DESIGN decision 5).

A step is a tree of lazy (pure Polars) nodes whose plan runs as one query. A node ends a step
(its frame is materialised) when it is not lazy, carries a contract, is persisted, fans out,
is terminal, feeds a non-lazy node or an input contract, or has its own run policy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from weflow.core.graph import Edge, edges, topological_order
from weflow.core.model import Definition, Node
from weflow.nodes.base import NodeType


@dataclass(frozen=True)
class Step:
    """One task: ``nodes`` in dependency order; ``root`` is the node whose frame it returns."""

    root: str
    nodes: tuple[str, ...]
    inputs: tuple[Edge, ...]  # edges from other steps' roots into this step

    @property
    def name(self) -> str:
        return self.root if len(self.nodes) == 1 else f"{self.root} (+{len(self.nodes) - 1} fused)"

    @property
    def fused(self) -> bool:
        return len(self.nodes) > 1


@dataclass(frozen=True)
class Plan:
    definition: Definition
    steps: tuple[Step, ...]  # topological order
    edges: tuple[Edge, ...]
    persist_all: bool = False

    def step_of(self, node: str) -> Step:
        for step in self.steps:
            if node in step.nodes:
                return step
        raise KeyError(node)

    @property
    def terminals(self) -> tuple[str, ...]:
        sources = {e.source for e in self.edges}
        return tuple(n.name for n in self.definition.nodes if n.name not in sources)

    def consumers(self, node: str) -> list[Edge]:
        return [e for e in self.edges if e.source == node]


def _policy(node: Node) -> tuple[object, ...]:
    return (node.retries, node.retry_delay_seconds, node.timeout_seconds)


def build(
    definition: Definition, types: Mapping[str, NodeType], fuse: bool | None = None, persist_all: bool = False
) -> Plan:
    """Group the nodes of a checked definition into steps (one node a step when all are persisted)."""
    fuse = definition.settings.fuse if fuse is None else fuse
    persist_all = persist_all or definition.settings.persist_outputs
    all_edges = edges(definition, {name: t.signature for name, t in types.items()})
    order = topological_order(definition)
    rank = {name: i for i, name in enumerate(order)}
    nodes = {n.name: n for n in definition.nodes}
    out: dict[str, list[Edge]] = {name: [] for name in nodes}
    into: dict[str, list[Edge]] = {name: [] for name in nodes}
    for e in all_edges:
        out[e.source].append(e)
        into[e.target].append(e)

    def lazy(name: str) -> bool:
        return types[nodes[name].type].lazy

    def merges_into_consumer(name: str) -> bool:
        node = nodes[name]
        if not (fuse and lazy(name)) or node.contract is not None or node.persist:
            return False
        if persist_all or len(out[name]) != 1:
            return False
        edge = out[name][0]
        consumer = nodes[edge.target]
        return lazy(edge.target) and edge.port not in consumer.input_contracts and _policy(node) == _policy(consumer)

    steps: list[Step] = []
    for name in order:
        if merges_into_consumer(name):
            continue
        members, frontier, inputs = [name], [name], []
        while frontier:
            current = frontier.pop()
            for e in into[current]:
                if merges_into_consumer(e.source):
                    members.append(e.source)
                    frontier.append(e.source)
                else:
                    inputs.append(e)
        ordered = tuple(sorted(members, key=rank.__getitem__))
        steps.append(Step(name, ordered, tuple(sorted(inputs, key=lambda e: e.index))))
    return Plan(definition, tuple(steps), tuple(all_edges), persist_all)
