"""SQL expression strings parsed by Polars, with run inputs bound as values, never as text.

Every expression passes :func:`weflow.nodes.sqlcheck.check_expression` before Polars parses it, at
apply and again at run: Polars' SQL would run a subquery's ``read_csv(...)`` while building the
expression, so the text Polars gets must already be known to hold no query and no file access.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import polars as pl

from weflow.nodes import sqlcheck

_PARAM = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)")
_QUOTED = re.compile(r"'(?:[^']|'')*'")
PARAM_PREFIX = "__weflow_param_"


def param_names(text: str) -> list[str]:
    """Names of the ``$name`` references outside quoted strings."""
    bare = _QUOTED.sub("''", text)
    return list(dict.fromkeys(_PARAM.findall(bare)))


def bound(query: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs a DuckDB ``query`` references as ``$name``, for its ``params=``."""
    return {n: params[n] for n in param_names(query)}


def _rewrite(text: str) -> str:
    out, last = [], 0
    for quoted in _QUOTED.finditer(text):
        out.append(_PARAM.sub(lambda m: PARAM_PREFIX + m.group(1), text[last : quoted.start()]))
        out.append(quoted.group(0))
        last = quoted.end()
    out.append(_PARAM.sub(lambda m: PARAM_PREFIX + m.group(1), text[last:]))
    return "".join(out)


def parse(text: str) -> pl.Expr:
    """Check then parse a SQL expression; ``$name`` becomes a reference to the bound input column.

    Raises ValueError naming the refused construct; Polars never sees a refused text.
    """
    rewritten = _rewrite(text)
    sqlcheck.check_expression(rewritten)
    return pl.sql_expr(rewritten)


def check(text: str) -> str:
    """Validate an expression at apply time; raise ValueError with the reason."""
    rewritten = _rewrite(text)
    sqlcheck.check_expression(rewritten)
    try:
        pl.sql_expr(rewritten)
    except (Exception, pl.exceptions.PanicException) as exc:  # `greatest()` panics inside Polars
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"not a valid SQL expression ({reason})") from None
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
