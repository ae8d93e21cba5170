"""The REST API as a client sees it: `weflow serve` in a real process, a real catalog, real Prefect runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from subprocess import PIPE
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from weflow.catalog import Catalog, auth
from weflow.core import document

from .conftest import REPO, RESOURCES, render, web, weflow_exe

pytestmark = pytest.mark.slow
BODY_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Api:
    url: str
    catalog: Catalog
    env: dict[str, str]
    keys: dict[str, str]  # organization -> API key

    def client(self, org: str | None = "acme") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.keys[org]}"} if org else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(timeout=2) as http:  # one client: each new one loads the CA bundle (~45 ms of CPU)
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"weflow serve exited: {log.read_text()}"
            try:
                if http.get(f"{url}/health").status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
    raise AssertionError(f"weflow serve did not answer within {seconds} s: {log.read_text()}")


@pytest.fixture(scope="module")
def api(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """`weflow serve` on a free loopback port over a fresh catalog with one key per organization."""
    tmp = tmp_path_factory.mktemp("api")
    catalog = Catalog(tmp / "weflow.duckdb")
    keys = {org: auth.create_key(catalog, catalog.ensure_user(org, user))[1]
            for org, user in (("acme", "ada"), ("globex", "bob"), ("initech", "schema"))}  # fmt: skip
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=prefect_api,
        WEFLOW_CATALOG=str(catalog.path),
        WEFLOW_DATA_ROOTS=f"{REPO}:{tmp}",
        WEFLOW_SHARED_DATA_ROOTS="true",  # acme, globex and initech share the repository
        WEFLOW_RUNS_DIR=str(tmp / "runs"),
        WEFLOW_PYTHON_NODE_MODULES="tests.resources.pynodes",
        WEFLOW_ORG="acme",
        WEFLOW_USER="ada",
        PYTHONPATH=str(REPO),
    )
    with weflow_serve(env, REPO, tmp / "serve.log") as url:
        yield Api(url, catalog, env, keys)


@contextmanager
def weflow_serve(env: dict[str, str], cwd: Path, log: Path, body_limit: int = BODY_LIMIT) -> Iterator[str]:
    """A `weflow serve` process on a free loopback port, its output in ``log``; yields its URL, stops it after."""
    port = _free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [weflow_exe(), "serve", "--port", str(port), "--body-limit", str(body_limit)],
            env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def paid_orders(name: str, **changes: Any) -> dict[str, Any]:
    """A small definition document with one input."""
    doc: dict[str, Any] = {
        "name": name,
        "description": "paid orders over a minimum",
        "inputs": {"min_amount": {"type": "number", "default": 0}},
        "nodes": [
            {"name": "orders", "type": "read_csv", "config": {"path": "data/samples/orders.csv"}},
            {"name": "paid", "type": "filter", "config": {"condition": "status = 'paid' AND amount >= $min_amount"}},
        ],
        "connections": [{"from": "orders", "to": "paid"}],
    }
    doc.update(changes)
    return doc


def create(client: httpx.Client, doc: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/workflows", json=doc)
    assert response.status_code == 201, response.text
    return dict(response.json())


def wait_final(client: httpx.Client, execution_id: str, seconds: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = client.get(f"/executions/{execution_id}")
        assert found.status_code == 200, found.text
        if found.json()["status"] not in {"QUEUED", "RUNNING"}:
            return dict(found.json())
        time.sleep(0.3)
    raise AssertionError(f"execution {execution_id} did not end within {seconds} s")


def stored_names(api: Api, org: str) -> set[str]:
    with api.catalog.transaction() as con:
        rows = con.execute(
            "SELECT w.name FROM workflows w JOIN organizations o ON o.id = w.organization_id WHERE o.name = ?", [org]
        ).fetchall()
    return {r[0] for r in rows}


def test_health_is_open_and_everything_else_needs_a_valid_key(api: Api) -> None:
    with api.client(None) as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}
        assert "/workflows/{workflow_id}/executions" in anonymous.get("/openapi.json").json()["paths"]
        assert anonymous.get("/docs").status_code == 200
        missing = anonymous.get("/workflows")
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        assert missing.json() == {"detail": "missing API key: send 'Authorization: Bearer <key>'", "problems": []}
        forged = api.keys["acme"][:-4] + "0000"
        for header in (f"Bearer {forged}", "Bearer nonsense", f"Basic {api.keys['acme']}", api.keys["acme"]):
            response = anonymous.get("/workflows", headers={"Authorization": header})
            assert response.status_code == 401, header


def test_head_health_answers_like_get(api: Api) -> None:
    """Issue 14, item 11 (was in tests/hostile/test_cli_output.py, on a `weflow serve` of its own)."""
    with api.client(None) as anonymous:
        head = anonymous.head("/health")
        assert head.status_code == 200 and head.content == b""
        assert anonymous.get("/health").status_code == 200
        assert anonymous.head("/workflows").status_code in (401, 404, 405)  # HEAD opens nothing else


def test_crud_round_trip(api: Api) -> None:
    with api.client() as client:
        created = create(client, paid_orders("crud_a", status="ACTIVE"))
        assert created["versionCreated"] is True and created["currentVersion"] == 1
        assert {"isActive", "executionCount", "lastExecutedAt", "createdAt", "updatedAt", "ownerId"} <= set(created)
        assert created["definition"] == document.from_data(paid_orders("crud_a", status="ACTIVE")).to_document()
        wf_id = created["id"]
        assert client.get(f"/workflows/{wf_id}").json()["definition"] == created["definition"]
        for name in ("crud_b", "crud_c"):
            create(client, paid_orders(name))

        page = client.get("/workflows", params={"limit": 2}).json()
        assert [w["name"] for w in page["items"]] == ["crud_a", "crud_b"] and page["hasMore"] is True
        rest = client.get("/workflows", params={"limit": 2, "offset": 2}).json()
        assert "crud_c" in [w["name"] for w in rest["items"]]
        active = client.get("/workflows", params={"status": "ACTIVE"}).json()["items"]
        assert [w["name"] for w in active] == ["crud_a"]

        same = client.put(f"/workflows/{wf_id}", json=paid_orders("crud_a", status="ACTIVE"))
        assert same.status_code == 200 and same.json()["versionCreated"] is False and same.json()["currentVersion"] == 1
        nameless = paid_orders("crud_a", description="changed")
        del nameless["name"]
        changed = client.put(f"/workflows/{wf_id}", json=nameless, params={"message": "new text"})
        assert changed.json()["versionCreated"] is True and changed.json()["currentVersion"] == 2
        assert changed.json()["description"] == "changed"

        assert client.delete(f"/workflows/{wf_id}").status_code == 204
        assert client.get(f"/workflows/{wf_id}").status_code == 404
        assert "crud_a" not in [w["name"] for w in client.get("/workflows").json()["items"]]
        again = create(client, paid_orders("crud_a"))  # the name is free again; the old history is kept
        assert again["id"] != wf_id and again["currentVersion"] == 1
        assert client.delete(f"/workflows/{again['id']}", params={"purge": "true"}).status_code == 204
        with api.catalog.transaction() as con:
            assert con.execute("SELECT count(*) FROM workflow_versions WHERE workflow_id = ?", [wf_id]).fetchone() == (
                2,
            )
            assert con.execute("SELECT count(*) FROM workflows WHERE id = ?", [again["id"]]).fetchone() == (0,)


def test_versions_and_rollback(api: Api) -> None:
    with api.client() as client:
        wf_id = create(client, paid_orders("versioned"))["id"]
        changed = paid_orders("versioned", description="second")
        assert client.put(f"/workflows/{wf_id}", json=changed, params={"message": "v2"}).json()["currentVersion"] == 2
        versions = client.get(f"/workflows/{wf_id}/versions").json()
        assert [(v["number"], v["message"]) for v in versions] == [(1, ""), (2, "v2")]
        assert {"contentHash", "authorId", "createdAt", "workflowId"} <= set(versions[0])
        first = client.get(f"/workflows/{wf_id}/versions/1").json()
        assert first["definition"]["description"] == "paid orders over a minimum"

        rolled = client.post(f"/workflows/{wf_id}/rollback", json={"version": 1})
        assert rolled.status_code == 200 and rolled.json()["currentVersion"] == 3
        assert rolled.json()["definition"] == first["definition"]
        noop = client.post(f"/workflows/{wf_id}/rollback", json={"version": 3}).json()
        assert noop["versionCreated"] is False and noop["currentVersion"] == 3

        assert client.get(f"/workflows/{wf_id}/versions/4").status_code == 404
        assert client.get(f"/workflows/{wf_id}/versions/0").status_code == 404
        missing = client.post(f"/workflows/{wf_id}/rollback", json={"version": 9})
        assert missing.status_code == 404 and "no version 9" in missing.json()["detail"]
        assert client.post(f"/workflows/{wf_id}/rollback", json={"version": 0}).status_code == 422
        assert len(client.get(f"/workflows/{wf_id}/versions").json()) == 3


def test_execution_started_over_the_api_runs_to_the_end(api: Api) -> None:
    with api.client() as client:
        wf_id = create(client, paid_orders("run_me"))["id"]
        started = client.post(f"/workflows/{wf_id}/executions", json={"inputData": {"min_amount": 50}, "timeout": 120})
        assert started.status_code == 202, started.text
        queued = started.json()
        assert queued["status"] == "QUEUED" and queued["mode"] == "API" and queued["inputData"] == {"min_amount": 50}
        assert queued["timeoutSeconds"] == 120

        final = wait_final(client, queued["id"])
        assert final["status"] == "SUCCEEDED", final["errorMessage"]
        assert final["flowRunId"] and final["version"] == 1 and final["durationMs"] > 0
        assert {n["node"] for n in final["nodes"]} == {"orders", "paid"}
        assert all(n["status"] == "SUCCEEDED" for n in final["nodes"])

        listed = client.get(f"/workflows/{wf_id}/executions").json()
        assert [e["id"] for e in listed["items"]] == [queued["id"]] and listed["hasMore"] is False
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # Prefect ships log lines in batches
            lines = client.get(f"/executions/{queued['id']}/logs").json()
            if any(line["node"] and "Completed" in line["message"] for line in lines):
                break
            time.sleep(0.5)
        assert any(line["node"] and "Completed" in line["message"] for line in lines), lines
        workflow = client.get(f"/workflows/{wf_id}").json()
        assert workflow["executionCount"] == 1 and workflow["lastExecutedAt"]
        metrics = client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert 'weflow_executions_total{workflow="run_me",outcome="succeeded"} 1' in metrics.text

        ended = client.post(f"/executions/{queued['id']}/cancel")
        assert ended.status_code == 409 and "already ended SUCCEEDED" in ended.json()["detail"]
        bad = client.post(f"/workflows/{wf_id}/executions", json={"inputData": {"min_amount": "lots"}})
        assert bad.status_code == 422
        assert bad.json()["problems"] == [{"path": "input_data.min_amount", "message": "expected number, got str"}]
        assert client.post(f"/workflows/{wf_id}/executions", json={"mode": "CRON"}).status_code == 422
        assert client.post(f"/workflows/{wf_id}/executions", json={"timeout": -1}).status_code == 422
        assert len(client.get(f"/workflows/{wf_id}/executions").json()["items"]) == 1  # refused runs left no record


def test_webhook_starts_a_run_and_revoking_it_closes_the_door(api: Api) -> None:
    with api.client() as client, api.client(None) as outsider:
        wf_id = create(client, paid_orders("hooked"))["id"]
        made = client.post(f"/workflows/{wf_id}/hooks")
        assert made.status_code == 201
        hook = made.json()
        assert hook["url"] == f"{api.url}/hooks/{hook['token']}" and hook["token"].startswith(hook["prefix"])

        triggered = outsider.post(f"/hooks/{hook['token']}", json={"min_amount": 100})
        assert triggered.status_code == 202, triggered.text
        assert triggered.json()["mode"] == "WEBHOOK" and triggered.json()["inputData"] == {"min_amount": 100}
        assert wait_final(client, triggered.json()["id"])["status"] == "SUCCEEDED"

        listed = client.get(f"/workflows/{wf_id}/hooks").json()
        assert [h["id"] for h in listed] == [hook["id"]] and "token" not in listed[0]
        with api.client("globex") as other:
            assert other.delete(f"/workflows/{wf_id}/hooks/{hook['id']}").status_code == 404
        assert client.delete(f"/workflows/{wf_id}/hooks/{hook['id']}").status_code == 204
        assert client.delete(f"/workflows/{wf_id}/hooks/{hook['id'] + 1000}").status_code == 404
        assert outsider.post(f"/hooks/{hook['token']}", json={}).status_code == 404
        assert outsider.post(f"/hooks/{hook['token'][:-1]}0", json={}).status_code == 404
        assert outsider.post("/hooks/not-a-token", json={}).status_code == 404
        assert client.get(f"/workflows/{wf_id}/hooks").json()[0]["revokedAt"] is not None
        runs = client.get(f"/workflows/{wf_id}/executions").json()["items"]
        assert [e["mode"] for e in runs] == ["WEBHOOK"]


def test_another_organization_sees_nothing(api: Api) -> None:
    with api.client() as acme, api.client("globex") as globex:
        mine = create(acme, paid_orders("secret_plan"))
        wf_id = mine["id"]
        run_id = acme.post(f"/workflows/{wf_id}/executions", json={"mode": "MANUAL"}).json()["id"]
        for method, path in [
            ("GET", f"/workflows/{wf_id}"),
            ("PUT", f"/workflows/{wf_id}"),
            ("DELETE", f"/workflows/{wf_id}"),
            ("GET", f"/workflows/{wf_id}/versions"),
            ("GET", f"/workflows/{wf_id}/versions/1"),
            ("POST", f"/workflows/{wf_id}/rollback"),
            ("POST", f"/workflows/{wf_id}/executions"),
            ("GET", f"/workflows/{wf_id}/executions"),
            ("POST", f"/workflows/{wf_id}/hooks"),
            ("GET", f"/workflows/{wf_id}/hooks"),
            ("GET", f"/executions/{run_id}"),
            ("POST", f"/executions/{run_id}/cancel"),
        ]:
            body = paid_orders("secret_plan") if method == "PUT" else ({"version": 1} if "rollback" in path else None)
            response = globex.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
        assert "secret_plan" not in [w["name"] for w in globex.get("/workflows").json()["items"]]
        theirs = create(globex, paid_orders("secret_plan"))  # same name, other organization: no conflict
        assert theirs["id"] != wf_id and theirs["organizationId"] != mine["organizationId"]
        assert acme.get(f"/workflows/{wf_id}").json()["currentVersion"] == 1
        assert wait_final(acme, run_id)["status"] == "SUCCEEDED"
        cancel = acme.post(f"/executions/{run_id}/cancel")  # the owner's cancel of an ended run: 409
        assert cancel.status_code == 409 and "already ended" in cancel.text


def test_every_bad_definition_is_422_with_the_cli_path_and_stores_nothing(api: Api) -> None:
    before = stored_names(api, "acme")
    with api.client() as client:
        for path in sorted((RESOURCES / "bad").glob("*.yaml")):
            expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
            if path.stem in {"not_yaml", "alias_bomb", "duplicate_key", "too_deep"}:  # the YAML reader refuses: raw
                raw = client.post("/workflows", content=path.read_bytes(), headers={"content-type": "application/json"})
                assert raw.status_code == 422 and raw.json()["problems"][0]["path"] == "body"
                continue
            response = client.post("/workflows", json=document.load(path.read_text()))
            assert response.status_code == 422, (path.name, response.text)
            problems = [f"{p['path']}: {p['message']}" for p in response.json()["problems"]]
            assert any(expect in p for p in problems), (path.name, problems)
    assert stored_names(api, "acme") == before


def test_code_and_files_outside_the_allow_lists_are_refused_everywhere(api: Api) -> None:
    python = {"name": "sneaky", "nodes": [{"name": "boom", "type": "python", "config": {"callable": "os:system"}}]}
    files = paid_orders("sneaky")
    files["nodes"][0]["config"]["path"] = "/etc/passwd"
    with api.client() as client:
        for doc, where in ((python, "nodes[0].config.callable"), (files, "nodes[0].config.path")):
            response = client.post("/workflows", json=doc)
            assert response.status_code == 422 and response.json()["problems"][0]["path"] == where
        wf_id = create(client, paid_orders("sneaky"))["id"]
        response = client.put(f"/workflows/{wf_id}", json=files)
        assert response.status_code == 422 and response.json()["problems"][0]["path"] == "nodes[0].config.path"
        escape = paid_orders("sneaky")
        escape["nodes"][0]["config"]["path"] = "../../etc/passwd"
        assert client.put(f"/workflows/{wf_id}", json=escape).status_code == 422
        allowed = {
            "name": "sneaky",
            "nodes": [{"name": "wait", "type": "python", "config": {"callable": "tests.resources.pynodes:slow"}}],
        }
        assert client.put(f"/workflows/{wf_id}", json=allowed).json()["currentVersion"] == 2
        assert [v["number"] for v in client.get(f"/workflows/{wf_id}/versions").json()] == [1, 2]
    assert "sneaky" in stored_names(api, "acme")


def test_bad_requests_get_precise_4xx_and_change_nothing(api: Api) -> None:
    with api.client() as client:
        wf_id = create(client, paid_orders("solid"))["id"]
        conflict = client.post("/workflows", json=paid_orders("solid", description="other"))
        assert conflict.status_code == 409 and f"(id {wf_id})" in conflict.json()["detail"]
        renamed = client.put(f"/workflows/{wf_id}", json=paid_orders("other_name"))
        assert renamed.status_code == 422 and renamed.json()["problems"][0]["path"] == "name"
        broken = paid_orders("solid")
        del broken["nodes"][1]["config"]["condition"]
        failed = client.put(f"/workflows/{wf_id}", json=broken)
        assert failed.status_code == 422 and failed.json()["problems"][0]["path"] == "nodes[1].config.condition"
        assert client.get(f"/workflows/{wf_id}").json()["currentVersion"] == 1

        unknown = ["/workflows/999999", "/workflows/99999999999999999999", f"/workflows/{wf_id}/versions/99"]
        for path in [*unknown, "/executions/nope", "/executions/00000000-0000-0000-0000-000000000000"]:
            assert client.get(path).status_code == 404, path
        assert client.delete("/workflows/999999").status_code == 404
        assert client.get("/workflows/abc").status_code == 422
        limit = client.get("/workflows", params={"limit": 0})
        assert limit.status_code == 422 and limit.json()["problems"][0]["path"] == "query.limit"
        assert client.get("/workflows", params={"status": "DONE"}).status_code == 422

        json_headers = {"content-type": "application/json"}
        for raw in (b"{", b'{"name": NaN}', b'{"name": 1e999}', b'{"name": "\\ud800"}', b"[" * 10_000, b"\xff"):
            response = client.post("/workflows", content=raw, headers=json_headers)
            assert response.status_code == 422 and response.json()["problems"][0]["path"] == "body", raw[:20]
        assert client.post("/workflows", json=["not", "a", "mapping"]).status_code == 422
        assert client.post(f"/workflows/{wf_id}/rollback", json={"version": 1, "extra": True}).status_code == 422

        big = b'{"name": "' + b"x" * BODY_LIMIT + b'"}'
        too_big = client.post("/workflows", content=big, headers=json_headers)  # refused by Content-Length
        assert too_big.status_code == 413 and str(BODY_LIMIT) in too_big.json()["detail"]
        streamed = client.post("/workflows", content=iter([big[:40_000], big[40_000:]]), headers=json_headers)
        assert "content-length" not in streamed.request.headers  # chunked: refused while reading
        assert streamed.status_code == 413
        assert stored_names(api, "acme") >= {"solid"} and "other_name" not in stored_names(api, "acme")
        assert client.get("/health").status_code == 200


def weflow(api: Api, *commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """Run ``weflow`` commands at the same time, each in its own process, as scripts would."""
    procs = [
        subprocess.Popen([weflow_exe(), *args], env=api.env, cwd=REPO, stdout=PIPE, stderr=PIPE, text=True)
        for args in commands
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(procs, outputs, strict=True)]


def test_cli_users_keys_and_hooks_through_the_console_script(api: Api) -> None:
    with api.client() as client:
        create(client, paid_orders("cli_hooked"))
    added, hook, unknown = weflow(api, ("users", "add", "acme", "eve"), ("hooks", "create", "cli_hooked"),
                                  ("keys", "revoke", "99999"))  # fmt: skip
    assert added.returncode == 0 and "user eve" in added.stdout
    assert unknown.returncode == 1 and unknown.stderr == "error: no API key with id 99999\n"
    [made] = weflow(api, ("keys", "create", "acme", "eve"))
    key = made.stdout.strip()
    assert made.stdout == key + "\n" and key.startswith("wfk_") and "store it now" in made.stderr

    token, hook_id = hook.stdout.strip(), hook.stderr.split()[1]
    refused = web.post(f"{api.url}/hooks/{token}", json={"unknown": 1})  # reaches the workflow; bad input, no run
    assert refused.status_code == 422 and refused.json()["problems"][0]["path"] == "input_data.unknown"
    headers = {"Authorization": f"Bearer {key}"}
    assert web.get(f"{api.url}/workflows", headers=headers).status_code == 200

    listed, unhooked = weflow(api, ("keys", "list", "-f", "json"), ("hooks", "revoke", hook_id))
    assert unhooked.returncode == 0 and "revoked" in unhooked.stdout
    assert web.post(f"{api.url}/hooks/{token}", json={}).status_code == 404
    mine = next(k for k in json.loads(listed.stdout) if key.startswith(k["prefix"]))
    assert (mine["organization"], mine["user"], mine["revoked"]) == ("acme", "eve", None)
    assert key not in listed.stdout
    with api.catalog.transaction() as con:  # only a hash of the secret is stored
        stored = con.execute("SELECT lookup || secret_hash FROM api_keys WHERE id = ?", [mine["id"]]).fetchone()
    assert stored is not None and key.split("_")[2] not in stored[0]

    [revoked] = weflow(api, ("keys", "revoke", str(mine["id"])))
    assert revoked.returncode == 0 and "revoked" in revoked.stdout
    assert web.get(f"{api.url}/workflows", headers=headers).status_code == 401


def fuzz(operation: Any, key: str, examples: int, negative: bool = True, **fixed: Any) -> None:
    """Requests generated from the schema of one operation, valid and invalid ones; each response checked."""
    strategy = operation.as_strategy(GenerationMode.POSITIVE, **fixed)
    takes_input = "parameters" in operation.definition.raw or "requestBody" in operation.definition.raw
    if negative and takes_input:
        strategy |= operation.as_strategy(GenerationMode.NEGATIVE, **fixed)

    @given(case=strategy)
    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: schemathesis.Case) -> None:
        # Our body schema for a definition is "an object": a valid-looking one is rightly refused with 422.
        case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, excluded_checks=[positive_data_acceptance])

    check()


def test_openapi_schema_holds_for_generated_requests(api: Api) -> None:
    key = api.keys["initech"]
    with api.client("initech") as client:  # an organization of its own: whatever the fuzzer deletes is its own
        wf_id = create(client, paid_orders("fuzzed"))["id"]
        run_id = client.post(f"/workflows/{wf_id}/executions").json()["id"]
        assert wait_final(client, run_id)["status"] == "SUCCEEDED"
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 28  # 20 for users (1 the diff of two versions), 4 for backfills, 4 for remote workers
    for operation in operations:  # ids that exist nowhere or in no organization of the key: 404s and 422s
        fuzz(operation, key, examples=4)
    existing = {"workflow_id": wf_id, "execution_id": run_id}
    last = {"DELETE /workflows/{workflow_id}"}  # runs last: it removes the workflow the others use
    for operation in sorted(operations, key=lambda op: op.label in last):  # ids that exist: the 2xx responses
        fixed = {k: v for k, v in existing.items() if f"{{{k}}}" in operation.path}
        if fixed and operation.label != "POST /workflows/{workflow_id}/executions":  # each 202 starts a real run
            fuzz(operation, key, examples=3, negative=False, path_parameters=fixed)


def test_visualizer_page_shows_every_node_and_the_failure_in_a_browser(api: Api, tmp_path: Path) -> None:
    doc = paid_orders("shown")
    doc["nodes"][0]["contract"] = {"columns": {"amount": {"dtype": "Float64", "checks": {"le": 400}}}}
    with api.client() as client:
        wf_id = create(client, doc)["id"]
        started = client.post(f"/workflows/{wf_id}/executions", json={"inputData": {"min_amount": 0}}).json()
        final = wait_final(client, started["id"])
        assert final["status"] == "FAILED"
        assert client.get(f"/ui/executions/{started['id']}").status_code == 200
    assert web.get(f"{api.url}/ui/executions/{started['id']}").status_code == 401
    other = web.get(f"{api.url}/ui/executions/{started['id']}", params={"key": api.keys["globex"]})
    assert other.status_code == 404
    dom = render(f"{api.url}/ui/executions/{started['id']}?key={api.keys['acme']}", tmp_path)
    assert "<svg" in dom, "Mermaid did not draw the graph"
    assert 'id="status" class="state FAILED"' in dom
    assert "less_than_or_equal_to(400)" in dom and "Contract failures" in dom
    for node in ("orders", "paid"):
        assert f'id="node-{node}"' in dom
    svg = dom[dom.index("<svg") :]
    assert "orders" in svg and "paid" in svg and "FAILED" in svg and "SKIPPED" in svg
    assert f"/runs/flow-run/{final['flowRunId']}" in dom
    page = render(f"{api.url}/ui/workflows/{wf_id}?key={api.keys['acme']}", tmp_path)
    assert "<svg" in page and started["id"][:8] in page


def test_swagger_ui_works_offline_in_a_browser(api: Api, tmp_path: Path) -> None:
    dom = render(f"{api.url}/docs", tmp_path)
    assert "swagger-ui" in dom and "/workflows/{workflow_id}/executions" in dom
    assert "cdn" not in web.get(f"{api.url}/docs").text.lower()
    for name in ("../app.py", "app.py", "%2e%2e%2fapp.py", "nothing.js"):
        assert web.get(f"{api.url}/ui/static/{name}").status_code == 404
