"""Outbound HTTP (issue 14, item 6): a definition reaches neither weflow's machine nor its network unless allowed.

Real parts: `weflow serve` (tests/hostile/conftest.py) with no allow-list or with 127.0.0.1/32, the
session's Prefect server, the console script, and an ``http.server`` on 127.0.0.1 standing for a
local service: every body it sends carries a secret marker, and it counts the requests it gets.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
import traceback
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import yaml

from tests.conftest import eventually, weflow_exe
from tests.hostile.conftest import serving
from tests.test_api import Api, create, stored_names, wait_final
from weflow import config, monitor, outbound
from weflow.errors import OutboundError, OutboundRefused
from weflow.nodes import registry
from weflow.nodes.base import NodeInputs, RunContext

MARKER = "SECRET-7f3a-never-echo"
ITEMS = [{"id": 1, "city": "Oslo"}, {"id": 2, "city": "Lima"}]


class Upstream:
    """A local service: JSON at /ok, bodies holding MARKER elsewhere; records every request path."""

    ANSWERS: ClassVar[dict[str, tuple[int, str, dict[str, str]]]] = {
        "/ok": (200, json.dumps({"data": {"items": ITEMS}}), {"Content-Type": "application/json"}),
        "/fail": (500, f"stack trace with {MARKER}", {}),
        "/notjson": (200, f"<html>{MARKER}</html>", {"Content-Type": "text/html"}),
        "/shape": (200, json.dumps({"data": MARKER}), {"Content-Type": "application/json"}),
        "/table": (200, json.dumps({"data": {"items": [1, MARKER]}}), {"Content-Type": "application/json"}),
        "/moved": (302, MARKER, {"Location": "http://169.254.169.254/latest/meta-data/"}),
    }

    def __init__(self) -> None:
        self.hits: list[str] = []
        self.hosts: list[str] = []  # the Host header of each GET
        self.posts: list[dict[str, Any]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?")[0]
                upstream.hits.append(path)
                upstream.hosts.append(self.headers["Host"])
                status, body, headers = upstream.ANSWERS.get(path, (404, MARKER, {}))
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(body.encode())

            def do_POST(self) -> None:
                upstream.hits.append(self.path)
                upstream.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    found = Upstream()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture(scope="module")
def guarded(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One `weflow serve` with no allow-list for the tests that need one (each start costs seconds of CPU)."""
    with serving(prefect_api, tmp_path_factory.mktemp("outbound")) as api:
        yield api


def folder_of(api: Api) -> Path:
    """The folder `weflow serve` runs in (its catalog is data/weflow.duckdb there)."""
    return api.catalog.path.parent.parent


def fetching(name: str, url: str, record_path: str | None = None, webhook: str | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {"url": url, "timeout_seconds": 5}
    if record_path:
        config["record_path"] = record_path
    doc: dict[str, Any] = {"name": name, "nodes": [{"name": "api", "type": "http_json", "config": config}]}
    if webhook:
        doc["alerts"] = [{"name": "told", "on": "failure", "webhook": webhook}]
    return doc


def cli(api: Api, folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [weflow_exe(), *args], env={**api.env, **env, "COLUMNS": "200"}, cwd=folder,
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip


def catalog_text(api: Api) -> str:
    """Every execution-side record in the catalog, as text (where an echoed body would land)."""
    tables = ("workflow_executions", "node_executions", "contract_failures", "alert_deliveries")
    with api.catalog.transaction() as con:
        return repr([con.execute(f"SELECT * FROM {t}").fetchall() for t in tables])


def test_local_and_metadata_hosts_are_refused_at_apply_over_the_api_and_the_cli(
    guarded: Api, prefect_api: str, upstream: Upstream
) -> None:
    port = upstream.port
    urls = [
        f"{prefect_api}/health",  # weflow's own Prefect API
        f"http://2130706433:{port}/ok",  # 127.0.0.1 as one decimal number
        f"http://0x7f.1:{port}/ok",  # hex and a short form
        f"http://127.1:{port}/ok",
        f"http://[::ffff:127.0.0.1]:{port}/ok",  # IPv4-mapped IPv6
        f"http://[::1]:{port}/ok",
        f"http://localhost:{port}/ok",
        f"http://0.0.0.0:{port}/ok",
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata (link-local)
        "http://10.0.0.1/", "http://192.168.1.1/", "http://[fd00::1]/",  # private networks
    ]  # fmt: skip
    api, before = guarded, stored_names(guarded, "acme")
    with api.client() as client:
        for url in urls:
            response = client.post("/workflows", json=fetching("reach", url))
            assert response.status_code == 422, (url, response.text)
            [problem] = response.json()["problems"]
            assert problem["path"] == "nodes[0].config.url", url
            assert "not allowed" in problem["message"] and "WEFLOW_OUTBOUND_ALLOW" in problem["message"], problem
        hook = fetching("told", "https://example.com/data.json", webhook=f"http://127.0.0.1:{port}/hook")
        response = client.post("/workflows", json=hook)
        assert response.status_code == 422
        assert response.json()["problems"] == [
            {
                "path": "alerts[0].webhook",
                "message": "host '127.0.0.1' is a loopback address: not allowed; "
                "an operator may allow it with WEFLOW_OUTBOUND_ALLOW",
            }
        ]
        wf_id = create(client, fetching("reach", "https://example.com/data.json"))["id"]
        moved = client.put(f"/workflows/{wf_id}", json=fetching("reach", f"http://0x7f.1:{port}/ok"))
        assert moved.status_code == 422 and moved.json()["problems"][0]["path"] == "nodes[0].config.url"
        assert [v["number"] for v in client.get(f"/workflows/{wf_id}/versions").json()] == [1]

        doc = fetching("sneaky", f"http://[::ffff:127.0.0.1]:{port}/ok", webhook="http://169.254.169.254/hook")
        (folder_of(api) / "sneaky.yaml").write_text(yaml.safe_dump(doc))
        proc = cli(api, folder_of(api), "apply", "sneaky.yaml")
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
        assert "nodes[0].config.url: host '::ffff:127.0.0.1'" in proc.stderr
        assert "alerts[0].webhook: host '169.254.169.254' is a link-local address" in proc.stderr
        assert stored_names(api, "acme") == before | {"reach"}  # nothing else stored, over either door
    assert upstream.hits == []  # and nothing was ever asked of the local service


def test_a_name_resolving_to_this_machine_is_refused_at_run(guarded: Api, upstream: Upstream) -> None:
    host = socket.gethostname()  # not a literal address: apply cannot know where it points
    resolved = {info[4][0] for info in socket.getaddrinfo(host, upstream.port, type=socket.SOCK_STREAM)}
    if any(outbound.kind(ipaddress.ip_address(a)) is None for a in resolved):
        pytest.skip(f"this machine's name {host!r} resolves to a public address ({resolved})")
    url = f"http://{host}:{upstream.port}"
    doc = fetching("resolved", f"{url}/ok", webhook=f"{url}/hook")
    api = guarded
    with api.client() as client:
        wf_id = create(client, doc)["id"]
        started = client.post(f"/workflows/{wf_id}/executions", json={})
        assert started.status_code == 202, started.text
        final = wait_final(client, started.json()["id"])
        assert final["status"] == "FAILED" and final["errorNode"] == "api", final
        assert f"host {host!r} resolves to" in final["errorMessage"] and "not allowed" in final["errorMessage"]

        eventually(lambda: api.catalog.alert_deliveries(subject=final["id"]), seconds=60)
        [delivery] = api.catalog.alert_deliveries(subject=final["id"])
        assert (delivery.status, delivery.attempts) == ("FAILED", 1)  # refused at once, not retried
        assert "not allowed" in (delivery.last_error or "")

        proc = cli(api, folder_of(api), "run", "resolved")  # the same stored definition, run by the CLI
        assert proc.returncode == 1 and "not allowed" in proc.stdout + proc.stderr, (proc.stdout, proc.stderr)
    assert upstream.hits == []


@pytest.mark.parametrize(
    ("path", "record_path", "expect"),
    [
        ("/fail?token=abc123", None, "/fail?token=...: HTTP 500 Internal Server Error"),
        ("/notjson", None, "/notjson: HTTP 200 but the body is not JSON (text/html)"),
        ("/shape", "data.items", "/shape: record_path 'data.items': found a string"),
        ("/ok", "data.rows", "/ok: record_path 'data.rows': found an object without 'rows'"),
        ("/table", "data.items", "/table: the records do not make a table (TypeError)"),
        ("/moved", None, "/moved: HTTP 302 Found (redirects are not followed)"),
        ("/missing", None, "/missing: HTTP 404 Not Found"),
    ],
)
def test_each_failure_says_url_status_and_problem_never_the_body(
    upstream: Upstream, settings: Any, path: str, record_path: str | None, expect: str
) -> None:
    http_json = registry.node_types()["http_json"]
    with config.using(outbound_allow=("127.0.0.1/32",)):
        node = http_json.config.model_validate(
            {"url": f"http://127.0.0.1:{upstream.port}{path}", "record_path": record_path}
        )
        with pytest.raises(OutboundError) as info:
            http_json.run(node, NodeInputs(), RunContext("w", "api"))
    assert str(info.value) == f"http://127.0.0.1:{upstream.port}{expect}"
    assert MARKER not in "".join(traceback.format_exception(info.value))  # nor in a chained error
    assert upstream.hits == [path.split("?")[0]]  # one request, no redirect followed


def test_an_allow_listed_service_works_and_no_body_is_ever_echoed(
    serve: Any, upstream: Upstream, tmp_path: Path
) -> None:
    base = f"http://127.0.0.1:{upstream.port}"
    allow = {"WEFLOW_OUTBOUND_ALLOW": "127.0.0.1/32"}
    with serve(env_extra=allow) as api, api.client() as client:
        ok = create(client, fetching("fetch_ok", f"{base}/ok", "data.items"))["id"]
        bad = create(client, fetching("fetch_bad", f"{base}/fail?token=abc123", webhook=f"{base}/hook"))["id"]
        table = create(client, fetching("fetch_table", f"{base}/table", "data.items"))["id"]
        started = [client.post(f"/workflows/{i}/executions", json={}).json()["id"] for i in (ok, bad, table)]
        good, failed, _ = finals = [wait_final(client, e) for e in started]
        assert good["status"] == "SUCCEEDED", good["errorMessage"]
        assert [n["rowsOut"] for n in good["nodes"]] == [len(ITEMS)]
        assert failed["status"] == "FAILED"
        assert (
            failed["errorMessage"]
            == f"node 'api': OutboundError: {base}/fail?token=...: HTTP 500 Internal Server Error"
        )
        eventually(lambda: upstream.posts, seconds=60)  # the allow-listed webhook receiver got the alert
        assert [(p["alert"], p["execution_id"]) for p in upstream.posts] == [("told", failed["id"])]
        seen = [json.dumps(finals), *(client.get(f"/executions/{e}/logs").text for e in started)]

        proc = cli(api, tmp_path, "run", "fetch_table", **allow)
        assert proc.returncode == 1 and "the records do not make a table" in proc.stdout + proc.stderr
        seen += [proc.stdout, proc.stderr, catalog_text(api)]
    for text in seen:
        assert MARKER not in text and "abc123" not in text


def test_the_checked_address_is_the_one_connected_to_and_the_name_is_kept(upstream: Upstream) -> None:
    policy = outbound.Policy.parse(["127.0.0.1/32", "::1/128"])
    url = f"http://localhost:{upstream.port}/ok?token=x"
    assert outbound.get_json(url, timeout=5, policy=policy) == {"data": {"items": ITEMS}}
    assert upstream.hosts == [f"localhost:{upstream.port}"]  # sent to the resolved address, as "localhost"
    with pytest.raises(OutboundRefused, match=r"resolves to 127\.0\.0\.1, a loopback address"):
        outbound.get_json(url, timeout=5, policy=outbound.Policy.parse(["::1/128"]))
    assert len(upstream.hits) == 1  # the refused request never left


def test_webhook_delivery_checks_the_host_when_it_posts(upstream: Upstream, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEFLOW_OUTBOUND_ALLOW", raising=False)
    for url in (f"http://127.0.0.1:{upstream.port}/hook", f"http://localhost:{upstream.port}/hook"):
        ok, attempts, error = monitor.post(url, {"alert": "x"})
        assert (ok, attempts) == (False, 1) and "loopback address: not allowed" in (error or ""), error
    monkeypatch.setenv("WEFLOW_OUTBOUND_ALLOW", "127.0.0.1/32")
    assert monitor.post(f"http://127.0.0.1:{upstream.port}/hook", {"alert": "y"}) == (True, 1, None)
    assert upstream.posts == [{"alert": "y"}]
