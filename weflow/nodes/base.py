"""What a node type is: its config schema, its ports and the function that runs it."""

from __future__ import annotations

import glob
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict

from weflow.config import settings
from weflow.core.graph import DEFAULT_INPUT_PORT, NodeSignature
from weflow.nodes.stop import Stop

Frame = pl.LazyFrame | pl.DataFrame
Kind = Literal["source", "transform", "sink", "python", "validate"]


class NodeConfig(BaseModel):
    """Base of every node type's config: plain data, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class Input:
    source: str  # upstream node name
    port: str
    frame: pl.LazyFrame


@dataclass(frozen=True)
class NodeInputs:
    """The frames flowing into a node, by port and by upstream node."""

    items: tuple[Input, ...] = ()

    def one(self) -> pl.LazyFrame:
        return self.items[0].frame

    def port(self, name: str) -> pl.LazyFrame:
        for item in self.items:
            if item.port == name:
                return item.frame
        raise KeyError(name)

    def frames(self) -> list[pl.LazyFrame]:
        return [i.frame for i in self.items]

    def by_source(self) -> dict[str, pl.LazyFrame]:
        return {i.source: i.frame for i in self.items}


@dataclass(frozen=True)
class RunContext:
    """What a node may know of its run: its name, the run's input data and where data lives."""

    workflow: str
    node: str
    params: Mapping[str, Any] = field(default_factory=dict)
    data_roots: tuple[Path, ...] = ()
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger("weflow.nodes")
    )
    work_dir: Path | None = None  # this run's own folder (backups for compensation)
    undo: Callable[[str, Callable[[], str]], None] | None = None  # register a compensating action
    stop: Stop = field(default_factory=Stop)  # collect and connect to DuckDB through it: a timeout stops them

    def compensation(self, action: str, run: Callable[[], str]) -> None:
        """Register what undoes this node's effect if a later node fails: ``run()`` returns what it did."""
        if self.undo is not None:
            self.undo(action, run)


@dataclass(frozen=True)
class NodeType:
    """A registered node type. ``lazy`` types are pure Polars plans that may be fused."""

    name: str
    config: type[NodeConfig]
    run: Callable[[Any, NodeInputs, RunContext], Frame]
    kind: Kind = "transform"
    inputs: tuple[str, ...] = (DEFAULT_INPUT_PORT,)
    variadic: bool = False
    min_inputs: int = 1
    lazy: bool = True
    description: str = ""
    check: Callable[[Any], None] | None = None

    @property
    def signature(self) -> NodeSignature:
        return NodeSignature(
            name=self.name,
            config=self.config,
            inputs=self.inputs,
            variadic=self.variadic,
            min_inputs=self.min_inputs if self.inputs else 0,
            check=self.check,
        )

    def fields(self) -> list[dict[str, Any]]:
        """Config fields for listings: name, type, required, default, description."""
        out = []
        for name, info in self.config.model_fields.items():
            out.append(
                {
                    "name": name,
                    "type": _type_name(info.annotation),
                    "required": info.is_required(),
                    "default": None if info.is_required() else info.get_default(call_default_factory=True),
                    "description": info.description or "",
                }
            )
        return out


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return re.sub(r"typing\.|<class '|'>", "", text)


# --- paths under the data roots ----------------------------------------------------


def data_roots() -> tuple[Path, ...]:
    return settings().data_roots


def resolve_path(path: str, roots: tuple[Path, ...] | None = None) -> Path:
    """Resolve ``path`` (a file or a glob) against the data roots; refuse anything outside them.

    A relative path is looked up in each root in turn (the first where it exists wins, else
    the first root); ``..`` is refused, and symlinks are followed before the check.
    """
    roots = roots or data_roots()
    where = ", ".join(str(r) for r in roots)
    given = Path(path)
    if ".." in given.parts:
        raise ValueError(f"path: {path!r} must not contain '..'")
    options = [given] if given.is_absolute() else [root / given for root in roots]
    for option in options:
        fixed = Path(*[p for p in option.parts[: _first_glob(option)]])
        real = fixed.resolve().joinpath(*option.parts[_first_glob(option) :])
        if any(real.is_relative_to(root) for root in roots) and (len(options) == 1 or _exists(real)):
            return real
    if not given.is_absolute() and any(options[0].resolve().is_relative_to(r) for r in roots):
        return options[0].resolve()
    raise ValueError(f"path: {path!r} is outside the data roots ({where}); see WEFLOW_DATA_ROOTS")


def _first_glob(path: Path) -> int:
    for i, part in enumerate(path.parts):
        if any(ch in part for ch in "*?["):
            return i
    return len(path.parts)


def _exists(path: Path) -> bool:
    text = str(path)
    return bool(glob.glob(text)) if _first_glob(path) < len(path.parts) else path.exists()


def check_path(field_name: str = "path") -> Callable[[Any], None]:
    """An apply-time check that a config path stays under the data roots."""

    def check(config: Any) -> None:
        value = getattr(config, field_name)
        try:
            resolve_path(value)
        except ValueError as exc:
            raise ValueError(f"{field_name}: {str(exc).partition(': ')[2]}") from None

    return check
