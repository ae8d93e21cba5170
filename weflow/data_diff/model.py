"""The data diff's result: per shared node, what changed in rows, columns and values, with examples.

One pydantic model for the CLI (``-f json`` dumps it by field name), the notebook (tables) and the
REST API (camelCase on the wire, the API's convention; column names inside are kept as they are).
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, alias_generator=to_camel, validate_by_name=True, validate_by_alias=True)


class TypeChange(_Model):
    """A column both versions output, with another dtype."""

    column: str
    a: str
    b: str


class ChangedRow(_Model):
    """A row matched on the key whose values differ: the key, and each differing column's (A, B) values."""

    key: dict[str, Any]
    values: dict[str, tuple[Any, Any]]


class Examples(_Model):
    """A few rows of each kind (the first ones, in each version's row order)."""

    added: list[dict[str, Any]] = Field(default_factory=list, description="rows of B matched by no row of A")
    removed: list[dict[str, Any]] = Field(default_factory=list, description="rows of A matched by no row of B")
    changed: list[ChangedRow] = Field(default_factory=list, description="rows matched on the key, values differing")


class NodeDiff(_Model):
    """How the output of one node shared by both versions changed from version A to version B."""

    node: str
    rows_a: int | None = Field(description="rows the node output in A (None: it did not run there)")
    rows_b: int | None = Field(description="rows the node output in B (None: it did not run there)")
    matched_on: list[str] | None = Field(
        default=None, description="the key rows were matched on (None: compared as multisets of rows)"
    )
    rows_added: int = 0
    rows_removed: int = 0
    rows_changed: int | None = Field(default=None, description="matched rows whose values differ (with a key only)")
    columns_added: list[str] = Field(default_factory=list)
    columns_removed: list[str] = Field(default_factory=list)
    types_changed: list[TypeChange] = Field(default_factory=list)
    values_changed: dict[str, int] = Field(
        default_factory=dict, description="per column: matched rows whose value differs (with a key only)"
    )
    examples: Examples = Field(default_factory=Examples)
    note: str = ""

    @property
    def same(self) -> bool:
        """Both versions output the same rows, columns and types here."""
        changed = (self.rows_added, self.rows_removed, self.rows_changed, self.columns_added, self.columns_removed)
        return self.rows_a is not None and self.rows_b is not None and not any(changed) and not self.types_changed

    def summary(self) -> dict[str, Any]:
        """One row of the summary table (counts blank where the node did not run in both)."""
        ran = self.rows_a is not None and self.rows_b is not None
        return {
            "node": self.node,
            "rows A": self.rows_a,
            "rows B": self.rows_b,
            "key": ", ".join(self.matched_on) if self.matched_on else "(multiset)" if ran else "",
            "added": self.rows_added if ran else None,
            "removed": self.rows_removed if ran else None,
            "changed": self.rows_changed,
            "columns": _columns(self),
            "values changed": ", ".join(f"{c}: {n}" for c, n in self.values_changed.items()),
            "note": self.note,
        }


def _columns(node: NodeDiff) -> str:
    parts = [f"+{c}" for c in node.columns_added] + [f"-{c}" for c in node.columns_removed]
    parts += [f"~{t.column} ({t.a} → {t.b})" for t in node.types_changed]
    return ", ".join(parts)


class DataDiff(_Model):
    """What two versions of a workflow output on the same input, node by node (nodes both versions have)."""

    workflow: str
    a: int = Field(description="version A (the old one)")
    b: int = Field(description="version B (the new one)")
    input: str = Field(description="what the sources read: a bounded read, or the pinned samples")
    key: list[str] | None = Field(default=None, description="the key given (None: each node's contract unique column)")
    nodes_added: list[str] = Field(default_factory=list, description="nodes only B has (not compared)")
    nodes_removed: list[str] = Field(default_factory=list, description="nodes only A has (not compared)")
    error_a: str | None = Field(default=None, description="why version A's run stopped, if it did")
    error_b: str | None = Field(default=None, description="why version B's run stopped, if it did")
    nodes: list[NodeDiff] = Field(default_factory=list)

    def node(self, name: str) -> NodeDiff:
        for found in self.nodes:
            if found.node == name:
                return found
        raise KeyError(f"node {name!r} is not compared (compared: {', '.join(n.node for n in self.nodes)})")

    @property
    def same(self) -> bool:
        return all(n.same for n in self.nodes) and not (self.nodes_added or self.nodes_removed)

    def summary(self) -> pl.DataFrame:
        """One row per compared node: counts of rows added, removed, changed, the column changes."""
        rows = [n.summary() for n in self.nodes]
        return pl.DataFrame(rows, strict=False) if rows else pl.DataFrame()

    def examples(self, node: str, kind: str = "changed") -> pl.DataFrame:
        """The example rows of one node: ``added``, ``removed`` or ``changed`` (a column c as ``c (A)``, ``c (B)``)."""
        found = self.node(node).examples
        if kind == "changed":
            rows = [{**r.key, **_pairs(r.values)} for r in found.changed]
        elif kind in ("added", "removed"):
            rows = getattr(found, kind)
        else:
            raise ValueError(f"kind {kind!r}: one of added, removed, changed")
        return pl.DataFrame(rows, strict=False, infer_schema_length=None) if rows else pl.DataFrame()

    def lines(self) -> list[str]:
        """The header lines: versions, input, runs that stopped, nodes not compared."""
        out = [f"{self.workflow}: version {self.a} → {self.b} on {self.input}"]
        out += [f"+ node {n} (only in {self.b})" for n in self.nodes_added]
        out += [f"- node {n} (only in {self.a})" for n in self.nodes_removed]
        for version, error in ((self.a, self.error_a), (self.b, self.error_b)):
            if error:
                out.append(f"! version {version} stopped: {error}")
        return out

    def _repr_markdown_(self) -> str:
        parts = ["\n\n".join(self.lines()), _markdown(self.summary())]
        for n in self.nodes:
            for kind in ("removed", "added", "changed"):
                frame = self.examples(n.node, kind)
                if not frame.is_empty():
                    parts.append(f"**{n.node}**: rows {kind} (first {frame.height})\n\n{_markdown(frame)}")
        return "\n\n".join(parts)


def _pairs(values: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for column, (old, new) in values.items():
        out[f"{column} (A)"], out[f"{column} (B)"] = old, new
    return out


def _markdown(frame: pl.DataFrame) -> str:
    if frame.is_empty():
        return "(nothing to compare)"
    with pl.Config(
        tbl_formatting="MARKDOWN", tbl_hide_column_data_types=True, tbl_hide_dataframe_shape=True,
        tbl_rows=-1, tbl_cols=-1, fmt_str_lengths=80, tbl_width_chars=65_535,  # the most Polars takes (a u16)
    ):  # fmt: skip
        return str(frame)
