"""The production topology on one machine: Prefect on PostgreSQL, the API owning the catalog, catalog-less workers.

Real parts: PostgreSQL from Debian's packages on a free loopback port (tests/postgres.py), a
Prefect server whose database is that PostgreSQL (checked in its tables), `weflow serve` owning
the catalog file, and Prefect process workers in their own folders whose ``WEFLOW_CATALOG``
points at an empty folder: they know only the Prefect API URL, the weflow API URL (in the
deployments) and an API key. One stack serves both behaviours: concurrent runs, then a worker killed
mid-run with SIGKILL.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import pytest
from prefect.client.orchestration import SyncPrefectClient

from weflow import deploy, execution, parse, workflows
from weflow.catalog import auth
from weflow.config import Settings
from weflow.core.entities import Execution, Mode, RunState
from weflow.prefect_gateway import server
from weflow.workflows import Scope

from . import postgres
from .conftest import REPO, descendants, eventually, web, weflow_exe
from .test_api import _free_port, _wait_healthy

pytestmark = pytest.mark.postgres

NAPPING = """
name: NAME
status: ACTIVE
settings: {max_concurrent_runs: 4}
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: paid, type: filter, config: {condition: "status = 'paid'"}}
  - {name: nap, type: python, config: {callable: "tests.resources.pynodes:whoami", kwargs: {seconds: 1}}}
connections:
  - {from: orders, to: paid}
  - {from: paid, to: nap}
"""

BROKEN = f"""
name: broken
status: ACTIVE
settings: {{max_concurrent_runs: 4}}
nodes:
  - {{name: orders, type: read_csv, config: {{path: data/samples/orders.csv}}}}
  - {{name: boom, type: python, config: {{callable: "tests.resources.pynodes:fail_if_exists",
      kwargs: {{marker: "{REPO / "pyproject.toml"}"}}}}}}
connections:
  - {{from: orders, to: boom}}
"""

DOOMED = """
name: doomed
status: ACTIVE
nodes:
  - {name: nap, type: python, config: {callable: "tests.resources.pynodes:slow", kwargs: {seconds: 600}}}
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    with postgres.running() as url:
        yield url


@pytest.fixture(scope="module")
def prefect_on_postgres(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("prefect-on-postgres")
    found = server.start(
        home, port=0, timeout=180, quiet=True, env_extra={"PREFECT_API_DATABASE_CONNECTION_URL": database}
    )
    yield found.api_url
    server.stop(home)


@pytest.fixture
def prefect(prefect_on_postgres: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("PREFECT_API_URL", prefect_on_postgres)
    return prefect_on_postgres


@pytest.fixture
def api_url(settings: Settings, prefect: str, tmp_path: Path) -> Iterator[str]:
    """`weflow serve`, the one process that opens the catalog file."""
    env = {
        **os.environ, "WEFLOW_CATALOG": str(settings.catalog), "PREFECT_API_URL": prefect,
        "WEFLOW_DATA_ROOTS": str(REPO), "WEFLOW_PYTHON_NODE_MODULES": "tests.resources.pynodes",
        "WEFLOW_SHARED_DATA_ROOTS": "true", "PYTHONPATH": str(REPO),
    }  # fmt: skip
    port = _free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [weflow_exe(), "serve", "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc, log)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def start_workers(count: int, prefect: str, key: str, tmp_path: Path, nowhere: Path) -> list[subprocess.Popen[bytes]]:
    """Process workers in folders of their own, configured only with URLs and a key; no catalog."""
    workers = []
    for i in range(count):
        home = tmp_path / f"worker-{i}"
        env = {
            "WEFLOW_API_KEY": key,
            "WEFLOW_CATALOG": str(nowhere / "weflow.duckdb"),
            "WEFLOW_DATA_ROOTS": str(REPO),
            "WEFLOW_RUNS_DIR": str(home / "runs"),
            "WEFLOW_PYTHON_NODE_MODULES": "tests.resources.pynodes",
            "PYTHONPATH": str(REPO),
        }
        workers.append(
            server.start_worker(prefect, deploy.work_pool(), deploy.execution_queue(), home, f"remote-{i}", env)
        )
    return workers


def stop(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        if w.poll() is None:
            os.killpg(w.pid, signal.SIGTERM)
    for w in workers:
        w.wait(timeout=30)


def psql(database: str, sql: str) -> str:
    """A query answered by the PostgreSQL that Prefect's server writes to."""
    url = urlparse(database.replace("+asyncpg", ""))
    bins = postgres.bin_dir()
    assert bins is not None
    psql_exe = bins / "psql"
    found = subprocess.run(
        [str(psql_exe), "-h", url.hostname or "", "-p", str(url.port), "-U", "postgres", "-d", url.path.lstrip("/"),
         "-At", "-c", sql],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return found.stdout.strip()


def run_from_prefect(prefect: str, workflow: str) -> None:
    """A flow run of the workflow's deployment made on the Prefect side, as `prefect deployment run` makes one
    (Prefect's client in this process, retrying Prefect's 503s as the command does)."""
    with SyncPrefectClient(prefect) as client:
        client.create_flow_run_from_deployment(client.read_deployment_by_name(f"run_workflow/{workflow}").id)


def running_flow_run(worker: subprocess.Popen[bytes], flow_run_id: str) -> bool:
    """Whether one of the worker's descendant processes is the flow run's (Prefect names it in their environment)."""
    for pid in descendants(worker.pid):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if flow_run_id.encode() in env:
            return True
    return False


def test_catalogless_workers_record_every_concurrent_run_once_and_a_killed_one_leaves_its_run_crashed(
    scope: Scope, api_url: str, prefect: str, database: str, tmp_path: Path, cli_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """One stack (`weflow serve`, two catalog-less process workers) for both behaviours: concurrent runs from weflow
    and from Prefect each recorded once; then a worker killed with SIGKILL mid-run leaves its run CRASHED, not RUNNING.
    """
    key = auth.create_key(scope.catalog, scope.user)[1]
    for name in ("remote_a", "remote_b"):
        workflows.apply(parse(NAPPING.replace("NAME", name)), scope)
    workflows.apply(parse(BROKEN), scope)
    workflows.apply(parse(DOOMED), scope)
    deploy.deploy(scope, api_url=api_url)

    nowhere = tmp_path / "no-catalog-here"
    nowhere.mkdir()
    workers = start_workers(2, prefect, key, tmp_path, nowhere)
    try:
        names = ["remote_a", "remote_b", "broken", "remote_a"]
        queued = [execution.submit(name, scope, Mode.API, queue=True) for name in names]
        run_from_prefect(prefect, "remote_a")  # one started on the Prefect side: the API makes its record
        ended = [execution.wait(e.id, scope, timeout=180) for e in queued]
        expected = [RunState.FAILED if n == "broken" else RunState.SUCCEEDED for n in names]
        assert [e.status for e in ended] == expected, [e.error_message for e in ended]
        for name, e in zip(names, ended, strict=True):
            nodes = {n.node: n for n in scope.catalog.execution(e.id).nodes}
            assert e.flow_run_id and e.started_at and e.finished_at
            if name == "broken":
                assert "failing on purpose" in (e.error_message or "")
                assert nodes["boom"].status is RunState.FAILED and nodes["orders"].status is RunState.SUCCEEDED
            else:
                assert nodes["nap"].status is RunState.SUCCEEDED and nodes["paid"].rows_out

        mine = {e.id for e in queued}

        def from_prefect() -> Execution | None:
            found = scope.catalog.executions(scope.user.organization_id, limit=50)
            return next((e for e in found if e.id not in mine and e.status.final), None)

        outside = eventually(from_prefect, 60)
        assert isinstance(outside, Execution)
        assert outside.status is RunState.SUCCEEDED and outside.mode is Mode.MANUAL

        # the catalog record ends before the flow process reports its final state: wait for Prefect
        # before a worker is killed (killing it kills its flow processes)
        def prefect_final() -> bool:
            states = [web.get(f"{prefect}/flow_runs/{e.flow_run_id}").json()["state_type"] for e in [*ended, outside]]
            return all(s in ("COMPLETED", "FAILED") for s in states)

        eventually(prefect_final, 60)

        every = scope.catalog.executions(scope.user.organization_id, limit=100)
        assert len(every) == 5 and len({e.id for e in every}) == 5  # each recorded once
        assert {e.flow_run_id for e in every} == {e.flow_run_id for e in [*ended, outside]}
        # Prefect's own record is in PostgreSQL: the same five flow runs, in the same final states
        rows = psql(database, "SELECT id, state_type FROM flow_run WHERE state_type IS NOT NULL").splitlines()
        in_postgres = dict(line.split("|") for line in rows)
        for e in every:
            assert in_postgres[str(e.flow_run_id)] == ("COMPLETED" if e.status is RunState.SUCCEEDED else "FAILED")
        logs = [p.read_text() for p in tmp_path.glob("worker-*/worker-*.log")]
        assert len(logs) == 2 and all("Submitting flow run" in text or "Worker" in text for text in logs)

        # Silence after the first heartbeat (sent as the flow starts) that marks the run CRASHED: weflow's floor
        # (10 s), under Prefect's 30 s heartbeat period, as the run is killed ~2 s after it started. Set only now:
        # the runs above may take longer than that between their first heartbeat and their end on a busy machine.
        monkeypatch.setenv("WEFLOW_CRASH_AFTER_SECONDS", "10")
        deploy.deploy(scope, api_url=api_url)
        automations = web.post(f"{prefect}/automations/filter", json={}).json()
        assert [a["trigger"]["within"] for a in automations if a["name"] == deploy.CRASH_AUTOMATION] == [10.0]
        doomed = execution.submit("doomed", scope, Mode.API, queue=True)
        eventually(lambda: scope.catalog.execution(doomed.id).status is RunState.RUNNING, 180)
        time.sleep(2)  # the first heartbeat goes out as the flow starts
        flow_run_id = str(doomed.flow_run_id)
        [worker] = eventually(lambda: [w for w in workers if running_flow_run(w, flow_run_id)], 60)  # type: ignore[misc]
        victims = {worker.pid, *descendants(worker.pid)}
        # the worker first: killed after its flow process, it could still report the crash itself
        # ("Process exited with status code: -9") before the heartbeat automation has to
        for pid in sorted(victims, key=lambda pid: pid != worker.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.wait(timeout=30)
    finally:
        stop(workers)
    assert len(victims) >= 2, "the flow run should have had its own process under the worker"
    assert not any(nowhere.iterdir()), "a worker touched the catalog location it was given"
    assert scope.catalog.execution(doomed.id).status is RunState.RUNNING  # nothing left alive to say otherwise

    url = f"{prefect}/flow_runs/{flow_run_id}"
    eventually(lambda: web.get(url).json()["state_type"] == "CRASHED", seconds=150)
    assert "no heartbeat" in web.get(url).json()["state"]["message"]

    crashed = execution.wait(doomed.id, scope, timeout=60)  # syncs the catalog mirror from Prefect
    assert crashed.status is RunState.FAILED
    assert crashed.error_type == "PrefectCrashed"
    assert all(n.status is RunState.FAILED for n in crashed.nodes), crashed.nodes
    listed = subprocess.run(
        [weflow_exe(), "executions", "doomed", "--format", "json"], capture_output=True, text=True,
        env={**cli_env, "PREFECT_API_URL": prefect, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert '"FAILED"' in listed.stdout and '"RUNNING"' not in listed.stdout
