"""Issue 14, item 2 and item 11 (SQL): expressions never reach Polars with a query or a file in them,
and a `sql`/`read_duckdb` query is split into statements by DuckDB's parser, not by ';'.

Real parts: `weflow serve` in the README's layout, the ``weflow`` console script, DuckDB catalog
files, the session's Prefect server, and secret files in every format Polars' SQL can read, each
with a marker as its column name (Polars' "column not found" message lists the columns it read).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import REPO, weflow_exe
from tests.hostile.conftest import run_unchecked, serving
from tests.test_api import Api, create, stored_names, wait_final
from weflow import DefinitionError, config, parse, workflows
from weflow.core.entities import RunState
from weflow.execution import run
from weflow.nodes import expressions, sqlcheck
from weflow.workflows import Scope

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

MARKER = "SECRET_MARKER_H2"
ORDERS = "orders.csv"  # a copy in the test's folder: the data root of `serve`, a root in-process and for the CLI
# Every table function Polars' SQL knows (polars 2.1.0), and the file it would read.
TABLE_FUNCTIONS = {
    "read_csv": "secret.csv",
    "read_parquet": "secret.parquet",
    "read_ipc": "secret.arrow",
    "read_json": "secret.json",
    "read_ndjson": "secret.ndjson",
}
# Where an expression goes: node type, config built around the text, the path a refusal names.
PLACES: dict[str, tuple[str, Callable[[str], dict[str, Any]], str]] = {
    "filter": ("filter", lambda text: {"condition": text}, "nodes[1].config.condition"),
    "select": ("select", lambda text: {"exprs": {"x": text}}, "nodes[1].config.exprs"),
    "with_columns": ("with_columns", lambda text: {"columns": {"x": text}}, "nodes[1].config.columns"),
    "aggregate": ("aggregate", lambda text: {"aggs": {"x": text}}, "nodes[1].config.aggs"),
}
SUBQUERY = "subqueries are not allowed in expressions"


@pytest.fixture(autouse=True)
def orders(tmp_path: Path) -> Path:
    target = tmp_path / ORDERS
    target.write_bytes((REPO / "data/samples/orders.csv").read_bytes())
    return target


@pytest.fixture(scope="module")
def api(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One `weflow serve` for the module (each start costs seconds of CPU), in the README's layout with its own
    copy of the orders; the tests that use it compare what is stored before and after, whatever ran first."""
    folder = tmp_path_factory.mktemp("expressions")
    (folder / ORDERS).write_bytes((REPO / "data/samples/orders.csv").read_bytes())
    with serving(prefect_api, folder) as found:
        yield found


@pytest.fixture
def secrets(tmp_path: Path) -> dict[str, Path]:
    """One file per table function, outside any data root, whose only column is named MARKER."""
    folder = tmp_path / "secret"
    folder.mkdir()
    frame = pl.DataFrame({MARKER: ["hidden"]})
    paths = {name: folder / file for name, file in TABLE_FUNCTIONS.items()}
    frame.write_csv(paths["read_csv"])
    frame.write_parquet(paths["read_parquet"])
    frame.write_ipc(paths["read_ipc"])
    frame.write_json(paths["read_json"])
    frame.write_ndjson(paths["read_ndjson"])
    return paths


def attacks(secrets: dict[str, Path]) -> Iterator[tuple[str, str, str, str]]:
    """(place, table function, expression, expected message) for every pair, as subquery and as call."""
    for place in PLACES:
        for function, path in secrets.items():
            call = f"{function}('{path}')"
            yield place, function, f"order_id IN (SELECT nope FROM {call})", SUBQUERY
            yield place, function, f"(SELECT max(nope) FROM {call})", SUBQUERY
            yield place, function, call, f"table function {function}() is not allowed in expressions"


def definition(name: str, place: str, text: str) -> dict[str, Any]:
    node_type, config_of, _ = PLACES[place]
    return {
        "name": name,
        "nodes": [
            {"name": "orders", "type": "read_csv", "config": {"path": ORDERS}},
            {"name": "step", "type": node_type, "config": config_of(text)},
        ],
        "connections": [{"from": "orders", "to": "step"}],
    }


def weflow(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([weflow_exe(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


# --- item 2: expressions ---------------------------------------------------------------


def test_every_table_function_in_every_expression_place_is_refused_by_name(
    secrets: dict[str, Path], settings: config.Settings
) -> None:
    cases = list(attacks(secrets))
    assert len(cases) == len(PLACES) * len(TABLE_FUNCTIONS) * 3
    for place, function, text, says in cases:
        with pytest.raises(DefinitionError) as err:
            workflows.check(parse(json.dumps(definition("attack", place, text))))
        assert err.value.path == PLACES[place][2], (place, function, text)
        assert says in str(err.value), (place, function, text, str(err.value))
        assert MARKER not in str(err.value)


def test_the_api_refuses_them_with_a_422_naming_the_path_and_stores_nothing(api: Api, secrets: dict[str, Path]) -> None:
    before = stored_names(api, "acme")
    with api.client("acme") as client:
        for place, function, text, says in attacks(secrets):
            response = client.post("/workflows", json=definition(f"attack_{place}", place, text))
            assert response.status_code == 422, (place, function, response.text)
            problem = response.json()["problems"][0]
            assert problem["path"] == PLACES[place][2] and says in problem["message"], (text, problem)
            assert MARKER not in response.text and "hidden" not in response.text
        assert stored_names(api, "acme") == before


def test_weflow_apply_refuses_them_in_one_line_and_stores_nothing(
    cli_env: dict[str, str], secrets: dict[str, Path], tmp_path: Path
) -> None:
    # one file per table function, each in another place (the matrix runs in-process above)
    for (function, path), place in zip(secrets.items(), [*PLACES, "filter"], strict=False):
        text = f"order_id IN (SELECT nope FROM {function}('{path}'))"
        target = tmp_path / f"{function}.json"
        target.write_text(json.dumps(definition(f"attack_{function}", place, text)))
        proc = weflow(cli_env, REPO, "apply", str(target))
        assert proc.returncode == 1, proc
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.startswith(f"error: {PLACES[place][2]}: ") and SUBQUERY in proc.stderr
        assert MARKER not in proc.stdout + proc.stderr
    listed = weflow(cli_env, REPO, "list", "-f", "json")
    assert listed.returncode == 0 and json.loads(listed.stdout) == []


def test_a_stored_expression_is_refused_at_run_before_polars_reads_the_file(
    scope: Scope, secrets: dict[str, Path], cli_env: dict[str, str]
) -> None:
    text = f"order_id IN (SELECT nope FROM read_csv('{secrets['read_csv']}'))"
    # stored before the rule existed: `run` checks the definition again and records nothing
    scope.catalog.save(parse(json.dumps(definition("old_attack", "filter", text))), scope.user)
    with pytest.raises(DefinitionError, match=r"nodes\[1\]\.config\.condition: subqueries are not allowed"):
        run("old_attack", scope)
    proc = weflow({**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}, REPO, "run", "old_attack")
    assert proc.returncode == 1 and SUBQUERY in proc.stderr and MARKER not in proc.stdout + proc.stderr
    assert scope.catalog.executions(scope.user.organization_id) == []

    # were that check skipped too, the node refuses when it parses: FAILED, the file never read
    for place, function, text, says in attacks(secrets):
        if function != "read_parquet":
            continue  # one table function through every place is enough for the run-time path
        record = run_unchecked(scope, definition(f"late_{place}_{len(text)}", place, text))
        assert record.status is RunState.FAILED, record
        assert says in (record.error_message or ""), record.error_message
        assert MARKER not in json.dumps([record.error_message, [n.error for n in record.nodes]])


def test_a_stored_expression_run_over_the_api_fails_without_the_file(api: Api, secrets: dict[str, Path]) -> None:
    text = f"order_id IN (SELECT nope FROM read_ndjson('{secrets['read_ndjson']}'))"
    with api.client("acme") as client:
        wf_id = create(client, definition("attack", "filter", "status = 'paid'"))["id"]
        user = api.catalog.ensure_user("acme", "ada")
        api.catalog.save(parse(json.dumps(definition("attack", "filter", text))), user)  # as if stored long ago
        response = client.post(f"/workflows/{wf_id}/executions", json={})
        seen = response.text
        if response.status_code == 202:
            final = wait_final(client, response.json()["id"])
            assert final["status"] == "FAILED", final
            seen += json.dumps(final) + client.get(f"/executions/{final['id']}/logs").text
        else:
            assert response.status_code == 422, response.text
        assert SUBQUERY in seen and MARKER not in seen


def test_allowed_constructs_still_parse_and_refusals_name_the_construct() -> None:
    for text in [
        "status = 'paid' AND amount >= 10", "amount BETWEEN 1 AND 2", "region IN ('north', 'south')",
        "CASE WHEN amount > 1 THEN 'big' ELSE 'small' END", "CAST(amount AS INTEGER) % 2 = 0",
        "amount IS NOT NULL AND NOT (status LIKE 'p%')", "sum(amount) / count(*)", "upper(region) || '-x'",
        "rank() OVER (PARTITION BY region ORDER BY amount DESC)", "coalesce(amount, 0) * -1",
        "amount >= $min_amount", "'$not_a_param; -- /* ?' = status", "EXTRACT(year FROM DATE '2024-01-02')",
    ]:  # fmt: skip
        assert expressions.check(text) == text
    refused = {
        "x -> x + 1": "lambdas are not allowed",
        "1 UNION SELECT 2": "UNION, INTERSECT and EXCEPT are not allowed",
        "amount FROM orders": "FROM is not allowed",
        "amount ORDER BY 1": "ORDER BY is not allowed",
        "a, b": "give one expression, not 2",
        "amount; SELECT 1": "character ';' is not allowed",
        "amount -- hide": "comments are not allowed",
        "$$read_csv$$": "character '$' is not allowed",
        "$1": "character '$' is not allowed",
        "EXISTS (SELECT 1)": SUBQUERY,
        "amount = ANY([1, 2])": SUBQUERY,
        "order_id IN (SELECT * FROM generate_series(1, 3))": SUBQUERY,  # Polars' other table functions
        "(SELECT x FROM unnest([1]) AS t(x))": SUBQUERY,
        "main.lower(region)": "function main.lower() is not allowed",
        "system('id')": "function system() is not allowed",
        "read_csv_auto('/etc/passwd')": "function read_csv_auto() is not allowed",
        "greatest()": "function greatest() needs at least one argument",
        "COLUMNS(*)": "* and COLUMNS(...) are not allowed",
        "amount >>> (": "not a valid SQL expression",
        "(" * 300 + "1" + ")" * 300: "nested too deeply",
    }
    for text, says in refused.items():
        with pytest.raises(ValueError) as err:
            expressions.check(text)
        assert says in str(err.value), (text, str(err.value))
        with pytest.raises(ValueError):
            expressions.parse(text)  # the run-time path refuses the same text


# --- item 11: a sql query is one SELECT, split by DuckDB's parser ----------------------


def sql_definition(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {"name": "orders", "type": "read_csv", "config": {"path": ORDERS}},
            {"name": "q", "type": "sql", "config": {"query": query}},
        ],
        "connections": [{"from": "orders", "to": "q"}],
    }


SQL_REFUSED = {
    "SELECT 1 FROM orders; SELECT 2": "give exactly one SQL statement (found 2)",
    "SELECT 1 FROM orders; ATTACH '/tmp/x.duckdb' AS x": "give exactly one SQL statement (found 2)",
    "COPY orders TO '/tmp/out.csv'": "not COPY",
    "ATTACH '/tmp/x.duckdb' AS x": "not ATTACH",
    "INSTALL httpfs": "not INSTALL",
    "LOAD httpfs": "not LOAD",
    "PRAGMA version": "not PRAGMA",
    "SET memory_limit = '1GB'": "not SET",
    "CREATE TABLE t AS SELECT 1": "not CREATE",
    ";": "give exactly one SQL statement (found 0)",
    "SELEC 1": "not valid SQL",
}


def test_a_semicolon_inside_a_string_is_one_statement_and_runs(scope: Scope, cli_env: dict[str, str]) -> None:
    query = "SELECT ';' AS x, 'a;b' AS y, count(*) AS n FROM orders"
    workflows.apply(parse(json.dumps(sql_definition("semi", query))), scope)  # refused as two statements before
    result = run("semi", scope)
    assert result.ok and result["q"].row(0)[:2] == (";", "a;b")
    for query, says in SQL_REFUSED.items():
        with pytest.raises(DefinitionError, match=r"nodes\[1\]\.config\.query: ") as err:
            workflows.check(parse(json.dumps(sql_definition("bad", query))))
        assert says in str(err.value), (query, str(err.value))


def test_sql_statements_are_refused_by_the_api_and_by_apply(api: Api, tmp_path: Path) -> None:
    before = stored_names(api, "acme")
    with api.client("acme") as client:
        for query, says in SQL_REFUSED.items():
            response = client.post("/workflows", json=sql_definition("bad_sql", query))
            assert response.status_code == 422, (query, response.text)
            problem = response.json()["problems"][0]
            assert problem["path"] == "nodes[1].config.query" and says in problem["message"], (query, problem)
        assert stored_names(api, "acme") == before
        assert create(client, sql_definition("semi", "SELECT ';' AS x FROM orders"))["currentVersion"] == 1

        (tmp_path / "copy.json").write_text(json.dumps(sql_definition("bad_sql", "COPY orders TO 'out.csv'")))
        proc = weflow(api.env, tmp_path, "apply", "copy.json")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: nodes[1].config.query: only a SELECT") and "not COPY" in proc.stderr
        assert stored_names(api, "acme") == before | {"semi"}
        assert not (tmp_path / "out.csv").exists()


def test_the_parser_connection_reads_no_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text(f"{MARKER}\n1\n")
    with pytest.raises(ValueError) as err:
        sqlcheck.check_expression(f"(SELECT * FROM read_csv('{secret}'))")
    assert MARKER not in str(err.value)
    # the check only parses: json_serialize_sql never runs the query it is given
    sqlcheck.check_query(f"SELECT * FROM read_csv('{secret}')")
