"""The python node type: an allowed ``module:function`` called with the input frames."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import polars as pl
from pydantic import Field

from weflow.config import settings
from weflow.nodes import callables
from weflow.nodes.base import Frame, NodeConfig, NodeInputs, RunContext


class PythonConfig(NodeConfig):
    callable: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", description="module:function")
    kwargs: dict[str, Any] = Field(default_factory=dict)


def check_python(config: PythonConfig) -> None:
    """Only a function defined in a listed module (read from its source, not imported)."""
    try:
        callables.check(config.callable, settings().python_node_modules)
    except ValueError as exc:
        raise ValueError(f"callable: {exc}") from None


def load_callable(spec: str) -> Callable[..., Any]:
    """Import an allowed function; refused if the imported object was not defined in its module."""
    try:
        return callables.load(spec, settings().python_node_modules)
    except ValueError as exc:
        raise ValueError(f"callable: {exc}") from None


def python(config: PythonConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    fn = load_callable(config.callable)  # checks again at run time: the allow-list may have changed
    frames = [ctx.stop.collect(f) for f in inputs.frames()]
    result = fn(*frames, **config.kwargs)
    if not isinstance(result, pl.DataFrame | pl.LazyFrame):
        raise TypeError(f"{config.callable} returned {type(result).__name__}, not a Polars frame")
    return result
