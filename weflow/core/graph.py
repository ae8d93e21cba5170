"""Graph checks and ordering of a definition against the signatures of its node types."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from weflow.core.document import problems_from
from weflow.core.model import DEFAULT_OUTPUT_PORT, Definition
from weflow.errors import DefinitionError

DEFAULT_INPUT_PORT = "in"


@dataclass(frozen=True)
class NodeSignature:
    """What the graph needs to know of a node type: its ports and its config schema.

    ``inputs`` names the input ports; a ``variadic`` type takes any number (at least
    ``min_inputs``) of inputs on its single port; a source has no inputs.
    """

    name: str
    config: type[BaseModel]
    inputs: tuple[str, ...] = (DEFAULT_INPUT_PORT,)
    variadic: bool = False
    min_inputs: int = 1
    # Extra config check run after the schema (e.g. a path under the data roots); raises ValueError.
    check: Callable[[BaseModel], None] | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    port: str
    index: int  # position in definition.connections


def edges(definition: Definition, signatures: Mapping[str, NodeSignature]) -> list[Edge]:
    """Resolve every connection's port (default port filled in); assumes check() passed."""
    types = {n.name: n.type for n in definition.nodes}
    out = []
    for i, conn in enumerate(definition.connections):
        sig = signatures[types[conn.to.node]]
        out.append(Edge(conn.from_.node, conn.to.node, conn.to.port or sig.inputs[0], i))
    return out


def check(definition: Definition, signatures: Mapping[str, NodeSignature]) -> None:
    """Raise DefinitionError listing every problem, each with its path in the document."""
    problems: list[tuple[str, str]] = []
    index: dict[str, int] = {}
    for i, node in enumerate(definition.nodes):
        if node.name in index:
            problems.append((f"nodes[{i}].name", f"duplicate node name {node.name!r} (also nodes[{index[node.name]}])"))
            continue
        index[node.name] = i
        sig = signatures.get(node.type)
        if sig is None:
            known = ", ".join(sorted(signatures))
            problems.append((f"nodes[{i}].type", f"unknown node type {node.type!r} (known: {known})"))
            continue
        problems.extend(_config_problems(i, node.config, sig))
        for port in node.input_contracts:
            if port not in sig.inputs:
                problems.append((f"nodes[{i}].input_contracts.{port}", f"{node.type} has no input port {port!r}"))

    incoming: dict[str, dict[str, list[int]]] = {name: {} for name in index}
    seen_edges: dict[tuple[str, str], int] = {}
    for i, conn in enumerate(definition.connections):
        src, dst = conn.from_, conn.to
        ok = True
        if src.node not in index:
            problems.append((f"connections[{i}].from", f"unknown node {src.node!r}"))
            ok = False
        elif src.port not in (None, DEFAULT_OUTPUT_PORT):
            problems.append(
                (f"connections[{i}].from", f"node {src.node!r} has one output, 'out'; no port {src.port!r}")
            )
            ok = False
        if dst.node not in index:
            problems.append((f"connections[{i}].to", f"unknown node {dst.node!r}"))
            continue
        node = definition.nodes[index[dst.node]]
        sig = signatures.get(node.type)
        if sig is None:
            continue
        if not sig.inputs:
            problems.append((f"connections[{i}].to", f"{dst.node!r} is a {node.type} source and takes no inputs"))
            continue
        if dst.port is None and len(sig.inputs) > 1:
            ports = ", ".join(sig.inputs)
            problems.append(
                (
                    f"connections[{i}].to",
                    f"{dst.node!r} ({node.type}) has ports {ports}: name one, e.g. '{dst.node}.{sig.inputs[0]}'",
                )
            )
            continue
        port = dst.port or sig.inputs[0]
        if port not in sig.inputs:
            ports = ", ".join(sig.inputs)
            problems.append(
                (f"connections[{i}].to", f"node {dst.node!r} ({node.type}) has no input port {port!r} (ports: {ports})")
            )
            continue
        if ok:
            key = (src.node, dst.node)
            if key in seen_edges and not sig.variadic:
                problems.append((f"connections[{i}]", f"duplicate connection (also connections[{seen_edges[key]}])"))
            seen_edges.setdefault(key, i)
            incoming[dst.node].setdefault(port, []).append(i)

    for name, i in index.items():
        node = definition.nodes[i]
        sig = signatures.get(node.type)
        if sig is None:
            continue
        wired = incoming[name]
        if sig.variadic:
            count = sum(len(v) for v in wired.values())
            if count < sig.min_inputs:
                problems.append(
                    (f"nodes[{i}]", f"{node.type} {name!r} needs at least {sig.min_inputs} input(s), got {count}")
                )
            continue
        for port in sig.inputs:
            got = len(wired.get(port, []))
            if got != 1:
                what = "an input" if len(sig.inputs) == 1 else f"one input on port {port!r}"
                problems.append((f"nodes[{i}]", f"{node.type} {name!r} takes {what}, got {got}"))

    rule_names: dict[str, int] = {}
    for i, rule in enumerate(definition.alerts):
        if rule.name in rule_names:
            problems.append(
                (f"alerts[{i}].name", f"duplicate alert name {rule.name!r} (also alerts[{rule_names[rule.name]}])")
            )
        rule_names.setdefault(rule.name, i)
        if rule.node is not None and rule.node not in index:
            problems.append((f"alerts[{i}].node", f"unknown node {rule.node!r}"))
        if rule.on == "missed_schedule" and not definition.schedule:
            problems.append((f"alerts[{i}].on", "a missed_schedule alert needs the workflow to have a schedule"))

    if not problems:
        cycle = find_cycle(definition)
        if cycle:
            problems.append(("connections", "cycle: " + " -> ".join([*cycle, cycle[0]])))
    if problems:
        raise DefinitionError(problems, workflow=definition.name)


def _config_problems(i: int, config: dict[str, Any], sig: NodeSignature) -> list[tuple[str, str]]:
    try:
        parsed = sig.config.model_validate(config)
    except ValidationError as exc:
        return problems_from(exc, prefix=("nodes", i, "config"))
    if sig.check is not None:
        try:
            sig.check(parsed)
        except ValueError as exc:
            field_name, _, msg = str(exc).partition(": ")
            if msg and field_name.isidentifier():
                return [(f"nodes[{i}].config.{field_name}", msg)]
            return [(f"nodes[{i}].config", str(exc))]
    return []


def find_cycle(definition: Definition) -> list[str]:
    """Return the nodes of one cycle in definition order, or [] if the graph is acyclic."""
    graph: dict[str, list[str]] = {n.name: [] for n in definition.nodes}
    for conn in definition.connections:
        if conn.from_.node in graph and conn.to.node in graph:
            graph[conn.from_.node].append(conn.to.node)
    # depth-first with an explicit stack: recursion ended a 1,000-node chain in RecursionError
    done: set[str] = set()
    for start in graph:
        if start in done:
            continue
        path, on_path, pending = [start], {start}, [iter(graph[start])]
        while pending:
            nxt = next(pending[-1], None)
            if nxt is None:
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                pending.pop()
            elif nxt in on_path:
                return path[path.index(nxt) :]
            elif nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                pending.append(iter(graph[nxt]))
    return []


def topological_order(definition: Definition) -> list[str]:
    """Node names so that every node comes after its inputs; ties keep definition order."""
    position = {n.name: i for i, n in enumerate(definition.nodes)}
    indegree = dict.fromkeys(position, 0)
    children: dict[str, list[str]] = {name: [] for name in position}
    for conn in definition.connections:
        indegree[conn.to.node] += 1
        children[conn.from_.node].append(conn.to.node)
    names = [n.name for n in definition.nodes]
    ready = [position[n] for n, d in indegree.items() if d == 0]  # a heap of positions: ties in definition order
    order = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for child in children[name]:
            indegree[child] -= 1
            if indegree[child] == 0:
                heapq.heappush(ready, position[child])
    return order


def upstream(definition: Definition, target: str) -> set[str]:
    """The node and everything it depends on."""
    parents: dict[str, list[str]] = {}
    for conn in definition.connections:
        parents.setdefault(conn.to.node, []).append(conn.from_.node)
    seen, todo = set(), [target]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(parents.get(name, []))
    return seen


def downstream(definition: Definition, source: str) -> set[str]:
    """The node and everything that depends on it."""
    children: dict[str, list[str]] = {}
    for conn in definition.connections:
        children.setdefault(conn.from_.node, []).append(conn.to.node)
    seen, todo = set(), [source]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(children.get(name, []))
    return seen
