"""Secrets by reference (issue 18 item 3): ``{secret: NAME}`` in a config is read from a Prefect Secret block
when the node runs, and its value shows up nowhere else.

Real parts: the session's Prefect server (its Secret blocks, flow runs, logs and artifacts read back through
its API), a catalog file, an ``http.server`` on loopback that answers only with the right header and query
value and takes the alert, the REST API app in this process, and the console script for the CLI.
"""

from __future__ import annotations

import json
import logging
import subprocess
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import eventually, weflow_exe
from weflow import accounts, config, execution, secrets, workflows
from weflow.api.app import create_app
from weflow.catalog import Catalog
from weflow.core import document
from weflow.errors import DefinitionError, NotFoundError, SecretError
from weflow.prefect_gateway.client import client as prefect_client
from weflow.prefect_gateway.client import on_server
from weflow.workflows import Scope

pytestmark = pytest.mark.slow
TOKEN = f"Bearer tok-{uuid.uuid4().hex}"  # each value is unique to this run: found anywhere, it leaked
KEY = f"key-{uuid.uuid4().hex}"
DB = f"missing-{uuid.uuid4().hex}.duckdb"


class Upstream:
    """A JSON API that answers only the right Authorization header and ``key``, and an alert receiver."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []  # (path with query, Authorization) of every GET
        self.posts: list[tuple[str, dict[str, Any]]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                upstream.seen.append((self.path, self.headers["Authorization"]))
                good = self.headers["Authorization"] == TOKEN and self.path == f"/data?key={KEY}"
                self.send_response(200 if good else 401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(json.dumps([{"id": 1}, {"id": 2}] if good else {"error": "no"}).encode())

            def do_POST(self) -> None:
                upstream.posts.append((self.path, json.loads(self.rfile.read(int(self.headers["Content-Length"])))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    found = Upstream()
    yield found
    found.server.shutdown()
    found.server.server_close()


def leaky(url: str, description: str = "") -> dict[str, Any]:
    """Uses three secrets in nodes and one in an alert; node ``db`` fails with its secret path in the error."""
    return {
        "name": "leaky",
        "description": description,
        "alerts": [{"name": "told", "on": "failure", "webhook": {"secret": "hook-url"}}],
        "nodes": [
            {"name": "api", "type": "http_json", "config": {
                "url": f"{url}/data", "timeout_seconds": 5,
                "headers": {"Authorization": {"secret": "api-token"}}, "params": {"key": {"secret": "api-key"}},
            }},
            {"name": "db", "type": "read_duckdb", "config": {"database": {"secret": "db-path"}, "query": "select 1"}},
        ],
    }  # fmt: skip


def catalog_text(catalog: Catalog) -> str:
    """Every row of every table of the catalog, as text."""
    with catalog.transaction() as con:
        tables = [t for (t,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall()]
        return repr([con.execute(f'SELECT * FROM "{t}"').fetchall() for t in tables])


def catalog_bytes(path: Path) -> bytes:
    """The catalog's files as they lie on disk (the database and its write-ahead log)."""
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*") if p.is_file())


async def _prefect_text(flow_run_id: str) -> str:
    """The flow run (parameters, state message), its task runs, logs and artifacts, read through Prefect's API."""
    from prefect.client.schemas import filters as f

    run_id = uuid.UUID(flow_run_id)
    async with prefect_client() as client:
        run = await client.read_flow_run(run_id)
        tasks = await client.read_task_runs(flow_run_filter=f.FlowRunFilter(id=f.FlowRunFilterId(any_=[run_id])))
        logs = await client.read_logs(f.LogFilter(flow_run_id=f.LogFilterFlowRunId(any_=[run_id])))
        if not any("{secret: db-path}" in log.message for log in logs):
            raise AssertionError("the failed node's log line has not reached Prefect yet")  # sent in batches
        mine = f.ArtifactFilter(flow_run_id=f.ArtifactFilterFlowRunId(any_=[run_id]))
        artifacts = await client.read_artifacts(artifact_filter=mine)
    parts = [run.model_dump_json(), *(t.model_dump_json() for t in tasks)]
    return "\n".join([*parts, *(log.message for log in logs), *(a.model_dump_json() for a in artifacts)])


def _read_prefect(flow_run_id: str) -> str | None:
    try:
        return on_server(lambda: _prefect_text(flow_run_id))
    except AssertionError:
        return None


def api_text(catalog: Path, execution_id: str) -> str:
    """What the REST API answers about the workflow and its run, every route a client would read."""
    _, key = accounts.create_key(catalog, "acme", "ada")
    with TestClient(create_app(catalog), headers={"Authorization": f"Bearer {key}"}) as client:
        [found] = client.get("/workflows").json()["items"]
        wf = f"/workflows/{found['id']}"
        routes = [
            "/workflows",
            wf,
            f"{wf}/versions",
            f"{wf}/versions/1",
            f"{wf}/versions/2",
            f"{wf}/executions",
            "/runner/workflows/leaky/definition",
            f"/executions/{execution_id}",
            f"/executions/{execution_id}/logs",
        ]
        answers = [client.get(route) for route in routes]
        assert [a.status_code for a in answers] == [200] * len(routes), [a.text for a in answers]
        page = client.get(f"/ui/executions/{execution_id}")  # the visualizer page
        assert page.status_code == 200 and "{secret: db-path}" in page.text, page.text[:300]
    return "\n".join([*(a.text for a in answers), page.text])


def test_a_failed_run_using_secrets_leaks_no_value_anywhere(
    prefect_api: str, scope: Scope, upstream: Upstream, catalog_path: Path, caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    hook = f"{upstream.url}/hook/h-{uuid.uuid4().hex}"
    values = {"api-token": TOKEN, "api-key": KEY, "db-path": DB, "hook-url": hook}
    for name, value in values.items():
        secrets.set_value(scope, name, value)
    caplog.set_level(logging.DEBUG)
    with config.using(outbound_allow=("127.0.0.1/32",)):
        workflows.apply(leaky(upstream.url), scope)
        workflows.apply(leaky(upstream.url, "second version"), scope)
        result = execution.run("leaky", scope)
        eventually(lambda: upstream.posts, seconds=60)  # the alert went to the URL its secret holds

    run = result.execution
    assert run.status.value == "FAILED" and run.error_node == "db", run
    assert run.error_message == "node 'db': FileNotFoundError: database '{secret: db-path}' does not exist"
    api = next(n for n in run.nodes if n.node == "api")
    assert (api.status.value, api.rows_out) == ("SUCCEEDED", 2)  # the header and the key were right
    assert upstream.seen == [(f"/data?key={KEY}", TOKEN)]
    [(path, payload)] = upstream.posts
    assert path == hook.removeprefix(upstream.url) and payload["execution_id"] == run.id
    [delivery] = scope.catalog.alert_deliveries(subject=run.id)
    assert (delivery.status, delivery.target) == ("DELIVERED", "{secret: hook-url}")

    assert run.flow_run_id is not None
    out, err = capfd.readouterr()
    seen = {
        "definition": document.to_yaml(workflows.version("leaky", scope).definition),
        "export": json.dumps(workflows.export("leaky", scope, 1)),
        "diff": repr(workflows.diff("leaky", 1, 2, scope)),
        "catalog": catalog_text(scope.catalog),
        "alert": json.dumps(payload),
        "log lines": "\n".join(r.getMessage() for r in caplog.records) + out + err,
        "prefect": str(eventually(lambda: _read_prefect(str(run.flow_run_id)), seconds=60)),
        "api": api_text(catalog_path, run.id),
    }
    assert "{secret: db-path}" in seen["prefect"] and "secret: api-token" in seen["definition"]  # references stay
    for name, value in values.items():
        for where, text in seen.items():
            if name == "hook-url" and where == "alert":
                continue  # the alert was sent to it
            assert value not in text, f"the value of {name} is in the {where}"
    raw = catalog_bytes(catalog_path)
    assert len(raw) > 0 and not [n for n, v in values.items() if v.encode() in raw]


def test_a_missing_secret_fails_the_node_naming_it_and_organizations_keep_theirs_apart(
    prefect_api: str, scope: Scope, settings: config.Settings, tmp_path: Path
) -> None:
    import duckdb

    with duckdb.connect(str(tmp_path / "mine.duckdb")) as con:
        con.execute("CREATE TABLE t AS SELECT 42 AS answer")
    secrets.set_value(scope, "my-db", "mine.duckdb")  # a relative path, resolved under the data roots when it runs
    reading = {"database": {"secret": "my-db"}, "query": "select * from t"}
    doc = {"name": "reads", "nodes": [{"name": "db", "type": "read_duckdb", "config": reading}]}
    workflows.apply(doc, scope)
    ok = execution.run("reads", scope)
    assert ok.ok and ok["db"]["answer"].to_list() == [42], ok.execution.error_message

    with config.using(organization="globex"):
        other = Scope.current(Catalog(settings.catalog))
        assert secrets.list_names(other) == []  # acme's secrets are not globex's
        workflows.apply(doc, other)
        failed = execution.run("reads", other)
        assert failed.execution.status.value == "FAILED" and failed.execution.error_node == "db"
        assert failed.execution.error_message == (
            "node 'db': secret 'my-db' is not set in organization 'globex' (weflow secrets set my-db)"
        )
        with pytest.raises(NotFoundError, match="no secret 'my-db' in organization 'globex'"):
            secrets.delete(other, "my-db")
    assert "my-db" in secrets.list_names(scope)
    secrets.delete(scope, "my-db")
    assert "my-db" not in secrets.list_names(scope)
    again = execution.run("reads", scope)
    assert "secret 'my-db' is not set in organization 'acme'" in (again.execution.error_message or "")


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("API_KEY", "x", "secret name 'API_KEY' must be 1 to 64 lowercase letters, digits and dashes"),
        ("a/b", "x", "secret name 'a/b' must be"),
        ("x" * 65, "x", "must be 1 to 64"),
        ("ok", "", "secret 'ok': the value is empty"),
        ("ok", "x" * (64 * 1024 + 1), "secret 'ok': the value is over 64 KiB"),
    ],
)
def test_bad_secret_names_and_values_are_refused_before_prefect_is_asked(
    scope: Scope, name: str, value: str, message: str
) -> None:
    with pytest.raises(SecretError, match=message.replace("(", r"\(")):
        secrets.set_value(scope, name, value)


def _node(config: dict[str, Any], kind: str = "http_json") -> dict[str, Any]:
    return {"name": "bad", "nodes": [{"name": "n", "type": kind, "config": config}]}


URL = "https://example.com/data"


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        (_node({"url": URL, "headers": {"A": {"secret": "Bad_Name"}}}),
         "nodes[0].config.headers.A: secret name 'Bad_Name' must be 1 to 64 lowercase letters, digits and dashes "
         "(a Prefect block name)"),
        (_node({"url": URL, "params": {"k": {"secret": "k", "default": "x"}}}),
         "nodes[0].config.params.k: a secret reference is {secret: NAME} and nothing else"),
        (_node({"url": URL, "headers": {"A": 3}}), "nodes[0].config.headers.A: input should be a valid string"),
        (_node({"database": "", "query": "select 1"}, "read_duckdb"),
         "nodes[0].config.database: string should have at least 1 character"),
        (_node({"path": {"secret": "p"}}, "read_csv"), "nodes[0].config.path: input should be a valid string"),
        ({**_node({"url": URL}), "alerts": [{"name": "a", "on": "failure", "webhook": {"secret": "UP"}}]},
         "alerts[0].webhook: secret name 'UP' must be"),
        ({**_node({"url": URL}), "alerts": [{"name": "a", "on": "failure", "webhook": "ftp://x"}]},
         "alerts[0].webhook: string should match pattern"),
    ],
)  # fmt: skip
def test_bad_references_are_refused_with_their_path_and_nothing_is_stored(
    scope: Scope, doc: dict[str, Any], problem: str
) -> None:
    with pytest.raises(DefinitionError) as info:
        workflows.apply(doc, scope)
    assert str(info.value).startswith(problem), str(info.value)
    assert workflows.list_workflows(scope) == []


def test_a_literal_where_a_secret_may_go_is_still_accepted_and_fields_say_they_take_secrets(scope: Scope) -> None:
    from weflow.nodes.registry import node_type

    saved = workflows.apply(_node({"url": URL, "headers": {"Accept": "application/json"}, "params": {"n": 3}}), scope)
    assert saved.version.number == 1
    fields = {f["name"]: f["secret"] for f in node_type("http_json").fields()}
    assert fields == {"url": False, "params": True, "headers": True, "timeout_seconds": False, "record_path": False}
    assert {f["name"] for f in node_type("read_duckdb").fields() if f["secret"]} == {"database"}


def test_the_cli_sets_from_stdin_lists_names_only_and_deletes(
    prefect_api: str, cli_env: dict[str, str], settings: config.Settings
) -> None:
    from typer.testing import CliRunner

    from weflow.cli.app import app

    value = f"cli-{uuid.uuid4().hex}"
    env = {**cli_env, "PREFECT_API_URL": prefect_api, "WEFLOW_ORG": "acme"}
    runner = CliRunner()  # the rest in this process, on the same catalog and organization (the settings fixture)
    others = json.loads(runner.invoke(app, ["secrets", "list", "--format", "json"]).stdout)  # other tests' secrets
    done = subprocess.run(  # the console script, the value piped in
        [weflow_exe(), "secrets", "set", "cli-token"], env=env, input=value + "\n", capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert (done.returncode, done.stdout) == (0, "secret cli-token set\n"), done.stderr

    listed = runner.invoke(app, ["secrets", "list", "--format", "json"])
    assert json.loads(listed.stdout) == sorted([*others, "cli-token"]) and value not in listed.output
    as_argument = runner.invoke(app, ["secrets", "set", "cli-token", value])  # a value is never an argument
    assert as_argument.exit_code == 2 and "unexpected extra argument" in as_argument.output.lower()
    bad = runner.invoke(app, ["secrets", "set", "Bad"], input="x")
    assert bad.exit_code == 1 and isinstance(bad.exception, SecretError)
    assert runner.invoke(app, ["secrets", "delete", "cli-token"]).exit_code == 0
    assert json.loads(runner.invoke(app, ["secrets", "list", "--format", "json"]).stdout) == others
    again = runner.invoke(app, ["secrets", "delete", "cli-token"])
    assert again.exit_code == 1 and str(again.exception) == "no secret 'cli-token' in organization 'acme'"
