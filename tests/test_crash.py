"""A worker killed mid-run: the run ends CRASHED in Prefect and FAILED in the catalog, never stuck RUNNING.

Real parts: the session's Prefect server (its triggers service evaluates weflow's crash-detection
automation), a real process worker killed with SIGKILL together with the flow process it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from weflow import deploy, execution, parse, server, workflows
from weflow.core.entities import Mode, RunState
from weflow.workflows import Scope

from .conftest import weflow_exe

pytestmark = pytest.mark.usefixtures("prefect_api")

DOOMED = """
name: doomed
status: ACTIVE
nodes:
  - {name: nap, type: python, config: {callable: "tests.resources.pynodes:slow", kwargs: {seconds: 600}}}
"""


def eventually(check: Callable[[], object], seconds: float) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def descendants(pid: int) -> set[int]:
    """Every process started (transitively) by ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, frontier = set(), [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.add(child)
            frontier.append(child)
    return found


def test_a_killed_worker_leaves_the_run_crashed_not_running(
    scope: Scope, prefect_api: str, tmp_path: Path, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEFLOW_CRASH_AFTER_SECONDS", "45")  # 30 s heartbeats (Prefect's minimum) + slack
    workflows.apply(parse(DOOMED), scope)
    deploy.deploy(scope)
    automations = httpx.post(f"{prefect_api}/automations/filter", json={}).json()
    assert [a["trigger"]["within"] for a in automations if a["name"] == deploy.CRASH_AUTOMATION] == [45.0]

    worker = server.start_worker(prefect_api, deploy.work_pool(), deploy.execution_queue(), tmp_path, name="doomed")
    try:
        queued = execution.submit("doomed", scope, Mode.API, queue=True)
        eventually(lambda: scope.catalog.execution(queued.id).status is RunState.RUNNING, 180)
        time.sleep(2)  # the first heartbeat goes out as the flow starts
    finally:
        victims = {worker.pid, *descendants(worker.pid)}
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker.wait(timeout=30)
    assert len(victims) >= 2, "the flow run should have had its own process under the worker"
    assert scope.catalog.execution(queued.id).status is RunState.RUNNING  # nothing left alive to say otherwise

    url = f"{prefect_api}/flow_runs/{queued.flow_run_id}"
    eventually(lambda: httpx.get(url).json()["state_type"] == "CRASHED", seconds=150)
    assert "no heartbeat" in httpx.get(url).json()["state"]["message"]

    ended = execution.wait(queued.id, scope, timeout=60)  # syncs the catalog mirror from Prefect
    assert ended.status is RunState.FAILED
    assert ended.error_type == "PrefectCrashed"
    assert all(n.status is RunState.FAILED for n in ended.nodes), ended.nodes
    listed = subprocess.run(
        [weflow_exe(), "executions", "doomed", "--format", "json"], capture_output=True, text=True,
        env={**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}, check=False,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    assert '"FAILED"' in listed.stdout and '"RUNNING"' not in listed.stdout
