"""A builder that writes the definition document from code, reading like the pipeline.

wf = workflow("daily_sales", description="Revenue per region")
orders = wf.node("orders", "read_csv", path="data/samples/orders.csv")
paid = wf.node("paid", "filter", condition="status = 'paid'")
orders >> paid >> wf.node("by_region", "aggregate", by=["region"], aggs={"revenue": "sum(amount)"})
definition = wf.build()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from weflow.core.document import from_data
from weflow.core.model import Contract, Definition


@dataclass(frozen=True)
class Port:
    """An input port of a node, as in ``customers >> joined["left"]``."""

    node: NodeRef
    name: str

    def __rrshift__(self, other: NodeRef) -> NodeRef:
        other._builder._connect(other.name, f"{self.node.name}.{self.name}")
        return self.node


class NodeRef:
    """A node added to a builder; ``a >> b`` connects a's output to b's input."""

    def __init__(self, builder: WorkflowBuilder, name: str) -> None:
        self._builder = builder
        self.name = name

    def __rshift__(self, other: NodeRef | Port) -> NodeRef:
        if isinstance(other, Port):
            return other.__rrshift__(self)
        self._builder._connect(self.name, other.name)
        return other

    def __getitem__(self, port: str) -> Port:
        return Port(self, port)

    def __repr__(self) -> str:
        return f"NodeRef({self.name!r})"


class WorkflowBuilder:
    """Accumulates nodes and connections; ``build()`` validates into a Definition."""

    def __init__(self, name: str, **fields: Any) -> None:
        self._doc: dict[str, Any] = {"name": name, **fields, "nodes": [], "connections": []}

    def node(
        self,
        name: str,
        type: str,
        *,
        contract: Contract | dict[str, Any] | None = None,
        retries: int = 0,
        retry_delay_seconds: float = 0.0,
        timeout_seconds: float | None = None,
        persist: bool = False,
        **config: Any,
    ) -> NodeRef:
        """Add a node of ``type`` with its config given as keyword arguments."""
        spec: dict[str, Any] = {"name": name, "type": type, "config": config}
        if contract is not None:
            spec["contract"] = contract.model_dump() if isinstance(contract, Contract) else contract
        if retries:
            spec["retries"] = retries
        if retry_delay_seconds:
            spec["retry_delay_seconds"] = retry_delay_seconds
        if timeout_seconds is not None:
            spec["timeout_seconds"] = timeout_seconds
        if persist:
            spec["persist"] = True
        self._doc["nodes"].append(spec)
        return NodeRef(self, name)

    def _connect(self, source: str, target: str) -> None:
        self._doc["connections"].append({"from": source, "to": target})

    def build(self) -> Definition:
        return from_data(self._doc)

    def _repr_markdown_(self) -> str:
        try:
            return self.build()._repr_markdown_()
        except Exception as exc:  # an unfinished builder still displays, with what is wrong
            return f"**{self._doc['name']}**: not valid yet: {exc}"


def workflow(name: str, **fields: Any) -> WorkflowBuilder:
    """Start a workflow definition in code (``description``, ``schedule``, ... as keywords)."""
    return WorkflowBuilder(name, **fields)
