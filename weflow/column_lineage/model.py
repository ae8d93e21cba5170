"""The lineage's data: columns (``Ref``), hops between them, and the questions asked of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from weflow.core import mermaid
from weflow.errors import NotFoundError

INDIRECT = frozenset({"FILTER", "JOIN", "GROUP_BY", "SORT"})
MAX_ORIGINS = 2_000  # paths through a wide diamond grow fast; a column's list stops here
Schema = dict[str, str]  # column -> dtype name, in order


@dataclass(frozen=True, order=True)
class Ref:
    """One column of one node's output."""

    node: str
    column: str

    def __str__(self) -> str:
        return f"{self.node}.{self.column}"


@dataclass(frozen=True)
class Hop:
    """``source`` feeds ``target`` (DIRECT), or decides the rows of ``target.node`` (INDIRECT, column ``*``)."""

    source: Ref
    target: Ref
    subtype: str  # IDENTITY | TRANSFORMATION | AGGREGATION | FILTER | JOIN | GROUP_BY | SORT
    description: str = ""

    @property
    def kind(self) -> str:
        return "INDIRECT" if self.subtype in INDIRECT else "DIRECT"


@dataclass(frozen=True)
class NodeColumns:
    """A node's output columns (None: unknown) and where they were learnt."""

    node: str
    type: str
    kind: str
    schema: Schema | None
    step: str = ""  # the fused step it runs in
    note: str = ""  # why the schema is unknown or declared

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(self.schema or ())


@dataclass(frozen=True)
class Origin:
    """A source column that feeds a column, with the hops from it (source first)."""

    source: Ref
    path: tuple[Hop, ...]

    @property
    def transforms(self) -> str:
        """The hops that change something (identities left out), e.g. ``lines: join key → revenue: sum(...)``."""
        shown = [h for h in self.path if h.subtype != "IDENTITY" or h.description]
        return " → ".join(f"{h.target.node}: {h.description or h.subtype.lower()}" for h in shown)


@dataclass(frozen=True)
class Lineage:
    """The column lineage of one workflow version."""

    workflow: str
    version: int | None
    nodes: tuple[NodeColumns, ...]
    hops: tuple[Hop, ...]
    _into: dict[Ref, list[Hop]] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        for hop in self.hops:
            self._into.setdefault(hop.target, []).append(hop)

    def node(self, name: str) -> NodeColumns:
        for n in self.nodes:
            if n.node == name:
                return n
        known = ", ".join(n.node for n in self.nodes)
        raise NotFoundError(f"node {name!r} is not in workflow {self.workflow!r} (nodes: {known})")

    def ref(self, text: str) -> Ref:
        """``NODE.COLUMN`` checked against the lineage: one clear line naming what is unknown."""
        name, dot, column = text.partition(".")
        if not dot or not column:
            raise NotFoundError(f"{text!r} is not NODE.COLUMN")
        found = self.node(name)
        if column not in found.columns:
            shown = ", ".join(found.columns) or "unknown"
            raise NotFoundError(f"column {column!r} is not an output of node {name!r} (columns: {shown})")
        return Ref(name, column)

    def inputs(self, ref: Ref) -> list[Hop]:
        """The DIRECT hops into ``ref``."""
        return [h for h in self._into.get(ref, []) if h.kind == "DIRECT"]

    def influences(self, node: str) -> list[Hop]:
        """The INDIRECT hops deciding which rows ``node`` keeps (its own only)."""
        return self._into.get(Ref(node, "*"), [])

    def origins(self, ref: Ref | str) -> list[Origin]:
        """Every source column feeding ``ref`` (or ``"NODE.COLUMN"``), once per path (none for a constant)."""
        ref = self.ref(ref) if isinstance(ref, str) else ref
        found: list[Origin] = []
        roots = {n.node for n in self.nodes if n.kind == "source"}

        def walk(at: Ref, path: tuple[Hop, ...]) -> None:
            if len(found) >= MAX_ORIGINS:
                return
            into = self.inputs(at)
            if not into and at.node in roots:
                found.append(Origin(at, path))
            for hop in into:
                walk(hop.source, (hop, *path))

        walk(ref, ())
        return found

    def sources(self, ref: Ref | str) -> set[Ref]:
        return {o.source for o in self.origins(ref)}

    def row_sources(self, node: str) -> set[tuple[Ref, str]]:
        """(source column, subtype) of every INDIRECT hop at ``node`` or upstream, traced to the sources."""
        seen, out, todo = set(), set(), [node]
        while todo:
            at = todo.pop()
            if at in seen:
                continue
            seen.add(at)
            for hop in self.influences(at):
                out |= {(o.source, hop.subtype) for o in self.origins(hop.source)}
            todo += list({h.source.node for h in self.hops if h.target.node == at})
        return out

    def mermaid(self, ref: Ref | str | None = None) -> str:
        """Mermaid flowchart of column hops (those upstream of ``ref`` only, when given), one box per node."""
        ref = self.ref(ref) if isinstance(ref, str) else ref
        hops = self._upstream(ref) if ref else [h for h in self.hops if h.kind == "DIRECT"]
        return _flowchart(hops, ref)

    def _upstream(self, ref: Ref) -> list[Hop]:
        out, seen, todo = [], set(), [ref]
        while todo:
            at = todo.pop()
            if at in seen:
                continue
            seen.add(at)
            for hop in self.inputs(at):
                out.append(hop)
                todo.append(hop.source)
        return out

    def _repr_markdown_(self) -> str:
        head = f"**{self.workflow}** v{self.version} — column lineage ({len(self.nodes)} nodes)"
        return head + "\n\n" + mermaid.markdown(self.mermaid())


def _flowchart(hops: list[Hop], ref: Ref | None) -> str:
    ids: dict[Ref, str] = {}
    for hop in hops:
        for r in (hop.source, hop.target):
            ids.setdefault(r, f"c{len(ids)}")
    if ref is not None:
        ids.setdefault(ref, f"c{len(ids)}")
    lines = ["flowchart LR"]
    by_node: dict[str, list[Ref]] = {}
    for r in ids:
        by_node.setdefault(r.node, []).append(r)
    for i, (node, refs) in enumerate(by_node.items()):
        lines.append(f'    subgraph n{i}["{node}"]')
        lines += [f'        {ids[r]}["{r.column}"]' for r in sorted(refs)]
        lines.append("    end")
    for hop in hops:
        label = hop.subtype.lower() if hop.subtype != "IDENTITY" else ""
        arrow = f"-- {label} -->" if label else "-->"
        lines.append(f"    {ids[hop.source]} {arrow} {ids[hop.target]}")
    return "\n".join(lines)
