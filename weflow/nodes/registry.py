"""The closed registry of node types: built-ins plus entry-point plugins, loaded on first use."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from functools import cache
from importlib.metadata import entry_points

from weflow.core.graph import NodeSignature
from weflow.nodes.base import NodeType
from weflow.nodes.builtin import BUILTINS

ENTRY_POINT_GROUP = "weflow.nodes"
log = logging.getLogger(__name__)


def _plugins() -> list[NodeType]:
    found: list[NodeType] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
            items = loaded() if callable(loaded) and not isinstance(loaded, NodeType) else loaded
            items = [items] if isinstance(items, NodeType) else list(items)
            bad = [i for i in items if not isinstance(i, NodeType)]
            if bad:
                raise TypeError(f"expected NodeType objects, got {type(bad[0]).__name__}")
            found.extend(items)
        except Exception as exc:  # a broken plugin must never break start-up
            log.warning("skipping weflow node plugin %r (%s): %s", ep.name, ep.value, exc)
    return found


@cache
def node_types() -> Mapping[str, NodeType]:
    """Every known node type by name; built-ins win over a plugin of the same name."""
    types: dict[str, NodeType] = {}
    for plugin in _plugins():
        types[plugin.name] = plugin
    for builtin in BUILTINS:
        if builtin.name in types:
            log.warning("plugin node type %r ignored: a built-in has that name", builtin.name)
        types[builtin.name] = builtin
    return types


def signatures() -> dict[str, NodeSignature]:
    return {name: t.signature for name, t in node_types().items()}


def node_type(name: str) -> NodeType:
    return node_types()[name]


def reload() -> None:
    """Forget loaded plugins (after installing one in a running kernel)."""
    node_types.cache_clear()
