"""Runs on a real Prefect server, real files and a real catalog: results, records, failures."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from prefect.settings import Settings

from weflow import DefinitionError, parse, workflows
from weflow.core.entities import RunState
from weflow.execution import logs, preview, run
from weflow.workflows import Scope

from .conftest import REPO, web, weflow_exe

pytestmark = pytest.mark.usefixtures("prefect_api")


def apply(scope: Scope, text: str) -> str:
    return workflows.apply(parse(text), scope).workflow.name


def eventually(check: Callable[[], bool], seconds: float = 20.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.25)
    return check()


def statuses(result) -> dict[str, str]:
    return {n.node: n.status.value for n in result.execution.nodes}


def test_multi_branch_workflow_matches_hand_written_polars(scope: Scope, tmp_path: Path, prefect_api: str) -> None:
    text = (REPO / "data/workflows/customer_revenue.yaml").read_text()
    text = text.replace("data/out/customer_revenue.csv", f"{tmp_path}/revenue.csv")
    text += "  - {from: by_segment, to: archive}\n"
    text = text.replace(
        "connections:\n",
        f"  - {{name: archive, type: write_duckdb, config: {{database: {tmp_path}/out.duckdb, table: revenue}}}}\n"
        "connections:\n",
    )
    apply(scope, text)
    result = run("customer_revenue", scope, input_data={"min_amount": 100})
    assert result.ok, result.execution.error_message

    orders = pl.scan_parquet(REPO / "data/samples/orders.parquet")
    customers = pl.scan_csv(REPO / "data/samples/customers.csv")
    expected = (
        orders.filter((pl.col("status") == "paid") & (pl.col("amount") >= 100))
        .join(customers, on="customer_id", suffix="_customer")
        .group_by("segment", "region")
        .agg(pl.col("amount").sum().alias("revenue"), pl.col("customer_id").n_unique().alias("customers"))
        .with_columns(pl.col("revenue").rank("min", descending=True).over("segment").cast(pl.Int64).alias("rank"))
        .select("segment", "region", "revenue", "rank")
        .sort("segment", "rank")
        .collect()
    )
    assert_frame_equal(result["save"], expected, check_dtypes=False)
    assert_frame_equal(pl.read_csv(tmp_path / "revenue.csv"), expected, check_dtypes=False)
    with duckdb.connect(str(tmp_path / "out.duckdb"), read_only=True) as con:
        stored = con.execute("SELECT sum(revenue) FROM revenue").fetchone()
    assert stored is not None and stored[0] == pytest.approx(expected["revenue"].sum())

    record = scope.catalog.execution(result.execution.id)
    assert record.status is RunState.SUCCEEDED and record.flow_run_id
    assert {n.node for n in record.nodes} == {n.name for n in parse(text).nodes}
    assert all(n.status is RunState.SUCCEEDED and n.attempts == 1 for n in record.nodes)
    by_node = {n.node: n for n in record.nodes}
    assert by_node["by_segment"].rows_out == by_node["top_regions"].rows_in
    assert by_node["paid"].group == "by_segment"  # fused into one lazy plan, still recorded
    wf = workflows.get("customer_revenue", scope)
    assert wf.execution_count == 1 and wf.last_executed_at is not None
    flow_run = web.get(f"{prefect_api}/flow_runs/{record.flow_run_id}").json()
    assert flow_run["state_type"] == "COMPLETED"
    assert flow_run["parameters"]["input_data"] == {"min_amount": 100}
    expected_tasks = {"by_segment (+4 fused)", "top_regions", "save", "archive"}
    query = {"flow_runs": {"id": {"any_": [record.flow_run_id]}}}

    def task_names() -> set[str]:
        return {t["name"] for t in web.post(f"{prefect_api}/task_runs/filter", json=query).json()}

    assert eventually(lambda: task_names() == expected_tasks), task_names()  # Prefect records task runs async


CONTRACT = """
name: guarded
nodes:
  - name: orders
    type: read_csv
    config: {path: data/samples/orders.csv}
    contract:
      columns:
        amount: {dtype: Float64, checks: {le: 400}}
        status: {dtype: String, checks: {isin: [paid, refunded, pending]}}
      on_failure: MODE
  - {name: paid, type: filter, config: {condition: "status = 'paid'"}}
  - {name: out, type: write_parquet, config: {path: OUT}}
connections:
  - {from: orders, to: paid}
  - {from: paid, to: out}
"""


def test_contract_failure_stops_the_branch_and_names_node_column_check(
    scope: Scope, tmp_path: Path, prefect_api: str
) -> None:
    out = tmp_path / "paid.parquet"
    out.write_bytes(b"previous output")
    apply(scope, CONTRACT.replace("MODE", "fail").replace("OUT", str(out)))
    result = run("guarded", scope)
    e = result.execution
    assert e.status is RunState.FAILED
    assert e.error_node == "orders" and e.error_type == "ContractError"
    assert "workflow 'guarded', node 'orders'" in (e.error_message or "")
    assert "column 'amount' failed less_than_or_equal_to(400)" in (e.error_message or "")
    bad_amounts = pl.read_csv(REPO / "data/samples/orders.csv").filter(pl.col("amount") > 400)["amount"]
    assert str(bad_amounts[0]) in (e.error_message or "")
    assert statuses(result) == {"orders": "FAILED", "paid": "SKIPPED", "out": "SKIPPED"}
    assert out.read_bytes() == b"previous output"
    shown = result._repr_markdown_()  # what a notebook displays
    assert "**guarded** v1 — **FAILED**" in shown
    assert "class orders failed" in shown and "class paid skipped" in shown and "class out skipped" in shown
    assert "**Contract failures**" in shown and "| orders | amount | less_than_or_equal_to(400) |" in shown
    stored = scope.catalog.contract_failures(e.id)
    assert len(stored) == bad_amounts.len()
    assert {f["column"] for f in stored} == {"amount"} and {f["node"] for f in stored} == {"orders"}
    assert sorted(float(f["failure_case"]) for f in stored) == sorted(bad_amounts.to_list())
    query = {"artifacts": {"flow_run_id": {"any_": [e.flow_run_id]}}}
    artifacts: list[dict[str, str]] = []

    def published() -> bool:
        artifacts[:] = web.post(f"{prefect_api}/artifacts/filter", json=query).json()
        return bool(artifacts)

    assert eventually(published)
    keyed = sorted((a["key"], a["type"]) for a in artifacts if a["key"])
    assert keyed == [("contract-orders", "table"), ("result-guarded", "markdown")]  # and the run's result
    assert any("column 'amount'" in (a["description"] or "") for a in artifacts)


def test_contract_quarantine_passes_valid_rows_and_warn_passes_all(scope: Scope, tmp_path: Path) -> None:
    out = tmp_path / "q.parquet"
    apply(scope, CONTRACT.replace("MODE", "quarantine").replace("OUT", str(out)))
    result = run("guarded", scope)
    assert result.ok
    orders = pl.read_csv(REPO / "data/samples/orders.csv")
    kept = orders.filter((pl.col("amount") <= 400) & (pl.col("status") == "paid"))
    assert pl.read_parquet(out).height == kept.height
    assert len(scope.catalog.contract_failures(result.execution.id)) > 0
    apply(scope, CONTRACT.replace("MODE", "warn").replace("OUT", str(out)))
    result = run("guarded", scope)
    assert result.ok and pl.read_parquet(out).height == orders.filter(pl.col("status") == "paid").height


def test_flaky_python_node_succeeds_on_second_attempt(scope: Scope, tmp_path: Path) -> None:
    marker = tmp_path / "calls"
    apply(
        scope,
        f"""
name: flaky
nodes:
  - {{name: orders, type: read_csv, config: {{path: data/samples/orders.csv}}}}
  - name: shaky
    type: python
    retries: 2
    config: {{callable: "tests.resources.pynodes:flaky", kwargs: {{marker: "{marker}"}}}}
connections: [{{from: orders, to: shaky}}]
""",
    )
    result = run("flaky", scope)
    assert result.ok, result.execution.error_message
    assert result["shaky"]["attempt"].unique().to_list() == [2]
    assert {n.node: n.attempts for n in scope.catalog.execution(result.execution.id).nodes}["shaky"] == 2

    def logged() -> bool:  # Prefect ships log lines in batches
        lines = logs(result.execution.id, scope, node="shaky")
        return any("flaky failure on call 1" in line.message for line in lines) and all(
            line.node == "shaky" for line in lines
        )

    assert eventually(logged)


SLOW = """
name: slow
settings: {timeout_seconds: EXEC}
nodes:
  - name: a
    type: python
    timeout_seconds: NODE
    config: {callable: "tests.resources.pynodes:slow", kwargs: {seconds: 3, marker: "MARK"}}
"""


def test_node_timeout_stops_the_work(scope: Scope, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    apply(scope, SLOW.replace("EXEC", "60").replace("NODE", "0.5").replace("MARK", str(marker)))
    t0 = time.monotonic()
    result = run("slow", scope)
    assert time.monotonic() - t0 < 3
    assert result.execution.status is RunState.TIMED_OUT
    assert statuses(result) == {"a": "TIMED_OUT"}
    time.sleep(3)
    assert not marker.exists(), "the node's thread went on after its timeout"


def test_execution_timeout_ends_as_timed_out(scope: Scope, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    apply(scope, SLOW.replace("EXEC", "1").replace("    timeout_seconds: NODE\n", "").replace("MARK", str(marker)))
    result = run("slow", scope)
    e = scope.catalog.execution(result.execution.id)
    assert e.status is RunState.TIMED_OUT
    assert "timed out after 1 s" in (e.error_message or "")
    assert {n.node: n.status for n in e.nodes} == {"a": RunState.TIMED_OUT}
    time.sleep(3)
    assert not marker.exists()


def test_independent_branches_run_at_the_same_time(scope: Scope) -> None:
    node = '{{name: {0}, type: python, config: {{callable: "tests.resources.pynodes:slow", kwargs: {{seconds: 1}}}}}}'
    apply(scope, f"name: parallel\nnodes:\n  - {node.format('left')}\n  - {node.format('right')}\n")
    result = run("parallel", scope)
    assert result.ok
    left, right = result["left"].row(0), result["right"].row(0)
    assert left[0] < right[1] and right[0] < left[1], "the two slow branches did not overlap"


def test_input_data_reaches_filters_and_sql_as_bound_values(scope: Scope) -> None:
    apply(
        scope,
        """
name: params
inputs:
  region: {type: string}
  floor: {type: number, default: 0}
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: mine, type: filter, config: {condition: "region = $region AND amount >= $floor"}}
  - {name: q, type: sql, config: {query: "SELECT count(*) AS n, min(amount) AS low FROM mine WHERE region = $region"}}
connections: [{from: orders, to: mine}, {from: mine, to: q}]
""",
    )
    sneaky = "north' OR '1'='1"
    result = run("params", scope, input_data={"region": "north", "floor": 100})
    orders = pl.read_csv(REPO / "data/samples/orders.csv")
    expect = orders.filter((pl.col("region") == "north") & (pl.col("amount") >= 100))
    assert result["q"].row(0) == (expect.height, expect["amount"].min())
    assert run("params", scope, input_data={"region": sneaky})["q"]["n"][0] == 0
    with pytest.raises(DefinitionError, match=r"input_data\.region: required input not given"):
        run("params", scope)
    with pytest.raises(DefinitionError, match=r"input_data\.floor: expected number, got str"):
        run("params", scope, input_data={"region": "x", "floor": "high"})


def test_python_callable_outside_the_allow_list_is_refused(scope: Scope) -> None:
    text = 'name: py\nnodes:\n  - {name: p, type: python, config: {callable: "tests.resources.pynodes:not_a_frame"}}\n'
    from weflow import config

    with config.using(python_node_modules=()), pytest.raises(DefinitionError, match="callable: module"):
        apply(scope, text)
    apply(scope, text.replace(":not_a_frame", ":slow"))
    with config.using(python_node_modules=("other",)), pytest.raises(DefinitionError, match="is not allowed"):
        run("py", scope)  # the allow-list in force when it runs decides; nothing is recorded
    assert scope.catalog.executions(scope.user.organization_id) == []


def test_persisted_outputs_are_content_addressed_and_indexed(scope: Scope, settings) -> None:
    text = (REPO / "data/workflows/daily_sales.yaml").read_text().replace("  - {from: ranked, to: report}\n", "")
    text = text.replace("  - {name: report, type: write_parquet, config: {path: data/out/daily_sales.parquet}}\n", "")
    # max, not sum: the streaming engine adds floats in no fixed order, so two sums may differ in the last bit
    apply(scope, text.replace("sum(amount)", "max(amount)"))
    first = run("daily_sales", scope, persist=True)
    second = run("daily_sales", scope, persist=True)
    paths = {n.node: n.output_path for n in scope.catalog.execution(first.execution.id).nodes}
    again = {n.node: n.output_path for n in scope.catalog.execution(second.execution.id).nodes}
    assert paths["ranked"] and paths["ranked"] == again["ranked"]  # same content, same file
    assert len(set(paths.values())) == len(paths)  # one file per node output
    assert_frame_equal(pl.read_parquet(paths["ranked"]), first["ranked"])
    assert Path(paths["ranked"]).parent == settings.runs_dir


def test_repeat_runs_in_one_process_rebuild_no_prefect_settings_or_tls_context(
    scope: Scope, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notebook runs workflows again and again: Prefect's settings (~85 ms to rebuild here) and the
    SSL context each new Prefect client loads from the CA bundle (~45 ms) are made once per process."""
    apply(scope, "name: again\nnodes:\n  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}\n")
    assert run("again", scope).ok  # the first run in this process builds them
    made: list[str] = []
    real_tls = ssl.create_default_context
    real_copy = Settings.copy_with_update

    def tls(*args: Any, **kwargs: Any) -> ssl.SSLContext:
        made.append("ssl context")
        return real_tls(*args, **kwargs)

    def copy(self: Settings, *args: Any, **kwargs: Any) -> Settings:
        made.append("settings")
        return real_copy(self, *args, **kwargs)

    monkeypatch.setattr(ssl, "create_default_context", tls)
    monkeypatch.setattr(Settings, "copy_with_update", copy)
    result = run("again", scope)
    assert result.ok and result.execution.flow_run_id  # a real flow run on the server
    assert result["orders"].height == pl.read_csv(REPO / "data/samples/orders.csv").height
    assert made == []


def test_preview_runs_only_upstream_on_a_sample(scope: Scope, tmp_path: Path) -> None:
    out = tmp_path / "never.parquet"
    d = parse((REPO / "data/workflows/daily_sales.yaml").read_text().replace("data/out/daily_sales.parquet", str(out)))
    frame = preview(d, "paid", n=5)
    assert frame.height <= 5 and set(frame["status"].to_list()) <= {"paid"}
    assert not out.exists()


def test_cli_run_exit_codes_and_concurrent_processes(scope: Scope, cli_env: dict[str, str], tmp_path: Path) -> None:
    sales = (REPO / "data/workflows/daily_sales.yaml").read_text()
    for i in range(2):  # two processes at once: "concurrent" needs no more
        apply(scope, sales.replace("name: daily_sales", f"name: s{i}").replace("data/out/", f"{tmp_path}/s{i}_"))
    env = {**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}
    procs = [
        subprocess.Popen([weflow_exe(), "run", f"s{i}", "-f", "json"], env=env, cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(2)
    ]  # fmt: skip
    outs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    ids = {json.loads(o[0])["id"] for o in outs}
    assert len(ids) == 2
    listed = scope.catalog.executions(scope.user.organization_id)  # both recorded in the one catalog file
    assert ids <= {e.id for e in listed if e.status is RunState.SUCCEEDED}
    shown = subprocess.run(
        [weflow_exe(), "execution", next(iter(ids))], env=env, cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "by_region" in shown and "SUCCEEDED" in shown
    failing = sales.replace("name: daily_sales", "name: broken").replace("{ge: 0}", "{ge: 1000}")
    apply(scope, failing.replace("data/out/", f"{tmp_path}/"))
    proc = subprocess.run([weflow_exe(), "run", "broken"], env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1 and "FAILED" in proc.stdout and "node orders" in proc.stdout
