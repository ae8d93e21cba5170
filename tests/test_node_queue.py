"""The node queue: steps of a workflow with ``settings.node_queue`` run on weflow node workers.

Real parts: the session's Prefect server, two ``weflow node-worker`` processes (Prefect task
workers) serving a queue named by ``WORKFLOW_NODE_QUEUE``, frames handed over as Parquet files.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from polars.testing import assert_frame_equal

from weflow import execution, parse, workflows
from weflow.core.entities import RunState
from weflow.engine import node_worker
from weflow.engine.remote import result_of
from weflow.prefect_gateway import server
from weflow.workflows import Scope

from .conftest import REPO

pytestmark = pytest.mark.usefixtures("prefect_api")

FANOUT = """
name: spread
settings: {node_queue: true}
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: paid, type: filter, config: {condition: "status = 'paid'"}}
  - name: left
    type: python
    config: {callable: "tests.resources.pynodes:whoami", kwargs: {seconds: 2}}
  - name: right
    type: python
    config: {callable: "tests.resources.pynodes:whoami", kwargs: {seconds: 2}}
  - {name: by_region, type: aggregate, config: {by: [region, pid], aggs: {revenue: "sum(amount)"}}}
  - {name: by_status, type: aggregate, config: {by: [status, pid], aggs: {orders: "count(order_id)"}}}
connections:
  - {from: orders, to: paid}
  - {from: paid, to: left}
  - {from: paid, to: right}
  - {from: left, to: by_region}
  - {from: right, to: by_status}
"""


@pytest.fixture(scope="module")
def node_queue(prefect_api: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[int]]]:
    """Two node workers on a queue of this module's own (Prefect hands each step to one of them)."""
    queue = f"test-nodes-{uuid.uuid4().hex[:6]}"
    home = tmp_path_factory.mktemp("node-workers")
    env = {
        "WEFLOW_DATA_ROOTS": str(REPO),
        "WEFLOW_PYTHON_NODE_MODULES": "tests.resources.pynodes",
        "PYTHONPATH": str(REPO),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        workers = [server.start_node_worker(prefect_api, queue, home, limit=1) for _ in range(2)]
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    yield queue, [w.pid for w in workers]
    for w in workers:
        os.killpg(w.pid, signal.SIGTERM)
    stuck = []
    for w in workers:
        try:
            w.wait(timeout=30)
        except subprocess.TimeoutExpired:  # reported below, but not left running
            os.killpg(w.pid, signal.SIGKILL)
            w.wait()
            stuck.append(w.pid)
    assert not stuck, f"node workers {stuck} did not stop within 30 s of SIGTERM"


def test_sigterm_stops_a_node_worker_cleanly(prefect_api: str, tmp_path: Path) -> None:
    """SIGTERM (what `weflow up` and service managers send) stops a node worker: exit 0 and "stopped".

    Before: Prefect's handler raised its stop exception out of the signal handler, through the CLI: "error:
    StopTaskWorker" and exit 1 (and once, in a test run, no exit at all 8 minutes later).
    """
    queue = f"stop-{uuid.uuid4().hex[:6]}"
    worker = server.start_node_worker(prefect_api, queue, tmp_path, limit=1)
    log = tmp_path / f"node-worker-{queue}.log"
    try:
        for _ in range(600):  # serving: subscribed to its queue's task runs
            if "Subscribing to runs" in (log.read_text() if log.exists() else ""):
                break
            time.sleep(0.1)
        os.killpg(worker.pid, signal.SIGTERM)
        code = worker.wait(timeout=node_worker.STOP_GRACE + 20)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
    text = log.read_text()
    assert "Subscribing to runs" in text, text
    assert code == 0, text
    assert text.rstrip().endswith("stopped") and "error" not in text.lower(), text


def test_steps_run_on_the_node_workers_and_give_the_in_process_answer(
    scope: Scope, node_queue: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, pids = node_queue
    monkeypatch.setenv("WORKFLOW_NODE_QUEUE", queue)
    workflows.apply(parse(FANOUT), scope)
    queued = execution.run("spread", scope)
    assert queued.ok, queued.execution.error_message
    definition = parse(FANOUT.replace("node_queue: true", "node_queue: false"))
    in_process = execution.execute(definition, queued.execution, node_queue=False)
    assert in_process.ok

    ran_on = set(queued["by_region"]["pid"].to_list()) | set(queued["by_status"]["pid"].to_list())
    assert os.getpid() not in ran_on
    assert ran_on <= set(pids), "every python node should have run in a node worker"
    for name, keys in (("by_region", ["region"]), ("by_status", ["status"])):
        expected = in_process[name].drop("pid").sort(keys)
        assert_frame_equal(queued[name].drop("pid").sort(keys), expected)

    recorded = {n.node: n for n in scope.catalog.execution(queued.execution.id).nodes}
    assert {n.status for n in recorded.values()} == {RunState.SUCCEEDED}
    assert recorded["by_region"].rows_out == queued["by_region"].height
    assert recorded["paid"].group == "paid" and recorded["orders"].group == "paid"  # fused on the worker
    assert Path(recorded["left"].output_path or "").is_file()


def test_a_failing_node_on_the_node_queue_fails_the_run_naming_it(
    scope: Scope, node_queue: tuple[str, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORKFLOW_NODE_QUEUE", node_queue[0])
    broken = FANOUT.replace(
        'pynodes:whoami", kwargs: {seconds: 2}}\n  - name: right', 'pynodes:not_a_frame"}\n  - name: right'
    )
    workflows.apply(parse(broken.replace("name: spread", "name: spread_broken")), scope)
    result = execution.run("spread_broken", scope)
    assert result.execution.status is RunState.FAILED
    assert result.execution.error_node == "left"
    assert "left" in (result.execution.error_message or "")
    nodes = {n.node: n.status for n in result.execution.nodes}
    assert nodes["left"] is RunState.FAILED and nodes["by_region"] is RunState.SKIPPED
    assert nodes["by_status"] is RunState.SUCCEEDED


class _Unrecorded:
    """A step's future whose task run the server shows without a state for its first ``reads`` reads (Prefect's
    server records task-run states from events in batches: under load, a while after the run exists)."""

    def __init__(self, reads: int) -> None:
        self.reads, self.task_run_id = reads, uuid.uuid4()

    async def result_async(self) -> str:
        if self.reads > 0:
            self.reads -= 1
            raise RuntimeError(f"Task run {self.task_run_id} has no state which means it hasn't started yet.")
        return "the step's outcome"


def test_a_step_whose_task_run_shows_no_state_yet_is_waited_for_not_failed() -> None:
    assert asyncio.run(result_of(_Unrecorded(reads=3), patience=30)) == "the step's outcome"  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="has no state"):  # still never recorded after its patience: Prefect's error
        asyncio.run(result_of(_Unrecorded(reads=1000), patience=0.5))  # type: ignore[arg-type]
