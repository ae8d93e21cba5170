"""Runtime settings read from the environment when asked for, overridable per context."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

_override: ContextVar[Settings | None] = ContextVar("weflow_settings", default=None)


@dataclass(frozen=True)
class Settings:
    catalog: Path
    organization: str
    user: str
    data_roots: tuple[Path, ...]
    python_node_modules: tuple[str, ...]
    runs_dir: Path
    outbound_allow: tuple[str, ...] = ()  # networks and host names http_json and webhooks may reach

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        roots = env.get("WEFLOW_DATA_ROOTS", "")
        return cls(
            catalog=Path(env.get("WEFLOW_CATALOG", "data/weflow.duckdb")),
            organization=env.get("WEFLOW_ORG", "default"),
            user=env.get("WEFLOW_USER", "admin"),
            data_roots=tuple(Path(p).resolve() for p in roots.split(":") if p) or (Path.cwd().resolve(),),
            python_node_modules=tuple(
                m.strip() for m in env.get("WEFLOW_PYTHON_NODE_MODULES", "").split(",") if m.strip()
            ),
            runs_dir=Path(env.get("WEFLOW_RUNS_DIR", "data/runs")),
            outbound_allow=tuple(h.strip() for h in env.get("WEFLOW_OUTBOUND_ALLOW", "").split(",") if h.strip()),
        )


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
