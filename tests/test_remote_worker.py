"""Workers that never see the catalog: deployed runs load definitions from, and report to, the weflow API.

Real parts: the session's Prefect server, `weflow serve` (the API owning the catalog file) on a
free loopback port, two process workers in their own folders whose ``WEFLOW_CATALOG`` points at
an empty folder, configured only with the Prefect API URL, the deployments' weflow API URL and
an API key.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from weflow import deploy, execution, parse, server, workflows
from weflow.catalog import auth
from weflow.config import Settings
from weflow.core.entities import Execution, Mode, RunState
from weflow.workflows import Scope

from .conftest import REPO, weflow_exe
from .test_api import _free_port, _wait_healthy
from .test_crash import eventually

pytestmark = pytest.mark.usefixtures("prefect_api")

WORKFLOW = """
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


@pytest.fixture
def api_url(settings: Settings, prefect_api: str, tmp_path: Path) -> Iterator[str]:
    env = {
        **os.environ, "WEFLOW_CATALOG": str(settings.catalog), "PREFECT_API_URL": prefect_api,
        "WEFLOW_DATA_ROOTS": str(REPO), "WEFLOW_PYTHON_NODE_MODULES": "tests.resources.pynodes",
        "PYTHONPATH": str(REPO),
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


def test_workers_without_the_catalog_run_and_record_through_the_api(
    scope: Scope, api_url: str, prefect_api: str, tmp_path: Path
) -> None:
    key = auth.create_key(scope.catalog, scope.user)[1]
    for name in ("remote_a", "remote_b"):
        workflows.apply(parse(WORKFLOW.replace("NAME", name)), scope)
    deploy.deploy(scope, api_url=api_url)

    nowhere = tmp_path / "no-catalog-here"
    nowhere.mkdir()
    workers = []
    for i in range(2):
        home = tmp_path / f"worker-{i}"
        env = {
            "WEFLOW_API_KEY": key,
            "WEFLOW_CATALOG": str(nowhere / "weflow.duckdb"),
            "WEFLOW_DATA_ROOTS": str(REPO),
            "WEFLOW_RUNS_DIR": str(home / "runs"),
            "WEFLOW_PYTHON_NODE_MODULES": "tests.resources.pynodes",
            "PYTHONPATH": str(REPO),
        }
        pool, queue = deploy.work_pool(), deploy.execution_queue()
        workers.append(server.start_worker(prefect_api, pool, queue, home, f"remote-{i}", env))
    try:
        queued = [execution.submit(name, scope, Mode.API, queue=True) for name in ("remote_a", "remote_b") * 3]
        started = subprocess.run(  # one started on the Prefect side, as the UI would: the API makes its record
            [str(Path(sys.executable).with_name("prefect")), "deployment", "run", "run_workflow/remote_a"],
            env={**os.environ, "PREFECT_API_URL": prefect_api}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        ended = [execution.wait(e.id, scope, timeout=150) for e in queued]
        assert [e.status for e in ended] == [RunState.SUCCEEDED] * 6, [e.error_message for e in ended]
        for e in ended:
            nodes = {n.node: n for n in scope.catalog.execution(e.id).nodes}
            assert nodes["nap"].status is RunState.SUCCEEDED and nodes["paid"].rows_out
            assert e.flow_run_id and e.started_at and e.finished_at

        mine = {e.id for e in queued}

        def from_prefect() -> Execution | None:
            found = scope.catalog.executions(scope.user.organization_id, limit=50)
            return next((e for e in found if e.id not in mine and e.status.final), None)

        outside = eventually(from_prefect, 60)
        assert outside.status is RunState.SUCCEEDED and outside.mode is Mode.MANUAL
    finally:
        for w in workers:
            os.killpg(w.pid, signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)

    every = scope.catalog.executions(scope.user.organization_id, limit=100)
    assert len(every) == 7 and len({e.id for e in every}) == 7  # each recorded once
    assert not any(nowhere.iterdir()), "a worker touched the catalog location it was given"
    logs = "".join(p.read_text() for p in tmp_path.glob("worker-*/worker-*.log"))
    assert "remote-0" in logs or "remote-1" in logs
