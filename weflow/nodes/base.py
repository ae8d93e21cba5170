"""What a node type is: its config schema, its ports and the function that runs it."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl
from pydantic import BaseModel, ConfigDict

from weflow.config import ORGANIZATION, settings
from weflow.core.graph import DEFAULT_INPUT_PORT, NodeSignature
from weflow.core.secret_ref import SecretParam as SecretParam  # a node type marks a config field secret by its type
from weflow.core.secret_ref import SecretRef as SecretRef
from weflow.core.secret_ref import SecretText as SecretText
from weflow.core.secret_ref import references
from weflow.nodes import objectstore
from weflow.nodes.stop import Stop

Frame = pl.LazyFrame | pl.DataFrame
Kind = Literal["source", "transform", "sink", "python", "validate"]


class NodeConfig(BaseModel):
    """Base of every node type's config: plain data, unknown keys refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


@dataclass(frozen=True)
class Inbound:
    """One frame arriving at a node: from which upstream node, on which input port."""

    source: str  # upstream node name
    port: str
    frame: pl.LazyFrame


@dataclass(frozen=True)
class NodeInputs:
    """The frames flowing into a node, by port and by upstream node."""

    items: tuple[Inbound, ...] = ()

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
    data_roots: tuple[Path, ...] | None = None  # None: the settings' roots; (): none open
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = field(
        default_factory=lambda: logging.getLogger("weflow.nodes")
    )
    work_dir: Path | None = None  # this run's own folder (backups for compensation)
    undo: Callable[[str, Callable[[], str]], None] | None = None  # register a compensating action
    stop: Stop = field(default_factory=Stop)  # collect and connect to DuckDB through it: a timeout stops them
    organization: str | None = None  # whose node runs ({organization} in WEFLOW_S3_BUCKETS); None: the settings'

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
                    "secret": "SecretRef" in str(info.annotation),  # takes {secret: NAME}
                }
            )
        return out


def plain(value: str | SecretRef) -> str:
    """A secret field's value when the node runs: the engine has replaced its reference by the value."""
    if isinstance(value, SecretRef):
        raise TypeError(f"secret {value.secret!r} was not resolved before the node ran")
    return value


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) or str(annotation)
    return re.sub(r"typing\.|<class '|'>", "", text)


# --- paths under the data roots ----------------------------------------------------

GLOB = "*?["
PathForm = Literal["glob", "one", "literal"]
OwnState = tuple[tuple[str, Path], ...]  # Settings.own_state(): what each is, where
SEE_ROOTS = "see WEFLOW_DATA_ROOTS"
NO_ROOTS = (
    "no data root is open to this organization: a root in WEFLOW_DATA_ROOTS without {organization} "
    "would be shared by the catalog's organizations (put {organization} in it, or set "
    "WEFLOW_SHARED_DATA_ROOTS=true to let them share)"
)


def data_roots() -> tuple[Path, ...]:
    """The data roots of the settings in force, ``{organization}`` expanded for their organization."""
    cfg = settings()
    return cfg.roots_for(cfg.organization)


def resolve_path(path: str, roots: tuple[Path, ...] | None = None, field: str = "path") -> Path:
    """Resolve one file's ``path`` (taken literally, no glob) under the data roots; refuse the rest.

    A relative path is looked up in each root in turn (the first where it exists wins, else the
    first root); ``..`` is refused; symlinks are followed before the check; weflow's own state
    (``Settings.own_state``) is refused whatever the roots. Messages show the path as given,
    never the server's roots.
    """
    usable = _usable(roots)
    given = _given(path, field, usable)
    options = [given.resolve()] if given.is_absolute() else [(root / given).resolve() for root in usable]
    chosen = next((o for o in options if o.exists()), options[0])
    _allow(chosen, repr(path), field, usable, settings().own_state())
    return chosen


def resolve_files(path: str, roots: tuple[Path, ...] | None = None, field: str = "path") -> list[Path]:
    """Every file ``path`` (a file or a glob) names under the data roots, each checked on its own.

    A glob is expanded here, not by Polars, so that each match is resolved (symlinks followed)
    and refused if it leads outside the roots or into weflow's own state; ``**`` does not
    descend into symlinked folders (pathlib's rule). The first root where a glob matches wins.
    """
    if not any(ch in path for ch in GLOB):
        found = resolve_path(path, roots, field)
        if not found.is_file():
            raise FileNotFoundError(f"{field}: {path!r} is not a file under the data roots")
        return [found]
    files = [m for m in _matches(path, roots, field) if m.is_file()]
    if not files:
        raise FileNotFoundError(f"{field}: {path!r} matches no file under the data roots")
    return files


def _matches(path: str, roots: tuple[Path, ...] | None, field: str) -> list[Path]:
    """The resolved matches of the glob ``path`` in the first root where it matches, all allowed."""
    usable = _usable(roots)
    given = _given(path, field, usable)
    cut = next(i for i, part in enumerate(given.parts) if any(ch in part for ch in GLOB))
    fixed, pattern = Path(*given.parts[:cut]), str(Path(*given.parts[cut:]))
    bases = [fixed.resolve()] if given.is_absolute() else [(root / fixed).resolve() for root in usable]
    state = settings().own_state()
    for base in bases:
        _allow(base, repr(path), field, usable, state)
        found = sorted(base.glob(pattern))
        if found:
            for match in found:
                shown = str(fixed / match.relative_to(base))
                _allow(match.resolve(), f"{path!r} matches {shown!r}, which", field, usable, state)
            return [m.resolve() for m in found]
    return []


def _usable(roots: tuple[Path, ...] | None) -> tuple[Path, ...]:
    """The roots to check against: the settings' when none are given; unexpanded templates never."""
    chosen = data_roots() if roots is None else roots
    return tuple(r for r in chosen if ORGANIZATION not in str(r))


def _given(path: str, field: str, roots: tuple[Path, ...]) -> Path:
    if objectstore.is_url(path):  # never quoted: it may carry a key
        raise ValueError(f"{field}: a URL is not a path under the data roots (only file sources and sinks take s3://)")
    given = Path(path)
    if ".." in given.parts:
        raise ValueError(f"{field}: {path!r} must not contain '..'")
    if "\0" in path:
        raise ValueError(f"{field}: {path!r} must not contain a NUL character")
    if not roots:
        raise ValueError(f"{field}: {NO_ROOTS}")
    return given


def _allow(real: Path, shown: str, field: str, roots: tuple[Path, ...], state: OwnState) -> None:
    """Refuse ``real`` (resolved) outside the roots or in weflow's own state; ``shown`` names it."""
    if not any(real.is_relative_to(root) for root in roots):
        raise ValueError(f"{field}: {shown} is outside the data roots ({SEE_ROOTS})")
    what = own_state(real, state)
    if what:
        raise ValueError(f"{field}: {shown} is weflow's own state ({what}); no node may read or write it")


def own_state(real: Path, state: OwnState | None = None) -> str | None:
    """What part of weflow's own state (default: the settings') the resolved path ``real`` is in, if any."""
    (_, catalog), *others = state or settings().own_state()
    for part in (real, *real.parents):
        if part.parent == catalog.parent and part.name.startswith(catalog.name):
            return "the catalog"  # the file, its .wal, .lock and .tmp folder
    for what, where in others:
        if real.is_relative_to(where):
            return what
    if real.is_file() and catalog.is_file() and os.path.samefile(real, catalog):
        return "the catalog"  # a hard link
    return None


_INPUT_REF = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")


def path_input(value: object) -> str | None:
    """The workflow input a config ``path`` names as ``$name`` (read when the node runs), else None.

    A file trigger passes the new file's path as an input; ``path: $path`` reads it. The value is
    checked where any path is: under the data roots (or the allowed buckets), out of weflow's state.
    """
    found = _INPUT_REF.fullmatch(value) if isinstance(value, str) else None
    return found.group(1) if found else None


def check_path(field_name: str = "path", form: PathForm = "glob") -> Callable[[Any], None]:
    """An apply-time check that a config path stays under the data roots, out of weflow's own state.

    ``form``: "glob" (sources) may be a glob, whose existing matches are checked too; "one"
    (databases) names one file, glob characters refused; "literal" (sink targets) is taken as
    written, as the sink will take it.
    """

    def check(config: Any) -> None:
        value = getattr(config, field_name)
        if references(value) or path_input(value):
            return  # a secret's or an input's value is known only when the node runs, where it is checked
        if getattr(config, "credentials", None) is not None and not objectstore.is_url(value):
            raise ValueError("credentials: only an s3:// path takes credentials")
        if objectstore.is_url(value) and form != "one":
            objectstore.locate(value, field_name, form)
            return
        if form == "literal" or not any(ch in value for ch in GLOB):
            resolve_path(value, None, field_name)
        elif form == "one":
            raise ValueError(f"{field_name}: {value!r} must name one file (no '*', '?' or '[')")
        else:
            _matches(value, None, field_name)

    return check
