"""SQL read by DuckDB's parser before anything runs it: expressions against an allow-list, queries as one SELECT.

DuckDB only parses here (``json_serialize_sql`` and ``extract_statements`` execute nothing), on a
private in-memory connection with file access off. An expression is checked as ``SELECT <expr>``
and must be exactly one select item built from the constructs below; whatever else the parser
finds (a subquery, FROM, a table function, a lambda, an unknown function) is refused by name
before Polars sees the text, because Polars runs a subquery's table functions (read_csv,
read_parquet, ...) while it merely builds the expression.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections import deque
from typing import Any

import duckdb

# Polars' SQL scalar, aggregate and window functions (polars 2.1.0: each name below was checked
# to be one `pl.sql_expr` knows), plus the names DuckDB gives to syntax Polars also accepts
# (EXTRACT -> date_part, POSITION(a IN b) -> position, [1, 2] -> list_value, a ~ 'x' -> regexp_matches,
# COUNT(*) -> count_star). Nothing here reads or writes a file.
FUNCTIONS = frozenset(
    """
    abs acos acosd asin asind atan atan2 atan2d atand cbrt ceil ceiling cos cosd cot cotd degrees div exp
    floor ln log log10 log1p log2 mod pi pow power radians round sign sin sind sqrt tan tand trunc truncate
    bit_and bit_count bit_length bit_not bit_or bit_xor bitand bitnot bitor bitxor xor
    coalesce greatest if ifnull least nullif
    current_date current_time current_timestamp date date_part date_trunc day dayofmonth dayofweek dayofyear
    hour localtime localtimestamp minute month now quarter second strftime strptime timestamp week year
    char_length character_length concat concat_ws ends_with initcap left length lower lpad ltrim normalize
    octet_length position regexp_like regexp_matches regexp_replace replace reverse right rpad rtrim
    split_part starts_with string_to_array strpos substr substring trim upper
    approx_quantile array_agg avg corr count count_star covar covar_pop covar_samp first first_value last
    last_value listagg max median min quantile_cont quantile_disc stddev stddev_samp stdev stdev_samp
    string_agg sum var var_samp variance
    array_contains array_dot_product array_get array_inner_product array_length array_lower array_mean
    array_reverse array_sum array_to_string array_unique array_upper list_value
    cume_dist dense_rank lag lead nth_value ntile percent_rank rank row_number
    """.split()
)
# The functions above that take no argument; the others need one (Polars 2.1.0 panics on `greatest()`).
NULLARY = frozenset(
    {"count", "count_star", "cume_dist", "current_date", "current_time", "current_timestamp", "dense_rank",
     "localtime", "localtimestamp", "now", "percent_rank", "pi", "rank", "row_number"}
)  # fmt: skip
# Operators as DuckDB's parser names them: arithmetic, concatenation, LIKE/ILIKE, bitwise, null-safe equality.
OPERATORS = frozenset({"+", "-", "*", "/", "//", "%", "||", "~~", "!~~", "~~*", "!~~*", "&", "|", "<=>"})
# The table functions of Polars' SQL that read files (polars 2.1.0: `pl.sql` ran each of these and no
# other read_* name; generate_series and unnest are its others): named when refused.
TABLE_FUNCTIONS = frozenset({"read_csv", "read_parquet", "read_ipc", "read_json", "read_ndjson"})

_PLAIN = frozenset({"COLUMN_REF", "CONSTANT", "COMPARISON", "CONJUNCTION", "BETWEEN", "CASE", "CAST", "TYPE"})
_OPERATOR_TYPES = frozenset(
    {"OPERATOR_NOT", "OPERATOR_IS_NULL", "OPERATOR_IS_NOT_NULL", "COMPARE_IN", "COMPARE_NOT_IN",
     "OPERATOR_COALESCE", "ARRAY_EXTRACT"}
)  # fmt: skip
_REFUSED = {
    "SUBQUERY": "subqueries are not allowed in expressions",
    "LAMBDA": "lambdas are not allowed in expressions",
    "PARAMETER": "placeholders ($1, ?) are not allowed in expressions: name a run input as $name",
    "STAR": "* and COLUMNS(...) are not allowed in expressions",
}
_CLAUSES = {
    "where_clause": "WHERE",
    "having": "HAVING",
    "qualify": "QUALIFY",
    "sample": "USING SAMPLE",
    "group_expressions": "GROUP BY",
    "group_sets": "GROUP BY",
}
_MODIFIERS = {
    "ORDER_MODIFIER": "ORDER BY",
    "LIMIT_MODIFIER": "LIMIT",
    "LIMIT_PERCENT_MODIFIER": "LIMIT",
    "DISTINCT_MODIFIER": "DISTINCT",
}
# Characters that may appear outside quoted strings and identifiers. Anything else ('$' left after
# the $name inputs were rewritten: dollar quoting; ';', comments, backslashes, '?', '@', '#', '{')
# is a place where two SQL dialects could read the text differently, so it is refused up front.
_PUNCTUATION = frozenset(" \t\r\n_.,()[]+-*/%<>=!|&~:")
# DuckDB's default is 1,000 levels; each level is ~3 levels of JSON, and Python's json module recurses.
MAX_DEPTH = 200

_local = threading.local()


def _parser() -> duckdb.DuckDBPyConnection:
    """This thread's parsing connection (one per thread, never shared; reopened after a fork)."""
    con: duckdb.DuckDBPyConnection | None = getattr(_local, "con", None)
    if con is None or getattr(_local, "pid", None) != os.getpid():
        con = duckdb.connect(config={"enable_external_access": False})
        con.execute(f"SET max_expression_depth = {MAX_DEPTH}")
        _local.con, _local.pid = con, os.getpid()
    return con


# --- queries (sql, read_duckdb) ----------------------------------------------------


def check_query(query: str) -> None:
    """Refuse anything but exactly one SELECT (WITH/FROM/VALUES/TABLE forms included); raise ValueError."""
    try:
        found = _parser().extract_statements(query)
    except duckdb.Error as exc:
        raise ValueError(f"not valid SQL: {_first_line(exc)}") from None
    if len(found) != 1:
        raise ValueError(f"give exactly one SQL statement (found {len(found)})")
    [statement] = found
    if statement.type != duckdb.StatementType.SELECT:
        keyword = statement.query.split(None, 1)[0].upper() if statement.query.strip() else statement.type.name
        raise ValueError(f"only a SELECT (or WITH ... SELECT) over the inputs is allowed, not {keyword}")


# --- expressions (filter, select, with_columns, aggregate) -------------------------


@functools.lru_cache(maxsize=4096)  # a pure function of the text; a workflow is checked at apply, run and preview
def check_expression(text: str) -> None:
    """Refuse an expression that is not one select item built from allowed constructs; raise ValueError.

    Accepted texts are remembered (a refused one raises, so it is checked again)."""
    _check_characters(text)
    tree = _serialize(text)
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise ValueError(f"give one expression, not {len(statements)} statements")
    node = statements[0].get("node") or {}
    _check_select(node)
    _check_tree(node["select_list"][0])


def _check_characters(text: str) -> None:
    quote: str | None = None
    for i, ch in enumerate(text):
        if quote is not None:
            if ch == quote:
                quote = None  # a doubled quote closes and reopens: same result
            continue
        if ch in "'\"":
            quote = ch
        elif text.startswith(("--", "/*"), i):
            raise ValueError("comments are not allowed in expressions")
        elif not (ch.isalnum() or ch in _PUNCTUATION):
            raise ValueError(f"character {ch!r} is not allowed in expressions outside quoted strings")
    if quote is not None:
        raise ValueError(f"unterminated {quote}...{quote} in expression")


def _serialize(text: str) -> dict[str, Any]:
    [(raw,)] = _parser().execute("SELECT json_serialize_sql($1)", ["SELECT " + text]).fetchall()
    try:
        tree: dict[str, Any] = json.loads(raw)
    except RecursionError:
        raise ValueError(f"expression nested too deeply (at most {MAX_DEPTH} levels)") from None
    if tree.get("error"):
        message = str(tree.get("error_message", ""))
        if "Max expression depth" in message:
            message = f"nested too deeply (at most {MAX_DEPTH} levels)"
        raise ValueError(f"not a valid SQL expression ({_first_line(message)})")
    return tree


def _check_select(node: dict[str, Any]) -> None:
    if node.get("type") != "SELECT_NODE":
        kind = "UNION, INTERSECT and EXCEPT are" if node.get("type") == "SET_OPERATION_NODE" else "a query is"
        raise ValueError(f"{kind} not allowed in expressions")
    if (node.get("cte_map") or {}).get("map"):
        raise ValueError("WITH is not allowed in expressions")
    source = node.get("from_table") or {}
    if source.get("type") == "TABLE_FUNCTION":
        raise ValueError(_function_refusal(source.get("function") or {}))
    if source.get("type") not in (None, "EMPTY"):
        raise ValueError("FROM is not allowed in expressions")
    for key, clause in _CLAUSES.items():
        if node.get(key):
            raise ValueError(f"{clause} is not allowed in expressions")
    modifiers = node.get("modifiers") or []
    if modifiers:
        kind = _MODIFIERS.get(str(modifiers[0].get("type")), "a query modifier")
        raise ValueError(f"{kind} is not allowed in expressions")
    items = node.get("select_list") or []
    if len(items) != 1:
        raise ValueError(f"give one expression, not {len(items)}")


def _check_tree(root: dict[str, Any]) -> None:
    """Breadth-first, iteratively: the outermost refused construct is the one named."""
    queue: deque[Any] = deque([root])
    while queue:
        item = queue.popleft()
        if isinstance(item, list):
            queue.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        if "class" in item:
            _check_node(item)
        elif "node" in item or "from_table" in item:
            raise ValueError("subqueries are not allowed in expressions")
        queue.extend(v for v in item.values() if isinstance(v, dict | list))


def _check_node(node: dict[str, Any]) -> None:
    kind, subtype = node.get("class"), node.get("type")
    if kind in _PLAIN:
        return
    if kind == "OPERATOR" and subtype in _OPERATOR_TYPES:
        return
    if kind in ("FUNCTION", "WINDOW"):
        name = str(node.get("function_name", ""))
        qualified = node.get("schema") or node.get("catalog")
        if qualified or not (name in FUNCTIONS or (node.get("is_operator") and name in OPERATORS)):
            raise ValueError(_function_refusal(node))
        if not node.get("arguments") and name not in NULLARY and name not in OPERATORS:
            raise ValueError(f"function {name}() needs at least one argument")
        return
    if kind in _REFUSED:
        raise ValueError(_REFUSED[str(kind)])
    shown = str(subtype or kind or "this construct").lower().replace("_", " ")
    raise ValueError(f"{shown} is not allowed in expressions")


def _function_refusal(node: dict[str, Any]) -> str:
    name = str(node.get("function_name", "?"))
    qualified = ".".join(p for p in (node.get("catalog"), node.get("schema"), name) if p)
    if name.lower() in TABLE_FUNCTIONS:
        return f"table function {name}() is not allowed in expressions: an expression cannot read files"
    return f"function {qualified}() is not allowed in expressions"


def _first_line(exc: object) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__
