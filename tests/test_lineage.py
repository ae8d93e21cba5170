"""Column lineage (issue 19 item 4): a TPC-H query's columns traced to their sources through a fused chain,
joins and a SQL node; ``weflow lineage``; the notebook display; OpenLineage run events sent to a real HTTP
endpoint on loopback and validated against OpenLineage's JSON schema (tests/resources/openlineage)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import jsonschema
import pytest
from referencing import Registry, Resource

import weflow
from benchmarks import tpch
from weflow import column_lineage, config, execution, lineage_events
from weflow.column_lineage import Ref
from weflow.core import document
from weflow.core.entities import RunState
from weflow.errors import DefinitionError, NotFoundError
from weflow.workflows import Scope, apply, read

from .conftest import REPO, RESOURCES, eventually, weflow_exe

DEFINITION = RESOURCES / "lineage" / "tpch_q03_sql.yaml"
SCHEMAS = RESOURCES / "openlineage"
LINEITEM_REVENUE = {"lineitem.l_extendedprice", "lineitem.l_discount"}


@pytest.fixture(scope="module")
def sf001(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TPC-H at scale factor 0.01 (about 3 MiB of Parquet), generated once for the module."""
    return tpch.generate(0.01, tmp_path_factory.mktemp("tpch"))


@pytest.fixture(scope="module", autouse=True)
def _drained() -> Iterator[None]:
    """Send Prefect's queued logs and events while the session's server still answers (as tests/test_tpch.py)."""
    yield
    if "prefect" in sys.modules:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=10)
        EventsWorker.drain_all(timeout=10)


@pytest.fixture
def roots(sf001: Path, settings: config.Settings, tmp_path: Path) -> Iterator[tuple[Path, ...]]:
    with config.using(data_roots=(sf001, tmp_path.resolve())) as current:
        yield current.data_roots


def names(refs: set[Ref]) -> set[str]:
    return {str(r) for r in refs}


def test_tpch_q03_column_by_column_through_a_fused_chain_of_joins(sf001: Path) -> None:
    with config.using(data_roots=(sf001,)):
        found = column_lineage.of(read(tpch.DEFINITIONS / "q03.yaml"), (sf001,), 1)
    assert {n.step for n in found.nodes} == {"answer (+11 fused)"}  # one fused plan, every node in it
    assert found.node("answer").columns == ("l_orderkey", "revenue", "o_orderdate", "o_shippriority")
    assert names(found.sources(Ref("answer", "l_orderkey"))) == {"lineitem.l_orderkey", "orders.o_orderkey"}
    assert names(found.sources(Ref("answer", "revenue"))) == LINEITEM_REVENUE
    assert names(found.sources(Ref("answer", "o_orderdate"))) == {"orders.o_orderdate"}
    assert names(found.sources(Ref("answer", "o_shippriority"))) == {"orders.o_shippriority"}
    [via] = {o.transforms for o in found.origins(Ref("answer", "revenue"))}
    assert via == "revenue: sum(l_extendedprice * (1 - l_discount))"
    # the join coalesces its keys: lines.l_orderkey is both sides' key, o_orderkey is gone
    into = {(str(h.source), h.description) for h in found.inputs(Ref("lines", "l_orderkey"))}
    assert into == {("unshipped.l_orderkey", "join key"), ("customer_orders.o_orderkey", "join key")}
    assert "o_orderkey" not in found.node("lines").columns
    rows = {(str(r), s) for r, s in found.row_sources("answer")}
    assert {("customer.c_mktsegment", "FILTER"), ("lineitem.l_shipdate", "FILTER"), ("orders.o_orderdate", "FILTER"),
            ("customer.c_custkey", "JOIN"), ("orders.o_custkey", "JOIN"), ("orders.o_shippriority", "GROUP_BY"),
            ("lineitem.l_extendedprice", "SORT")} <= rows  # fmt: skip
    assert ("customer.c_mktsegment", "FILTER") not in {(str(r), s) for r, s in found.row_sources("lineitem")}


def test_tpch_q03_through_a_sql_node_to_its_sink(sf001: Path) -> None:
    with config.using(data_roots=(sf001,)):
        found = column_lineage.of(read(DEFINITION), (sf001,), 3)
    assert found.node("lines").step == "lines (+7 fused)"  # filters and joins fused; the sql node ends the step
    ranked = {"l_orderkey": "Int64", "revenue": "Decimal(precision=38, scale=4)", "o_orderdate": "Date"}
    assert found.node("ranked").schema == {**ranked, "o_shippriority": "Int32"}  # DuckDB's types, over empty inputs
    expected = {
        "l_orderkey": {"lineitem.l_orderkey", "orders.o_orderkey"},
        "revenue": LINEITEM_REVENUE,
        "o_orderdate": {"orders.o_orderdate"},
        "o_shippriority": {"orders.o_shippriority"},
        "revenue_k": LINEITEM_REVENUE,
    }
    assert found.node("saved").columns == tuple(expected)
    for column, sources in expected.items():
        assert names(found.sources(Ref("saved", column))) == sources, column
    [revenue] = {(h.subtype, h.description) for h in found.inputs(Ref("ranked", "revenue"))}
    assert revenue == ("AGGREGATION", 'SUM("lines"."l_extendedprice" * (1 - "lines"."l_discount"))')
    assert {h.subtype for h in found.inputs(Ref("answer", "revenue_k"))} == {"TRANSFORMATION"}
    rows = {(str(r), s) for r, s in found.row_sources("saved")}
    assert {("orders.o_shippriority", "GROUP_BY"), ("lineitem.l_discount", "SORT"), ("orders.o_orderdate", "SORT"),
            ("customer.c_mktsegment", "FILTER")} <= rows  # fmt: skip
    assert found.mermaid("saved.revenue_k").startswith("flowchart LR")
    assert "subgraph n" in found.mermaid() and "-- aggregation -->" in found.mermaid()


def test_sql_lineage_refuses_what_sqlglot_cannot_read(sf001: Path) -> None:
    def with_query(query: str) -> weflow.Definition:
        return document.parse(
            json.dumps(
                {
                    "name": "bad",
                    "nodes": [
                        {"name": "nation", "type": "read_parquet", "config": {"path": "nation.parquet"}},
                        {"name": "q", "type": "sql", "config": {"query": query}},
                    ],
                    "connections": [{"from": "nation", "to": "q"}],
                }
            )
        )

    with pytest.raises(DefinitionError, match=r"^nodes\[1\]\.config\.query: cannot read the SQL for lineage: "):
        column_lineage.of(with_query("SELEC n_name FROM"), (sf001,))
    with pytest.raises(DefinitionError, match=r"^nodes\[1\]\.config\.query: .*'nope' could not be resolved"):
        column_lineage.of(with_query("SELECT nope FROM nation"), (sf001,))
    ok = column_lineage.of(with_query("SELECT upper(n_name) AS name, * EXCLUDE (n_comment) FROM nation"), (sf001,))
    assert ok.node("q").columns == ("name", "n_nationkey", "n_name", "n_regionkey")
    assert names(ok.sources(Ref("q", "name"))) == {"nation.n_name"}
    assert ok.node("q").schema == {"name": "String", "n_nationkey": "Int64", "n_name": "String", "n_regionkey": "Int64"}
    constant = column_lineage.of(with_query("SELECT 1 AS one"), (sf001,))
    assert constant.node("q").columns == ("one",) and constant.origins("q.one") == []
    # a table function is no input: nothing is read (DuckDB runs with file access off), the columns are unknown
    hostile = column_lineage.of(with_query("SELECT * FROM read_csv('/etc/passwd')"), (sf001,))
    assert hostile.node("q").schema is None
    assert hostile.node("q").note == "unknown: SELECT * over a table that is not an input"


def test_unknown_node_or_column_is_one_clear_line(sf001: Path) -> None:
    with config.using(data_roots=(sf001,)):
        found = column_lineage.of(read(DEFINITION), (sf001,))
    with pytest.raises(NotFoundError, match=r"^node 'nowhere' is not in workflow 'tpch_q03_sql' \(nodes: customer,"):
        found.ref("nowhere.x")
    with pytest.raises(NotFoundError, match=r"^column 'nope' is not an output of node 'answer' \(columns: l_orderkey,"):
        found.sources("answer.nope")
    with pytest.raises(NotFoundError, match=r"^'answer' is not NODE.COLUMN$"):
        found.ref("answer")


def test_python_node_without_contract_is_opaque_and_unknown_columns_say_why(settings: config.Settings) -> None:
    definition = document.parse(
        json.dumps(
            {
                "name": "opaque",
                "nodes": [
                    {"name": "orders", "type": "read_csv", "config": {"path": "data/samples/orders.csv"}},
                    {"name": "py", "type": "python", "config": {"callable": "tests.resources.pynodes:double"}},
                    {"name": "gone", "type": "read_parquet", "config": {"path": "no/such.parquet"}},
                ],
                "connections": [{"from": "orders", "to": "py"}],
            }
        )
    )
    found = column_lineage.of(definition, (REPO,))
    assert found.node("orders").columns  # read from the CSV's header
    assert found.node("py").schema is None and "no contract" in found.node("py").note
    assert found.node("gone").schema is None and found.node("gone").note.startswith("unknown: ")


# --- the command line and the notebook ------------------------------------------------------------


def _weflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([weflow_exe(), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_weflow_lineage_command(roots: tuple[Path, ...], cli_env: dict[str, str], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from weflow.cli.app import app

    bad = DEFINITION.read_text().replace("tpch_q03_sql", "bad_columns")
    bad = bad.replace("o_shippriority\n", "o_shippriority, no_such\n", 1)  # DuckDB parses it: it is stored
    weflow.save(read(DEFINITION))
    weflow.save(document.parse(bad))
    runner = CliRunner()
    shown = runner.invoke(app, ["lineage", "tpch_q03_sql", "saved.revenue_k", "--json"])
    assert shown.exit_code == 0, shown.output
    got = json.loads(shown.stdout)
    assert got["sources"] == ["lineitem.l_discount", "lineitem.l_extendedprice"]
    assert {"source": "customer.c_mktsegment", "subtype": "FILTER"} in got["rows"]
    listed = runner.invoke(app, ["lineage", "tpch_q03_sql", "--version", "1"])
    assert listed.exit_code == 0 and "lines (+7 fused)" in listed.stdout and "join key" in listed.stdout
    tree = runner.invoke(app, ["lineage", "tpch_q03_sql", "answer.revenue_k"])
    assert "lineitem.l_discount" in tree.stdout and "rows decided by" in tree.stdout
    drawn = runner.invoke(app, ["lineage", "tpch_q03_sql", "saved.o_orderdate", "--mermaid"])
    assert drawn.stdout.startswith("flowchart LR") and '["o_orderdate"]' in drawn.stdout
    bad_sql = runner.invoke(app, ["lineage", "bad_columns"])
    assert isinstance(bad_sql.exception, DefinitionError) and bad_sql.stdout == ""
    assert str(bad_sql.exception).startswith("nodes[8].config.query: cannot read the SQL for lineage: Column 'no_such'")
    env = {**cli_env, "WEFLOW_DATA_ROOTS": ":".join(map(str, roots)), "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}
    failed = _weflow(env, "lineage", "tpch_q03_sql", "answer.nope")  # the console script: one line, exit 1
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr.startswith("error: column 'nope' is not an output of node 'answer' (columns: l_orderkey, ")
    assert len(failed.stderr.splitlines()) == 1, failed.stderr


def test_notebook_lineage_shows_a_mermaid_graph(roots: tuple[Path, ...]) -> None:
    weflow.save(read(DEFINITION))
    found = weflow.lineage("tpch_q03_sql")
    assert found.version == 1
    assert found._repr_markdown_().count("```mermaid") == 1
    assert names(found.sources("saved.l_orderkey")) == {"lineitem.l_orderkey", "orders.o_orderkey"}


def test_another_organization_sees_no_lineage(roots: tuple[Path, ...]) -> None:
    weflow.save(read(DEFINITION))
    with config.using(organization="globex", user="eve"), pytest.raises(NotFoundError, match="tpch_q03_sql"):
        weflow.lineage("tpch_q03_sql")


# --- OpenLineage -------------------------------------------------------------------------------------


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append({"path": self.path, "event": json.loads(body)})
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def endpoint() -> Iterator[list[dict[str, Any]]]:
    """A real HTTP server on loopback that keeps every event POSTed to it."""
    _Collector.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with config.using(openlineage_url=f"http://127.0.0.1:{server.server_port}"):
        yield _Collector.received
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


def _validator() -> jsonschema.Draft202012Validator:
    resources = [Resource.from_contents(json.loads(p.read_text())) for p in sorted(SCHEMAS.glob("*.json"))]
    registry = Registry().with_resources((r.id(), r) for r in resources)  # type: ignore[misc]
    run_event = {"$ref": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"}
    return jsonschema.Draft202012Validator(run_event, registry=registry, format_checker=jsonschema.FormatChecker())


def _valid(event: dict[str, Any]) -> None:
    """The event against OpenLineage.json, and each facet against the schema its _schemaURL names."""
    validator = _validator()
    validator.validate(event)
    for dataset in [*event["inputs"], *event["outputs"]]:
        for facet in dataset.get("facets", {}).values():
            validator.evolve(schema={"$ref": facet["_schemaURL"]}).validate(facet)


@pytest.mark.usefixtures("prefect_api")
def test_runs_send_openlineage_events(roots: tuple[Path, ...], endpoint: list[dict[str, Any]], tmp_path: Path) -> None:
    scope = Scope.current()
    apply(read(DEFINITION), scope)
    result = execution.run("tpch_q03_sql", scope)
    assert result.ok, result.execution.error_message
    eventually(lambda: len(endpoint) >= 2, 60)
    start, complete = (e["event"] for e in endpoint)
    assert [e["path"] for e in endpoint] == ["/api/v1/lineage"] * 2
    assert (start["eventType"], complete["eventType"]) == ("START", "COMPLETE")
    for event in (start, complete):
        _valid(event)
        assert event["run"]["runId"] == result.execution.id
        assert event["job"] == {**event["job"], "namespace": "weflow/acme", "name": "tpch_q03_sql"}
    sources = {(d["namespace"], Path(d["name"]).name) for d in complete["inputs"]}
    assert sources == {("file", "customer.parquet"), ("file", "orders.parquet"), ("file", "lineitem.parquet")}
    [out] = complete["outputs"]
    written = roots[0] / "out" / "q03.parquet"  # the first root: where a new file goes
    assert written.is_file() and (out["namespace"], out["name"]) == ("file", str(written))
    assert [f["name"] for f in out["facets"]["schema"]["fields"]][-1] == "revenue_k"
    fields = out["facets"]["columnLineage"]["fields"]
    assert {Path(f["name"]).stem + "." + f["field"] for f in fields["revenue_k"]["inputFields"]} == LINEITEM_REVENUE
    [how] = {json.dumps(f["transformations"]) for f in fields["revenue"]["inputFields"]}
    assert json.loads(how)[0] == {**json.loads(how)[0], "type": "DIRECT", "subtype": "AGGREGATION"}
    rows = {(Path(f["name"]).stem + "." + f["field"], t["subtype"])
            for f in out["facets"]["columnLineage"]["dataset"] for t in f["transformations"]}  # fmt: skip
    assert ("customer.c_mktsegment", "FILTER") in rows and ("orders.o_custkey", "JOIN") in rows

    # a failing run: FAIL with its error; a source gone is left out of the datasets, the event still valid
    gone = tmp_path / "small.parquet"
    shutil.copy(roots[0] / "nation.parquet", gone)
    small = {"name": "fails", "nodes": [
        {"name": "nation", "type": "read_parquet", "config": {"path": "small.parquet"}},
        {"name": "copy", "type": "write_parquet", "config": {"path": "out/copy.parquet"}}],
        "connections": [{"from": "nation", "to": "copy"}]}  # fmt: skip
    apply(document.parse(json.dumps(small)), scope)
    gone.unlink()
    assert execution.run("fails", scope).execution.status is RunState.FAILED
    eventually(lambda: len(endpoint) >= 4, 60)
    failed = endpoint[3]["event"]
    _valid(failed)
    assert failed["eventType"] == "FAIL" and failed["inputs"] == []
    assert "small.parquet" in failed["run"]["facets"]["errorMessage"]["message"]


def test_no_endpoint_no_events(settings: config.Settings) -> None:
    from weflow.engine.runtime import RunSpec

    assert settings.openlineage_url is None
    assert lineage_events.started(None, None, RunSpec("x", {}, ())) is None  # type: ignore[arg-type]
