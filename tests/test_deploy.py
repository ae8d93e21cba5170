"""Deployments and queued runs against a real Prefect server and a real process worker."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, temporary_settings

from weflow import deploy, execution, parse, workflows
from weflow.core.entities import Execution, Mode, RunState
from weflow.errors import ServerError
from weflow.prefect_gateway import deployments as gateway
from weflow.prefect_gateway import flow_runs, server
from weflow.prefect_gateway.client import QUICK_PAUSES
from weflow.workflows import Scope

from .conftest import REPO, eventually, render, web

pytestmark = pytest.mark.usefixtures("prefect_api")

SLOW = """
name: slow_one
status: ACTIVE
settings: {max_concurrent_runs: 1}
nodes:
  - name: nap
    type: python
    config: {callable: "tests.resources.pynodes:slow", kwargs: {seconds: SECONDS, hold: HOLD}}
"""


@pytest.fixture(scope="module")
def worker(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[subprocess.Popen[bytes]]:
    """A real `prefect worker` (process type) on the execution queue."""
    home = tmp_path_factory.mktemp("worker")
    # the python nodes' module (tests.resources.pynodes) comes from the worker's environment: deployments name no folder
    extra = {"PYTHONPATH": str(REPO)}
    proc = server.start_worker(prefect_api, deploy.work_pool(), deploy.execution_queue(), home, env_extra=extra)
    yield proc
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def wait_for(scope: Scope, execution_id: str, seconds: float = 180) -> Execution:
    return execution.wait(execution_id, scope, timeout=seconds)


def deployments(api: str) -> dict[str, dict]:
    found = web.post(f"{api}/deployments/filter", json={}).json()
    return {d["name"]: d for d in found}


def test_deploy_is_idempotent_and_follows_status(scope: Scope, prefect_api: str) -> None:
    sales = (REPO / "data/workflows/daily_sales.yaml").read_text()
    revenue = (REPO / "data/workflows/customer_revenue.yaml").read_text()
    workflows.apply(parse(sales), scope)
    workflows.apply(parse(revenue), scope)
    workflows.apply(parse(sales.replace("name: daily_sales", "name: drafty").replace("status: ACTIVE\n", "")), scope)
    first = {r.workflow: r.action for r in deploy.deploy(scope)}
    assert first["daily_sales"] in {"created", "updated"} and first["customer_revenue"] in {"created", "updated"}
    assert "drafty" not in first
    assert {r.workflow: r.action for r in deploy.deploy(scope)} == {
        "daily_sales": "unchanged",
        "customer_revenue": "unchanged",
    }
    found = deployments(prefect_api)
    d = found["customer_revenue"]
    assert d["entrypoint"] == "weflow.flow_entry:run_workflow"  # a module of the package: no checkout, no file
    assert d["path"] == "." and "working_dir" not in d["job_variables"]  # no source folder of this machine
    assert d["work_queue_name"] == deploy.execution_queue() and d["work_pool_name"] == deploy.work_pool()
    assert [s["schedule"]["cron"] for s in d["schedules"]] == ["30 7 * * 1-5"]
    mine = f"weflow-version:{deploy.installed_version()}"  # a worker of another version refuses its runs
    assert set(d["tags"]) == {"weflow", "workflow:customer_revenue", "version:1", mine}
    form = d["parameter_openapi_schema"]["properties"]["input_data"]["properties"]
    assert form == {
        "min_amount": {
            "type": "number",
            "title": "min_amount",
            "description": "ignore orders below this amount",
            "default": 0,
        }
    }

    workflows.apply(parse(sales.replace("status: ACTIVE", "status: PAUSED")), scope)
    workflows.apply(parse(revenue.replace("status: ACTIVE", "status: ARCHIVED")), scope)
    actions = {r.workflow: (r.action, r.paused) for r in deploy.deploy(scope)}
    assert actions == {"daily_sales": ("updated", True), "customer_revenue": ("removed", False)}
    found = deployments(prefect_api)
    assert "customer_revenue" not in found
    assert found["daily_sales"]["paused"] is True
    assert [s["active"] for s in found["daily_sales"]["schedules"]] == [False]
    workflows.delete("daily_sales", scope)
    assert {r.workflow: r.action for r in deploy.deploy(scope)} == {"daily_sales": "removed"}


def test_a_workflows_limit_is_its_deployments_and_null_takes_it_away(scope: Scope, prefect_api: str) -> None:
    """``settings.max_concurrent_runs`` is the deployment's concurrency limit (default 1); ``null`` leaves the
    deployment without one, as Prefect makes a deployment by default, also when the workflow had a limit before."""
    sales = (REPO / "data/workflows/daily_sales.yaml").read_text().replace("name: daily_sales", "name: limits")
    limited = sales.replace("status: ACTIVE\n", "status: ACTIVE\nsettings: {max_concurrent_runs: 3}\n")
    assert limited != sales

    def limit() -> int | None:
        found = deployments(prefect_api)["limits"]["global_concurrency_limit"]
        return None if found is None else int(found["limit"])

    workflows.apply(parse(sales), scope)
    deploy.deploy(scope)
    assert limit() == 1
    workflows.apply(parse(limited), scope)
    deploy.deploy(scope)
    assert limit() == 3
    workflows.apply(parse(limited.replace("max_concurrent_runs: 3", "max_concurrent_runs: null")), scope)
    assert workflows.version("limits", scope).definition.settings.max_concurrent_runs is None  # stored as null
    assert {r.workflow: r.action for r in deploy.deploy(scope)}["limits"] == "updated"
    assert limit() is None
    workflows.delete("limits", scope)
    deploy.deploy(scope)


def test_a_pool_made_meanwhile_by_another_process_is_taken_not_an_error(prefect_api: str, monkeypatch) -> None:
    """Makers of the execution pool at once on a fresh pool name: one pool of weflow's type, one queue, no error.

    Before: `weflow deploy` while a `weflow worker` started (seen in CI) both found no pool and made it, and the
    deploy failed with ``ObjectAlreadyExists``. Four makers in one event loop all read before any makes it.
    """
    monkeypatch.setenv("WEFLOW_WORK_POOL", f"race-{uuid.uuid4().hex[:8]}")

    async def at_once() -> list[bool]:
        async with get_client() as client:
            return await asyncio.gather(*(gateway._ensure_pool(client) for _ in range(4)))

    pool_url = f"{prefect_api}/work_pools/{deploy.work_pool()}"
    try:
        assert asyncio.run(at_once()) == [False] * 4  # none replaced a pool, none failed
        assert web.get(pool_url).json()["type"] == gateway.POOL_TYPE
        queues = web.post(f"{pool_url}/queues/filter", json={}).json()
        assert deploy.execution_queue() in {q["name"] for q in queues}
    finally:
        web.delete(pool_url)  # the session's server is shared by the module's other tests


def test_queued_run_completes_on_the_worker(scope: Scope, worker: object, tmp_path: Path) -> None:
    text = (REPO / "data/workflows/customer_revenue.yaml").read_text().replace("data/out/", f"{tmp_path}/")
    workflows.apply(parse(text), scope)
    deploy.deploy(scope)
    queued = execution.submit("customer_revenue", scope, Mode.API, {"min_amount": 200}, queue=True)
    assert queued.status is RunState.QUEUED and queued.flow_run_id
    done = wait_for(scope, queued.id)
    assert done.status is RunState.SUCCEEDED, done.error_message
    assert done.flow_run_id == queued.flow_run_id and done.mode is Mode.API
    assert done.input_data == {"min_amount": 200}
    assert {n.node for n in done.nodes} >= {"orders", "top_regions", "save"}, done
    assert (tmp_path / "customer_revenue.csv").exists()


def test_a_run_started_from_prefect_gets_its_record(scope: Scope, worker: object, prefect_api: str) -> None:
    workflows.apply(parse((REPO / "data/workflows/daily_sales.yaml").read_text()), scope)
    deploy.deploy(scope)
    # what `prefect deployment run` does, through Prefect's client in this process (which retries Prefect's 503s
    # like the command's); test_hot_worker runs the command itself
    with SyncPrefectClient(prefect_api) as client:
        client.create_flow_run_from_deployment(client.read_deployment_by_name("run_workflow/daily_sales").id)

    def recorded() -> list[Execution]:
        return [e for e in scope.catalog.executions(scope.user.organization_id) if e.workflow == "daily_sales"]

    found = eventually(recorded)
    assert isinstance(found, list)
    done = wait_for(scope, found[0].id)
    assert done.status is RunState.SUCCEEDED and done.mode is Mode.MANUAL and done.flow_run_id


def test_cron_schedule_produces_a_cron_run(scope: Scope, worker: object, prefect_api: str) -> None:
    """A run that Prefect's scheduler made from the deployment's cron schedule is recorded as a CRON run.

    The scheduler's first run (auto-scheduled, its slot at the next 06:00 UTC) is moved to start now with a
    new Scheduled state through Prefect's API instead of waiting for a slot (a minute boundary cost 0-65 s
    per run of this test). The run keeps its slot (``expected_start_time``) and its auto-scheduled mark,
    which is what weflow reads to tell a schedule's run.
    """
    text = (REPO / "data/workflows/daily_sales.yaml").read_text().replace("name: daily_sales", "name: on_schedule")
    workflows.apply(parse(text), scope)
    [deployed] = [d for d in deploy.deploy(scope) if d.workflow == "on_schedule"]

    def scheduled() -> list[dict]:
        state = {"type": {"any_": ["SCHEDULED"]}}
        body = {"flow_runs": {"deployment_id": {"any_": [str(deployed.deployment_id)]}, "state": state}}
        found = web.post(f"{prefect_api}/flow_runs/filter", json={**body, "sort": "EXPECTED_START_TIME_ASC"})
        return [r for r in found.json() if r["auto_scheduled"]]

    first = eventually(scheduled, seconds=120)
    assert isinstance(first, list)
    run = first[0]
    slot = datetime.fromisoformat(run["expected_start_time"])
    if slot - datetime.now(UTC) > timedelta(seconds=20):  # nearer, the worker may have it already: let it run
        at = datetime.now(UTC).isoformat()
        now = {"type": "SCHEDULED", "name": "Scheduled", "state_details": {"scheduled_time": at}}
        moved = web.post(f"{prefect_api}/flow_runs/{run['id']}/set_state", json={"state": now, "force": True})
        assert moved.status_code in {200, 201}, moved.text

    def cron_runs() -> list[Execution]:
        return [
            e
            for e in scope.catalog.executions(scope.user.organization_id)
            if e.workflow == "on_schedule" and e.mode is Mode.CRON
        ]

    found = eventually(cron_runs, seconds=240)
    assert isinstance(found, list)
    done = wait_for(scope, found[0].id)
    assert done.status is RunState.SUCCEEDED and str(done.flow_run_id) == run["id"]
    kept = web.get(f"{prefect_api}/flow_runs/{run['id']}").json()
    assert kept["auto_scheduled"] and datetime.fromisoformat(kept["expected_start_time"]) == slot  # still its slot
    workflows.apply(parse(text.replace("ACTIVE", "PAUSED")), scope)
    deploy.deploy(scope)


def test_cancel_a_running_execution_and_the_concurrency_limit_queues_the_next_run(
    scope: Scope, worker: object, prefect_api: str, tmp_path: Path
) -> None:
    """Two runs of a workflow limited to one at a time (one flow process fewer than a test for each): the run
    that got the slot is cancelled mid-run and ends CANCELLED on both sides; the other waited for the slot, starts
    only once the first ended, and succeeds."""
    hold = tmp_path / "hold"  # a run's node sleeps while it exists: long enough for the cancel to land mid-run
    hold.touch()
    workflows.apply(parse(SLOW.replace("SECONDS", "60").replace("HOLD", str(hold))), scope)
    deploy.deploy(scope)
    queued = [execution.submit("slow_one", scope, Mode.API, queue=True) for _ in range(2)]

    def one_running() -> list[Execution]:
        return [e for e in (scope.catalog.execution(q.id) for q in queued) if e.status is RunState.RUNNING]

    [running] = eventually(one_running)  # type: ignore[misc]
    [waiting] = [scope.catalog.execution(q.id) for q in queued if q.id != running.id]
    assert waiting.status is RunState.QUEUED  # the limit holds it back
    execution.cancel(running.id, scope)
    done = wait_for(scope, running.id, seconds=120)
    assert done.status is RunState.CANCELLED
    url = f"{prefect_api}/flow_runs/{done.flow_run_id}"
    eventually(lambda: web.get(url).json()["state_type"] == "CANCELLED", seconds=120)
    hold.unlink()  # the waiting run need not sleep: it only has to start after the first one ended

    after = wait_for(scope, waiting.id, 120)
    assert after.status is RunState.SUCCEEDED, after.error_message
    ended = datetime.fromisoformat(web.get(url).json()["end_time"])
    started = datetime.fromisoformat(web.get(f"{prefect_api}/flow_runs/{after.flow_run_id}").json()["start_time"])
    assert ended <= started, "two runs of a workflow limited to one ran at the same time"
    assert isinstance(after.started_at, datetime) and after.started_at.tzinfo is not None
    assert ended <= after.started_at <= datetime.now(UTC)


def test_prefect_ui_lists_the_weflow_deployments(scope: Scope, prefect_api: str, tmp_path: Path) -> None:
    workflows.apply(parse((REPO / "data/workflows/daily_sales.yaml").read_text()), scope)
    workflows.apply(parse((REPO / "data/workflows/customer_revenue.yaml").read_text()), scope)
    deploy.deploy(scope)
    ui = prefect_api.removesuffix("/api")

    def listed() -> bool:
        dom = render(f"{ui}/deployments", tmp_path)
        return "daily_sales" in dom and "customer_revenue" in dom

    assert eventually(listed, seconds=120)


def test_prefect_deploy_from_the_root_uses_prefect_yaml(scope: Scope, prefect_api: str, cli_env) -> None:
    deploy.deploy(scope)  # makes the work pool, as on a fresh machine
    prefect = str(Path(__import__("sys").executable).with_name("prefect"))
    proc = subprocess.run(
        [prefect, "--no-prompt", "deploy", "--all"],
        cwd=REPO, env={**cli_env, "PREFECT_API_URL": prefect_api, "PWD": str(REPO)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    found = deployments(prefect_api)["any_workflow"]
    assert found["entrypoint"] == "flows/run_workflow.py:run_workflow"
    assert found["work_queue_name"] == "workflow-executions" and found["parameters"] == {"workflow": "daily_sales"}
    assert "any_workflow" not in {r.workflow for r in deploy.deploy(scope)}  # weflow leaves it alone
    assert "any_workflow" in deployments(prefect_api)


class Refusing(ThreadingHTTPServer):
    """A real HTTP proxy in front of the Prefect server that answers 503 (SQLite busy, as Prefect's server says it)
    to the first ``refuse`` requests to create a flow run, and counts them."""

    def __init__(self, upstream: str, refuse: int) -> None:
        super().__init__(("127.0.0.1", 0), _Forward)
        self.upstream, self.refuse, self.creates = upstream.removesuffix("/api"), refuse, 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}/api"


class _Forward(BaseHTTPRequestHandler):
    server: Refusing

    def log_message(self, *args: object) -> None:
        pass

    def _forward(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.command == "POST" and self.path.endswith("/create_flow_run"):
            self.server.creates += 1
            if self.server.creates <= self.server.refuse:
                self._answer(503, b'{"exception_message": "Service Unavailable"}', "application/json")
                return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in {"host", "content-length"}}
        got = web.request(self.command, self.server.upstream + self.path, content=body, headers=headers, timeout=60)
        self._answer(got.status_code, got.content, got.headers.get("content-type", "application/json"))

    def _answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _forward


@pytest.fixture
def refusing(prefect_api: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Refusing]:
    proxy = Refusing(prefect_api, refuse=3)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("PREFECT_API_URL", proxy.url)  # weflow's calls go through the proxy
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    thread.join(timeout=10)


def runs_of(prefect_api: str, execution_id: str) -> list[dict[str, Any]]:
    found = web.post(f"{prefect_api}/flow_runs/filter", json={"sort": "EXPECTED_START_TIME_DESC"}).json()
    return [r for r in found if r["parameters"].get("execution_id") == execution_id]


def weflow_runs(prefect_api: str, workflow: str) -> set[str]:
    """The ids of the flow runs weflow created for ``workflow`` (a schedule's have no execution id)."""
    found = web.post(f"{prefect_api}/flow_runs/filter", json={}).json()
    return {
        r["id"] for r in found if r["parameters"].get("workflow") == workflow and r["parameters"].get("execution_id")
    }


@pytest.fixture
def alone(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Prefect's client asks nothing again and weflow's create gives up at once: only the transport's quick retries."""
    monkeypatch.setattr(flow_runs, "RETRYING_SECONDS", 0.0)
    with temporary_settings(updates={PREFECT_CLIENT_MAX_RETRIES: 0}):
        yield


def test_a_flow_run_the_server_refuses_is_asked_again_at_once_and_made_once(
    scope: Scope, prefect_api: str, refusing: Refusing, alone: None
) -> None:
    """Prefect's client asks again after ~2 s, 4, 8 (a run queued 2 s late for one SQLite conflict); weflow's
    transport asks again after 50, 100, 200, 400 ms, and Prefect's idempotency key keeps it to one flow run."""
    workflows.apply(parse((REPO / "data/workflows/daily_sales.yaml").read_text()), scope)
    deploy.deploy(scope)
    queued = execution.submit("daily_sales", scope, Mode.API, queue=True)
    assert refusing.creates == 4  # refused three times, then made
    [made] = runs_of(prefect_api, queued.id)
    assert made["id"] == queued.flow_run_id and scope.catalog.execution(queued.id).status is RunState.QUEUED
    web.delete(f"{prefect_api}/flow_runs/{made['id']}")  # no worker of a later test module finds it


def test_a_flow_run_the_server_keeps_refusing_leaves_nothing_behind(
    scope: Scope, prefect_api: str, refusing: Refusing, alone: None
) -> None:
    workflows.apply(parse((REPO / "data/workflows/daily_sales.yaml").read_text()), scope)
    deploy.deploy(scope)
    refusing.refuse = 1000
    before = weflow_runs(prefect_api, "daily_sales")
    with pytest.raises(ServerError, match=r"could not create the flow run \(HTTP 503\): try again"):
        execution.submit("daily_sales", scope, Mode.API, queue=True)
    assert refusing.creates == 1 + len(QUICK_PAUSES)
    assert [e for e in scope.catalog.executions(scope.user.organization_id) if e.workflow == "daily_sales"] == []
    assert weflow_runs(prefect_api, "daily_sales") == before


def test_the_server_weflow_starts_queues_conflicting_writes_instead_of_refusing_them(
    scope: Scope, prefect_api: str
) -> None:
    """Stock Prefect on SQLite begins a write transaction DEFERRED and answers 503 (``database is locked``) when
    another write comes between its read and its write: 12 flow runs labelled and 12 created at the same moment got
    such 503s here. The server weflow starts (``prefect_server.py``) begins them IMMEDIATE: they wait their turn."""
    workflows.apply(parse((REPO / "data/workflows/daily_sales.yaml").read_text()), scope)
    deploy.deploy(scope)
    [found] = [d for d in deployments(prefect_api).values() if d["name"] == "daily_sales"]
    create = f"{prefect_api}/deployments/{found['id']}/create_flow_run"
    made = [web.post(create, json={}, timeout=60) for _ in range(12)]
    assert {m.status_code for m in made} == {201}

    def label(i: int) -> int:
        url = f"{prefect_api}/flow_runs/{made[i].json()['id']}/labels"
        return web.patch(url, json={"n": i}, timeout=60).status_code

    def another() -> httpx.Response:
        return web.post(create, json={}, timeout=60)

    with ThreadPoolExecutor(24) as pool:  # all at once, plain httpx: no client that asks again
        labels = [pool.submit(label, i) for i in range(12)]
        creates = [pool.submit(another) for _ in range(12)]
        labelled, answers = [f.result() for f in labels], [f.result() for f in creates]
    created = [a.status_code for a in answers]
    ours = [m.json()["id"] for m in made] + [a.json()["id"] for a in answers if a.status_code == 201]
    assert (sorted(set(labelled)), sorted(set(created))) == ([204], [201])
    for i, m in enumerate(made):
        assert web.get(f"{prefect_api}/flow_runs/{m.json()['id']}").json()["labels"]["n"] == i
    for run in ours:  # no worker of a later test module on this server finds them in its pool
        web.delete(f"{prefect_api}/flow_runs/{run}")


def test_the_runs_a_sync_repairs_are_read_a_page_at_a_time_only_those_that_ended(prefect_api: str) -> None:
    """``weflow sync`` asks Prefect which of the catalog's unfinished runs ended: more than the server's page of them
    are all answered, and the runs still going are not sent."""
    from prefect import flow
    from prefect.states import Completed, Failed, Running

    @flow(name="weflow-test-ended")
    def noop() -> None: ...

    async def made() -> tuple[list[str], list[str], list[str]]:
        async with get_client() as client:
            await client.create_flow(noop)
            done = await asyncio.gather(
                *(client.create_flow_run(noop, state=Completed()) for _ in range(flow_runs.IDS_PER_READ + 2))
            )
            failed = await client.create_flow_run(noop, state=Failed(message="boom"))
            going = await asyncio.gather(*(client.create_flow_run(noop, state=Running()) for _ in range(3)))
        return [str(r.id) for r in done], [str(failed.id)], [str(r.id) for r in going]

    done, failed, going = asyncio.run(made())
    found = flow_runs.ended([*going[:1], *done, *going[1:], *failed])
    assert set(found) == {*done, *failed}  # past the first page, none still going
    assert {found[i][0] for i in done} == {"COMPLETED"} and found[failed[0]] == ("FAILED", "Failed", "boom")
