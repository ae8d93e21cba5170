"""``weflow diff NAME A B --data``: the data diff of two versions, as tables or JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.text import Text

from weflow.cli.console import bold, emit_json, note, out, scope, table

if TYPE_CHECKING:  # the runner imports the engine (Prefect, ~1.5 s): only `diff --data` pays for it
    from weflow.data_diff import NodeDiff


def show(name: str, a: int, b: int, key: list[str] | None, rows: int | None, samples: bool, as_json: bool) -> None:
    """Run both versions on the same input and print what each shared node outputs differently."""
    from weflow.data_diff.runner import for_versions

    with note.status(f"running versions {a} and {b} of {name} on the same input (nothing is written)"):
        result = for_versions(name, a, b, scope(), key=key, rows=rows, samples=samples)
    if as_json:
        emit_json(result.model_dump(mode="json"))
        return
    out.print("\n".join(result.lines()), highlight=False)
    table(None, ["node", "rows A", "rows B", "key", "added", "removed", "changed", "columns", "values changed",
                 "note"], [list(n.summary().values()) for n in result.nodes])  # fmt: skip
    for node in result.nodes:
        _examples(node)


def _examples(node: NodeDiff) -> None:
    found = node.examples
    for kind, items in (("removed", found.removed), ("added", found.added)):
        if items:
            columns = list(dict.fromkeys(c for row in items for c in row))
            out.print(Text.assemble(bold(node.node), f": rows {kind} (first {len(items)})"))
            table(None, columns, [[_cell(row.get(c)) for c in columns] for row in items])
    if found.changed:
        out.print(Text.assemble(bold(node.node), f": rows changed (first {len(found.changed)})"))
        keys = list(found.changed[0].key)
        table(None, [*keys, "changes"], [
            [*(_cell(r.key[k]) for k in keys),
             "; ".join(f"{c}: {_cell(old)} → {_cell(new)}" for c, (old, new) in r.values.items())]
            for r in found.changed
        ])  # fmt: skip


def _cell(value: Any) -> str:
    return "null" if value is None else str(value)
