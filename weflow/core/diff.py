"""Structural diff between two definitions: what a reviewer wants to see changed."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from weflow.core.model import Definition


@dataclass(frozen=True)
class NodeChange:
    node: str
    fields: tuple[str, ...]  # e.g. ("config.condition", "retries", "contract")


@dataclass(frozen=True)
class DefinitionDiff:
    nodes_added: tuple[str, ...] = ()
    nodes_removed: tuple[str, ...] = ()
    nodes_changed: tuple[NodeChange, ...] = ()
    connections_added: tuple[str, ...] = ()
    connections_removed: tuple[str, ...] = ()
    fields_changed: tuple[str, ...] = ()  # top-level: description, schedule, settings.*, ...
    schedule: tuple[tuple[str, ...], tuple[str, ...]] | None = None
    contracts_changed: tuple[str, ...] = field(default=())

    @property
    def empty(self) -> bool:
        return not any(
            (self.nodes_added, self.nodes_removed, self.nodes_changed, self.connections_added,
             self.connections_removed, self.fields_changed)
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes_added": list(self.nodes_added),
            "nodes_removed": list(self.nodes_removed),
            "nodes_changed": [{"node": c.node, "fields": list(c.fields)} for c in self.nodes_changed],
            "connections_added": list(self.connections_added),
            "connections_removed": list(self.connections_removed),
            "fields_changed": list(self.fields_changed),
            "schedule": None if self.schedule is None else [list(s) for s in self.schedule],
            "contracts_changed": list(self.contracts_changed),
        }

    def lines(self) -> list[str]:
        """Human-readable, one change a line, prefixed + - ~ as in a diff."""
        out = [f"+ node {n}" for n in self.nodes_added]
        out += [f"- node {n}" for n in self.nodes_removed]
        out += [f"~ node {c.node}: {', '.join(c.fields)}" for c in self.nodes_changed]
        out += [f"+ connection {c}" for c in self.connections_added]
        out += [f"- connection {c}" for c in self.connections_removed]
        if self.schedule is not None:
            before, after = (", ".join(s) or "(none)" for s in self.schedule)
            out.append(f"~ schedule: {before} -> {after}")
        out += [f"~ {f}" for f in self.fields_changed if f != "schedule"]
        return out


def _changed_keys(a: dict[str, Any], b: dict[str, Any], prefix: str) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{prefix}{k}" for k in keys if a.get(k, _MISSING) != b.get(k, _MISSING)]


_MISSING = object()


def diff(old: Definition, new: Definition) -> DefinitionDiff:
    old_nodes = {n.name: n for n in old.nodes}
    new_nodes = {n.name: n for n in new.nodes}
    changed, contracts = [], []
    for name, node in new_nodes.items():
        before = old_nodes.get(name)
        if before is None or before == node:
            continue
        a = before.model_dump(mode="json")
        b = node.model_dump(mode="json")
        fields = _changed_keys(a.pop("config"), b.pop("config"), "config.")
        fields += _changed_keys(a, b, "")
        if before.contract != node.contract or before.input_contracts != node.input_contracts:
            contracts.append(name)
        changed.append(NodeChange(name, tuple(fields)))

    def conns(d: Definition) -> list[str]:
        return [f"{c.source} -> {c.target}" for c in d.connections]

    old_c, new_c = conns(old), conns(new)
    old_set, new_set = set(old_c), set(new_c)  # list membership made a 5,000-node diff quadratic
    top_a = old.model_dump(mode="json", exclude={"nodes", "connections"})
    top_b = new.model_dump(mode="json", exclude={"nodes", "connections"})
    fields_changed = []
    for key in sorted(set(top_a) | set(top_b)):
        if isinstance(top_a.get(key), dict) and key in {"settings", "configuration", "inputs"}:
            fields_changed += _changed_keys(top_a[key], top_b.get(key, {}), f"{key}.")
        elif top_a.get(key) != top_b.get(key):
            fields_changed.append(key)
    return DefinitionDiff(
        nodes_added=tuple(n for n in new_nodes if n not in old_nodes),
        nodes_removed=tuple(n for n in old_nodes if n not in new_nodes),
        nodes_changed=tuple(changed),
        connections_added=tuple(c for c in new_c if c not in old_set),
        connections_removed=tuple(c for c in old_c if c not in new_set),
        fields_changed=tuple(fields_changed),
        schedule=(old.schedule, new.schedule) if old.schedule != new.schedule else None,
        contracts_changed=tuple(contracts),
    )
