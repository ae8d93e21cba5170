"""Workflow tests (issue 19 item 2): given rows in, expected rows out, in-process, no server, nothing written."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import yaml

from weflow import workflow_tests, workflows
from weflow.errors import DefinitionError

from .conftest import weflow_exe

pytest_plugins = ["pytester"]

ORDERS = [
    {"order_id": 1, "region": "north", "amount": 10.0, "status": "paid"},
    {"order_id": 2, "region": "north", "amount": 5.5, "status": "paid"},
    {"order_id": 3, "region": "south", "amount": 7.0, "status": "refunded"},
    {"order_id": 4, "region": "south", "amount": 2.0, "status": "paid"},
]
PASSING = {
    "name": "revenue_per_region",
    "inputs": {"orders": {"rows": ORDERS}},
    "expect": {
        "by_region": {"rows": [{"region": "south", "revenue": 2, "orders": 1},
                               {"region": "north", "revenue": 15.5, "orders": 2}]},
        "ranked": {"values": {"region": ["north", "south"]}, "ordered": True},
        "report": {"row_count": 2},  # the sink's input: what it would write
        "orders": {"contract": True},
    },
}  # fmt: skip
FAILING = {
    "name": "wrong_on_purpose",
    "inputs": {"orders": {"rows": [*ORDERS[:2], {**ORDERS[3], "region": "east"}]}},
    "expect": {
        "by_region": {"rows": [{"region": "north", "revenue": 15.5, "orders": 2},
                               {"region": "west", "revenue": 2.0, "orders": 1}]},
        "ranked": {"row_count": 3},
    },
}  # fmt: skip


def sales(tests: list[dict[str, Any]], out: str = "data/out/workflow_tests_never.parquet") -> dict[str, Any]:
    return {
        "name": "sales",
        "nodes": [
            {"name": "orders", "type": "read_csv", "config": {"path": "data/samples/orders.csv"},
             "contract": {"columns": {"order_id": {"dtype": "Int64", "unique": True},
                                      "amount": {"checks": {"ge": 0}}}}},
            {"name": "paid", "type": "filter", "config": {"condition": "status = 'paid'"}},
            {"name": "by_region", "type": "aggregate",
             "config": {"by": ["region"], "aggs": {"revenue": "sum(amount)", "orders": "count(order_id)"}}},
            {"name": "ranked", "type": "sort", "config": {"by": ["revenue"], "descending": True}},
            {"name": "report", "type": "write_parquet", "config": {"path": out}},
        ],
        "connections": [{"from": a, "to": b} for a, b in
                        [("orders", "paid"), ("paid", "by_region"), ("by_region", "ranked"), ("ranked", "report")]],
        "tests": tests,
    }  # fmt: skip


def write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(json.loads(json.dumps(doc)), sort_keys=False))  # no YAML aliases
    return path


@pytest.fixture
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Prefect API that does not answer: workflow tests must never need one."""
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")


@pytest.fixture
def no_catalog(catalog_path: Path) -> Path:
    """No catalog file at all (the session gives each test a migrated copy): workflow tests must not make one."""
    catalog_path.unlink()
    return catalog_path


def test_a_passing_section_runs_in_process_without_server_catalog_or_sink(
    no_catalog: Path, settings, tmp_path: Path, no_server: None
) -> None:
    out = tmp_path / "never.parquet"
    definition = workflow_tests.from_file(write(tmp_path / "sales.yaml", sales([PASSING], str(out))))
    workflow_tests.run_all([definition])  # warm: the first run pays Polars' and Pandera's first-use costs
    t0 = time.perf_counter()
    [outcome] = workflow_tests.run_all([definition])
    elapsed = time.perf_counter() - t0
    assert outcome.ok, outcome.report()
    assert (outcome.workflow, outcome.test) == ("sales", "revenue_per_region")
    assert elapsed < 1.0, elapsed
    assert not out.exists()  # the sink wrote nothing
    assert not settings.catalog.exists()  # no catalog was opened, let alone written


def test_a_failing_section_prints_a_readable_diff_naming_workflow_test_and_node(settings, tmp_path: Path) -> None:
    definition = workflow_tests.from_file(write(tmp_path / "sales.yaml", sales([PASSING, FAILING])))
    passed, failed = workflow_tests.run_all([definition])
    assert passed.ok and not failed.ok
    assert [(m.node, m.check) for m in failed.mismatches] == [("by_region", "rows"), ("ranked", "row_count")]
    rows = failed.mismatches[0]
    assert rows.message == "1 row(s) missing, 1 extra (they differ in column region)"
    report = failed.report()
    assert "sales::wrong_on_purpose node 'by_region' (rows): 1 row(s) missing, 1 extra" in report
    assert "sales::wrong_on_purpose node 'ranked' (row_count): expected 3 rows, got 2" in report
    missing, extra = report.split("rows extra (in the output, not expected): 1")
    assert "rows missing (expected, not in the output): 1" in missing and "west" in missing and "north" not in missing
    assert "east" in extra and "west" not in extra


def test_order_types_and_missing_columns_are_told_apart(settings, tmp_path: Path) -> None:
    expect = {
        "ranked": {
            "rows": [{"region": "south", "revenue": 2.0}, {"region": "north", "revenue": 15.5}],
            "ordered": True,
        },
        "by_region": {"rows": [{"region": "north", "margin": 1.0}]},
        "paid": {"rows": [{"order_id": "one"}]},
    }
    test = {"name": "shapes", "inputs": {"orders": {"rows": ORDERS}}, "expect": expect}
    [outcome] = workflow_tests.run_all([workflow_tests.from_file(write(tmp_path / "s.yaml", sales([test])))])
    found = {m.node: m.message for m in outcome.mismatches}
    assert found == {
        "ranked": "the same rows in another order",
        "by_region": "columns missing from the output: margin",
        "paid": "columns differing in type: order_id: expected String, output is Int64",
    }


def test_given_rows_from_csv_and_parquet_files_under_the_data_roots(settings, tmp_path: Path) -> None:
    pl.DataFrame(ORDERS).write_parquet(tmp_path / "orders.parquet")
    expected = pl.read_csv("data/samples/orders.csv").filter(pl.col("status") == "paid").height
    tests = [
        {"name": "csv", "inputs": {"orders": {"path": "data/samples/orders.csv"}},
         "expect": {"paid": {"row_count": expected}}},
        {"name": "parquet", "inputs": {"orders": {"path": "orders.parquet"}}, "expect": {"paid": {"row_count": 3}}},
    ]  # fmt: skip
    outcomes = workflow_tests.run_all([workflow_tests.from_file(write(tmp_path / "s.yaml", sales(tests)))])
    assert [o.ok for o in outcomes] == [True, True], [o.report() for o in outcomes]


def test_contracts_are_checked_on_given_rows(settings, tmp_path: Path) -> None:
    negative = [{**ORDERS[0], "amount": -1.0}]
    stops = {"name": "stops", "inputs": {"orders": {"rows": negative}}, "expect": {"paid": {"row_count": 1}}}
    [outcome] = workflow_tests.run_all([workflow_tests.from_file(write(tmp_path / "s.yaml", sales([stops])))])
    [run] = outcome.mismatches
    assert (run.node, run.check) == ("orders", "run")
    assert "contract failed in workflow 'sales', node 'orders'" in run.message and "-1.0" in run.detail
    doc = sales([{**stops, "expect": {"orders": {"contract": True}}}])
    doc["nodes"][0]["contract"]["on_failure"] = "warn"  # the run goes on; the assertion catches it
    [outcome] = workflow_tests.run_all([workflow_tests.from_file(write(tmp_path / "w.yaml", doc))])
    assert [(m.node, m.check, m.message) for m in outcome.mismatches] == [
        ("orders", "contract", "the contract failed on 1 case(s)")
    ]


def test_a_tests_file_beside_the_definition_adds_tests_and_names_itself_in_errors(settings, tmp_path: Path) -> None:
    path = write(tmp_path / "sales.yaml", sales([PASSING]))
    write(tmp_path / "sales.tests.yaml", {"tests": [FAILING]})
    assert [t.name for t in workflow_tests.from_file(path).tests] == ["revenue_per_region", "wrong_on_purpose"]
    write(tmp_path / "sales.tests.yaml", {"tests": [{**FAILING, "inputs": {"nodex": {"rows": []}}}]})
    with pytest.raises(DefinitionError, match=r"sales\.tests\.yaml: tests\[0\]\.inputs\.nodex: unknown node"):
        workflow_tests.from_file(path)


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ({"inputs": {"nodex": {"rows": []}}}, "tests[0].inputs.nodex: unknown node"),
        ({"inputs": {"paid": {"rows": []}}}, "tests[0].inputs.paid: not a source (it has inputs)"),
        ({"expect": {"paid": {"contract": True}}}, "tests[0].expect.paid.contract: node 'paid' has no contract"),
        ({"expect": {"paid": {}}}, "tests[0].expect.paid: expect at least one of rows, values, row_count, contract"),
        ({"inputs": {"orders": {"path": "x.json"}}}, "tests[0].inputs.orders.path: 'x.json' is not a .csv or .parquet"),
        ({"inputs": {"orders": {"rows": [], "dtypes": {"a": "Int99"}}}}, "tests[0].inputs.orders.dtypes: column 'a'"),
        ({"expect": {"paid": {"values": {"a": [1], "b": []}}}}, "tests[0].expect.paid: values: every column needs"),
        ({"name": "bad name"}, "tests[0].name: string should match pattern"),
    ],
)
def test_a_bad_tests_section_is_refused_at_apply_with_its_path(settings, scope, test, expected) -> None:
    doc = sales([{**PASSING, **test}])
    with pytest.raises(DefinitionError) as err:
        workflows.apply(doc, scope)
    assert str(err.value).startswith(expected), str(err.value)
    assert workflows.list_workflows(scope) == []


@pytest.mark.parametrize(
    ("inputs", "expected"),
    [
        ({}, "tests[0].inputs: source 'orders' (read by 'paid') needs rows: add tests[0].inputs.orders"),
        ({"orders": {"path": "../outside.csv"}}, "tests[0].inputs.orders.path"),
        ({"orders": {"path": "nowhere.csv"}}, "tests[0].inputs.orders"),
        ({"orders": {"rows": [{"a": 1}], "dtypes": {"b": "Int64"}}}, "dtypes name columns the rows do not have: b"),
    ],
)
def test_bad_given_rows_are_refused_when_the_test_runs(settings, tmp_path: Path, inputs, expected) -> None:
    test = {"name": "t", "inputs": inputs, "expect": {"paid": {"row_count": 1}}}
    definition = workflow_tests.from_file(write(tmp_path / "s.yaml", sales([test])))
    with pytest.raises(DefinitionError) as err:
        workflow_tests.run_all([definition])
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_given_rows_never_come_from_weflows_own_state(settings, tmp_path: Path) -> None:
    settings.runs_dir.mkdir(parents=True)
    own = settings.runs_dir / "someone_elses_output.parquet"  # under a data root, but weflow's own state
    pl.DataFrame(ORDERS).write_parquet(own)
    test = {"name": "t", "inputs": {"orders": {"path": str(own)}}, "expect": {"paid": {"row_count": 3}}}
    definition = workflow_tests.from_file(write(tmp_path / "s.yaml", sales([test])))
    with pytest.raises(DefinitionError) as err:
        workflow_tests.run_all([definition])
    assert str(err.value) == f"tests[0].inputs.orders.path: {str(own)!r} is weflow's own state (the run outputs); " + (
        "no node may read or write it"
    )


def test_weflow_test_cli_exits_1_with_the_diff_and_one_line_for_a_bad_section(
    no_catalog: Path, cli_env, tmp_path: Path
) -> None:
    path = write(tmp_path / "sales.yaml", sales([PASSING, FAILING]))
    env = {**cli_env, "PREFECT_API_URL": "http://127.0.0.1:9/api"}  # nothing answers there: none is needed
    red = subprocess.run([weflow_exe(), "test", "--file", str(path)], env=env, capture_output=True, text=True)
    assert red.returncode == 1, red.stderr
    assert "PASS sales::revenue_per_region" in red.stdout and "FAIL sales::wrong_on_purpose" in red.stdout
    assert "rows missing (expected, not in the output): 1" in red.stdout and "1 passed, 1 failed" in red.stdout
    write(path, sales([{**PASSING, "inputs": {"nodex": {"rows": []}}}]))
    bad = subprocess.run([weflow_exe(), "test", "--file", str(path)], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and bad.stderr == "error: tests[0].inputs.nodex: unknown node\n", bad.stderr
    assert not Path(cli_env["WEFLOW_CATALOG"]).exists()


def test_weflow_test_runs_a_stored_workflow_and_records_nothing(settings, scope, no_server: None) -> None:
    from typer.testing import CliRunner

    from weflow.cli.app import app

    workflows.apply(sales([PASSING, FAILING]), scope)
    runner = CliRunner()
    green = runner.invoke(app, ["test", "sales", "-k", "revenue"])
    assert green.exit_code == 0 and "1 passed, 0 failed" in green.stdout, green.output
    everything = runner.invoke(app, ["test", "--format", "json"])  # no name: every stored workflow with tests
    assert everything.exit_code == 1
    assert [(t["test"], t["ok"]) for t in json.loads(everything.stdout)] == [
        ("revenue_per_region", True), ("wrong_on_purpose", False)
    ]  # fmt: skip
    stored = workflows.get("sales", scope)
    assert (stored.current_version, stored.execution_count) == (1, 0)


def test_pytest_collects_workflow_tests_only_when_asked(pytester: pytest.Pytester, settings) -> None:
    write(pytester.path / "sales.yaml", sales([PASSING, FAILING]))
    write(pytester.path / "plain.yaml", {"name": "no_tests", "nodes": [{"name": "a", "type": "read_csv"}]})
    pytester.makepyfile(test_plain="def test_python():\n    assert True\n")
    off = pytester.runpytest("-p", "weflow.pytest_plugin", "-p", "no:cacheprovider")
    off.assert_outcomes(passed=1)  # the definitions are not collected without the opt-in
    on = pytester.runpytest("-p", "weflow.pytest_plugin", "-p", "no:cacheprovider", "--weflow-tests", "-v")
    on.assert_outcomes(passed=2, failed=1)
    on.stdout.fnmatch_lines([
        "*sales.yaml::revenue_per_region PASSED*",
        "*sales.yaml::wrong_on_purpose FAILED*",
        "*sales::wrong_on_purpose node 'by_region' (rows): 1 row(s) missing, 1 extra*",
        "*rows extra (in the output, not expected): 1*",
    ])  # fmt: skip
    pytester.makeini("[pytest]\nweflow_tests = true\n")
    write(pytester.path / "sales.yaml", sales([{**PASSING, "inputs": {"nodex": {"rows": []}}}]))
    broken = pytester.runpytest("-p", "weflow.pytest_plugin", "-p", "no:cacheprovider")
    broken.assert_outcomes(errors=1)
    broken.stdout.fnmatch_lines(["*sales.yaml: tests[[]0[]].inputs.nodex: unknown node*"])
