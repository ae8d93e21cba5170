"""Catalog: apply, list, show and save workflows in a fresh DuckDB catalog, against raw DuckDB.

The baselines store the same JSON documents weflow stores (``Definition.to_document()``) in a
plain two-column table of a fresh DuckDB file, opened and closed like weflow opens and closes
its catalog, so the ratio is weflow's overhead over raw storage: checks, version rows, the
node and connection tables, locks, the schema check and building model objects on the way out.

One more comparison on weflow's own catalog file: listing 10,000 workflows with
``workflows.list_workflows`` against a raw ``SELECT`` of the same columns from the same file.
Recording executions from several processes is the ``recording`` benchmark (``benchmarks/recording.py``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks.harness import REPO, Row, Section, Stat, clock, interleave, log
from weflow import config, workflows
from weflow.catalog import Catalog
from weflow.core.document import content_hash, from_data
from weflow.core.model import Definition
from weflow.workflows import Scope

SAMPLE = "data/samples/orders.csv"
ROWS = "duckdb: INSERT per document"
BULK = "duckdb: one Arrow insert"
DOCS_TABLE = "CREATE TABLE docs (name VARCHAR PRIMARY KEY, definition JSON NOT NULL)"
APPLIED = 20  # of the many listed workflows, applied with weflow; the rest are SQL copies of these rows
WORKFLOW_COLUMNS = (  # the columns `Catalog.workflows` selects, timestamps as DuckDB returns them
    "id, name, description, status, configuration, is_active, execution_count, last_executed_at, "
    "owner_id, organization_id, created_at, updated_at, current_version, deleted_at"
)


def chain_document(name: str, nodes: int, offset: int = 0) -> dict[str, Any]:
    """read_csv -> (nodes - 1) filters ``amount > i``, as a definition document."""
    doc: dict[str, Any] = {
        "name": name,
        "nodes": [{"name": "orders", "type": "read_csv", "config": {"path": SAMPLE}}],
        "connections": [],
    }
    previous = "orders"
    for i in range(1, nodes):
        doc["nodes"].append({"name": f"f{i}", "type": "filter", "config": {"condition": f"amount > {offset + i}"}})
        doc["connections"].append({"from": previous, "to": f"f{i}"})
        previous = f"f{i}"
    return doc


@contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="weflow-bench-catalog-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Files:
    """Fresh file names in one temp dir (each round starts from an empty catalog / database)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0

    def new(self, stem: str) -> Path:
        self.count += 1
        return self.root / f"{stem}-{self.count}.duckdb"


def _fresh_scope(path: Path) -> Scope:
    """An empty, migrated catalog with its organization and user (not timed)."""
    return Scope.current(Catalog(path))


def _fresh_docs(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute(DOCS_TABLE)
    finally:
        con.close()


def raw_insert_rows(path: Path, docs: list[tuple[str, str]]) -> None:
    """Open, one transaction of one INSERT per document, commit, close."""
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN")
        for name, text in docs:
            con.execute("INSERT INTO docs VALUES (?, ?)", [name, text])
        con.execute("COMMIT")
    finally:
        con.close()


def raw_insert_bulk(path: Path, docs: list[tuple[str, str]]) -> None:
    """Open, one INSERT of an Arrow table holding every document, close."""
    table = pa.table({"name": [d[0] for d in docs], "definition": [d[1] for d in docs]})
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN")
        con.register("_docs", table)
        con.execute("INSERT INTO docs SELECT * FROM _docs")
        con.unregister("_docs")
        con.execute("COMMIT")
    finally:
        con.close()


def raw_list(path: Path) -> list[tuple[Any, ...]]:
    con = duckdb.connect(str(path))
    try:
        return con.execute("SELECT name FROM docs ORDER BY name").fetchall()
    finally:
        con.close()


def raw_show(path: Path, name: str) -> Any:
    con = duckdb.connect(str(path))
    try:
        row = con.execute("SELECT definition FROM docs WHERE name = ?", [name]).fetchone()
    finally:
        con.close()
    assert row is not None
    return json.loads(row[0])


# --- many workflows: the list path ------------------------------------------------------


def many_workflows(path: Path, count: int) -> Scope:
    """A fresh catalog holding ``count`` one-node workflows (not timed).

    The first ``APPLIED`` are stored with ``workflows.apply_many``; the others are copies of the
    first one's rows (workflow, version with its own document and content hash, node) inserted
    with SQL, because applying 10,000 workflows one by one takes minutes. Listing reads only the
    ``workflows`` table, whose rows are the same either way.
    """
    scope = _fresh_scope(path)
    workflows.apply_many([from_data(chain_document(f"wf_{i:05d}", 1)) for i in range(min(count, APPLIED))], scope)
    copies = [from_data(chain_document(f"wf_{i:05d}", 1)) for i in range(APPLIED, count)]
    if not copies:
        return scope
    table = pa.table(
        {
            "name": [d.name for d in copies],
            "definition": [json.dumps(d.to_document()) for d in copies],
            "content_hash": [content_hash(d) for d in copies],
        }
    )
    template = "(SELECT id FROM workflows WHERE name = 'wf_00000')"
    copied = "_copies c JOIN workflows n ON n.name = c.name"
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN")
        con.register("_copies", table)
        con.execute(
            "INSERT INTO workflows (organization_id, name, description, status, configuration, is_active, "
            "owner_id, created_at, updated_at, current_version) "
            "SELECT w.organization_id, c.name, w.description, w.status, w.configuration, w.is_active, "
            "w.owner_id, w.created_at, w.updated_at, w.current_version "
            f"FROM _copies c, workflows w WHERE w.id = {template}"
        )
        con.execute(
            "INSERT INTO workflow_versions SELECT v.* REPLACE (n.id AS workflow_id, c.definition AS definition, "
            f"c.content_hash AS content_hash) FROM {copied}, workflow_versions v WHERE v.workflow_id = {template}"
        )
        con.execute(
            f"INSERT INTO workflow_nodes SELECT x.* REPLACE (n.id AS workflow_id) FROM {copied}, workflow_nodes x "
            f"WHERE x.workflow_id = {template}"
        )
        con.unregister("_copies")
        con.execute("COMMIT")
    finally:
        con.close()
    return scope


def raw_list_workflows(path: Path, organization_id: int) -> list[tuple[Any, ...]]:
    """The floor of ``list_workflows``: open, the same query, rows as tuples, close."""
    con = duckdb.connect(str(path))
    try:
        return con.execute(
            f"SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE organization_id = ? AND deleted_at IS NULL ORDER BY name",
            [organization_id],
        ).fetchall()
    finally:
        con.close()


def many_workflows_count(quick: bool) -> int:
    return 200 if quick else 10_000


def listing(section: Section, files: Files, quick: bool) -> None:
    """The many-workflows list rows (appended to ``section``)."""
    many = many_workflows_count(quick)
    repeats = 1 if quick else 7  # quick: one round proves the path (the numbers are not read)

    t0 = time.perf_counter()
    path = files.new("many")
    scope = many_workflows(path, many)
    setup = time.perf_counter() - t0
    org = scope.user.organization_id
    listed, raw = workflows.list_workflows(scope), raw_list_workflows(path, org)
    assert len(listed) == len(raw) == many and [w.name for w in listed] == [r[1] for r in raw]
    lists = interleave(
        {"weflow": lambda: clock(workflows.list_workflows, scope), "raw": lambda: clock(raw_list_workflows, path, org)},
        repeats,
        max_settle=0.5 if quick else 1.0,
        progress=f"catalog: list {many:,} workflows",
    )
    ls = {k: Stat(tuple(v)) for k, v in lists.items()}
    section.rows += [
        Row(f"list {many:,} workflows (raw: `SELECT` of the same columns, same file)", ls["weflow"],
            {ROWS: ls["raw"], BULK: None}),
        Row(f"list {many:,}, per workflow", ls["weflow"].per(many), {ROWS: ls["raw"].per(many), BULK: None}),
    ]  # fmt: skip

    section.notes += [
        f"The {many:,} listed workflows: {min(many, APPLIED)} applied with `workflows.apply_many`, the rest "
        f"copies of the first one's rows made with SQL (each with its own name, document and hash; "
        f"{setup:.1f} s of setup, untimed). `list_workflows` takes the file lock, opens the file, runs the "
        "query in a transaction (timestamps read as epoch microseconds) and builds a `Workflow` per row "
        "(parsing its configuration JSON); the raw side returns tuples, timestamps converted by DuckDB.",
    ]


def run(quick: bool) -> Section:
    count = 20 if quick else 1000
    nodes, big_nodes = 20, 100
    apply_repeats = 1 if quick else 3  # quick: one round proves the path (the numbers are not read)
    op_repeats = 1 if quick else 7
    section = Section(
        name="catalog",
        title="definitions in the DuckDB catalog",
        description=f"""\
A fresh catalog file per round; {count} workflows of {nodes} nodes each (`read_csv` of
`{SAMPLE}` then {nodes - 1} `filter` nodes `amount > i`) are stored with
`workflows.apply_many` (checked, then saved in one transaction), listed with
`workflows.list_workflows`, one is shown with `workflows.version`, and a {big_nodes}-node
workflow is saved with `workflows.apply`. Baselines: the same JSON documents in a plain
`docs(name, definition JSON)` table of a fresh DuckDB file, in one transaction, one `INSERT`
per document (**{ROWS}**) or one Arrow insert (**{BULK}**, the floor); list = `SELECT name ...
ORDER BY name`, show = select one document and `json.loads` it, save = insert one document.
Every baseline opens and closes the file, as weflow does for every operation. Per-workflow rows
divide the same measurements by {count}.

The last rows work on weflow's own catalog file: `workflows.list_workflows` of
{many_workflows_count(quick):,} workflows against a raw `SELECT` of the same columns from the same file
(in the **{ROWS}** column). Recording executions from several processes: see `recording`.""",
        baselines=(ROWS, BULK),
    )
    with _workdir() as root, config.using(catalog=root / "unused.duckdb", data_roots=(REPO,)):
        files = Files(root)
        t0 = time.perf_counter()
        definitions = [from_data(chain_document(f"orders_{i:04d}", nodes, i)) for i in range(count)]
        parse_seconds = time.perf_counter() - t0
        texts = [(d.name, json.dumps(d.to_document())) for d in definitions]
        t0 = time.perf_counter()
        for d in definitions:
            workflows.check(d)
        check_seconds = time.perf_counter() - t0

        state: dict[str, Path] = {}

        def weflow_apply() -> float:
            path = files.new("catalog")
            scope = _fresh_scope(path)
            t0 = time.perf_counter()
            workflows.apply_many(definitions, scope, "benchmark")
            seconds = time.perf_counter() - t0
            state["catalog"] = path
            return seconds

        def baseline(insert: Callable[[Path, list[tuple[str, str]]], None], key: str) -> Callable[[], float]:
            def measure() -> float:
                path = files.new(key)
                _fresh_docs(path)
                t0 = time.perf_counter()
                insert(path, texts)
                seconds = time.perf_counter() - t0
                state[key] = path
                return seconds

            return measure

        # warm-up, not timed: the first sessions of a process pay for imports and DuckDB's start
        weflow_scope = _fresh_scope(files.new("warm"))
        workflows.apply_many(definitions[:20], weflow_scope)
        warm = files.new("warm-raw")
        _fresh_docs(warm)
        raw_insert_rows(warm, texts[:20])
        raw_insert_bulk(warm, [(f"x{n}", t) for n, t in texts[:20]])

        applied = interleave(
            {"weflow": weflow_apply, ROWS: baseline(raw_insert_rows, "rows"), BULK: baseline(raw_insert_bulk, "bulk")},
            apply_repeats,
            warmup=0,  # warmed up above on 20 workflows
            max_settle=1.0 if quick else 3.0,
            progress=f"catalog: apply {count} workflows",
        )
        apply_stats = {k: Stat(tuple(v)) for k, v in applied.items()}
        section.rows.append(
            Row(f"apply {count} x {nodes}-node workflows (total)", apply_stats["weflow"],
                {ROWS: apply_stats[ROWS], BULK: apply_stats[BULK]})
        )  # fmt: skip
        section.rows.append(
            Row("apply, per workflow", apply_stats["weflow"].per(count),
                {ROWS: apply_stats[ROWS].per(count), BULK: apply_stats[BULK].per(count)})
        )  # fmt: skip

        scope = Scope.current(Catalog(state["catalog"]))
        raw_path = state["rows"]
        shown = definitions[count // 2].name
        listed = workflows.list_workflows(scope)
        assert len(listed) == count and len(raw_list(raw_path)) == count, "both stores must hold every workflow"
        assert workflows.version(shown, scope).definition == definitions[count // 2]
        assert Definition.model_validate(raw_show(raw_path, shown)) == definitions[count // 2]

        big = [from_data(chain_document(f"big_{i}", big_nodes)) for i in range(op_repeats + 1)]
        big_texts = [(d.name, json.dumps(d.to_document())) for d in big]
        saves = {"weflow": iter(big), "raw": iter(big_texts)}

        ops = interleave(
            {
                "list weflow": lambda: clock(workflows.list_workflows, scope),
                "list raw": lambda: clock(raw_list, raw_path),
                "show weflow": lambda: clock(workflows.version, shown, scope),
                "show raw": lambda: clock(raw_show, raw_path, shown),
                "save weflow": lambda: clock(workflows.apply, next(saves["weflow"]), scope, "big"),
                "save raw": lambda: clock(raw_insert_rows, raw_path, [next(saves["raw"])]),
            },
            op_repeats,
            max_settle=0.5 if quick else 1.0,
            progress="catalog: list, show, save",
        )
        st = {k: Stat(tuple(v)) for k, v in ops.items()}
        section.rows += [
            Row(f"list {count} workflows", st["list weflow"], {ROWS: st["list raw"], BULK: None}),
            Row("list, per workflow", st["list weflow"].per(count), {ROWS: st["list raw"].per(count), BULK: None}),
            Row("show one workflow (`workflows.version`)", st["show weflow"], {ROWS: st["show raw"], BULK: None}),
            Row(f"save one {big_nodes}-node workflow (`workflows.apply`)", st["save weflow"],
                {ROWS: st["save raw"], BULK: None}),
        ]  # fmt: skip

        size = state["catalog"].stat().st_size / 2**20
        raw_size = state["rows"].stat().st_size / 2**20
        listing(section, files, quick)
    section.notes += [
        f"Outside the timings: building the {count} `Definition` objects from their documents took "
        f"{parse_seconds * 1000:.0f} ms, and `workflows.check` of all of them {check_seconds * 1000:.0f} ms "
        f"({check_seconds / count * 1000:.2f} ms per workflow; `apply_many` runs the same checks inside its "
        "timing), so nearly all of apply's time is the catalog writes.",
        f"After one round the catalog file was {size:.1f} MiB (versions, nodes and connections tables) "
        f"and the raw table {raw_size:.1f} MiB.",
        "`show` in weflow is one catalog session (the workflow and its version, "
        "`Catalog.workflow_version`) and validates the document into a `Definition`; the baseline is one "
        "query and `json.loads`.",
    ]
    log("catalog: done")
    return section
