"""Every built-in node type on real files, a real DuckDB file and a real HTTP server; plugins."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from weflow import DefinitionError, config, parse, workflows
from weflow.execution import run
from weflow.nodes import registry
from weflow.workflows import Scope

from .conftest import REPO


@pytest.fixture
def json_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real HTTP server on loopback answering JSON, like an API a source would call (loopback allowed)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"data": {"items": [{"id": 1, "city": "Oslo"}, {"id": 2, "city": "Lima"}]}})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("WEFLOW_OUTBOUND_ALLOW", "127.0.0.1/32")
    with config.using(outbound_allow=("127.0.0.1/32",)):  # over the `settings` fixture's, if it came first
        yield f"http://127.0.0.1:{server.server_address[1]}/items"
    server.shutdown()


@pytest.mark.usefixtures("prefect_api")
def test_every_builtin_node_type_gives_what_polars_gives(scope: Scope, tmp_path: Path, json_api: str) -> None:
    orders = pl.read_csv(REPO / "data/samples/orders.csv")
    orders.write_ndjson(tmp_path / "orders.ndjson")
    with duckdb.connect(str(tmp_path / "shop.duckdb")) as con:
        con.execute("CREATE TABLE orders AS SELECT * FROM read_csv(?)", [str(REPO / "data/samples/orders.csv")])
    text = f"""
name: everything
inputs: {{status: {{type: string, default: paid}}}}
nodes:
  - {{name: csv, type: read_csv, config: {{path: data/samples/orders.csv}}}}
  - {{name: pq, type: read_parquet, config: {{path: "data/samples/*.parquet"}}}}
  - {{name: nd, type: read_ndjson, config: {{path: {tmp_path}/orders.ndjson}}}}
  - {{name: db, type: read_duckdb, config: {{database: {tmp_path}/shop.duckdb,
      query: "SELECT order_id, amount FROM orders WHERE status = $status ORDER BY order_id"}}}}
  - {{name: api, type: http_json, config: {{url: "{json_api}", record_path: data.items, timeout_seconds: 5}}}}
  - {{name: picked, type: select, config: {{columns: [order_id], exprs: {{double: "amount * 2"}}}}}}
  - {{name: tagged, type: with_columns, config: {{columns: {{big: "amount > 250", upper: "upper(region)"}}}}}}
  - {{name: top, type: sort, config: {{by: [amount, order_id], descending: [true, false]}}}}
  - {{name: first3, type: limit, config: {{n: 3}}}}
  - {{name: both, type: union, config: {{}}}}
  - name: checked
    type: validate
    config: {{}}
    contract: {{columns: {{order_id: {{dtype: Int64, unique: false}}}}, min_rows: 1}}
  - {{name: inner, type: join, config: {{left_on: order_id, right_on: order_id, how: semi}}}}
  - {{name: stored, type: write_duckdb, config: {{database: {tmp_path}/out.duckdb, table: top3, mode: append}}}}
connections:
  - {{from: csv, to: picked}}
  - {{from: pq, to: tagged}}
  - {{from: nd, to: top}}
  - {{from: top, to: first3}}
  - {{from: csv, to: both}}
  - {{from: nd, to: both}}
  - {{from: both, to: checked}}
  - {{from: csv, to: inner.left}}
  - {{from: db, to: inner.right}}
  - {{from: first3, to: stored}}
"""
    workflows.apply(parse(text), scope)
    result = run("everything", scope)
    assert result.ok, result.execution.error_message
    assert_frame_equal(result["picked"], orders.select("order_id", (pl.col("amount") * 2).alias("double")))
    expected_tagged = orders.with_columns(
        (pl.col("amount") > 250).alias("big"), pl.col("region").str.to_uppercase().alias("upper")
    )
    assert_frame_equal(result["tagged"], expected_tagged)
    top3 = orders.sort(["amount", "order_id"], descending=[True, False]).head(3)
    assert_frame_equal(result["stored"], top3)
    assert result["checked"].height == 2 * orders.height
    paid_ids = orders.filter(pl.col("status") == "paid")["order_id"]
    assert sorted(result["inner"]["order_id"].to_list()) == sorted(paid_ids.to_list())
    assert result["api"].to_dicts() == [{"id": 1, "city": "Oslo"}, {"id": 2, "city": "Lima"}]
    run("everything", scope)  # append mode adds the same rows again, in one transaction each
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM top3").fetchone() == (6,)


@pytest.mark.usefixtures("prefect_api")
def test_sql_node_cannot_read_files(scope: Scope, tmp_path: Path) -> None:
    text = """
name: sneaky
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: q, type: sql, config: {query: "SELECT * FROM read_csv('/etc/passwd')"}}
connections: [{from: orders, to: q}]
"""
    workflows.apply(parse(text), scope)
    result = run("sneaky", scope)
    assert not result.ok
    assert "Permission Error" in (result.execution.error_message or "")


PLUGIN = """
import polars as pl
from weflow.nodes.base import NodeConfig, NodeType


class UpperConfig(NodeConfig):
    column: str


def _upper(config, inputs, ctx):
    return inputs.one().with_columns(pl.col(config.column).str.to_uppercase())


NODES = [NodeType("upper", UpperConfig, _upper, description="upper-case a column")]
"""


@pytest.fixture
def plugins(tmp_path: Path) -> Iterator[None]:
    """An installed distribution with one good and one broken ``weflow.nodes`` entry point."""
    (tmp_path / "weflow_testplug.py").write_text(PLUGIN)
    info = tmp_path / "weflow_testplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: weflow-testplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[weflow.nodes]\nupper = weflow_testplug:NODES\nbroken = weflow_no_such_module:NODES\n"
    )
    sys.path.insert(0, str(tmp_path))
    registry.reload()
    yield
    sys.path.remove(str(tmp_path))
    registry.reload()


def test_plugins_load_and_a_broken_one_is_skipped(plugins: None, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="weflow.nodes.registry"):
        types = registry.node_types()
    assert "upper" in types and "filter" in types
    assert "skipping weflow node plugin 'broken'" in caplog.text
    d = parse(
        "name: p\nnodes:\n  - {name: a, type: read_csv, config: {path: x.csv}}\n  - {name: b, type: upper}\n"
        "connections: [{from: a, to: b}]\n"
    )
    with pytest.raises(DefinitionError, match=r"nodes\[1\]\.config\.column: field required"):
        workflows.check(d)
