"""SQL expression strings parsed by Polars, with run inputs bound as values, never as text."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import polars as pl

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_QUOTED = re.compile(r"'(?:[^']|'')*'")
PARAM_PREFIX = "__weflow_param_"


def param_names(text: str) -> list[str]:
    """Names of the ``$name`` references outside quoted strings."""
    bare = _QUOTED.sub("''", text)
    return list(dict.fromkeys(_PARAM.findall(bare)))


def _rewrite(text: str) -> str:
    out, last = [], 0
    for quoted in _QUOTED.finditer(text):
        out.append(_PARAM.sub(lambda m: PARAM_PREFIX + m.group(1), text[last : quoted.start()]))
        out.append(quoted.group(0))
        last = quoted.end()
    out.append(_PARAM.sub(lambda m: PARAM_PREFIX + m.group(1), text[last:]))
    return "".join(out)


def parse(text: str) -> pl.Expr:
    """Parse a SQL expression; ``$name`` becomes a reference to the bound input column."""
    return pl.sql_expr(_rewrite(text))


def check(text: str) -> str:
    """Validate an expression at apply time; raise ValueError with Polars' reason."""
    try:
        parse(text)
    except Exception as exc:
        raise ValueError(f"not a valid SQL expression: {text!r} ({exc})") from None
    return text


def with_params(frame: pl.LazyFrame, texts: list[str], params: Mapping[str, Any]) -> tuple[pl.LazyFrame, list[str]]:
    """Add each referenced input as a literal column; return the frame and the columns to drop."""
    names = list(dict.fromkeys(n for t in texts for n in param_names(t)))
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"input {missing[0]!r} is referenced as ${missing[0]} but not given")
    if not names:
        return frame, []
    cols = [PARAM_PREFIX + n for n in names]
    return frame.with_columns(pl.lit(params[n]).alias(c) for n, c in zip(names, cols, strict=True)), cols
