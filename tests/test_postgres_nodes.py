"""read_postgres and write_postgres against a real PostgreSQL server on loopback (tests/postgres.py).

One server for the module. Loopback is off weflow's outbound allow-list by default, so the tests
allow 127.0.0.1 explicitly (the ``allowed`` fixture) except where the refusal is what is tested.
A role ``ada`` with a password (scram) is added so that bad credentials are a real refusal.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import adbc_driver_postgresql.dbapi as pg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from weflow import DefinitionError, config, parse, workflows
from weflow.errors import OutboundError, OutboundRefused
from weflow.execution import run
from weflow.nodes import postgres as nodes
from weflow.nodes.base import Inbound, NodeInputs, RunContext
from weflow.nodes.registry import node_type
from weflow.workflows import Scope

from . import postgres

pytestmark = pytest.mark.postgres
PASSWORD = "s3cret!pw"  # percent-encoded in a URI as s3cret%21pw
TEMPLATE = 'name: pg\nnodes:\n  - {{name: db, type: read_postgres, config: {{connection: "{connection}", query: x}}}}\n'
FLOW = """
name: pg_flow
inputs: {region: {type: string, default: north}}
nodes:
  - name: src
    type: read_postgres
    config: {connection: "URI", query: "SELECT * FROM orders WHERE region = $region"}
  - {name: big, type: filter, config: {condition: "amount > 5"}}
  - {name: out, type: write_postgres, config: {connection: "URI", table: north, mode: upsert, key: [id]}}
  - {name: boom, type: python, config: {callable: "tests.resources.pynodes:fail_if_exists", kwargs: {marker: "MARK"}}}
connections: [{from: src, to: big}, {from: big, to: out}, {from: out, to: boom}]
"""


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``postgresql://postgres@127.0.0.1:PORT/shop``; the role ada logs in with PASSWORD only."""
    with postgres.running("shop") as url:
        uri = url.replace("postgresql+asyncpg://", "postgresql://")
        with pg.connect(uri, autocommit=True) as con, con.cursor() as cur:
            cur.execute("SELECT current_setting('hba_file')")
            (hba,) = cur.fetchone()
            cur.execute(f"CREATE ROLE ada LOGIN SUPERUSER PASSWORD '{PASSWORD}'")
            rules = ["host all ada 127.0.0.1/32 scram-sha-256", "host all all 127.0.0.1/32 trust"]
            rules.append("local all all trust")
            cur.execute(f"COPY (SELECT unnest(ARRAY{rules!r})) TO '{hba}'")
            cur.execute("SELECT pg_reload_conf()")
        time.sleep(0.3)  # the postmaster reloads pg_hba.conf on its signal
        yield uri


@pytest.fixture
def allowed(settings: config.Settings) -> Iterator[None]:
    with config.using(outbound_allow=("127.0.0.1/32",)):
        yield


def sql(uri: str, *statements: str) -> list[tuple[Any, ...]]:
    """Run statements as the superuser in one transaction; the rows of the last."""
    with pg.connect(uri) as con, con.cursor() as cur:
        for statement in statements:
            cur.execute(statement)
        rows = cur.fetchall() if cur.description else []
        con.commit()
    return [tuple(r) for r in rows]


def read(uri: str, query: str, **params: Any) -> pl.DataFrame:
    cfg = nodes.ReadPostgresConfig(connection=uri, query=query)
    frame = node_type("read_postgres").run(cfg, NodeInputs(), RunContext("w", "src", params=params))
    assert isinstance(frame, pl.DataFrame)
    return frame


def write(
    uri: str, frame: pl.DataFrame, table: str, mode: str = "append", key: list[str] | None = None, **ctx: Any
) -> None:
    cfg = nodes.WritePostgresConfig(connection=uri, table=table, mode=mode, key=key or [])  # type: ignore[arg-type]
    inputs = NodeInputs((Inbound("up", "in", frame.lazy()),))
    node_type("write_postgres").run(cfg, inputs, RunContext("w", "sink", **ctx))


def table(uri: str, name: str) -> pl.DataFrame:
    return read(uri, f"SELECT * FROM {name} ORDER BY id")


@pytest.mark.usefixtures("allowed")
def test_read_binds_inputs_as_parameters_never_as_text(server: str) -> None:
    sql(server, "CREATE TABLE cities (id int, city text)", "INSERT INTO cities VALUES (1, 'Oslo'), (2, 'Lima')")
    query = "SELECT id, city, '$city' AS literal FROM cities WHERE city = $city AND id >= $min ORDER BY id"
    found = read(server, query, city="Oslo", min=1)
    assert found.to_dicts() == [{"id": 1, "city": "Oslo", "literal": "$city"}]
    assert read(server, query, city="Oslo' OR '1'='1", min=0).is_empty()  # a value, not SQL
    with pytest.raises(ValueError, match=r"query: input 'min' is referenced as \$min but not given"):
        read(server, query, city="Oslo")


@pytest.mark.usefixtures("allowed")
def test_read_runs_read_only(server: str) -> None:
    sql(server, "CREATE TABLE keep (id int)", "INSERT INTO keep VALUES (1)")
    with pytest.raises(OutboundError, match="the query failed: cannot execute DELETE in a read-only transaction"):
        read(server, "DELETE FROM keep RETURNING id")
    assert sql(server, "SELECT count(*) FROM keep") == [(1,)]


@pytest.mark.usefixtures("allowed")
def test_append_replace_and_upsert(server: str) -> None:
    first = pl.DataFrame({"id": [1, 2], "city": ["Oslo", "Lima"], "amount": [1.5, 2.0]})
    write(server, first, "sales")  # a new table: created from the frame
    write(server, first.with_columns(pl.col("id") + 2), "sales")
    assert table(server, "sales")["id"].to_list() == [1, 2, 3, 4]
    write(server, first, "sales", "replace")
    assert_frame_equal(table(server, "sales"), first)
    write(server, first, "public.totals", "upsert", ["id"])  # a new table gets the key as its primary key
    changed = pl.DataFrame({"id": [2, 5], "city": ["Lima", "Rome"], "amount": [9.0, 4.0]})
    write(server, changed, "totals", "upsert", ["id"])
    assert table(server, "totals").rows() == [(1, "Oslo", 1.5), (2, "Lima", 9.0), (5, "Rome", 4.0)]
    columns_swapped = changed.select("amount", "id", "city").with_columns(pl.col("amount") + 1)
    write(server, columns_swapped, "totals", "upsert", ["id"])  # columns matched by name
    assert table(server, "totals")["amount"].to_list() == [1.5, 10.0, 5.0]


@pytest.mark.usefixtures("allowed")
def test_a_failure_mid_write_leaves_the_table_as_it_was(server: str) -> None:
    sql(server, "CREATE TABLE stock (id int PRIMARY KEY, qty int CHECK (qty >= 0))", "INSERT INTO stock VALUES (1, 5)")
    bad = pl.DataFrame({"id": [2, 3, 4], "qty": [1, 2, -1]})  # the last row breaks the CHECK
    for mode, key in (("append", None), ("replace", None), ("upsert", ["id"])):
        with pytest.raises(OutboundError, match=r"writing stock failed, nothing written: .*violates check constraint"):
            write(server, bad, "stock", mode, key)
        assert sql(server, "SELECT * FROM stock") == [(1, 5)], mode
    with pytest.raises(ValueError, match="key: rows of the frame share a key"):
        write(server, pl.DataFrame({"id": [1, 1], "qty": [1, 2]}), "stock", "upsert", ["id"])
    with pytest.raises(ValueError, match="key: column 'sku' is not in the frame"):
        write(server, bad, "stock", "upsert", ["sku"])
    assert sql(server, "SELECT * FROM stock") == [(1, 5)]
    temp = sql(server, "SELECT count(*) FROM pg_class WHERE relname = '_weflow_stage'")
    assert temp == [(0,)]  # the staging table went with its session


@pytest.mark.usefixtures("allowed")
def test_compensation_puts_the_table_back_and_keeps_what_others_wrote(server: str, tmp_path: Path) -> None:
    sql(server, "CREATE TABLE ledger (id int PRIMARY KEY, note text)", "INSERT INTO ledger VALUES (1, 'a'), (2, 'b')")
    before = [(1, "a"), (2, "b")]
    changes = {
        "append": (pl.DataFrame({"id": [3], "note": ["c"]}), None),
        "replace": (pl.DataFrame({"id": [9], "note": ["z"]}), None),
        "upsert": (pl.DataFrame({"id": [2, 4], "note": ["B", "d"]}), ["id"]),
    }
    for mode, (frame, key) in changes.items():
        undo: list[tuple[str, Callable[[], str]]] = []
        write(server, frame, "ledger", mode, key, work_dir=tmp_path, undo=lambda a, r: undo.append((a, r)))  # noqa: B023
        assert table(server, "ledger").rows() != before
        [(action, restore)] = undo
        assert action == "restore table ledger"
        assert restore().startswith("deleted the rows this run wrote to ledger in postgresql://postgres@127.0.0.1:")
        assert sorted(sql(server, "SELECT * FROM ledger")) == before, mode
    undo = []
    write(server, changes["append"][0], "ledger", work_dir=tmp_path, undo=lambda a, r: undo.append((a, r)))
    sql(server, "INSERT INTO ledger VALUES (7, 'someone else')")  # after the run's write: not the run's to undo
    undo[0][1]()
    assert sorted(sql(server, "SELECT * FROM ledger")) == [*before, (7, "someone else")]
    undo = []
    write(server, changes["append"][0], "fresh", work_dir=tmp_path, undo=lambda a, r: undo.append((a, r)))
    assert undo[0][0] == "drop table fresh" and "(it did not exist before)" in undo[0][1]()
    assert sql(server, "SELECT to_regclass('fresh') IS NULL") == [(True,)]
    assert not list((tmp_path / "undo").glob("*"))  # backups go once used


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.usefixtures("allowed")
def test_unreachable_host_is_one_line(server: str) -> None:
    port = _closed_port()
    with pytest.raises(OutboundError) as err:
        read(f"postgresql://ada:{PASSWORD}@127.0.0.1:{port}/shop", "SELECT 1")
    assert str(err.value).startswith(f"postgresql://ada@127.0.0.1:{port}/shop: cannot connect: ")
    assert "Connection refused" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(OutboundError, match=r"postgresql://ada@nowhere\.invalid:5432/shop: cannot resolve host"):
        read("postgresql://ada:s3cret%21pw@nowhere.invalid/shop", "SELECT 1")


@pytest.mark.usefixtures("allowed")
def test_bad_credentials_never_show_the_password(server: str) -> None:
    port = urlsplit(server).port
    good = f"postgresql://ada:s3cret%21pw@127.0.0.1:{port}/shop"
    assert read(good, "SELECT 1 AS one").item() == 1
    for wrong in ("wr0ng%21pw", "s3cret%21p"):
        with pytest.raises(OutboundError) as err:
            read(f"postgresql://ada:{wrong}@127.0.0.1:{port}/shop", "SELECT 1")
        message = str(err.value)
        assert message == (
            f'postgresql://ada@127.0.0.1:{port}/shop: cannot connect: password authentication failed for user "ada"'
        )


def test_a_host_off_the_allow_list_is_refused_at_apply_and_at_run(server: str, settings: config.Settings) -> None:
    port = urlsplit(server).port
    uri = f"postgresql://ada:{PASSWORD}@127.0.0.1:{port}/shop"
    with pytest.raises(DefinitionError) as err:
        workflows.check(parse(TEMPLATE.format(connection=uri)))
    assert err.value.path == "nodes[0].config.connection"
    assert "host '127.0.0.1' is a loopback address: not allowed" in str(err.value)
    assert PASSWORD not in str(err.value)
    with pytest.raises(OutboundRefused) as refused:  # allowed at apply, not any more at run
        read(uri, "SELECT 1")
    assert "resolves to 127.0.0.1, a loopback address: not allowed" in str(refused.value)
    assert PASSWORD not in str(refused.value)


@pytest.mark.parametrize(
    ("connection", "expect"),
    [
        ("postgresql://db.example.com/shop?host=127.0.0.1", "parameter 'host' is not allowed"),
        ("postgresql://db.example.com/shop?service=prod", "parameter 'service' is not allowed"),
        ("postgresql://db.example.com/shop?sslkey=/etc/ssl/key.pem", "parameter 'sslkey' is not allowed"),
        ("postgresql:///shop?sslmode=disable", "the URI names no host"),
        ("postgresql://%2Fvar%2Frun%2Fpostgresql/shop", "no socket folder"),
        ("postgresql://a.example.com:5432,b.example.com/shop", "not a valid postgresql:// URI"),
        ("mysql://u:pw@db.example.com/shop", "must be a postgresql:// URI"),
        ("postgresql://u:pw@169.254.169.254/shop", "a link-local address: not allowed"),
    ],
)
def test_connection_uris_weflow_refuses(connection: str, expect: str, settings: config.Settings) -> None:
    with pytest.raises(DefinitionError) as err:
        workflows.check(parse(TEMPLATE.format(connection=connection)))
    assert err.value.path == "nodes[0].config.connection" and expect in str(err.value)
    assert "pw@" not in str(err.value)


@pytest.mark.parametrize(
    ("fields", "path", "expect"),
    [
        ({"query": "SELECT * FROM t WHERE id = $1"}, "nodes[0].config.query", "$1 is positional"),
        ({"query": "SELECT 'unterminated"}, "nodes[0].config.query", "cannot be read"),
        ({"table": "t", "mode": "upsert"}, "nodes[1].config.key", "mode upsert needs the key columns"),
        ({"table": "t", "key": ["id"]}, "nodes[1].config.key", "only mode upsert takes key columns"),
        ({"table": "t; DROP TABLE x"}, "nodes[1].config.table", "string should match pattern"),
    ],
)
def test_bad_node_configs_name_their_field(
    fields: dict[str, Any], path: str, expect: str, settings: config.Settings
) -> None:
    kind = "read_postgres" if "query" in fields else "write_postgres"
    node = {"name": "db", "type": kind, "config": {"connection": "postgresql://u:pw@db.example.com/shop", **fields}}
    document: dict[str, Any] = {"name": "pg", "nodes": [node]}
    if kind == "write_postgres":
        document["nodes"].insert(0, {"name": "src", "type": "read_csv", "config": {"path": "a.csv"}})
        document["connections"] = [{"from": "src", "to": "db"}]
    with pytest.raises(DefinitionError) as err:
        workflows.check(parse(json.dumps(document)))
    assert err.value.path == path and expect in str(err.value)


@pytest.mark.usefixtures("prefect_api", "allowed")
def test_a_workflow_reads_upserts_compensates_and_its_failure_has_no_password(
    server: str, scope: Scope, tmp_path: Path
) -> None:
    port, marker = urlsplit(server).port, tmp_path / "fail"
    sql(server, "CREATE TABLE orders (id int, region text, amount float8)")
    sql(server, "INSERT INTO orders VALUES (1, 'north', 10), (2, 'south', 20), (3, 'north', 30)")
    good = f"postgresql://ada:s3cret%21pw@127.0.0.1:{port}/shop"
    flow = FLOW.replace("MARK", str(marker))
    workflows.apply(parse(flow.replace("URI", good)), scope)
    result = run("pg_flow", scope)
    assert result.ok, result.execution.error_message
    assert sorted(sql(server, "SELECT id, amount FROM north")) == [(1, 10.0), (3, 30.0)]
    sql(server, "UPDATE orders SET amount = amount + 1")
    marker.write_text("on")
    failed = run("pg_flow", scope)  # boom fails after out upserted: out's upsert is undone
    assert failed.execution.error_node == "boom"
    assert sorted(sql(server, "SELECT id, amount FROM north")) == [(1, 10.0), (3, 30.0)]
    undone = scope.catalog.execution(failed.execution.id).compensations
    assert [(c.node, c.status) for c in undone] == [("out", "DONE")]
    assert "put back the 2 rows it replaced" in (undone[0].detail or "") and "s3cret" not in (undone[0].detail or "")
    marker.unlink()
    workflows.apply(parse(flow.replace("URI", good.replace("s3cret", "wr0ng"))), scope)
    failed = run("pg_flow", scope)
    assert not failed.ok
    message = failed.execution.error_message or ""
    assert "password authentication failed" in message and "wr0ng" not in message and "\n" not in message, message


def test_a_uri_without_password_never_borrows_the_operator_s(
    server: str, allowed: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    port = urlsplit(server).port
    bare = f"postgresql://ada@127.0.0.1:{port}/shop"
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # the operator's, in weflow's environment
    with pytest.raises(ValueError) as refused:
        read(bare, "SELECT 1")
    assert "has no password and PGPASSWORD is set" in str(refused.value) and PASSWORD not in str(refused.value)
    monkeypatch.delenv("PGPASSWORD")
    (tmp_path / ".pgpass").write_text(f"*:*:*:ada:{PASSWORD}\n")
    (tmp_path / ".pgpass").chmod(0o600)
    monkeypatch.setenv("HOME", str(tmp_path))  # libpq's default ~/.pgpass: not read
    with pytest.raises(OutboundError) as failed:
        read(bare, "SELECT 1")
    assert "password" in str(failed.value) and PASSWORD not in str(failed.value)


def test_the_connection_may_be_a_secret_reference() -> None:
    checked = workflows.check(parse(TEMPLATE.replace('"{connection}"', "{{secret: shop-db}}").format()))
    assert checked.nodes[0].config["connection"] == {"secret": "shop-db"}
