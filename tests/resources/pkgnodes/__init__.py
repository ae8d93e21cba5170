"""A listed module that imports what must never become a node: `from os import system`."""

from __future__ import annotations

from os import system

import polars as pl

__all__ = ["passthrough", "shadowed", "system"]


def passthrough(frame: pl.DataFrame | None = None) -> pl.DataFrame:
    """Defined here: allowed when this module is listed."""
    return frame if frame is not None else pl.DataFrame({"ok": [1]})


def shadowed(frame: pl.DataFrame | None = None) -> pl.DataFrame:
    """Rebound below: the source shows a `def`, the module holds `os.system` (only the run-time check sees it)."""
    return pl.DataFrame({"ok": [1]})


shadowed = system  # type: ignore[assignment]  # noqa: F811
