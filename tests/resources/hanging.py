"""A python node that holds the interpreter: the hot worker's watchdog test allows this module."""

from __future__ import annotations

import re

import polars as pl


def hold(frame: pl.DataFrame | None = None, length: int = 64) -> pl.DataFrame:
    """Never return, holding the GIL: catastrophic backtracking inside the regex engine (a C call that never yields)."""
    re.fullmatch(r"(a|aa)+c", "a" * length)
    return pl.DataFrame({"never": [True]})
