"""Issue 17 item 4: one queue for everyone. `weflow run NAME` hands the run to a live `weflow worker`.

Real parts: the session's Prefect server on loopback, `weflow worker` and `weflow run` as processes,
the worker's loopback hand-off port with the home's token file, DuckDB catalog files.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import polars as pl
import pytest
from prefect.client.orchestration import SyncPrefectClient
from starlette.testclient import TestClient

from tests.conftest import eventually, web, weflow_exe
from tests.stack import Hot, running_worker, stack_env, stack_scope
from tests.test_hot_worker import MODULES, PIDS
from weflow import deploy, execution, handoff, parse, workflows
from weflow.core.entities import Execution, Mode, RunState
from weflow.errors import DeployError
from weflow.execution.record import new_execution
from weflow.prefect_gateway import worker_home, worker_serve
from weflow.workflows import Scope

pytestmark = pytest.mark.usefixtures("prefect_api")

FAILS = """
name: fails
status: ACTIVE
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: bad, type: python, config: {callable: "tests.resources.pynodes:not_a_frame"}}
connections:
  - {from: orders, to: bad}
"""


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("handoff")


@pytest.fixture(scope="module")
def env(prefect_api: str, place: Path) -> dict[str, str]:
    # the worker polls every 30 s: what these tests run reaches it by a hand-off, a wake-up or a Prefect event
    return stack_env(prefect_api, place, MODULES, PREFECT_HOME=str(place / "home"), WEFLOW_WORKER_POLL_SECONDS="30")


@pytest.fixture(scope="module")
def scope(env: dict[str, str], place: Path) -> Iterator[Scope]:
    with stack_scope(place, MODULES) as scope:
        for name in ("pids", "undeployed"):
            workflows.apply(parse(PIDS.replace("NAME", name).replace("OUT", str(place / f"{name}.csv"))), scope)
        workflows.apply(parse(FAILS), scope)
        deploy.deploy(scope)
        workflows.apply(parse(PIDS.replace("NAME", "late").replace("OUT", str(place / "late.csv"))), scope)
        yield scope  # "late": applied after the deploy, so it has no deployment


@pytest.fixture(scope="module")
def hot(scope: Scope, env: dict[str, str]) -> Iterator[Hot]:
    with running_worker(Path(env["PREFECT_HOME"]), env, "--limit", "2") as worker:
        yield worker


def weflow(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([weflow_exe(), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def count(scope: Scope) -> int:
    return len(scope.catalog.executions(scope.user.organization_id, limit=1000))


def test_weflow_run_runs_on_the_worker_and_prints_the_node_table(
    scope: Scope, hot: Hot, env: dict[str, str], place: Path
) -> None:
    child = hot.child()
    run = weflow({**env, "PYTHONPROFILEIMPORTTIME": "1"}, "run", "pids")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "SUCCEEDED" in out and "orders" in out and "rows out" in out, out
    assert "no weflow worker" not in err
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    # the CLI skipped the engine, Prefect, the node types' Polars, the alerts' httpx, the catalog's DuckDB and the
    # definition model (issue 17: a lean hand-off; the run's record comes back from the worker), nor what only other
    # commands use (a backfill's progress bar and intervals, the supervisor's health request, the other command
    # modules: only the command's own is loaded and built)
    skipped = {"prefect", "weflow.execution", "polars", "httpx", "duckdb", "weflow.catalog", "weflow.core.model",
               "rich.progress", "weflow.core.intervals", "urllib.request", "weflow.cli.admin", "weflow.cli.stack",
               "weflow.cli.definitions", "weflow.cli.backfills"}  # fmt: skip
    assert "weflow.handoff" in imported and not skipped & imported, skipped & imported
    # rich (~45 ms) is imported while the run runs on the worker, not before the CLI hands it over: after the
    # command's module and the hand-off are loaded (Python logs an import as it finishes)
    order = [line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")]
    assert order.index("rich.console") > order.index("weflow.handoff"), order
    [pid] = pl.read_csv(place / "pids.csv")["pid"].unique().to_list()
    assert pid == child != run.pid  # the worker ran it, not the CLI
    [done] = [e for e in scope.catalog.executions(scope.user.organization_id) if e.workflow == "pids"]
    assert done.mode is Mode.MANUAL and done.flow_run_id and done.status is RunState.SUCCEEDED
    # what `weflow run` waited on: the worker answers /wait with the ended record (no catalog reads in the CLI)
    where = {"catalog": env["WEFLOW_CATALOG"]}
    answered = worker_home.hand_over(hot.home, "/wait", {**where, "execution_id": done.id})
    assert answered is not None and answered[0] == 200, answered
    record = answered[1]["execution"]
    assert (record["id"], record["status"], [n["node"] for n in record["nodes"]]) == (
        done.id, "SUCCEEDED", [n.node for n in scope.catalog.execution(done.id).nodes]  # the list holds no nodes
    )  # fmt: skip
    assert worker_home.hand_over(hot.home, "/wait", {**where, "execution_id": "no-such-run"})[0] == 404  # type: ignore[index]
    assert worker_home.hand_over(hot.home, "/wait", where) == (400, {"error": "execution_id: required"})
    # listing it: every run ended, nothing to ask Prefect, so `weflow executions` imports neither Prefect nor the
    # engine (it imported both, ~2 s of CPU, for every listing)
    listing = weflow({**env, "PYTHONPROFILEIMPORTTIME": "1"}, "executions", "--format", "json")
    out, err = listing.communicate(timeout=120)
    assert listing.returncode == 0, err
    assert done.id in {e["id"] for e in json.loads(out)}
    imported = {line.rsplit("|", 1)[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    # history's modules are there (importlib's own imports are not in Python's import-time log), Prefect's are not
    assert "weflow.retention" in imported and not {"prefect", "polars", "weflow.compile.flow"} & imported

    failing = weflow(env, "run", "fails")
    out, err = failing.communicate(timeout=120)
    assert failing.returncode == 1, out
    assert err.startswith("error: run of fails FAILED: node 'bad'"), err

    local = weflow(env, "run", "pids", "--local")
    out, err = local.communicate(timeout=120)
    assert local.returncode == 0 and "SUCCEEDED" in out, err
    assert pl.read_csv(place / "pids.csv")["pid"].unique().to_list() == [local.pid]


def test_an_api_run_of_an_undeployed_workflow_goes_to_the_worker(scope: Scope, hot: Hot, place: Path) -> None:
    child = hot.child()
    queued = execution.submit("late", scope, Mode.API)
    assert queued.flow_run_id is None  # no deployment: handed to the worker, not to a child of this process
    done = execution.wait(queued.id, scope, timeout=120, poll=0.2)
    assert done.status is RunState.SUCCEEDED, done.error_message
    assert pl.read_csv(place / "late.csv")["pid"].unique().to_list() == [child]


def test_a_hand_off_without_the_token_is_refused_and_runs_nothing(scope: Scope, hot: Hot, env: dict[str, str]) -> None:
    hot.child()
    [record] = worker_home.live(hot.home)
    before = count(scope)
    body = {"workflow": "pids", "catalog": env["WEFLOW_CATALOG"], "organization": "acme", "user": "ada"}
    for headers in ({}, {"Authorization": "Bearer not-the-token"}):
        for path in ("/run", "/execute", "/wait"):
            answer = web.post(f"http://127.0.0.1:{record['port']}{path}", json=body, headers=headers, timeout=30)
            assert answer.status_code == 401, answer.text
            assert answer.json() == {"error": "hand-off refused: missing or wrong token"}
    token = hot.home / worker_home.FOLDER / worker_home.TOKEN
    assert token.stat().st_mode & 0o777 == 0o600
    signed = {"Authorization": f"Bearer {token.read_text().strip()}"}
    for bad in (b"[1]", b"not json", b'"a string"'):  # with the token, a body that is no JSON object: 400
        answer = web.post(f"http://127.0.0.1:{record['port']}/run", content=bad, headers=signed, timeout=30)
        assert answer.status_code == 400 and answer.json() == {"error": "hand-off body: expected a JSON object"}
    # a wake-up names its flow run by UUID only (it goes into the request line); a bad query is a plain wake-up
    with pytest.raises(ValueError):
        worker_home.wake(hot.home, "x HTTP/1.0\r\nX-Evil: 1")
    for query in ("?flow_run=not-a-uuid", "?flow_run=", ""):
        assert web.post(f"http://127.0.0.1:{record['port']}/wake{query}", timeout=30).status_code == 204
    unknown = weflow(env, "run", "nosuch")  # refused by the worker: the same one line as a local run's
    _, err = unknown.communicate(timeout=120)
    assert unknown.returncode == 1 and err.strip().splitlines() == ["error: no workflow named 'nosuch'"], err
    assert count(scope) == before


def test_a_failed_flow_run_creation_leaves_no_record(scope: Scope, hot: Hot) -> None:
    before = count(scope)
    with pytest.raises(DeployError):
        execution.submit("late", scope, Mode.API, queue=True)  # no deployment: refused, nothing kept
    assert count(scope) == before
    queued = execution.submit("pids", scope, Mode.API, queue=True)
    assert scope.catalog.execution(queued.id).flow_run_id == queued.flow_run_id is not None
    assert execution.wait(queued.id, scope, timeout=120, poll=0.2).status is RunState.SUCCEEDED


def test_with_no_worker_up_weflow_run_runs_here(scope: Scope, env: dict[str, str], place: Path) -> None:
    run = weflow({**env, "PREFECT_HOME": str(place / "no-workers")}, "run", "pids")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert out.splitlines()[0].startswith("no weflow worker runs for this Prefect home"), out
    assert "no weflow worker" not in err  # stderr keeps to the one line of an error
    assert "SUCCEEDED" in out
    assert pl.read_csv(place / "pids.csv")["pid"].unique().to_list() == [run.pid]


def test_a_flow_run_made_in_prefect_reaches_the_worker_through_its_event_stream(
    scope: Scope, hot: Hot, prefect_api: str, place: Path
) -> None:
    """The Prefect UI's Run button (here its API call, in this process): no weflow wake-up, and the worker's next
    poll is ~30 s away (env), so a run that ends well before that was dispatched on Prefect's Scheduled event."""
    child = hot.child()
    time.sleep(2)  # past the worker's first poll, which it makes as it starts
    before = {e.id for e in scope.catalog.executions(scope.user.organization_id) if e.workflow == "pids"}
    started = time.monotonic()
    with SyncPrefectClient(prefect_api) as client:
        flow_run = client.create_flow_run_from_deployment(client.read_deployment_by_name("run_workflow/pids").id)

    def ended() -> list[Execution]:
        return [e for e in scope.catalog.executions(scope.user.organization_id)
                if e.workflow == "pids" and e.id not in before and e.status.final]  # fmt: skip

    [done] = eventually(ended, 15)  # type: ignore[misc]
    assert time.monotonic() - started < 15 and done.flow_run_id == str(flow_run.id)
    assert done.status is RunState.SUCCEEDED and done.mode is Mode.MANUAL, done.error_message
    assert pl.read_csv(place / "pids.csv")["pid"].unique().to_list() == [child]  # in the worker


def test_a_wait_is_answered_slice_by_slice_and_a_stopping_worker_sends_the_client_to_the_catalog(
    tmp_path: Path,
) -> None:
    """The hand-off port's /wait (worker_serve): it asks the handoff again after each 202 (not ended yet), answers
    the first final answer, and answers 503 once the worker is stopping, so a recycling worker holds no thread for
    a run it will not see end (the client then reads the catalog). The handoff is a stand-in: this is the port."""
    secret = worker_home.token(tmp_path, create=True)
    worker = SimpleNamespace(home=tmp_path, draining=False)
    slices: list[str] = []

    def handoff(path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any], None]:
        slices.append(path)
        if payload["execution_id"] == "e-2" and len(slices) == 2:
            worker.draining = True  # the worker starts recycling while the client waits
        return (200, {"execution": {"id": payload["execution_id"]}}, None) if len(slices) == 3 else (202, {}, None)

    app = worker_serve._app(worker, lambda: None, handoff, None)  # type: ignore[arg-type]
    signed = {"Authorization": f"Bearer {secret}"}
    with TestClient(app) as client:
        answer = client.post("/wait", json={"execution_id": "e-1"}, headers=signed)
        assert (answer.status_code, answer.json(), slices) == (200, {"execution": {"id": "e-1"}}, ["/wait"] * 3)
        slices.clear()
        answer = client.post("/wait", json={"execution_id": "e-2"}, headers=signed)
        assert (answer.status_code, len(slices)) == (503, 2) and "stopping" in answer.json()["error"]
        answer = client.post("/wait", json={"execution_id": "e-3"}, headers=signed)  # asked while stopping
        assert answer.status_code == 503 and len(slices) == 2
        assert client.post("/wait", json={"execution_id": "e-3"}).status_code == 401  # no token, no wait


def test_a_wait_for_a_run_nobody_runs_holds_until_its_record_ends(scope: Scope, hot: Hot, env: dict[str, str]) -> None:
    """/wait on a live worker for a QUEUED record no worker will run: no answer while it is not final, then the
    record within a slice or two of another process ending it (read from the catalog, not the worker's batcher)."""
    hot.child()
    _, queued = new_execution(scope, "pids", mode=Mode.API, input_data=None, timeout=None)
    scope.catalog.insert_execution(queued)
    where = {"catalog": env["WEFLOW_CATALOG"], "execution_id": queued.id}
    assert worker_home.hand_over(hot.home, "/wait", where, timeout=3) is None  # still waiting: the client gave up
    ended = replace(queued, status=RunState.FAILED, finished_at=datetime.now(UTC), error_message="stopped by the test")
    waited: list[Any] = []
    waiter = threading.Thread(target=lambda: waited.append(worker_home.hand_over(hot.home, "/wait", where, timeout=60)))
    waiter.start()
    time.sleep(1)
    scope.catalog.finish_execution(ended, [], [])
    waiter.join(60)
    [(status, body)] = waited
    assert status == 200 and (body["execution"]["id"], body["execution"]["status"]) == (queued.id, "FAILED")


def test_with_no_worker_to_ask_the_client_reads_the_catalog_until_the_end(scope: Scope, env: dict[str, str]) -> None:
    """`weflow run`'s fallback when no worker answers /wait any more (stopped, recycling): it reads the record
    until it ends, and gives up with one clear error on a run that outlived its timeout."""
    catalog = Path(env["WEFLOW_CATALOG"])
    _, queued = new_execution(scope, "pids", mode=Mode.API, input_data=None, timeout=None)
    scope.catalog.insert_execution(queued)
    ended = replace(queued, status=RunState.FAILED, finished_at=datetime.now(UTC), error_message="stopped by the test")
    threading.Timer(0.5, lambda: scope.catalog.finish_execution(ended, [], [])).start()
    found = handoff.wait_for_end(catalog, queued.id)
    assert (found.id, found.status, found.error_message) == (queued.id, RunState.FAILED, "stopped by the test")
    _, stale = new_execution(scope, "pids", mode=Mode.API, input_data=None, timeout=1)
    scope.catalog.insert_execution(replace(stale, created_at=datetime.now(UTC) - timedelta(hours=1)))
    with pytest.raises(handoff.Outlived, match=rf"execution {stale.id} has not ended after 121 s"):
        handoff.wait_for_end(catalog, stale.id)
