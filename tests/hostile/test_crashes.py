"""Issue 14, item 5: a process that dies never leaves a record RUNNING; the API runs no workflow code itself.

Real parts: the session's Prefect server, the ``weflow`` console script in subprocesses, a real
`weflow serve` with its child processes, DuckDB catalog files.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import descendants, eventually, web, weflow_exe, zombie
from tests.test_api import create, wait_final
from weflow import leases, workflows
from weflow.catalog import Catalog
from weflow.core.entities import Execution, Lease, Mode, RunState
from weflow.workflows import Scope

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

DYING = {
    "name": "dying",
    "nodes": [
        {"name": "boom", "type": "python", "config": {"callable": "tests.resources.pynodes:die"}},
        {"name": "after", "type": "limit", "config": {"n": 1}},
    ],
    "connections": [{"from": "boom", "to": "after"}],
}


def slow(name: str, seconds: float) -> dict[str, Any]:
    return {
        "name": name,
        "nodes": [
            {
                "name": "nap",
                "type": "python",
                "config": {"callable": "tests.resources.pynodes:slow", "kwargs": {"seconds": seconds}},
            }
        ],
    }


def weflow(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([weflow_exe(), *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture
def env(prefect_api: str, cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "PREFECT_API_URL": prefect_api, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}


def apply(scope: Scope, doc: dict[str, Any]) -> None:
    """Store ``doc`` in this process, in the catalog and organization of ``env`` (the ``scope`` fixture's):
    a `weflow apply` process costs ~1 s of CPU, and the tests are about the runs and their readers."""
    workflows.apply(doc, scope)


def executions(env: dict[str, str], name: str) -> list[dict[str, Any]]:
    listed = weflow(env, "executions", name, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    return list(json.loads(listed.stdout))


def test_a_node_that_kills_its_interpreter_leaves_a_failed_record(env: dict[str, str], scope: Scope) -> None:
    apply(scope, DYING)
    ran = weflow(env, "run", "dying")
    assert ran.returncode != 0

    [found] = executions(env, "dying")  # `executions` repairs first: the run's process is gone
    assert found["status"] == "FAILED" and found["error_type"] == leases.DIED, found
    assert "crashed or was killed" in found["error_message"]
    catalog = Catalog(env["WEFLOW_CATALOG"])
    assert {n.node: n.status for n in catalog.execution(found["id"]).nodes} == {"boom": "FAILED", "after": "FAILED"}
    assert not catalog.leased(None), "a lease outlived its execution"


@pytest.mark.parametrize("reader", ["sync", "execution"])
def test_a_sigkilled_run_is_ended_by_the_next_reader(env: dict[str, str], scope: Scope, reader: str) -> None:
    apply(scope, slow("napping", 120))
    catalog = Catalog(env["WEFLOW_CATALOG"])
    proc = subprocess.Popen([weflow_exe(), "run", "napping"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        running = eventually(lambda: [e for e, _ in catalog.leased(None) if e.status is RunState.RUNNING], 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    [execution] = running  # type: ignore[misc]
    assert catalog.execution(execution.id).status is RunState.RUNNING  # what the kill leaves behind

    if reader == "execution":  # `weflow execution ID` alone ends it, before any sync
        shown = json.loads(weflow(env, "execution", execution.id, "--format", "json").stdout)
        assert (shown["status"], shown["error_type"]) == ("FAILED", leases.DIED), shown
        return
    synced = weflow(env, "sync")
    assert synced.returncode == 0 and f"{execution.id} napping: FAILED" in synced.stdout, synced.stdout
    found = catalog.execution(execution.id)
    assert (found.status, found.error_type) == ("FAILED", leases.DIED)
    assert weflow(env, "sync").stdout.startswith("0 execution(s)"), "repaired twice"


def test_leases_from_another_host_end_when_their_heartbeat_is_stale(env: dict[str, str], scope: Scope) -> None:
    apply(scope, slow("elsewhere", 1))
    catalog = Catalog(env["WEFLOW_CATALOG"])
    user = catalog.ensure_user("acme", "ada")
    workflow = catalog.workflow(user.organization_id, "elsewhere")
    now = datetime.now(UTC)
    base = Execution(
        id="", workflow_id=workflow.id, workflow="elsewhere", version=1, mode=Mode.API, user_id=user.id,
        status=RunState.RUNNING, started_at=now - timedelta(minutes=5),
    )  # fmt: skip
    here = leases.here()
    held = {
        "stale": Lease("another-host", os.getpid(), here.process_started, now - timedelta(seconds=100), 90),
        "fresh": Lease("another-host", 1, 1, now - timedelta(seconds=10), 90),
        "reused": Lease(socket.gethostname(), os.getpid(), here.process_started + 1, now, 90),  # pid of a newer process
        "alive": here,
        # a deployed run (it has a flow run) whose process is gone gets one beat for its worker to report to Prefect
        "deployed_just_died": Lease(socket.gethostname(), os.getpid(), here.process_started + 1, now, 90),
        "deployed_dead": Lease(socket.gethostname(), os.getpid(), 1, now - timedelta(seconds=31), 90),
    }
    ids = {}
    for case, lease in held.items():
        ids[case] = f"00000000-0000-4000-8000-{len(ids):012d}"
        flow_run = str(uuid.uuid4()) if case.startswith("deployed") else None
        catalog.insert_execution(replace(base, id=ids[case], flow_run_id=flow_run), lease=lease)

    synced = weflow(env, "sync")
    assert synced.returncode == 0, synced.stderr
    status = {case: catalog.execution(i).status for case, i in ids.items()}
    assert status == {
        "stale": "FAILED", "fresh": "RUNNING", "reused": "FAILED", "alive": "RUNNING",
        "deployed_just_died": "RUNNING", "deployed_dead": "FAILED",
    }  # fmt: skip
    assert f"{ids['stale']} elsewhere: FAILED" in synced.stdout


def _run_children(pid: int) -> set[int]:
    found = set()
    for child in descendants(pid):
        try:
            if b"weflow.child" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.add(child)
        except OSError:
            continue
    return found


def test_a_crashing_node_does_not_take_the_api_down_and_a_run_whose_api_was_killed_ends_failed(
    serve: Callable[..., Any], tmp_path: Path
) -> None:
    """A node that kills its interpreter, a cancel and a stop leave the API serving; SIGKILL of `weflow serve`:
    its child stops itself, and the next reader (the next `weflow serve`) ends the record.

    One test, two `weflow serve` in one folder (each start costs seconds of CPU): the killed one, then the one
    that reads its run and stops its own children when it shuts down.
    """
    fast_beats = {"WEFLOW_HEARTBEAT_SECONDS": "0.5"}
    with serve(env_extra=fast_beats) as api:
        acme, globex = api.client("acme"), api.client("globex")
        dying = create(acme, DYING)
        napping = create(acme, slow("napping", 120))
        other = create(globex, slow("quick", 0.1))

        started = acme.post(f"/workflows/{dying['id']}/executions", json={})
        assert started.status_code == 202, started.text
        ended = wait_final(acme, started.json()["id"], 60)
        assert ended["status"] == "FAILED" and ended["errorType"] == leases.DIED, ended
        assert ended["errorMessage"].startswith("the process running this execution ended")  # whoever saw it first
        assert {n["node"]: n["status"] for n in ended["nodes"]} == {"boom": "FAILED", "after": "FAILED"}

        assert web.get(f"{api.url}/health", timeout=5).status_code == 200  # the API outlived the crash
        assert globex.get("/workflows").status_code == 200
        quick = globex.post(f"/workflows/{other['id']}/executions", json={})
        assert wait_final(globex, quick.json()["id"], 60)["status"] == "SUCCEEDED"

        cancelled = acme.post(f"/workflows/{napping['id']}/executions", json={}).json()
        eventually(lambda: acme.get(f"/executions/{cancelled['id']}").json()["status"] == "RUNNING", 60)
        stopping = acme.post(f"/executions/{cancelled['id']}/cancel")
        assert stopping.status_code == 200, stopping.text  # the API stops the child it handed the run to
        ended = wait_final(acme, cancelled["id"], 30)
        assert ended["status"] == "CANCELLED", (ended["errorType"], ended["errorMessage"])
        assert {n["node"]: n["status"] for n in ended["nodes"]} == {"nap": "CANCELLED"}

        killed = acme.post(f"/workflows/{napping['id']}/executions", json={}).json()
        eventually(lambda: acme.get(f"/executions/{killed['id']}").json()["status"] == "RUNNING", 60)
        [server] = [p for p in descendants(os.getpid()) if _run_children(p)]
        orphans = _run_children(server)
        os.kill(server, signal.SIGKILL)
        eventually(lambda: not any(Path(f"/proc/{c}").exists() and not zombie(c) for c in orphans), 10)
    with serve(env_extra=fast_beats) as again:
        acme = again.client("acme")
        found = wait_final(acme, killed["id"], 10)
        assert found["status"] == "FAILED" and found["errorType"] == leases.DIED, found

        long = acme.post(f"/workflows/{napping['id']}/executions", json={}).json()
        eventually(lambda: acme.get(f"/executions/{long['id']}").json()["status"] == "RUNNING", 60)
        children = _run_children(os.getpid())
        assert children, "the run is not in a child process of the API"
    for child in children:  # the API stopped its children when it shut down
        assert not Path(f"/proc/{child}").exists() or zombie(child), f"child {child} outlived weflow serve"
    left = again.catalog.execution(long["id"])
    assert left.status is RunState.FAILED and "weflow stopped" in (left.error_message or ""), left
