"""Runtime settings read from the environment when asked for, overridable per context."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from weflow.errors import WeflowError

_override: ContextVar[Settings | None] = ContextVar("weflow_settings", default=None)

ORGANIZATION = "{organization}"  # in a data root: replaced by the organization whose node runs
DEFAULT_PREFECT_HOME = Path("data/prefect")
MARKER = "weflow.toml"  # written by `weflow init`: its folder is the project root (the way git finds .git)


def project_root(start: Path | None = None) -> Path | None:
    """The nearest folder from ``start`` (default: the working directory) up holding ``weflow.toml``; else None."""
    here = (start or Path.cwd()).resolve()
    return next((d for d in (here, *here.parents) if (d / MARKER).is_file()), None)


def project_env(root: Path | None) -> dict[str, str]:
    """The project's catalog, runs, data root and Prefect home as environment defaults (absolute); none outside one."""
    if root is None:
        return {}
    return {
        "WEFLOW_CATALOG": str(root / "data/weflow.duckdb"),
        "WEFLOW_RUNS_DIR": str(root / "data/runs"),
        "WEFLOW_DATA_ROOTS": str(root),
        "PREFECT_HOME": str(root / DEFAULT_PREFECT_HOME),
    }


@dataclass(frozen=True)
class Settings:
    catalog: Path
    organization: str
    user: str
    data_roots: tuple[Path, ...]  # as configured: a root may hold ORGANIZATION (see roots_for)
    python_node_modules: tuple[str, ...]
    runs_dir: Path
    shared_data_roots: bool = False  # the operator's opt-in: organizations may share a root
    prefect_home: Path | None = None  # PREFECT_HOME when the user set it
    outbound_allow: tuple[str, ...] = ()  # networks and host names http_json and webhooks may reach
    openlineage_url: str | None = None  # an OpenLineage endpoint (Marquez): runs send it their events
    backfill_max_slots: int = 1000  # the most slots one backfill may queue (WEFLOW_BACKFILL_MAX_SLOTS)

    @classmethod
    def from_env(cls) -> Settings:
        env = {**project_env(project_root()), **os.environ}  # the variables set win over the project's defaults
        roots = env.get("WEFLOW_DATA_ROOTS", "")
        home = env.get("PREFECT_HOME", "")
        return cls(
            catalog=Path(env.get("WEFLOW_CATALOG", "data/weflow.duckdb")),
            organization=env.get("WEFLOW_ORG", "default"),
            user=env.get("WEFLOW_USER", "admin"),
            data_roots=tuple(Path(p).resolve() for p in roots.split(":") if p) or (Path.cwd().resolve(),),
            python_node_modules=tuple(
                m.strip() for m in env.get("WEFLOW_PYTHON_NODE_MODULES", "").split(",") if m.strip()
            ),
            runs_dir=Path(env.get("WEFLOW_RUNS_DIR", "data/runs")),
            shared_data_roots=env.get("WEFLOW_SHARED_DATA_ROOTS", "").strip().lower() in {"1", "true", "yes"},
            prefect_home=Path(home) if home else None,
            outbound_allow=tuple(h.strip() for h in env.get("WEFLOW_OUTBOUND_ALLOW", "").split(",") if h.strip()),
            openlineage_url=env.get("WEFLOW_OPENLINEAGE_URL", "").strip() or None,
            backfill_max_slots=_count(env, "WEFLOW_BACKFILL_MAX_SLOTS", 1000),
        )

    def roots_for(self, organization: str, organizations: int = 1) -> tuple[Path, ...]:
        """The data roots open to ``organization``'s nodes; none when they would see another's files.

        ``{organization}`` in a root becomes the organization's name. A root without it is shared
        by every organization of the catalog: allowed with one organization, or when the operator
        opted in (``WEFLOW_SHARED_DATA_ROOTS=true``).
        """
        shared = any(ORGANIZATION not in str(r) for r in self.data_roots)
        if shared and organizations > 1 and not self.shared_data_roots:
            return ()
        if organization in {"", ".", ".."} or "/" in organization or "\0" in organization:
            return ()  # a name that would step out of its folder
        return tuple(Path(str(r).replace(ORGANIZATION, organization)).resolve() for r in self.data_roots)

    def own_state(self) -> tuple[tuple[str, Path], ...]:
        """weflow's own files, which no node may read or write whatever the data roots, with what each is.

        The catalog (files named after it, such as its ``.wal`` and ``.lock``, are matched in
        ``weflow.nodes.base``), the Prefect home (weflow's default and ``PREFECT_HOME``) and the
        runs folder (spilled and persisted outputs of every organization).
        """
        homes = (DEFAULT_PREFECT_HOME, *((self.prefect_home,) if self.prefect_home else ()))
        return (
            ("the catalog", self.catalog.resolve()),
            *(("the Prefect home", home.resolve()) for home in homes),
            ("the run outputs", self.runs_dir.resolve()),
        )


def _count(env: Mapping[str, str], name: str, default: int) -> int:
    """A positive whole number from the environment; a bad one is a one-line error naming the variable."""
    text = env.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise WeflowError(f"{name}={text!r}: must be a positive whole number")
    return int(text)


def settings() -> Settings:
    """The settings in force: an override set by ``using()``, else the environment."""
    return _override.get() or Settings.from_env()


@contextmanager
def using(**changes: Any) -> Iterator[Settings]:
    """Override some settings for the code inside the block (tests, notebooks)."""
    current = replace(settings(), **changes)
    token = _override.set(current)
    try:
        yield current
    finally:
        _override.reset(token)
