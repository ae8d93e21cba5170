"""Batched recording on real catalog files: the same rows as one session per record, a crash between batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from weflow import leases, parse, workflows
from weflow.catalog import Catalog
from weflow.catalog.batch import Batch, Begun, Finished, write
from weflow.catalog.batcher import ENDS, Batcher
from weflow.core.entities import Compensation, Execution, Mode, NodeExecution, RunState
from weflow.errors import ConflictError
from weflow.execution import record
from weflow.execution.history import sync
from weflow.execution.record import CatalogRecorder, report_created, report_finished, report_running
from weflow.workflows import Scope

from .conftest import REPO
from .test_benchmarks import smoke

SALES = (REPO / "data/workflows/daily_sales.yaml").read_text()
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _run(scope: Scope, n: int, status: RunState = RunState.SUCCEEDED, **extra: Any) -> tuple[Execution, Execution]:
    """A run's RUNNING record and its end (started ``n`` minutes after T0) of the scope's daily_sales."""
    return _pair(workflows.get("daily_sales", scope).id, scope.user.id, n, status, **extra)


def _pair(
    workflow_id: int, user_id: int, n: int, status: RunState = RunState.SUCCEEDED, **extra: Any
) -> tuple[Execution, Execution]:
    started = T0 + timedelta(minutes=n)
    running = Execution(
        id=f"run-{n:03d}-{uuid.uuid4().hex[:6]}", workflow_id=workflow_id, workflow="daily_sales", version=1,
        mode=Mode.MANUAL, user_id=user_id, status=RunState.RUNNING, created_at=started, started_at=started,
        input_data={"n": n},
    )  # fmt: skip
    ok = status is RunState.SUCCEEDED
    final = replace(
        running, status=status, finished_at=started + timedelta(seconds=2), duration_ms=2000.0 + n,
        error_type=None if ok else "ValueError", error_message=None if ok else "bad", error_node=None if ok else "b",
        output={"b": {"rows": n}}, **extra,
    )  # fmt: skip
    return running, final


def _nodes(final: Execution) -> tuple[NodeExecution, ...]:
    ok = final.status is RunState.SUCCEEDED
    return (
        NodeExecution(execution_id=final.id, node="a", status=RunState.SUCCEEDED, attempts=1, rows_out=10,
                      started_at=final.started_at, finished_at=final.finished_at, duration_ms=1.0),
        NodeExecution(execution_id=final.id, node="b", status=RunState.SUCCEEDED if ok else RunState.FAILED,
                      attempts=2, rows_in=10, rows_out=5 if ok else None, error=None if ok else "bad", group="g"),
    )  # fmt: skip


FAILURES = ({"node": "b", "column": "amount", "check": "greater_than(0)", "failure_case": "-1", "index": 3},)
UNDONE = (Compensation(node="b", action="delete", status="DONE", detail="x", at=T0),)


def _dump(path: Path) -> dict[str, Any]:
    """Every recorded row, comparable between two catalogs (ids, counters, metrics)."""
    tables = {
        "executions": "SELECT * EXCLUDE (workflow_id) FROM workflow_executions ORDER BY id",
        "nodes": "SELECT * FROM node_executions ORDER BY execution_id, node",
        "failures": "SELECT * FROM contract_failures ORDER BY execution_id",
        "compensations": "SELECT * FROM compensations ORDER BY execution_id, seq",
        "resumes": "SELECT * FROM execution_resumes ORDER BY execution_id",
        "leases": "SELECT execution_id, pid FROM execution_leases ORDER BY execution_id",
        "workflows": "SELECT name, execution_count, last_executed_at FROM workflows ORDER BY name",
    }
    with duckdb.connect(str(path), read_only=True) as con:
        return {name: con.execute(sql).fetchall() for name, sql in tables.items()}


def _scope(tmp_path: Path, name: str) -> Scope:
    scope = Scope.current(Catalog(tmp_path / name / "weflow.duckdb"))
    workflows.apply(parse(SALES), scope)
    return scope


def test_a_batch_writes_what_one_session_per_record_writes(settings: Any, tmp_path: Path) -> None:
    one, many = _scope(tmp_path, "one"), _scope(tmp_path, "many")
    lease = leases.here()
    plans: list[tuple[str, Execution, Execution, dict[str, Any]]] = []
    for n in range(6):
        status = RunState.FAILED if n % 3 == 2 else RunState.SUCCEEDED
        extra: dict[str, Any] = {"compensations": UNDONE} if n == 5 else {}
        running, final = _run(one, n, status, **extra)
        plans.append(("begun+ended" if n < 4 else "begun", running, final, extra))
    queued_running, queued_final = _run(one, 9)
    resumed_running, resumed_final = _run(one, 10)
    resumed_running = replace(resumed_running, resumed_from=plans[0][1].id)
    for scope in (one, many):  # the QUEUED record a submit wrote before
        scope.catalog.insert_execution(replace(queued_running, status=RunState.QUEUED, started_at=None))
    # one session per record, as CatalogRecorder without a batcher writes them
    for _, running, _, _ in plans:
        one.catalog.insert_execution(running, lease=lease)
    one.catalog.insert_execution(resumed_running, "b", lease=lease)
    one.catalog.update_execution(queued_running.id, lease=lease, status=RunState.RUNNING,
                                 started_at=queued_running.started_at)  # fmt: skip
    for kind, _, final, _ in plans:
        if kind == "begun+ended":
            one.catalog.finish_execution(final, _nodes(final), list(FAILURES) if final.status != "SUCCEEDED" else [])
    one.catalog.finish_execution(queued_final, _nodes(queued_final))
    # the same in two batches: the first with four runs begun and ended in it, the second ending the others
    first, second = Batch(), Batch()
    for kind, running, final, _ in plans:
        first.add(Begun(running, lease=lease))
        if kind == "begun+ended":
            first.add(Finished(final, _nodes(final), FAILURES if final.status != "SUCCEEDED" else ()))
    first.add(Begun(resumed_running, from_node="b", lease=lease))
    first.add(Begun(queued_running, queued=True, lease=lease))
    second.add(Finished(queued_final, _nodes(queued_final)))
    assert write(many.catalog, first) == set() and write(many.catalog, second) == set()
    assert _dump(many.catalog.path) == _dump(one.catalog.path)
    org = one.user.organization_id
    assert many.catalog.stats(org) == one.catalog.stats(org)
    # the rest ended later, one batch; a report of an end that was already written is skipped
    rest = Batch()
    for kind, _, final, _ in plans:
        if kind == "begun":
            one.catalog.finish_execution(final, _nodes(final), [])
            rest.add(Finished(final, _nodes(final)))
    one.catalog.finish_execution(resumed_final, _nodes(resumed_final))
    rest.add(Finished(resumed_final, _nodes(resumed_final)))
    rest.add(Finished(replace(queued_final, status=RunState.FAILED), only_if_unfinished=True))
    assert write(many.catalog, rest) == {queued_final.id}
    assert _dump(many.catalog.path) == _dump(one.catalog.path)
    assert many.catalog.stats(org) == one.catalog.stats(org)
    assert many.catalog.execution(plans[5][1].id).compensations == UNDONE


def test_the_batcher_writes_within_its_delay_waits_when_asked_and_fails_a_bad_record_alone(
    settings: Any, tmp_path: Path
) -> None:
    scope = _scope(tmp_path, "c")
    batcher = Batcher(scope.catalog, max_delay=0.2)
    try:
        recorder = CatalogRecorder(scope, batcher)
        definition = workflows.version("daily_sales", scope).definition
        running, final = _run(scope, 1)
        recorder.begin(running, queued=False)  # a new record: written before begin returns
        assert scope.catalog.execution(running.id).status is RunState.RUNNING
        recorder.finish(final, list(_nodes(final)), [], definition)  # returns at once, written within 0.2 s
        assert scope.catalog.execution(running.id).status is RunState.RUNNING
        deadline = time.monotonic() + 30
        while scope.catalog.execution(running.id).status is RunState.RUNNING and time.monotonic() < deadline:
            time.sleep(0.05)
        assert scope.catalog.execution(running.id).status is RunState.SUCCEEDED
        # a duplicate insert among good records: its waiter hears the error, the others are written
        others = [_run(scope, n) for n in (2, 3)]
        for r, f in others:
            batcher.put(Begun(r))
            batcher.put(Finished(f, _nodes(f)))
        with pytest.raises(duckdb.ConstraintException, match="run-001"):
            batcher.put(Begun(running), wait=True)
        batcher.flush()
        assert [scope.catalog.execution(r.id).status for r, _ in others] == [RunState.SUCCEEDED] * 2
        assert not batcher.put(Finished(replace(final, status=RunState.FAILED), only_if_unfinished=True), wait=True)
    finally:
        batcher.close()
    assert workflows.get("daily_sales", scope).execution_count == 3
    with pytest.raises(RuntimeError, match="closed"):
        batcher.put(Begun(running))


def test_a_short_queued_run_is_written_once_whole_and_a_long_one_shows_running_after_the_linger(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's run of a QUEUED record: its move to RUNNING waits (``RUNNING_LINGER``) for its end, so a short
    run goes QUEUED -> final in one write, with its start and no lease left; a longer one shows RUNNING, leased."""
    monkeypatch.setattr(record, "RUNNING_LINGER", 2.0)  # long enough that the reads below come first
    scope = _scope(tmp_path, "q")
    batcher = Batcher(scope.catalog)  # the default 10 ms delay for everything else
    try:
        recorder = CatalogRecorder(scope, batcher)
        definition = workflows.version("daily_sales", scope).definition
        short, short_end = _run(scope, 1)
        long, _ = _run(scope, 2)
        for run in (short, long):  # recorded QUEUED by a submitter (a waited-for insert flushes what lingers)
            batcher.put(Begun(replace(run, status=RunState.QUEUED, started_at=None)), wait=True)
        for run in (short, long):
            recorder.begin(run, queued=True)
        time.sleep(0.3)  # well past the batcher's delay: without the linger both would be RUNNING by now
        assert [scope.catalog.execution(r.id).status for r in (short, long)] == [RunState.QUEUED] * 2
        recorder.finish(short_end, list(_nodes(short_end)), [], definition)
        assert ENDS.wait(short.id, 30)  # its end was due first: written with both begins
        done = scope.catalog.execution(short.id)
        assert (done.status, done.started_at, len(done.nodes)) == (RunState.SUCCEEDED, short.started_at, 2)
        running = scope.catalog.execution(long.id)
        assert (running.status, running.started_at) == (RunState.RUNNING, long.started_at)
        assert [e.id for e, _ in scope.catalog.leased(scope.user.organization_id)] == [long.id]  # none for the ended
    finally:
        batcher.close()


def test_a_waiter_in_the_process_is_told_of_an_end_once_its_batch_is_committed(settings: Any, tmp_path: Path) -> None:
    """What a weflow worker's /wait rests on: no word before the commit, word at once after it, late waiters too."""
    scope = _scope(tmp_path, "e")
    batcher = Batcher(scope.catalog, max_delay=3600)
    try:
        running, final = _run(scope, 1)
        batcher.put(Begun(running))
        batcher.put(Finished(final, _nodes(final)))
        assert not ENDS.wait(final.id, 0.3)  # held for its batch: not written, nobody told
        threading.Timer(0.2, batcher.flush).start()
        assert ENDS.wait(final.id, 60)
        assert scope.catalog.execution(final.id).status is RunState.SUCCEEDED  # told only once it is readable
        assert ENDS.wait(final.id, 0)  # a waiter that comes after the commit is told at once
        other, _ = _run(scope, 2)
        batcher.put(Begun(other), wait=True)
        assert not ENDS.wait(other.id, 0)  # a begin is no end
    finally:
        batcher.close()


# In a child process: record ``done`` runs whole and ``open`` runs begun, flush (a committed batch), then
# put the ends of the open runs and the moves of QUEUED records on, never flushed, and wait to be killed.
CHILD = """
import sys, time
from dataclasses import replace
from weflow import leases
from weflow.catalog import Catalog
from weflow.catalog.batch import Begun, Finished
from weflow.catalog.batcher import ENDS, Batcher
from tests.test_batched_recording import _nodes, _runs_for_child
catalog = Catalog(sys.argv[1])
batcher = Batcher(catalog, max_delay=3600)
done, open_, queued = _runs_for_child(catalog)
for running, final in done:
    batcher.put(Begun(running, lease=leases.here()))
    batcher.put(Finished(final, _nodes(final)))
for running, _ in open_:
    batcher.put(Begun(running, lease=leases.here()))
batcher.flush()
for _, final in open_:
    batcher.put(Finished(final, _nodes(final)))
for running, final in queued:
    batcher.put(Begun(running, queued=True, lease=leases.here()))
    batcher.put(Finished(final, _nodes(final)))
print("between batches", flush=True)
time.sleep(600)
"""


def _runs_for_child(catalog: Catalog) -> tuple[list[tuple[Execution, Execution]], ...]:
    scope = Scope(catalog, catalog.user(1))
    runs = [_run(scope, n) for n in range(12)]
    for running, _ in runs[8:]:
        catalog.insert_execution(replace(running, status=RunState.QUEUED, started_at=None))
    return runs[:5], runs[5:8], runs[8:]


def test_a_process_killed_between_batches_loses_only_what_it_had_not_written(settings: Any, tmp_path: Path) -> None:
    scope = _scope(tmp_path, "k")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(scope.catalog.path)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "between batches"
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout:
            child.stdout.close()
    rows = {e.id: e for e in scope.catalog.executions(scope.user.organization_id, limit=100)}
    by_status = sorted((e.status.value, e.id[:7]) for e in rows.values())
    # the committed batch whole: 5 runs ended with their node rows, 3 RUNNING held by the dead process;
    # what was put after it is lost: the 3 ends, and the 4 QUEUED records were never moved on
    assert by_status == sorted(
        [("SUCCEEDED", f"run-{n:03d}") for n in range(5)] + [("RUNNING", f"run-{n:03d}") for n in range(5, 8)]
        + [("QUEUED", f"run-{n:03d}") for n in range(8, 12)]
    )  # fmt: skip
    with duckdb.connect(str(scope.catalog.path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM node_executions").fetchone() == (10,)
        assert con.execute("SELECT count(*) FROM execution_leases").fetchone() == (3,)
    assert workflows.get("daily_sales", scope).execution_count == 5
    # `weflow sync` ends the RUNNING ones their dead holder left (ProcessDied); the QUEUED ones have no flow run
    # here (a deployed run's has one, and sync ends it with the state of its flow run in Prefect)
    repaired = sync(scope)
    assert sorted(e.id[:7] for e in repaired) == [f"run-{n:03d}" for n in range(5, 8)]
    assert {scope.catalog.execution(e.id).error_type for e in repaired} == {leases.DIED}
    assert workflows.get("daily_sales", scope).execution_count == 8


# In a child process: batches of 200 runs, each begun and ended in its batch, written back to back until killed.
LOOP = """
import sys
from weflow.catalog import Catalog
from weflow.catalog.batch import Begun, Finished
from weflow.catalog.batcher import ENDS, Batcher
from weflow.workflows import Scope, get
from tests.test_batched_recording import _nodes, _pair
catalog = Catalog(sys.argv[1])
workflow_id = get("daily_sales", Scope(catalog, catalog.user(1))).id
batcher = Batcher(catalog, max_records=400, max_delay=3600)  # a batch: 200 runs, each begun and ended
for batch in range(1000):
    for n in range(200):
        running, final = _pair(workflow_id, 1, batch * 200 + n)
        batcher.put(Begun(running))
        batcher.put(Finished(final, _nodes(final)))
    batcher.flush()
    print(batch, flush=True)
"""


def test_a_process_killed_while_writing_leaves_whole_batches(settings: Any, tmp_path: Path) -> None:
    scope = _scope(tmp_path, "w")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen([sys.executable, "-c", LOOP, str(scope.catalog.path)], cwd=REPO, env=env,
                             stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "0"
        time.sleep(0.4)  # mid-way through a later batch, most likely in its session
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(timeout=30)
        if child.stdout:
            child.stdout.close()
    with duckdb.connect(str(scope.catalog.path)) as con:  # opening replays the write-ahead log, as DuckDB does
        runs, done = con.execute(
            "SELECT count(*), count(*) FILTER (status = 'SUCCEEDED') FROM workflow_executions"
        ).fetchone() or (0, 0)
        nodes = (con.execute("SELECT count(*) FROM node_executions").fetchone() or (0,))[0]
        counted = (con.execute("SELECT execution_count FROM workflows").fetchone() or (0,))[0]
    assert runs >= 200 and runs % 200 == 0 and done == runs, runs
    assert (nodes, counted) == (2 * runs, runs)


def test_the_api_s_reports_share_its_batcher_and_refuse_a_second_end(settings: Any, tmp_path: Path) -> None:
    scope = _scope(tmp_path, "api")
    running, final = _run(scope, 1)
    queued = replace(running, status=RunState.QUEUED, started_at=None)
    assert report_created(scope, queued) == queued
    assert scope.catalog.execution(queued.id).status is RunState.QUEUED
    moved = report_running(scope, queued.id, "flow-run-1")
    assert (moved.status, moved.flow_run_id) == (RunState.RUNNING, "flow-run-1")
    ended = report_finished(scope, final, list(_nodes(final)), [])
    assert (ended.status, len(ended.nodes)) == (RunState.SUCCEEDED, 2)
    with pytest.raises(ConflictError, match="already ended"):
        report_finished(scope, replace(final, status=RunState.FAILED), [], [])
    with pytest.raises(ConflictError, match="already ended"):
        report_running(scope, queued.id, None)
    assert scope.catalog.execution(queued.id).status is RunState.SUCCEEDED
    assert workflows.get("daily_sales", scope).execution_count == 1


def test_the_recording_benchmark_s_quick_run_has_its_rows(tmp_path: Path) -> None:
    smoke(("recording",), tmp_path / "BENCHMARKS.md")
    text = (tmp_path / "BENCHMARKS.md").read_text()
    assert "0 lost, 0 failed calls" in text
