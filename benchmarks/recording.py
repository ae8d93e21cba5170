"""Recording: executions recorded from 1, 4 and 8 processes at once, in batches, against raw DuckDB.

Each process records its share of the executions as a long-lived worker records the runs it
takes from the queue (``CatalogRecorder`` with a ``Batcher``): the QUEUED record moved to RUNNING
with the worker's lease (``Begun(queued=True)``), then the end with two node records
(``Finished``). The QUEUED records are written before the clock starts, as ``submit`` writes
them. The baselines write the same rows (one execution row, two node rows) to a fresh catalog
file with plain DuckDB from one process: per execution open, insert, commit, close (the floor of
one session per record), or all of a batch in one Arrow insert per table (the floor of batching).
One more row records 1,000 executions from 4 processes with one session per record (a
``CatalogRecorder`` without a batcher: `update_execution`, then `finish_execution`), as every
process recorded before batching.
"""

from __future__ import annotations

import multiprocessing
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import partial
from multiprocessing import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from benchmarks.harness import REPO, Row, Section, Stat, log
from weflow import config, leases, workflows
from weflow.catalog import Catalog
from weflow.catalog.batch import Batch, Begun, Finished, write
from weflow.catalog.batcher import Batcher
from weflow.catalog.executions import NODE_EXECUTION
from weflow.core.document import from_data
from weflow.core.entities import Execution, Mode, NodeExecution, RunState
from weflow.errors import CatalogError
from weflow.workflows import Scope

ROWS = "duckdb: a session per execution"
BULK = "duckdb: one Arrow insert per batch"
WORKFLOW = {"name": "recorded", "nodes": [{"name": "orders", "type": "read_csv",
            "config": {"path": "data/samples/orders.csv"}}], "connections": []}  # fmt: skip


@dataclass(frozen=True)
class Share:
    """What one recording process reports: each call's seconds, each end's seconds until committed, failures."""

    calls: list[float]
    committed: list[float]
    failed: list[str]


def _records(workflow_id: int, user_id: int, execution_id: str) -> tuple[Execution, Execution, list[NodeExecution]]:
    at = datetime.now(UTC)
    running = Execution(
        id=execution_id, workflow_id=workflow_id, workflow="recorded", version=1, mode=Mode.MANUAL,
        user_id=user_id, status=RunState.RUNNING, created_at=at, started_at=at,
    )  # fmt: skip
    final = replace(running, status=RunState.SUCCEEDED, finished_at=datetime.now(UTC), duration_ms=5.0,
                    output={"f1": {"rows": 250, "columns": ["order_id", "amount"]}})  # fmt: skip
    nodes = [
        NodeExecution(execution_id=execution_id, node="orders", status=RunState.SUCCEEDED, attempts=1,
                      rows_out=500, started_at=at, finished_at=at, duration_ms=3.0),
        NodeExecution(execution_id=execution_id, node="f1", status=RunState.SUCCEEDED, attempts=1, rows_in=500,
                      rows_out=250, started_at=at, finished_at=at, duration_ms=2.0, group="f1"),
    ]  # fmt: skip
    return running, final, nodes


def _stamp(into: list[float], since: float) -> Callable[[], None]:
    """What a Batcher runs once an end is committed: note how long it took since ``since``."""
    return lambda: into.append(time.perf_counter() - since)


def batched(path: str, workflow_id: int, user_id: int, ids: list[str], per_second: float | None = None) -> Share:
    """Record ``ids`` through one Batcher, as a worker's ``CatalogRecorder`` does; flushed at the end.

    ``per_second``: one run ended every ``1 / per_second`` s, else as fast as the process can.
    """
    catalog = Catalog(path)  # weflow's default lock timeout (60 s): a call waiting longer fails and is counted
    batcher = Batcher(catalog)
    calls: list[float] = []
    committed: list[float] = []
    failed: list[str] = []
    lease = leases.here()
    started = time.perf_counter()
    for k, execution_id in enumerate(ids):
        if per_second is not None:
            time.sleep(max(0.0, started + k / per_second - time.perf_counter()))
        running, final, nodes = _records(workflow_id, user_id, execution_id)
        try:
            t0 = time.perf_counter()
            batcher.put(Begun(running, queued=True, lease=lease))
            t1 = time.perf_counter()
            batcher.put(Finished(final, tuple(nodes)), after=_stamp(committed, t1))
            calls += [t1 - t0, time.perf_counter() - t1]
        except CatalogError as exc:
            failed.append(str(exc))
    batcher.close()
    return Share(calls, committed, failed)


def unbatched(path: str, workflow_id: int, user_id: int, ids: list[str]) -> Share:
    """Record ``ids`` with one session per record (``update_execution``, then ``finish_execution``)."""
    catalog = Catalog(path)
    calls: list[float] = []
    failed: list[str] = []
    lease = leases.here()
    for execution_id in ids:
        running, final, nodes = _records(workflow_id, user_id, execution_id)
        try:
            t0 = time.perf_counter()
            catalog.update_execution(running.id, lease=lease, status=RunState.RUNNING, started_at=running.started_at)
            t1 = time.perf_counter()
            catalog.finish_execution(final, nodes)
            calls += [t1 - t0, time.perf_counter() - t1]
        except CatalogError as exc:
            failed.append(str(exc))
    return Share(calls, calls[1::2], failed)


def _process(
    record: Callable[..., Share], args: tuple[Any, ...], ids: list[str],
    start: Barrier, end: Barrier, out: Queue[Share],
) -> None:  # fmt: skip
    """In a spawned process: the first session untimed, then record ``ids`` once every process is ready."""
    Catalog(args[0]).organizations()
    start.wait(timeout=600)
    out.put(record(*args, ids))
    end.wait(timeout=3600)


def from_processes(
    record: Callable[..., Share], args: tuple[Any, ...], ids: list[str], workers: int
) -> tuple[float, list[Share]]:
    """Seconds from releasing ``workers`` spawned processes (imports and a first session done) until the
    last one is done, and what each reported."""
    ctx = multiprocessing.get_context("spawn")
    start, end = ctx.Barrier(workers + 1), ctx.Barrier(workers + 1)
    out: Queue[Share] = ctx.Queue()
    procs = [ctx.Process(target=_process, args=(record, args, ids[i::workers], start, end, out))
             for i in range(workers)]  # fmt: skip
    for proc in procs:
        proc.start()
    shares: list[Share] = []
    ok = False
    try:
        start.wait(timeout=600)
        t0 = time.perf_counter()
        shares = [out.get(timeout=3600) for _ in procs]
        seconds = time.perf_counter() - t0
        end.wait(timeout=60)
        ok = True
    finally:
        if not ok:
            start.abort()
            end.abort()
        for proc in procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.terminate()
                proc.join()
    codes = [proc.exitcode for proc in procs]
    if any(code != 0 for code in codes):
        raise RuntimeError(f"a recording process failed (exit codes {codes})")
    return seconds, shares


def _queued_catalog(path: Path, count: int) -> tuple[int, int, list[str]]:
    """A fresh catalog with one workflow and ``count`` QUEUED executions of it (untimed, one batch)."""
    scope = Scope.current(Catalog(path))
    wf = workflows.apply(from_data(WORKFLOW), scope).workflow
    ids = [str(uuid.uuid4()) for _ in range(count)]
    batch = Batch()
    for execution_id in ids:
        running, _, _ = _records(wf.id, scope.user.id, execution_id)
        batch.add(Begun(replace(running, status=RunState.QUEUED, started_at=None)))
    write(scope.catalog, batch)
    return wf.id, scope.user.id, ids


def _lost(path: Path, count: int) -> int:
    """Executions missing their end: not SUCCEEDED, missing node rows, or not counted by their workflow."""
    with duckdb.connect(str(path), read_only=True) as con:
        row = con.execute(
            "SELECT (SELECT count(*) FROM workflow_executions WHERE status = 'SUCCEEDED'), "
            "(SELECT count(*) FROM node_executions), (SELECT sum(execution_count) FROM workflows)"
        ).fetchone()
    assert row is not None
    done, nodes, counted = row
    return int(count - min(done, nodes // 2, counted))


def raw_sessions(path: Path, workflow_id: int, user_id: int, count: int) -> float:
    """Seconds per execution: open, insert its row and its 2 node rows, commit, close; once per execution."""
    t0 = time.perf_counter()
    for _ in range(count):
        _, final, nodes = _records(workflow_id, user_id, str(uuid.uuid4()))
        con = duckdb.connect(str(path))
        try:
            con.execute("BEGIN")
            con.execute(
                "INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status, created_at, "
                "started_at, finished_at, duration_ms, output) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [final.id, workflow_id, 1, "MANUAL", user_id, "SUCCEEDED", final.created_at, final.started_at,
                 final.finished_at, final.duration_ms, '{"f1": {"rows": 250}}'],
            )  # fmt: skip
            con.execute(
                "INSERT INTO node_executions (execution_id, node, status, attempts, rows_out) "
                "VALUES (?, ?, 'SUCCEEDED', 1, ?), (?, ?, 'SUCCEEDED', 1, ?)",
                [final.id, nodes[0].node, 500, final.id, nodes[1].node, 250],
            )
            con.execute("COMMIT")
        finally:
            con.close()
    return (time.perf_counter() - t0) / count


def raw_bulk(path: Path, workflow_id: int, user_id: int, count: int) -> float:
    """Seconds per execution: open, one Arrow insert of ``count`` execution rows and one of their node rows,
    commit, close."""
    records = [_records(workflow_id, user_id, str(uuid.uuid4())) for _ in range(count)]
    t0 = time.perf_counter()
    finals = [r[1] for r in records]
    table = pa.table({
        "id": [e.id for e in finals], "workflow_id": [workflow_id] * count, "version": [1] * count,
        "mode": ["MANUAL"] * count, "user_id": [user_id] * count, "status": ["SUCCEEDED"] * count,
        "created_at": [e.created_at for e in finals], "started_at": [e.started_at for e in finals],
        "finished_at": [e.finished_at for e in finals], "duration_ms": [e.duration_ms for e in finals],
    })  # fmt: skip
    nodes = NODE_EXECUTION.arrow([n for r in records for n in r[2]])
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN")
        con.register("_e", table)
        con.register("_n", nodes)
        con.execute(f"INSERT INTO workflow_executions ({', '.join(table.column_names)}) SELECT * FROM _e")
        con.execute(f"INSERT INTO node_executions ({', '.join(NODE_EXECUTION.names)}) SELECT * FROM _n")
        con.execute("COMMIT")
    finally:
        con.close()
    return (time.perf_counter() - t0) / count


def _quantiles(values: list[float]) -> str:
    if not values:
        return "none"
    ranked = sorted(values)
    p99 = ranked[min(len(ranked) - 1, int(0.99 * len(ranked)))]
    return f"p50 {statistics.median(ranked) * 1000:.1f} ms, p99 {p99 * 1000:.0f} ms, max {ranked[-1] * 1000:.0f} ms"


def _shares_text(shares: list[Share]) -> str:
    calls = [c for s in shares for c in s.calls]
    committed = [c for s in shares for c in s.committed]
    return f"a call {_quantiles(calls)}; an end until committed {_quantiles(committed)}"


def run(quick: bool) -> Section:
    total = 100 if quick else 10_000
    fleet = (2,) if quick else (1, 4, 8)
    raw_count, bulk_count = (5, 100) if quick else (100, 1000)
    one_by_one, one_by_one_workers = (10, 2) if quick else (1000, 4)
    section = Section(
        name="recording",
        title="executions recorded from several processes, in batches",
        description=f"""\
{total:,} executions recorded from {", ".join(map(str, fleet))} processes at once, each process as a
long-lived worker records the runs it takes from the queue: the QUEUED record (written before
the clock starts, as `submit` writes it) moved to RUNNING with the worker's lease, then the end
with two node records, through one `Batcher` per process (`weflow.catalog.batcher`). The clock
starts when every process has imported weflow and opened the catalog once, and stops when the
last one has flushed. Baselines, on the same kind of fresh catalog file from one process: per
execution open, insert its row and two node rows, commit, close (**{ROWS}**, the floor of one
session per record), or {bulk_count:,} executions in one Arrow insert per table (**{BULK}**).
Every row is per execution. The last but one paces the runs' ends, so that the time until an
end is committed is the one of a steady load rather than of a burst; the last one records
{one_by_one:,} executions from {one_by_one_workers} processes with one session per record (no
batcher), as before batching.""",
        baselines=(ROWS, BULK),
    )
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-recording-"))
    try:
        with config.using(catalog=root / "unused.duckdb", data_roots=(REPO,)):
            _measure(section, root, quick, total, fleet, (raw_count, bulk_count), (one_by_one, one_by_one_workers))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    log("recording: done")
    return section


def _measure(
    section: Section, root: Path, quick: bool, total: int, fleet: tuple[int, ...], raw: tuple[int, int],
    before: tuple[int, int],
) -> None:  # fmt: skip
    files = iter(root / f"catalog-{i}.duckdb" for i in range(1000))
    floors: dict[str, list[float]] = {ROWS: [], BULK: []}
    for _ in range(1 if quick else 3):
        wid, uid, _ = _queued_catalog(path := next(files), 0)
        raw_sessions(path, wid, uid, 3)  # warm-up: the first sessions load DuckDB's extensions
        floors[ROWS].append(raw_sessions(path, wid, uid, raw[0]))
        wid, uid, _ = _queued_catalog(path := next(files), 0)
        floors[BULK].append(raw_bulk(path, wid, uid, raw[1]))
    floor = {k: Stat(tuple(v)) for k, v in floors.items()}
    rates = []
    for workers in fleet:
        log(f"recording: {total:,} executions from {workers} processes")
        wid, uid, ids = _queued_catalog(path := next(files), total)
        seconds, shares = from_processes(batched, (str(path), wid, uid), ids, workers)
        lost, failed = _lost(path, total), sum(len(s.failed) for s in shares)
        plural = "es" if workers > 1 else ""
        section.rows.append(Row(f"record {total:,} executions from {workers} process{plural}, batched (per execution)",
                                Stat((seconds / total,)), floor))  # fmt: skip
        errors = [e for s in shares for e in s.failed]
        rates.append(
            f"{workers} process{plural}: {total / seconds:,.0f} executions/s ({seconds:.1f} s), "
            f"{_shares_text(shares)}; {lost} lost, {failed} failed calls" + (f" (first: {errors[0]})" if errors else "")
        )
    paced, workers, rate = (40, 2, 100.0) if quick else (4000, 4, 200.0)
    log(f"recording: {paced:,} executions from {workers} processes at {rate:.0f}/s")
    wid, uid, ids = _queued_catalog(path := next(files), paced)
    seconds, shares = from_processes(partial(batched, per_second=rate / workers), (str(path), wid, uid), ids, workers)
    lost, failed = _lost(path, paced), sum(len(s.failed) for s in shares)
    section.rows.append(Row(f"record {paced:,} executions from {workers} processes at {rate:.0f}/s in all, batched "
                            "(per execution)", Stat((seconds / paced,)), floor))  # fmt: skip
    rates.append(
        f"{workers} processes at {rate:.0f} executions/s in all: {paced / seconds:,.0f} executions/s "
        f"({seconds:.1f} s), {_shares_text(shares)}; {lost} lost, {failed} failed calls"
    )
    count, workers = before
    log(f"recording: {count:,} executions from {workers} processes, one session per record")
    wid, uid, ids = _queued_catalog(path := next(files), count)
    seconds, shares = from_processes(unbatched, (str(path), wid, uid), ids, workers)
    lost, failed = _lost(path, count), sum(len(s.failed) for s in shares)
    section.rows.append(Row(f"record {count:,} executions from {workers} processes, one session per record "
                            "(per execution)", Stat((seconds / count,)), floor))  # fmt: skip
    rates.append(
        f"one session per record, {workers} processes: {count / seconds:,.1f} executions/s ({seconds:.1f} s), "
        f"{_shares_text(shares)}; {lost} lost, {failed} failed calls"
    )
    section.notes += [
        "Rates and latencies: " + "; ".join(rates) + ". A call is what the recording run waits for "
        "(`Batcher.put`: it returns at once); an end until committed is from its `put` to the commit of "
        "its batch. Lost: executions without their SUCCEEDED row, both node rows and their count in the "
        "workflow's `execution_count`, counted after the processes exited. Failed: calls that raised "
        "(`catalog ... is busy` after weflow's default lock timeout, 60 s).",
        f"Floors: {1 / floor[ROWS].median:,.0f} executions/s with one raw session per execution "
        f"({raw[0]} per round, one process), {1 / floor[BULK].median:,.0f} executions/s in raw batches of "
        f"{raw[1]:,}. A batch of weflow writes the same rows plus the lease, the workflow's counters and the "
        "hourly metrics (`execution_hours`, `recent_durations`), and takes the catalog lock (a ticket in "
        "`<catalog>.queue/`, served in arrival order).",
    ]
