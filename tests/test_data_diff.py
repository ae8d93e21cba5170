"""Data diff between versions (issue 19 item 3): two versions of a workflow over a real CSV, run in process.

Version 2 keeps fewer rows (a stricter filter), computes ``net`` differently and renames ``region`` to
``area``; version 3 changes two dtypes. The counts below are those of data/samples/orders.csv (500 orders,
305 paid, 61 of them under 100), checked against Polars reading the file directly.
"""

from __future__ import annotations

import contextvars
import json
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from copy import deepcopy
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import uvicorn
from fastapi.testclient import TestClient

from weflow import config, notebook, samples, workflows
from weflow.api.app import create_app
from weflow.catalog import Catalog, auth
from weflow.cli import app as cli_app
from weflow.core.entities import Execution, Mode, NodeExecution, RunState
from weflow.data_diff import compare
from weflow.data_diff.runner import for_versions
from weflow.errors import DefinitionError, NotFoundError
from weflow.workflows import Scope

from .conftest import REPO, render

ORDERS = pl.read_csv(REPO / "data/samples/orders.csv")
PAID = ORDERS.filter(pl.col("status") == "paid")
SINK = "data/out/data_diff_test.csv"  # never written: every diff runs sinks as pass-throughs

V1: dict[str, Any] = {
    "name": "paid_net",
    "nodes": [
        {"name": "orders", "type": "read_csv", "config": {"path": "data/samples/orders.csv"},
         "contract": {"columns": {"order_id": {"dtype": "Int64", "unique": True}}}},
        {"name": "paid", "type": "filter", "config": {"condition": "status = 'paid'"}},
        {"name": "net", "type": "with_columns", "config": {"columns": {"net": "amount * 0.8"}}},
        {"name": "shaped", "type": "select", "config": {"columns": ["order_id", "region", "amount", "net"]}},
        {"name": "out", "type": "write_csv", "config": {"path": SINK}},
    ],
    "connections": [{"from": "orders", "to": "paid"}, {"from": "paid", "to": "net"},
                    {"from": "net", "to": "shaped"}, {"from": "shaped", "to": "out"}],
}  # fmt: skip


def changed(doc: dict[str, Any], **configs: dict[str, Any]) -> dict[str, Any]:
    new = deepcopy(doc)
    for node in new["nodes"]:
        node["config"] = configs.get(node["name"], node["config"])
    return new


V2 = changed(
    V1,
    paid={"condition": "status = 'paid' AND amount >= 100"},
    net={"columns": {"net": "amount * 0.75"}},
    shaped={"columns": ["order_id", "amount", "net"], "exprs": {"area": "region"}},
)
V3 = changed(V1, net={"columns": {"net": "amount * 0.8", "order_id": "CAST(order_id AS DOUBLE)",
                                  "amount": "CAST(amount AS INTEGER)"}})  # fmt: skip


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scope]:
    """One catalog for the module (the conftest's settings, module-wide) holding versions 1-3 of paid_net."""
    tmp = tmp_path_factory.mktemp("data_diff")
    with config.using(
        catalog=tmp / "weflow.duckdb", data_roots=(REPO, tmp), runs_dir=tmp / "runs", organization="acme",
        user="ada", shared_data_roots=True,
    ):  # fmt: skip
        scope = Scope.current(Catalog(tmp / "weflow.duckdb"))
        for doc in (V1, V2, V3):
            workflows.apply(doc, scope)
        yield scope


def test_keyed_diff_counts_removed_changed_and_renamed(stored: Scope) -> None:
    found = notebook.diff("paid_net", 1, 2, stored.catalog, data=True, key=["order_id"])  # for_versions, as tables
    under_100 = PAID.filter(pl.col("amount") < 100).height
    assert (PAID.height, under_100) == (305, 61)
    orders, paid, net, shaped, out = (found.node(n) for n in ("orders", "paid", "net", "shaped", "out"))
    assert orders.same and (orders.rows_a, orders.rows_b) == (500, 500)
    assert (paid.rows_a, paid.rows_b, paid.rows_added, paid.rows_removed, paid.rows_changed) == (305, 244, 0, 61, 0)
    assert (net.rows_removed, net.rows_changed, net.values_changed) == (61, 244, {"net": 244})
    assert (shaped.columns_added, shaped.columns_removed) == (["area"], ["region"])
    assert (shaped.rows_removed, shaped.rows_changed, shaped.values_changed) == (61, 244, {"net": 244})
    assert out.model_dump(exclude={"node"}) == shaped.model_dump(exclude={"node"})  # the sink: what it would write
    assert not (REPO / SINK).exists()
    first_removed = PAID.filter(pl.col("amount") < 100).row(0, named=True)
    assert paid.examples.removed[0] == first_removed and len(paid.examples.removed) == 3
    example = net.examples.changed[0]
    row = PAID.filter(pl.col("amount") >= 100).row(0, named=True)
    assert example.key == {"order_id": row["order_id"]}
    assert example.values["net"] == pytest.approx((row["amount"] * 0.8, row["amount"] * 0.75))
    assert found.input == "the first 1000 rows of each source" and found.key == ["order_id"]
    assert found.summary().filter(pl.col("node") == "paid")["removed"].to_list() == [61]
    assert found.examples("net", "changed").columns == ["order_id", "net (A)", "net (B)"]
    markdown = found._repr_markdown_()
    assert "| paid " in markdown and "**net**: rows changed (first 3)" in markdown
    assert notebook.diff("paid_net", 1, 2, stored.catalog).nodes_changed  # without data: the structural diff


def test_unkeyed_diff_compares_multisets_and_takes_the_contract_key(stored: Scope) -> None:
    found = for_versions("paid_net", 1, 2, stored, rows=400)
    assert found.node("orders").matched_on == ["order_id"]  # unique in the contract
    assert found.node("orders").rows_a == 400
    paid = found.node("paid")
    head = PAID.filter(pl.col("order_id") <= 400)
    removed = head.filter(pl.col("amount") < 100).height
    assert (paid.matched_on, paid.rows_changed, paid.rows_added, paid.rows_removed) == (None, None, 0, removed)
    net = found.node("net")  # every net value changed: without a key, each row is one removed and one added
    kept = head.height - removed
    assert (net.rows_removed, net.rows_added, net.values_changed) == (head.height, kept, {})
    shaped = found.node("shaped")
    assert (shaped.columns_added, shaped.columns_removed, shaped.rows_added) == (["area"], ["region"], kept)
    with pytest.raises(NotFoundError, match=r"^source 'orders' of 'paid_net' has no pinned sample"):
        for_versions("paid_net", 1, 2, stored, samples=True)
    samples.pin("paid_net", stored, rows=50)  # pins version 3's source: the same source as 1 and 2
    pinned = for_versions("paid_net", 1, 2, stored, samples=True)
    under = PAID.filter((pl.col("order_id") <= 50) & (pl.col("amount") < 100)).height
    assert (pinned.input, pinned.node("orders").rows_a, pinned.node("paid").rows_removed) == (
        "the pinned samples", 50, under
    )  # fmt: skip


def test_type_changes_are_compared_as_numbers(stored: Scope) -> None:
    found = for_versions("paid_net", 1, 3, stored, key=["order_id"])
    net = found.node("net")
    types = {(t.column, t.a, t.b) for t in net.types_changed}
    assert types == {("order_id", "Int64", "Float64"), ("amount", "Float64", "Int32")}
    fractional = PAID.filter(pl.col("amount") != pl.col("amount").cast(pl.Int32)).height
    assert (net.rows_added, net.rows_removed, net.rows_changed) == (0, 0, fractional)  # 1 == 1.0: matched
    assert net.values_changed == {"amount": fractional}
    assert found.node("paid").same


def test_same_version_and_pure_compare() -> None:
    a = pl.DataFrame({"k": [1, 1, 2, None], "v": [1.0, float("nan"), 0.1 + 0.2, 3.0]})
    b = pl.DataFrame({"k": [1, 1, 2, None], "v": [1.0, float("nan"), 0.3, 4.0]})
    keyed = compare("x", a, b, ["k"])
    assert (keyed.rows_changed, keyed.values_changed) == (1, {"v": 1})  # the null key matches the null key
    assert keyed.examples.changed[0].values == {"v": (3.0, 4.0)} and "repeats" in keyed.note
    loose = compare("x", a, b)
    assert (loose.rows_added, loose.rows_removed) == (1, 1)
    assert loose.examples.removed == [{"k": None, "v": 3.0}]
    assert compare("x", a, a.rename({"v": "w"})).model_dump(include={"rows_added", "columns_added"}) == {
        "rows_added": 0, "columns_added": ["w"]
    }  # fmt: skip


def test_bad_inputs_name_what_is_wrong(stored: Scope) -> None:
    runs = stored.catalog.executions(stored.user.organization_id)
    with pytest.raises(NotFoundError, match=r"workflow 'paid_net' has no version 9 \(versions 1-3\)"):
        for_versions("paid_net", 1, 9, stored)
    with pytest.raises(NotFoundError, match="no version 0"):
        for_versions("paid_net", 0, 2, stored)
    with pytest.raises(DefinitionError) as bad:
        for_versions("paid_net", 1, 2, stored, key=["region"])
    assert str(bad.value) == (
        "key: column 'region' is not an output of node 'shaped' in version 2 (its columns: order_id, amount, net, area)"
    )
    with pytest.raises(DefinitionError, match="rows: must be between 1 and"):
        for_versions("paid_net", 1, 2, stored, rows=0)
    with pytest.raises(NotFoundError):
        for_versions("nope", 1, 2, stored)
    assert [v.number for v in workflows.versions("paid_net", stored)] == [1, 2, 3]  # the catalog is unchanged
    assert stored.catalog.executions(stored.user.organization_id) == runs  # diffs record nothing


def test_cli_json_and_one_line_errors(
    stored: Scope, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def weflow(*args: str) -> tuple[int, str, str]:  # the console script's entry point, in this process
        monkeypatch.setattr(sys, "argv", ["weflow", *args])
        with pytest.raises(SystemExit) as ended:
            cli_app.run()
        captured = capsys.readouterr()
        return int(ended.value.code or 0), captured.out, captured.err

    code, out, err = weflow("diff", "paid_net", "1", "2", "--data", "--key", "order_id", "-f", "json")
    assert code == 0, err
    nodes = {n["node"]: n for n in json.loads(out)["nodes"]}
    assert (nodes["paid"]["rows_removed"], nodes["shaped"]["values_changed"]) == (61, {"net": 244})
    code, out, err = weflow("diff", "paid_net", "1", "2", "--data", "--key", "region")
    assert code == 1 and err.count("\n") == 1
    assert "error: key: column 'region' is not an output of node 'shaped' in version 2" in err
    alone = weflow("diff", "paid_net", "1", "2", "--rows", "5")
    assert alone[:1] == (1,) and alone[2] == "error: --key, --rows and --samples go with --data\n"
    code, out, _ = weflow("diff", "paid_net", "1", "2", "--data", "--rows", "10")
    assert code == 0 and "paid_net: version 1 → 2 on the first 10 rows of each source" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serving(scope: Scope) -> Iterator[str]:
    """The API over the test's catalog, served by uvicorn on a loopback port from a thread (in the test's settings)."""
    server = uvicorn.Server(uvicorn.Config(create_app(scope.catalog.path), port=_free_port(), log_level="warning"))
    thread = threading.Thread(target=contextvars.copy_context().run, args=(server.run,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def _execution(scope: Scope, version: int) -> str:
    """A finished execution of paid_net's version as the engine records it (the page shows a recorded run)."""
    wf = workflows.get("paid_net", scope)
    eid = str(uuid.uuid4())
    queued = Execution(eid, wf.id, wf.name, version, Mode.MANUAL, scope.user.id, RunState.QUEUED)
    scope.catalog.insert_execution(queued)
    records = [NodeExecution(eid, n["name"], RunState.SUCCEEDED, 1) for n in V2["nodes"]]
    scope.catalog.finish_execution(Execution(eid, wf.id, wf.name, version, Mode.MANUAL, scope.user.id,
                                             RunState.SUCCEEDED, duration_ms=5.0), records, [])  # fmt: skip
    return eid


def test_api_route_and_visualizer_page(stored: Scope, tmp_path: Path) -> None:
    key = auth.create_key(stored.catalog, stored.user)[1]
    wf = workflows.get("paid_net", stored)
    eid = _execution(stored, 2)
    with TestClient(create_app(stored.catalog.path), headers={"Authorization": f"Bearer {key}"}) as api:
        plain = api.get(f"/workflows/{wf.id}/versions/1/diff/2").json()
        assert plain["data"] is None and plain["structure"]["nodesChanged"][0]["node"] == "paid"
        found = api.get(f"/workflows/{wf.id}/versions/1/diff/2", params={"data": "true", "key": "order_id"}).json()
        paid = next(n for n in found["data"]["nodes"] if n["node"] == "paid")
        assert (paid["rowsRemoved"], paid["matchedOn"]) == (61, ["order_id"])
        bad = api.get(f"/workflows/{wf.id}/versions/1/diff/2", params={"data": "true", "key": "region"})
        assert bad.status_code == 422 and "'region' is not an output of node 'shaped'" in bad.text
        assert api.get(f"/workflows/{wf.id}/versions/1/diff/9").status_code == 404
        assert api.get(f"/workflows/{wf.id}/versions/0/diff/2").status_code == 422
        assert api.get(f"/workflows/{wf.id}/versions/1/diff/2", params={"rows": 0}).status_code == 422
        other = auth.create_key(stored.catalog, stored.catalog.ensure_user("globex", "bob"))[1]
        theirs = api.get(f"/workflows/{wf.id}/versions/1/diff/2", headers={"Authorization": f"Bearer {other}"})
        assert theirs.status_code == 404  # another organization's workflow does not exist for them
        hostile = api.get(f"/ui/executions/{eid}", params={"node": "<script>x()</script>", "compare": 9})
        assert hostile.status_code == 200 and "<script>x()" not in hostile.text
        assert "node &#x27;&lt;script&gt;x()&lt;/script&gt;&#x27; is not in workflow" in hostile.text
        assert "workflow &#x27;paid_net&#x27; has no version 9 (versions 1-3)" in hostile.text
        assert api.get(f"/ui/executions/{eid}", params={"compare": 0}).status_code == 422
    with serving(stored) as url:
        dom = render(f"{url}/ui/executions/{eid}?key={key}&node=shaped&column=area&compare=1&match=order_id", tmp_path)
    assert "<svg" in dom[dom.index("lineage-graph") :], "Mermaid did not draw the column lineage"
    lineage = dom[dom.index('id="lineage-table"') : dom.index("</table>", dom.index('id="lineage-table"'))]
    assert "orders.region" in lineage and "orders.amount" in lineage  # area comes from region; net from amount
    assert "rows decided by" in dom and "orders.status (filter)" in dom
    diff = dom[dom.index('id="data-diff"') :]
    row = diff[diff.index('id="node-diff-paid"') : diff.index("</tr>", diff.index('id="node-diff-paid"'))]
    assert "<td>305</td><td>244</td><td>order_id</td><td>0</td><td>61</td><td>0</td>" in row
    assert "+area, -region" in diff and "net: 244" in diff
