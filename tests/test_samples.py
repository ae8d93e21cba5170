"""Pinned samples (issue 19 item 1): pin the first rows of each source, list, drop, run on them; stale pins."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from weflow import notebook, samples, workflows
from weflow.cli.app import app
from weflow.core import document
from weflow.errors import ConflictError, DefinitionError, NotFoundError, WeflowError
from weflow.workflows import Scope

from .conftest import REPO, weflow_exe

ORDERS = pl.DataFrame(
    {
        "id": [1, 2, 3, 4, 5, 6],
        "customer": ["ann", "bob", "ann", "cid", "bob", "cid"],
        "status": ["paid", "open", "paid", "paid", "paid", "open"],
        "amount": [10, 20, 30, 40, 50, 60],
    }
)
CUSTOMERS = pl.DataFrame({"customer": ["ann", "bob", "cid", "dan"], "region": ["north", "south", "north", "east"]})


def definition(folder: Path, condition: str = "status = 'paid'", orders: str = "orders.csv") -> dict[str, Any]:
    return {
        "name": "sales",
        "nodes": [
            {"name": "orders", "type": "read_csv", "config": {"path": str(folder / orders)}},
            {"name": "customers", "type": "read_parquet", "config": {"path": str(folder / "customers.parquet")}},
            {"name": "paid", "type": "filter", "config": {"condition": condition}},
            {"name": "joined", "type": "join", "config": {"on": ["customer"], "how": "left"}},
            {"name": "named", "type": "select", "config": {"columns": ["id", "region"], "exprs": {"total": "amount"}}},
            {"name": "out", "type": "write_parquet", "config": {"path": str(folder / "out.parquet")}},
        ],
        "connections": [
            {"from": "orders", "to": "paid"},
            {"from": "paid", "to": "joined.left"},
            {"from": "customers", "to": "joined.right"},
            {"from": "joined", "to": "named"},
            {"from": "named", "to": "out"},
        ],
    }


@pytest.fixture
def sales(scope: Scope, tmp_path: Path) -> Path:
    """The workflow ``sales`` stored, on a CSV and a Parquet file in ``tmp_path/data``; the data folder."""
    folder = tmp_path / "data"
    folder.mkdir()
    ORDERS.write_csv(folder / "orders.csv")
    CUSTOMERS.write_parquet(folder / "customers.parquet")
    workflows.apply(document.from_data(definition(folder)), scope)
    return folder


def pins_table(scope: Scope) -> list[tuple[Any, ...]]:
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        return con.execute("SELECT * FROM sample_pins ORDER BY workflow_id, node").fetchall()


@pytest.mark.usefixtures("prefect_api")  # first: the server is up before this module imports Prefect
def test_pin_from_an_execution_takes_its_kept_outputs(scope: Scope, sales: Path) -> None:
    from weflow import execution

    run = execution.run("sales", scope, persist=True)
    assert run.ok
    kept = {n.node: n.output_path for n in run.execution.nodes}
    assert kept["orders"] and kept["customers"]
    pinned = samples.pin("sales", scope, rows=2, from_execution=run.execution.id)
    assert {s.origin for s in pinned} == {f"execution {run.execution.id}"}
    assert_frame_equal(samples.load_pins(scope, "sales")["orders"], pl.read_parquet(kept["orders"]).head(2))
    before = pins_table(scope)
    with pytest.raises(NotFoundError, match="no execution 'nope'"):
        samples.pin("sales", scope, from_execution="nope")
    other = document.from_data({**definition(sales), "name": "other"})
    workflows.apply(other, scope)
    with pytest.raises(NotFoundError, match=f"execution '{run.execution.id}' is a run of 'sales', not of 'other'"):
        samples.pin("other", scope, from_execution=run.execution.id)
    globex = Scope(scope.catalog, scope.catalog.ensure_user("globex", "eve"))
    workflows.apply(document.from_data(definition(sales)), globex)
    with pytest.raises(NotFoundError, match=f"no execution '{run.execution.id}'"):  # another organization's run
        samples.pin("sales", globex, from_execution=run.execution.id)
    assert pins_table(scope) == before


def test_pin_reads_the_first_rows_of_a_csv_and_a_parquet_source(scope: Scope, sales: Path) -> None:
    assert [(s.node, s.pin, s.origin) for s in samples.status("sales", scope)] == [
        ("orders", None, ""), ("customers", None, ""),
    ]  # fmt: skip
    pinned = samples.pin("sales", scope, rows=3)
    assert [(s.node, s.pin.rows, s.origin) for s in pinned if s.pin] == [
        ("orders", 3, "bounded read"), ("customers", 3, "bounded read"),
    ]  # fmt: skip
    frames = samples.load_pins(scope, "sales")
    assert_frame_equal(frames["orders"], ORDERS.head(3))
    assert_frame_equal(frames["customers"], CUSTOMERS.head(3))
    listed = samples.status("sales", scope)
    assert [(s.node, s.stale, s.pin.columns[0] if s.pin else None) for s in listed] == [
        ("orders", False, ("id", "Int64")), ("customers", False, ("customer", "String")),
    ]  # fmt: skip
    wf = scope.catalog.workflow(scope.user.organization_id, "sales")
    where = samples.folder(scope, wf.id)
    assert where.parent.parent == scope.catalog.path.resolve().with_name("weflow.duckdb.samples")
    assert sorted(p.name for p in where.iterdir()) == sorted(s.pin.path for s in listed if s.pin)
    samples.pin("sales", scope, rows=2, node="orders")  # pinned again: the old file goes
    assert len(list(where.iterdir())) == 2 and samples.load_pins(scope, "sales")["orders"].height == 2


def test_a_run_on_pins_writes_no_sink_and_gives_the_expected_frame(scope: Scope, sales: Path) -> None:
    samples.pin("sales", scope, rows=4)
    done = samples.run_on_pins("sales", scope)
    assert done.ok and not (sales / "out.parquet").exists()
    expected = pl.DataFrame({"id": [1, 3, 4], "region": ["north", "north", "north"], "total": [10, 30, 40]})
    assert_frame_equal(done["out"].sort("id"), expected)
    assert "on pinned samples" in done._repr_markdown_() and "```mermaid" in done._repr_markdown_()
    preview = notebook.preview(notebook.load("sales"), "paid", samples=True)
    assert preview["id"].to_list() == [1, 3, 4]
    shown = notebook.run_on_samples("sales")
    assert_frame_equal(shown["out"].sort("id"), expected)


def test_a_changed_source_marks_its_pin_stale(scope: Scope, sales: Path) -> None:
    samples.pin("sales", scope, rows=3)
    ORDERS.write_csv(sales / "orders2.csv")
    changed_filter = definition(sales, condition="status = 'open'")
    workflows.apply(document.from_data(changed_filter), scope)  # a transform changed: pins still fit
    assert not any(s.stale for s in samples.status("sales", scope))
    workflows.apply(document.from_data(definition(sales, orders="orders2.csv")), scope)
    assert [(s.node, s.stale) for s in samples.status("sales", scope)] == [("orders", True), ("customers", False)]
    with pytest.raises(ConflictError, match="pinned sample of source 'orders' of 'sales' is stale"):
        samples.load_pins(scope, "sales")
    with pytest.raises(ConflictError, match="'orders'"):
        samples.run_on_pins("sales", scope)
    assert samples.load_pins(scope, "sales", allow_stale=True)["orders"].height == 3
    old = samples.run_on_pins("sales", scope, version=2)  # the version the pins were taken from
    assert old.ok and old["out"]["id"].to_list() == [2]
    samples.pin("sales", scope, rows=3, node="orders")
    assert not any(s.stale for s in samples.status("sales", scope))


def test_drop_one_node_then_all(scope: Scope, sales: Path) -> None:
    samples.pin("sales", scope)
    wf = scope.catalog.workflow(scope.user.organization_id, "sales")
    assert samples.drop("sales", scope, "orders") == ["orders"]
    assert [(s.node, s.pin is None) for s in samples.status("sales", scope)] == [("orders", True), ("customers", False)]
    assert len(list(samples.folder(scope, wf.id).iterdir())) == 1
    with pytest.raises(NotFoundError, match="source 'orders' of 'sales' has no pinned sample"):
        samples.load_pins(scope, "sales")
    with pytest.raises(NotFoundError, match="no pin of node 'orders'"):
        samples.drop("sales", scope, "orders")
    assert samples.drop("sales", scope) == ["customers"]
    assert pins_table(scope) == [] and list(samples.folder(scope, wf.id).iterdir()) == []


def test_bad_inputs_are_one_line_and_change_nothing(scope: Scope, sales: Path) -> None:
    samples.pin("sales", scope, rows=2)
    before = pins_table(scope)
    for rows in (0, -1, 100_001):
        with pytest.raises(WeflowError, match=rf"^--rows {rows}: a sample holds 1 to 100000 rows$"):
            samples.pin("sales", scope, rows=rows)
    with pytest.raises(NotFoundError, match="no workflow named 'nope'"):
        samples.pin("nope", scope)
    with pytest.raises(NotFoundError, match=r"'paid' is not a source of 'sales' v1 \(sources: orders, customers\)"):
        samples.pin("sales", scope, node="paid")
    with pytest.raises(NotFoundError, match="'sales' has no node 'nope'"):
        samples.run_on_pins("sales", scope, node="nope")
    (sales / "customers.parquet").write_bytes(b"not parquet")
    with pytest.raises(WeflowError, match=r"^source 'customers' of 'sales' could not be read: "):
        samples.pin("sales", scope)
    assert pins_table(scope) == before


def test_a_pin_naming_a_file_outside_its_folder_is_refused(scope: Scope, sales: Path) -> None:
    samples.pin("sales", scope, rows=2)
    for path in ("../../../x.parquet", "/etc/passwd", "sub/../x.parquet", ".."):
        with duckdb.connect(str(scope.catalog.path)) as con:
            con.execute("UPDATE sample_pins SET path = ? WHERE node = 'orders'", [path])
        with pytest.raises(WeflowError, match=r"^the pinned sample of node 'orders' of 'sales' names a file outside"):
            samples.load_pins(scope, "sales")


def test_no_node_may_read_a_pin_and_other_organizations_see_none(scope: Scope, sales: Path) -> None:
    samples.pin("sales", scope, rows=2)
    wf = scope.catalog.workflow(scope.user.organization_id, "sales")
    pin_file = next(samples.folder(scope, wf.id).iterdir())
    thief = {"name": "thief", "nodes": [{"name": "pins", "type": "read_parquet", "config": {"path": str(pin_file)}}]}
    with pytest.raises(DefinitionError, match="weflow's own state"):
        workflows.apply(document.from_data(thief), scope)
    other = Scope(scope.catalog, scope.catalog.ensure_user("globex", "eve"))
    with pytest.raises(NotFoundError):
        samples.status("sales", other)
    with pytest.raises(NotFoundError):
        samples.load_pins(other, "sales")
    workflows.apply(document.from_data(definition(sales)), other)
    assert all(s.pin is None for s in samples.status("sales", other))
    assert samples.folder(other, wf.id) != samples.folder(scope, wf.id)


def test_the_samples_commands(scope: Scope, sales: Path, cli_env: dict[str, str]) -> None:
    runner = CliRunner()
    pinned = runner.invoke(app, ["samples", "pin", "sales", "--rows", "3"])
    assert pinned.exit_code == 0, pinned.output
    listed = runner.invoke(app, ["samples", "list", "sales"])
    assert "orders" in listed.stdout and "pinned" in listed.stdout and "bounded read" in listed.stdout
    ran = runner.invoke(app, ["samples", "run", "sales", "--node", "named"])
    assert ran.exit_code == 0 and "not recorded as an execution, no sink written" in ran.stdout
    assert "named: 2 rows" in ran.stdout and not (sales / "out.parquet").exists()
    ran = runner.invoke(app, ["run", "sales", "--samples"])  # weflow run's spelling of the same
    assert ran.exit_code == 0 and "not recorded as an execution, no sink written" in ran.stdout, ran.output
    assert not (sales / "out.parquet").exists()
    clash = runner.invoke(app, ["run", "sales", "--samples", "--queue"])
    assert clash.exit_code == 1 and "not with --queue" in str(clash.exception) and not (sales / "out.parquet").exists()
    dropped = runner.invoke(app, ["samples", "drop", "sales", "customers"])
    assert dropped.stdout.strip() == "dropped 1 pin(s) of sales: customers"
    env = {**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}
    failed = subprocess.run([weflow_exe(), "samples", "run", "sales"], env=env, cwd=REPO, capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert failed.returncode == 1 and failed.stdout == ""
    assert failed.stderr == "error: source 'customers' of 'sales' has no pinned sample (weflow samples pin sales)\n"
