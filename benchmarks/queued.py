"""Queued runs: weflow's deployed workflows against a raw Prefect deployment, on one process worker.

weflow: a two-node workflow (``read_csv`` of a 3-row CSV -> ``filter``, fused into one task)
stored in a fresh catalog in a temp dir and deployed with ``weflow.deploy.deploy``; a run is
``weflow.execution.submit(..., queue=True)`` (record QUEUED, create the flow run from the
deployment) followed by ``weflow.execution.wait`` until the catalog record is SUCCEEDED. Raw
Prefect: ``benchmarks/raw_flow.py`` (an async flow awaiting one async task that reads the same
CSV and filters it), deployed with ``client.create_deployment`` to the same work pool and queue;
a run is ``client.create_flow_run_from_deployment`` then polling the flow run until COMPLETED.
Both sides poll at the same interval. ONE ``prefect worker`` (process type, started by
``weflow.prefect_gateway.server.start_worker``, so ``PREFECT_WORKER_QUERY_SECONDS=1``) serves both; the work
pool is this benchmark's own (so no other worker takes its runs) and runs at most
``POOL_LIMIT`` flow runs at once. If the shared server holds weflow deployments of another
catalog, a private server is used (``deploy.deploy`` would remove them). Measured: the latency of
one run, where it goes (from the flow run's state timestamps and the catalog record), the
import of each entrypoint in a fresh interpreter, and the time for a batch of queued runs to
all finish.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import State, StateType
from prefect.exceptions import ObjectNotFound
from prefect.settings import PREFECT_API_URL, temporary_settings

from benchmarks import raw_flow
from benchmarks.harness import QUIET, REPO, Row, Section, Stat, Unit, interleave, log, prefect_api, watch_server
from weflow import config, deploy, execution, workflows
from weflow.core.entities import Execution, Mode, RunState
from weflow.prefect_gateway import server
from weflow.prefect_gateway.client import blocking
from weflow.workflows import Scope

POOL = f"weflow-bench-queued-{os.getpid()}"  # this benchmark's own work pool (WEFLOW_WORK_POOL meanwhile)
ONE = "bench_queued_one"  # default settings: max_concurrent_runs 1
MANY = "bench_queued_many"  # settings: {max_concurrent_runs: BATCH_LIMIT}
BATCH_LIMIT = 50
POOL_LIMIT = 4  # flow runs at once on the pool (unlimited, 50 runs on 2 cores crashed runs on both sides)
ABOVE = 10.0
LATENCY_POLL = 0.15  # seconds between two looks at a run, both sides
BATCH_POLL = 0.5  # the batch lasts long: a slower look keeps the pollers off the catalog and the API
RUN_TIMEOUT = 180.0
BATCH_TIMEOUT = 900.0
RAW = "raw Prefect deployment"
DISPOSABLE = "WEFLOW_BENCH_DISPOSABLE_SERVER"  # "1": deploy on the shared server even over others' deployments


# --- setup: the workflows, the deployments, the worker -------------------------------------


def workflow_document(name: str, csv: Path, max_concurrent_runs: int | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": name,
        "status": "ACTIVE",
        "nodes": [
            {"name": "orders", "type": "read_csv", "config": {"path": str(csv)}},
            {"name": "large", "type": "filter", "config": {"condition": f"amount > {ABOVE}"}},
        ],
        "connections": [{"from": "orders", "to": "large"}],
    }
    if max_concurrent_runs is not None:
        doc["settings"] = {"max_concurrent_runs": max_concurrent_runs}
    return doc


@contextmanager
def _environ(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


async def _foreign_weflow_deployments() -> list[str]:
    """weflow deployments on the server (from some catalog): ``deploy.deploy`` would remove them."""
    async with get_client() as client:
        found = await client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[deploy.FLOW_NAME])))
    return [d.name for d in found if any(t.startswith("workflow:") for t in d.tags or [])]


@contextmanager
def _server(root: Path) -> Iterator[str]:
    """The shared server (``prefect_api()``), unless it holds weflow deployments of another catalog.

    ``weflow.deploy.deploy`` brings the server in line with ONE catalog: deploying this
    benchmark's temp catalog would delete every other weflow deployment on it (a developer's
    ``weflow up`` ones, say). Then this benchmark runs on a private server of its own instead,
    unless ``WEFLOW_BENCH_DISPOSABLE_SERVER=1`` says the shared server's weflow deployments are
    disposable (the smoke tests: each xdist worker's session server, whose other modules are done
    with theirs), which saves starting a server per benchmark.
    """
    shared = prefect_api()
    if os.environ.get(DISPOSABLE) == "1":
        foreign = []  # the caller said so: the shared server's weflow deployments may be replaced
    else:
        with temporary_settings(updates={PREFECT_API_URL: shared}):
            foreign = blocking(_foreign_weflow_deployments())
    if not foreign:
        # PREFECT_API_URL pins weflow's server.ensure() to this server (as in the tests): without
        # it every weflow call checks the server named in data/prefect, and one slow answer (over
        # 2 s, seen here under load) makes it start a second server on the same database.
        with _environ(PREFECT_API_URL=shared):
            yield shared
        return
    log(
        f"queued: {shared} holds weflow deployments of another catalog ({', '.join(sorted(foreign)[:5])}); "
        "deploying the benchmark's catalog would remove them, so it starts a private Prefect server"
    )
    home = root / "prefect"
    private = server.start(home, port=0, timeout=180, quiet=True)
    watched = QUIET.server_pids
    watch_server(private.api_url)
    try:
        with _environ(PREFECT_API_URL=private.api_url):
            yield private.api_url
    finally:
        QUIET.server_pids = watched
        server.stop(home)


async def _deploy_raw(csv: Path) -> UUID:
    async with get_client() as client:
        flow_id = await client.create_flow_from_name(raw_flow.FLOW_NAME)
        return await client.create_deployment(
            flow_id=flow_id,
            name="trivial",
            entrypoint=raw_flow.ENTRYPOINT,
            path=str(REPO),
            work_pool_name=deploy.work_pool(),
            work_queue_name=deploy.execution_queue(),
            job_variables={"working_dir": str(REPO)},
            parameters={"path": str(csv), "above": ABOVE},
            enforce_parameter_schema=False,
        )


async def _limit_pool(limit: int) -> None:
    async with get_client() as client:
        await client.update_work_pool(POOL, WorkPoolUpdate(concurrency_limit=limit))


async def _wait_for_worker(
    pool: str, procs: Sequence[subprocess.Popen[bytes]], count: int = 1, timeout: float = 120.0
) -> None:
    """Until ``count`` workers have registered on ``pool`` (an error if one of ``procs`` exits first)."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while len(await client.read_workers_for_work_pool(pool)) < count:
            dead = [p.returncode for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"a worker exited with code {dead[0]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} workers on pool {pool!r} after {timeout:.0f} s")
            await asyncio.sleep(0.3)


async def _cleanup(deployment_ids: Sequence[UUID], pool: str = POOL) -> None:
    """Remove what the benchmark made on the server (its flow runs stay in the history)."""
    async with get_client() as client:
        for deployment_id in deployment_ids:
            try:
                await client.delete_deployment(deployment_id)
            except ObjectNotFound:
                pass
        try:
            await client.delete_work_pool(pool)
        except ObjectNotFound:
            pass


# --- one run, both sides ------------------------------------------------------------------


@dataclass(frozen=True)
class Trip:
    """One measured run: wall-clock trigger and sighting, the flow run's states, weflow's record."""

    seconds: float
    triggered: float  # time.time() when the caller started
    seen: float  # time.time() when the caller saw the end
    states: tuple[State[Any], ...]
    peak_mb: float  # the worker's process tree, at its largest during the run
    record: Execution | None = None  # weflow only

    def _at(self, kind: StateType, last: bool = False) -> float:
        found = [s.timestamp.timestamp() for s in self.states if s.type is kind]
        if not found:
            raise RuntimeError(f"flow run has no {kind.value} state: {[s.name for s in self.states]}")
        return max(found) if last else min(found)

    def phases(self) -> dict[str, float]:
        scheduled = self._at(StateType.SCHEDULED)
        pending = self._at(StateType.PENDING, last=True)  # after any wait for a concurrency slot
        running = self._at(StateType.RUNNING)
        if self.record is None:
            end = self._at(StateType.COMPLETED)
        else:
            assert self.record.finished_at is not None and self.record.started_at is not None
            end = self.record.finished_at.timestamp()
        found = {
            "created": scheduled - self.triggered,
            "picked": pending - scheduled,
            "started": running - pending,
            "body": end - running,
            "seen": self.seen - end,
        }
        if self.record is not None and self.record.started_at is not None:
            found["begin"] = self.record.started_at.timestamp() - running
            found["nodes"] = end - self.record.started_at.timestamp()
        return found


async def _states(flow_run_id: UUID) -> tuple[State[Any], ...]:
    async with get_client() as client:
        return tuple(sorted(await client.read_flow_run_states(flow_run_id), key=lambda s: s.timestamp))


def weflow_once(scope: Scope, name: str, worker: int) -> Trip:
    """submit(queue=True) -> wait() until the record is final, as a weflow caller does."""
    with TreeWatch(worker, every=0.25) as watch:
        triggered, t0 = time.time(), time.perf_counter()
        queued = execution.submit(name, scope, Mode.API, queue=True)
        done = execution.wait(queued.id, scope, timeout=RUN_TIMEOUT, poll=LATENCY_POLL)
        seconds, seen = time.perf_counter() - t0, time.time()
    if done.status is not RunState.SUCCEEDED or done.flow_run_id is None:
        raise RuntimeError(f"weflow run {done.id} ended {done.status.value}: {done.error_message}")
    return Trip(seconds, triggered, seen, blocking(_states(UUID(done.flow_run_id))), watch.peak_mb, done)


async def _raw_run(client: PrefectClient, deployment_id: UUID) -> UUID:
    return (await client.create_flow_run_from_deployment(deployment_id)).id


async def _raw_once(deployment_id: UUID) -> UUID:
    deadline = time.monotonic() + RUN_TIMEOUT
    async with get_client() as client:
        flow_run_id = await _raw_run(client, deployment_id)
        while True:
            state = (await client.read_flow_run(flow_run_id)).state
            if state is not None and state.is_final():
                if not state.is_completed():
                    raise RuntimeError(f"raw flow run {flow_run_id} ended {state.name}: {state.message}")
                return flow_run_id
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw flow run {flow_run_id} not finished after {RUN_TIMEOUT:g} s")
            await asyncio.sleep(LATENCY_POLL)


def raw_once(deployment_id: UUID, worker: int) -> Trip:
    """create_flow_run_from_deployment -> poll the flow run until COMPLETED."""
    with TreeWatch(worker, every=0.25) as watch:
        triggered, t0 = time.time(), time.perf_counter()
        flow_run_id = blocking(_raw_once(deployment_id))
        seconds, seen = time.perf_counter() - t0, time.time()
    return Trip(seconds, triggered, seen, blocking(_states(flow_run_id)), watch.peak_mb)


def import_seconds(module: str) -> float:
    """A fresh interpreter importing ``module`` from the repository root (what a flow process loads)."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, check=True)
    return time.perf_counter() - t0


# --- the worker's memory -------------------------------------------------------------------


def _processes() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, resident pages) of every visible process (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()  # from "state" on (the name may hold spaces)
        found[int(entry.name)] = (int(fields[1]), int(fields[21]))
    return found


class TreeWatch:
    """Samples the worker's process tree in a thread: the most resident memory it held at once."""

    def __init__(self, root: int, every: float = 0.5) -> None:
        self.root, self.every = root, every
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-tree-watch", daemon=True)

    def _sample(self) -> None:
        table = _processes()
        tree, todo = set(), [self.root]
        while todo:
            pid = todo.pop()
            tree.add(pid)
            todo += [p for p, (parent, _) in table.items() if parent == pid and p not in tree]
        pages = sum(table[p][1] for p in tree if p in table)
        self.peak_mb = max(self.peak_mb, pages * os.sysconf("SC_PAGE_SIZE") / 1024**2)

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self._sample()

    def __enter__(self) -> TreeWatch:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- a batch, both sides ------------------------------------------------------------------


@dataclass(frozen=True)
class Batch:
    seconds: float  # trigger of the first run -> all seen finished
    submitted: float  # trigger of the first run -> the last one queued
    flow_runs: tuple[UUID, ...]
    peak_mb: float = 0.0  # the worker's process tree at its largest
    running_at_once: int = 0  # the most flow runs RUNNING at the same time (from their states)
    start_median: float = 0.0  # median PENDING -> RUNNING of the batch's runs (process start under load)


async def _history(flow_runs: Sequence[UUID], timeout: float = 60.0) -> list[tuple[State[Any], ...]]:
    """The runs' state histories, once each has reached COMPLETED (weflow's record is final a moment before)."""
    deadline = time.monotonic() + timeout
    async with get_client() as client:
        while True:
            found = [tuple(sorted(await client.read_flow_run_states(i), key=lambda s: s.timestamp)) for i in flow_runs]
            done = all(any(s.type is StateType.COMPLETED for s in states) for states in found)
            if done or time.monotonic() > deadline:
                return found  # past the deadline: _described names the missing state
            await asyncio.sleep(BATCH_POLL)


def _described(found: Batch, peak_mb: float) -> Batch:
    """``found`` with what the runs' state histories say: concurrency and process start times."""
    events: list[tuple[float, int]] = []
    starts = []
    for states in blocking(_history(found.flow_runs)):
        at = {s.type: s.timestamp.timestamp() for s in states}  # the last of each type
        events += [(at[StateType.RUNNING], 1), (at[StateType.COMPLETED], -1)]
        starts.append(at[StateType.RUNNING] - at[StateType.PENDING])
    running = most = 0
    for _, step in sorted(events):
        running += step
        most = max(most, running)
    return replace(found, peak_mb=peak_mb, running_at_once=most, start_median=statistics.median(starts))


def weflow_batch(scope: Scope, name: str, n: int, worker: int) -> Batch:
    with TreeWatch(worker) as watch:
        t0 = time.perf_counter()
        queued = [execution.submit(name, scope, Mode.API, queue=True) for _ in range(n)]
        submitted = time.perf_counter() - t0
        for one in queued:
            done = execution.wait(one.id, scope, timeout=BATCH_TIMEOUT, poll=BATCH_POLL)
            if done.status is not RunState.SUCCEEDED:
                raise RuntimeError(f"weflow run {done.id} ended {done.status.value}: {done.error_message}")
        seconds = time.perf_counter() - t0
    flow_runs = tuple(UUID(q.flow_run_id) for q in queued if q.flow_run_id)
    return _described(Batch(seconds, submitted, flow_runs), watch.peak_mb)


async def _raw_batch(deployment_id: UUID, n: int) -> Batch:
    t0 = time.perf_counter()
    deadline = time.monotonic() + BATCH_TIMEOUT
    async with get_client() as client:
        ids = [await _raw_run(client, deployment_id) for _ in range(n)]
        submitted = time.perf_counter() - t0
        while True:
            runs = await client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            states = [r.state for r in runs]
            if len(runs) == n and all(s is not None and s.is_final() for s in states):
                bad = [s.name for s in states if s is not None and not s.is_completed()]
                if bad:
                    raise RuntimeError(f"raw flow runs ended {bad}")
                return Batch(time.perf_counter() - t0, submitted, tuple(ids))
            if time.monotonic() > deadline:
                raise RuntimeError(f"raw batch of {n} not finished after {BATCH_TIMEOUT:g} s")
            await asyncio.sleep(BATCH_POLL)


def raw_batch(deployment_id: UUID, n: int, worker: int) -> Batch:
    with TreeWatch(worker) as watch:
        found = blocking(_raw_batch(deployment_id, n))
    return _described(found, watch.peak_mb)


# --- the benchmark ------------------------------------------------------------------------


class Recorder:
    """Variants for ``interleave`` that keep what they measured besides the seconds."""

    def __init__(self) -> None:
        self.kept: dict[str, list[Any]] = {}

    def variant(self, name: str, fn: Callable[[], Any]) -> Callable[[], float]:
        self.kept[name] = []

        def measure() -> float:
            found = fn()
            self.kept[name].append(found)
            return float(found.seconds)

        return measure

    def measured(self, name: str, warmup: int) -> list[Any]:
        return self.kept[name][warmup:]


PHASES: Mapping[str, str] = {
    "created": "trigger → flow run created (SCHEDULED)",
    "picked": "SCHEDULED → PENDING: the worker's poll (every 1 s) picks it up",
    "started": "PENDING → RUNNING: flow process start (2 interpreters, imports, entrypoint load)",
    "body": "RUNNING → result (weflow: record final written; raw: COMPLETED)",
    "begin": "  weflow: RUNNING → record RUNNING (scope, catalog reads, compile, 1st write)",
    "nodes": "  weflow: record RUNNING → record final (the nodes, then the final write)",
    "seen": "result → seen by the caller (poll; weflow's wait() also syncs from Prefect)",
}


def run(quick: bool) -> Section:
    repeats = 1 if quick else 5
    batch = 1 if quick else 50  # quick: the batch's code path (a flow process per run, as in the one-run rows)
    batch_repeats = 1  # a batch of 50 takes minutes per side on 2 cores
    warmup = 0 if quick else 1  # quick: the first run also pays the worker's and the server's cold start
    settle = 0.3 if quick else 30.0  # quick: settle()'s path, not a settled server (the numbers are not read)
    section = Section(
        name="queued",
        title="queued runs through a deployment and one process worker",
        description=f"""\
**weflow**: a workflow of two nodes (`read_csv` of a 3-row CSV -> `filter`, fused into one
Prefect task) in a fresh catalog, deployed with `weflow.deploy.deploy`; one run is
`weflow.execution.submit(name, scope, Mode.API, queue=True)` (record QUEUED, create the flow
run from the deployment) then `weflow.execution.wait` until the catalog record is SUCCEEDED.
**{RAW}**: `benchmarks/raw_flow.py`, an `async` flow awaiting one async task doing the same
read and filter, deployed with `client.create_deployment`; one run is
`client.create_flow_run_from_deployment` then reading the flow run until it is COMPLETED.
Both deployments are on one work pool and queue served by ONE `prefect worker` (process type,
`weflow.prefect_gateway.server.start_worker`: `PREFECT_WORKER_QUERY_SECONDS=1`); both callers look every
{LATENCY_POLL:g} s for one run and every {BATCH_POLL:g} s for a batch. The one-run workflow has weflow's
default `max_concurrent_runs: 1` (a deployment concurrency limit); the batch workflow has
`settings: {{max_concurrent_runs: {BATCH_LIMIT}}}` and the raw deployment no limit; the work pool
runs at most {POOL_LIMIT} flow runs at once (its concurrency limit), for both. The phase rows split
the one-run latency with the flow run's state timestamps (each taken by whoever proposed the
state: the caller, the worker, the flow process) and weflow's record times; they are medians
of each phase, so they need not add up exactly.""",
        baselines=(RAW,),
    )
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-queued-")).resolve()
    csv = root / "tiny.csv"
    pl.DataFrame({"id": [1, 2, 3], "amount": [10.5, 20.0, 7.25], "region": ["n", "s", "e"]}).write_csv(csv)
    rec = Recorder()
    deployments: list[UUID] = []
    try:
        with (
            config.using(catalog=root / "weflow.duckdb", data_roots=(root,), runs_dir=root / "runs"),
            _server(root) as api,
            _environ(WEFLOW_WORK_POOL=POOL),
            temporary_settings(updates={PREFECT_API_URL: api}),
        ):
            scope = Scope.current()
            workflows.apply(workflow_document(ONE, csv), scope)
            workflows.apply(workflow_document(MANY, csv, BATCH_LIMIT), scope)
            try:
                # other catalogs' deployments it replaced (WEFLOW_BENCH_DISPOSABLE_SERVER) come back "removed"
                deployed = [d for d in deploy.deploy(scope) if d.action != "removed"]
                deployments += [d.deployment_id for d in deployed if d.deployment_id is not None]
                assert {d.workflow for d in deployed} == {ONE, MANY}, deployed
                deployments.append(blocking(_deploy_raw(csv)))
                raw_id = deployments[-1]
                blocking(_limit_pool(POOL_LIMIT))
                worker = server.start_worker(api, POOL, deploy.execution_queue(), root / "worker")
                try:
                    blocking(_wait_for_worker(POOL, [worker]))
                    log(f"queued: worker {worker.pid} on pool {POOL!r}")
                    latency = interleave(
                        {
                            "weflow": rec.variant("weflow", lambda: weflow_once(scope, ONE, worker.pid)),
                            RAW: rec.variant(RAW, lambda: raw_once(raw_id, worker.pid)),
                        },
                        repeats,
                        warmup=warmup,
                        max_settle=settle,
                        progress="queued: one run",
                    )
                    imports = (
                        {}
                        if quick
                        else interleave(  # quick: the smoke test runs every benchmark
                            {
                                "weflow": lambda: import_seconds("flows.run_workflow"),
                                RAW: lambda: import_seconds("benchmarks.raw_flow"),
                            },
                            repeats,
                            warmup=0,
                            max_settle=settle,
                            progress="queued: entrypoint imports",
                        )
                    )
                    interleave(  # the batches are kept by the recorder
                        {
                            "weflow": rec.variant("weflow batch", lambda: weflow_batch(scope, MANY, batch, worker.pid)),
                            RAW: rec.variant(RAW + " batch", lambda: raw_batch(raw_id, batch, worker.pid)),
                        },
                        batch_repeats,
                        warmup=0,
                        max_settle=settle,
                        progress=f"queued: batches of {batch}",
                    )
                finally:
                    os.killpg(worker.pid, signal.SIGTERM)
                    worker.wait(timeout=60)
            finally:
                blocking(_cleanup(deployments))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    section.rows.append(
        Row("one run: trigger → done", Stat(tuple(latency["weflow"])), {RAW: Stat(tuple(latency[RAW]))})
    )
    trips = {side: rec.measured(side, warmup) for side in ("weflow", RAW)}
    phases = {side: [t.phases() for t in found] for side, found in trips.items()}
    for key, label in PHASES.items():
        ours = [p[key] for p in phases["weflow"]]
        theirs = [p[key] for p in phases[RAW] if key in p]
        section.rows.append(Row(label, Stat(tuple(ours)), {RAW: Stat(tuple(theirs)) if theirs else None}))
    if imports:
        section.rows.append(
            Row(
                "fresh interpreter importing the entrypoint (`flows.run_workflow` vs `benchmarks.raw_flow`)",
                Stat(tuple(imports["weflow"])),
                {RAW: Stat(tuple(imports[RAW]))},
            )
        )
    section.rows.append(
        Row(
            "one run: the worker's process tree at its largest (RSS)",
            Stat(tuple(t.peak_mb for t in trips["weflow"]), "MB"),
            {RAW: Stat(tuple(t.peak_mb for t in trips[RAW]), "MB")},
        )
    )
    limits = f"pool limit {POOL_LIMIT}; weflow max_concurrent_runs {BATCH_LIMIT}, raw deployment no limit"
    runs = {side: rec.measured(name, 0) for side, name in (("weflow", "weflow batch"), (RAW, RAW + " batch"))}

    def batch_row(label: str, pick: Callable[[Batch], float], unit: Unit = "s") -> Row:
        ours, theirs = (Stat(tuple(pick(b) for b in runs[side]), unit) for side in ("weflow", RAW))
        return Row(f"{batch} queued runs: {label}", ours, {RAW: theirs})

    section.rows += [
        batch_row("all submitted", lambda b: b.submitted),
        batch_row(f"all finished ({limits})", lambda b: b.seconds),
        batch_row(f"per run (all finished / {batch})", lambda b: b.seconds / batch),
        batch_row("median PENDING → RUNNING of a run (process start, all at once)", lambda b: b.start_median),
        batch_row("the worker's process tree at its largest (RSS)", lambda b: b.peak_mb, "MB"),
    ]
    at_once = {side: "/".join(str(b.running_at_once) for b in runs[side]) for side in ("weflow", RAW)}
    section.notes += [
        "weflow's deployed runs send Prefect heartbeats every 30 s (crash detection, "
        "`PREFECT_FLOWS_HEARTBEAT_FREQUENCY=30` in the deployment's job env); the raw deployment keeps "
        "Prefect's default (none). weflow's end is its catalog record, written before the flow run "
        "reports COMPLETED; raw Prefect's end is COMPLETED.",
        f"Repeats: {repeats} for one run (after {warmup} untimed warm-up each), {batch_repeats} for the batch. "
        "The worker starts every flow run as two processes of its own (a supervisor, then the engine). "
        f"The pool's limit of {POOL_LIMIT} runs at once is there because without it a batch of 50 started "
        "them all: on 2 cores the Prefect server (SQLite) answered `503` (`database is locked`) for over a "
        "minute and runs of both sides ended Crashed. In the batches of "
        f"{batch}, at most {at_once['weflow']} weflow runs and {at_once[RAW]} raw runs were RUNNING at the same "
        "time (from the state timestamps). Memory is the resident size summed over the worker and its "
        "descendants, sampled every 0.25 s (one run) or 0.5 s (batch).",
        "`PREFECT_API_URL` is set while this benchmark runs, so weflow's `server.ensure()` trusts a "
        "healthy server for 30 s; without it each `submit`/`wait` step health-checks the server "
        "(one more request), and a check slower than 2 s starts a second server on the same home.",
    ]
    log("queued: done")
    return section
