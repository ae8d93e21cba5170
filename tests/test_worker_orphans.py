"""A `weflow worker` killed whole (its supervisor and its child, `kill -9`) leaves its runs in flight to the next
`weflow worker` started on its Prefect home: CRASHED in Prefect, FAILED in the catalog, never RUNNING for good.

A run in the worker's threads sends its first heartbeat only half a heartbeat period in (30 s at least), so Prefect's
crash detection does not watch a run killed sooner; its worker's record in the home still lists it.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.conftest import eventually, web
from tests.stack import Hot, running_worker, stack_env, stack_scope
from weflow import deploy, execution, parse, workflows
from weflow.core.entities import Mode, RunState
from weflow.prefect_gateway import supervisor, worker_home

pytestmark = pytest.mark.usefixtures("prefect_api")

NAP = """
name: naps
status: ACTIVE
nodes:
  - {name: nap, type: python, config: {callable: "tests.resources.pynodes:slow", kwargs: {seconds: 60}}}
"""
MODULES = ("tests.resources.pynodes",)


def test_runs_of_a_worker_killed_with_its_supervisor_end_when_the_next_worker_starts(
    prefect_api: str, tmp_path: Path
) -> None:
    env = stack_env(prefect_api, tmp_path, MODULES)
    home = tmp_path / "home"
    with stack_scope(tmp_path, MODULES) as scope:
        workflows.apply(parse(NAP), scope)
        deploy.deploy(scope)
        first = Hot(home, env, "--limit", "2")
        try:
            child = first.child()
        except BaseException:
            first.stop()
            raise
        try:
            queued = execution.submit("naps", scope, Mode.API, queue=True)
            eventually(lambda: scope.catalog.execution(queued.id).status is RunState.RUNNING, 60)
            flow_run = str(scope.catalog.execution(queued.id).flow_run_id)
            assert eventually(lambda: flow_run in (worker_home.read(home, child) or {}).get("in_flight", []), 30)
        finally:  # the whole tree at once: the supervisor stopped first, so it cannot end the child's runs itself
            os.kill(first.proc.pid, signal.SIGSTOP)
            os.kill(child, signal.SIGKILL)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=30)
        eventually(lambda: not supervisor.alive(child), 30)
        url = f"{prefect_api}/flow_runs/{flow_run}"
        assert web.get(url).json()["state_type"] == "RUNNING"  # nothing left alive to say otherwise
        assert scope.catalog.execution(queued.id).status is RunState.RUNNING

        with running_worker(home, env, "--limit", "1") as second:
            done = execution.wait(queued.id, scope, timeout=90)
            assert done.status is RunState.FAILED and done.error_type == "PrefectCrashed", done
            crashed = web.get(url).json()
            assert crashed["state_type"] == "CRASHED"
            assert f"(pid {child}) died with its supervisor" in crashed["state"]["message"]
            assert all(n.status is RunState.FAILED for n in done.nodes), done.nodes
            assert eventually(lambda: f"worker {child} died with its supervisor" in second.log.read_text(), 30)
            assert worker_home.read(home, child) is None  # swept once (after the catalog synced)
            assert second.child() != child  # its own child serves the home
