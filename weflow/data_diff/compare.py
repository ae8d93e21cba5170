"""Comparing one node's output in two versions, with Polars joins (pure: frames in, a ``NodeDiff`` out).

Rows are compared on the columns both versions output. With a key, rows are matched on it (an
outer join): unmatched ones are added or removed, matched ones whose other values differ are
changed, counted per column. Without one, the rows are two multisets (an anti join each way, the
n-th copy of a row matching the n-th): a changed row shows as one removed and one added. A column
whose dtype changed is compared as Float64 when both dtypes are numeric, else as text. Floats are
compared at 10 significant digits (a sum in another order must not count as a change).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from weflow.data_diff.model import ChangedRow, Examples, NodeDiff, TypeChange

_A, _B, _NTH = "__weflow_row_a", "__weflow_row_b", "__weflow_nth"
_OTHER = "__weflow_b"  # suffix of B's columns in the keyed join
MAX_CELL = 200  # characters of one example value


def compare(
    node: str, a: pl.DataFrame, b: pl.DataFrame, key: Sequence[str] | None = None, examples: int = 3
) -> NodeDiff:
    """How ``b`` (version B's output of ``node``) differs from ``a``; ``key`` matches rows (None: multisets).

    The key's columns must be outputs of both (the caller checks, naming the version).
    """
    common = [c for c in a.columns if c in b.columns]
    retyped = [
        TypeChange(column=c, a=str(a.schema[c]), b=str(b.schema[c])) for c in common if a.schema[c] != b.schema[c]
    ]
    left, right = _comparable(a.select(common), b.select(common), [t.column for t in retyped])
    base = NodeDiff(
        node=node,
        rows_a=a.height,
        rows_b=b.height,
        columns_added=[c for c in b.columns if c not in a.columns],
        columns_removed=[c for c in a.columns if c not in b.columns],
        types_changed=retyped,
    )
    if not common:
        return base.model_copy(
            update={"rows_added": b.height, "rows_removed": a.height, "note": "no column in common: rows not matched"}
        )
    if key:
        return _keyed(base, a, b, left, right, list(key), examples)
    return _multiset(base, a, b, left, right, examples)


def _comparable(a: pl.DataFrame, b: pl.DataFrame, retyped: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Both sides with every changed dtype made one (Float64 or String), floats rounded to 10 digits."""
    casts = {}
    for column in retyped:
        numeric = a.schema[column].is_numeric() and b.schema[column].is_numeric()
        casts[column] = pl.Float64 if numeric else pl.String
    a, b = a.cast(casts), b.cast(casts)  # type: ignore[arg-type]
    return _rounded(a), _rounded(b)


def _rounded(frame: pl.DataFrame) -> pl.DataFrame:
    floats = [c for c, t in frame.schema.items() if t.is_float()]
    return frame.with_columns(pl.col(floats).round_sig_figs(10)) if floats else frame


def _numbered(frame: pl.DataFrame, on: list[str], index: str) -> pl.DataFrame:
    """``frame`` with its row number and, per value of ``on``, which copy the row is (0, 1, ...)."""
    return frame.with_row_index(index).with_columns(pl.int_range(pl.len()).over(on).alias(_NTH))


def _multiset(
    base: NodeDiff, a: pl.DataFrame, b: pl.DataFrame, left: pl.DataFrame, right: pl.DataFrame, examples: int
) -> NodeDiff:
    on = [*left.columns, _NTH]
    la, rb = _numbered(left, left.columns, _A), _numbered(right, right.columns, _B)
    removed = la.join(rb, on=on, how="anti", nulls_equal=True)[_A]
    added = rb.join(la, on=on, how="anti", nulls_equal=True)[_B]
    return base.model_copy(
        update={
            "rows_added": added.len(),
            "rows_removed": removed.len(),
            "examples": Examples(added=_rows(b, added, examples), removed=_rows(a, removed, examples)),
        }
    )


def _keyed(
    base: NodeDiff,
    a: pl.DataFrame,
    b: pl.DataFrame,
    left: pl.DataFrame,
    right: pl.DataFrame,
    key: list[str],
    examples: int,
) -> NodeDiff:
    la, rb = _numbered(left, key, _A), _numbered(right, key, _B)
    repeated = max(la[_NTH].max() or 0, rb[_NTH].max() or 0) > 0  # type: ignore[operator]
    joined = la.join(rb, on=[*key, _NTH], how="full", suffix=_OTHER, nulls_equal=True, coalesce=True)
    values = [c for c in left.columns if c not in key]
    matched = joined.filter(pl.col(_A).is_not_null() & pl.col(_B).is_not_null())
    flags = {c: f"__weflow_differs_{i}" for i, c in enumerate(values)}  # True where the values of c differ
    matched = matched.with_columns(~pl.col(c).eq_missing(pl.col(c + _OTHER)).alias(f) for c, f in flags.items())
    counts = matched.select(pl.col(f).sum().alias(c) for c, f in flags.items()).row(0, named=True) if values else {}
    changed = matched.filter(pl.any_horizontal(*flags.values())) if values else matched.clear()
    removed = joined.filter(pl.col(_B).is_null())[_A]
    added = joined.filter(pl.col(_A).is_null())[_B]
    note = "the key repeats: its n-th copies were matched in row order" if repeated else ""
    return base.model_copy(
        update={
            "matched_on": key,
            "rows_added": added.len(),
            "rows_removed": removed.len(),
            "rows_changed": changed.height,
            "values_changed": {c: n for c, n in counts.items() if n},
            "examples": Examples(
                added=_rows(b, added, examples),
                removed=_rows(a, removed, examples),
                changed=_changed(a, b, changed.head(examples), key, flags),
            ),
            "note": note,
        }
    )


def _rows(frame: pl.DataFrame, index: pl.Series, n: int) -> list[dict[str, Any]]:
    """The first ``n`` rows of ``frame`` at ``index`` (row numbers), as plain JSON values."""
    picked = frame[index.sort().head(n).cast(pl.Int64).to_list()]
    return [{c: plain(v) for c, v in row.items()} for row in picked.iter_rows(named=True)]


def _changed(
    a: pl.DataFrame, b: pl.DataFrame, changed: pl.DataFrame, key: list[str], flags: dict[str, str]
) -> list[ChangedRow]:
    """Each changed row: its key, and the A and B values (as each version output them) of the columns that differ."""
    out = []
    for row in changed.iter_rows(named=True):
        old, new = a.row(row[_A], named=True), b.row(row[_B], named=True)
        differing = {c: (plain(old[c]), plain(new[c])) for c, flag in flags.items() if row[flag]}
        out.append(ChangedRow(key={k: plain(old[k]) for k in key}, values=differing))
    return out


def plain(value: Any) -> Any:
    """``value`` as JSON can carry it: NaN and infinities, dates, decimals and nested values as text."""
    if value is None or isinstance(value, bool | int | str):
        return value if not isinstance(value, str) or len(value) <= MAX_CELL else value[:MAX_CELL] + "…"
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, date | datetime | time):
        return value.isoformat()
    if isinstance(value, timedelta | Decimal):
        return str(value)
    return plain(str(value))
