"""Graph checks and ordering of a definition against the signatures of its node types.

``problems()`` runs the checks as passes, each a pure function from the definition (with the
node types) to (document path, message) pairs: nodes (names, types, configs, input contracts),
connections (ends and ports), input counts, alerts, then cycles once nothing else is wrong.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from weflow.core.document import problems_from
from weflow.core.model import DEFAULT_OUTPUT_PORT, Connection, Definition, Endpoint

DEFAULT_INPUT_PORT = "in"
Problem = tuple[str, str]  # (path in the document, message)


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
    """Resolve every connection's port (default port filled in); assumes problems() found none."""
    types = {n.name: n.type for n in definition.nodes}
    out = []
    for i, conn in enumerate(definition.connections):
        sig = signatures[types[conn.to.node]]
        out.append(Edge(conn.from_.node, conn.to.node, conn.to.port or sig.inputs[0], i))
    return out


@dataclass(frozen=True)
class _Graph:
    """What every pass reads: the definition, the node types, each node name's first position."""

    definition: Definition
    signatures: Mapping[str, NodeSignature]
    index: dict[str, int]

    @classmethod
    def of(cls, definition: Definition, signatures: Mapping[str, NodeSignature]) -> _Graph:
        index: dict[str, int] = {}
        for i, node in enumerate(definition.nodes):
            index.setdefault(node.name, i)
        return cls(definition, signatures, index)

    def signature_of(self, name: str) -> NodeSignature | None:
        return self.signatures.get(self.definition.nodes[self.index[name]].type)


def problems(definition: Definition, signatures: Mapping[str, NodeSignature]) -> list[Problem]:
    """Every problem of the definition, pass by pass; cycles are looked for only in a graph with none."""
    g = _Graph.of(definition, signatures)
    passes = (_node_problems, _connection_problems, _input_count_problems, _alert_problems)
    found = [problem for each in passes for problem in each(g)]
    return found or _cycle_problems(definition)


def _node_problems(g: _Graph) -> list[Problem]:
    """Names unique, types known, configs valid, input contracts on ports that exist: node by node."""
    found: list[Problem] = []
    for i, node in enumerate(g.definition.nodes):
        first = g.index[node.name]
        if first != i:
            found.append((f"nodes[{i}].name", f"duplicate node name {node.name!r} (also nodes[{first}])"))
        else:
            found.extend(_type_problems(g, i))
    return found


def _type_problems(g: _Graph, i: int) -> list[Problem]:
    node = g.definition.nodes[i]
    sig = g.signatures.get(node.type)
    if sig is None:
        known = ", ".join(sorted(g.signatures))
        return [(f"nodes[{i}].type", f"unknown node type {node.type!r} (known: {known})")]
    found = _config_problems(i, node.config, sig)
    for port in node.input_contracts:
        if port not in sig.inputs:
            found.append((f"nodes[{i}].input_contracts.{port}", f"{node.type} has no input port {port!r}"))
    return found


def _connection_problems(g: _Graph) -> list[Problem]:
    """Both ends of every connection exist and name real ports; no edge twice (but into a variadic port)."""
    found: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for i, conn in enumerate(g.definition.connections):
        wrong, port = _ends(g, i, conn)
        found.extend(wrong)
        if port is None:
            continue
        key = (conn.from_.node, conn.to.node)
        sig = g.signature_of(conn.to.node)
        if key in seen and sig is not None and not sig.variadic:
            found.append((f"connections[{i}]", f"duplicate connection (also connections[{seen[key]}])"))
        seen.setdefault(key, i)
    return found


def _ends(g: _Graph, i: int, conn: Connection) -> tuple[list[Problem], str | None]:
    """One connection's problems, and the input port it feeds when it has none (else None)."""
    found = _source_problems(g, i, conn.from_)
    dst = conn.to
    if dst.node not in g.index:
        return [*found, (f"connections[{i}].to", f"unknown node {dst.node!r}")], None
    node = g.definition.nodes[g.index[dst.node]]
    sig = g.signatures.get(node.type)
    if sig is None:
        return found, None
    port = dst.port or (sig.inputs[0] if sig.inputs else None)
    if not sig.inputs:
        problem = f"{dst.node!r} is a {node.type} source and takes no inputs"
    elif dst.port is None and len(sig.inputs) > 1:
        ports = ", ".join(sig.inputs)
        problem = f"{dst.node!r} ({node.type}) has ports {ports}: name one, e.g. '{dst.node}.{sig.inputs[0]}'"
    elif port not in sig.inputs:
        problem = f"node {dst.node!r} ({node.type}) has no input port {port!r} (ports: {', '.join(sig.inputs)})"
    else:
        return found, (port if not found else None)
    return [*found, (f"connections[{i}].to", problem)], None


def _source_problems(g: _Graph, i: int, src: Endpoint) -> list[Problem]:
    if src.node not in g.index:
        return [(f"connections[{i}].from", f"unknown node {src.node!r}")]
    if src.port not in (None, DEFAULT_OUTPUT_PORT):
        return [(f"connections[{i}].from", f"node {src.node!r} has one output, 'out'; no port {src.port!r}")]
    return []


def _input_count_problems(g: _Graph) -> list[Problem]:
    """Every input port of a known node type is fed once; a variadic port at least ``min_inputs`` times."""
    wired: dict[str, dict[str, int]] = {name: {} for name in g.index}
    for i, conn in enumerate(g.definition.connections):
        port = _ends(g, i, conn)[1]
        if port is not None:
            wired[conn.to.node][port] = wired[conn.to.node].get(port, 0) + 1
    found: list[Problem] = []
    for name, i in g.index.items():
        node, sig = g.definition.nodes[i], g.signature_of(name)
        if sig is None:
            continue
        if sig.variadic:
            count = sum(wired[name].values())
            if count < sig.min_inputs:
                found.append(
                    (f"nodes[{i}]", f"{node.type} {name!r} needs at least {sig.min_inputs} input(s), got {count}")
                )
            continue
        for port in sig.inputs:
            got = wired[name].get(port, 0)
            if got != 1:
                what = "an input" if len(sig.inputs) == 1 else f"one input on port {port!r}"
                found.append((f"nodes[{i}]", f"{node.type} {name!r} takes {what}, got {got}"))
    return found


def _alert_problems(g: _Graph) -> list[Problem]:
    """Alert names unique, watched nodes known, a missed-schedule alert only with a schedule."""
    found: list[Problem] = []
    names: dict[str, int] = {}
    for i, rule in enumerate(g.definition.alerts):
        if rule.name in names:
            found.append((f"alerts[{i}].name", f"duplicate alert name {rule.name!r} (also alerts[{names[rule.name]}])"))
        names.setdefault(rule.name, i)
        if rule.node is not None and rule.node not in g.index:
            found.append((f"alerts[{i}].node", f"unknown node {rule.node!r}"))
        if rule.on == "missed_schedule" and not g.definition.schedule:
            found.append((f"alerts[{i}].on", "a missed_schedule alert needs the workflow to have a schedule"))
    return found


def _cycle_problems(definition: Definition) -> list[Problem]:
    cycle = find_cycle(definition)
    return [("connections", "cycle: " + " -> ".join([*cycle, cycle[0]]))] if cycle else []


def _config_problems(i: int, config: dict[str, Any], sig: NodeSignature) -> list[Problem]:
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
