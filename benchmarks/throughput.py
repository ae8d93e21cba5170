"""Throughput: queued executions per minute with 1 and 2 workers; a wide fan-out on Dask and on threads.

Part 1, workers: the deployed two-node workflow of ``benchmarks/queued.py`` (with
``max_concurrent_runs`` high enough not to be the limit) and the raw Prefect deployment of
``benchmarks/raw_flow.py`` on a work pool of this benchmark's own; a batch of runs is queued at
once and timed until every run is seen finished, first with ONE process worker, then with TWO
(each ``prefect worker start --limit WORKER_LIMIT``), both sides interleaved on the same workers.

Part 2, fan-out: a workflow whose source (a Parquet file) fans out to ``width`` branches, each
grouping by its own key (so each branch is one Prefect task), run in-process by
``weflow.execution.run`` with Prefect's thread-pool runner and with ``settings: {dask: local}``
(prefect-dask's ``DaskTaskRunner`` on a local cluster of single-threaded worker processes;
frames cross as Parquet files); raw Prefect (``benchmarks/raw_fanout.py``) does the same with
each runner (frames pickled to the Dask workers).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from benchmarks import queued, raw_fanout
from benchmarks.harness import Row, Section, Stat, interleave, log, prefect_api
from weflow import config, deploy, execution, workflows
from weflow.prefect_gateway import server
from weflow.prefect_gateway.client import blocking
from weflow.workflows import Scope

POOL = f"weflow-bench-throughput-{os.getpid()}"
RUNS = "bench_throughput"
WORKER_LIMIT = 2  # flow runs at once per worker
RAW = "raw Prefect"
DASK_WORKERS = 2


def fanout_document(name: str, path: Path, width: int, dask: bool) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [{"name": "source", "type": "read_parquet", "config": {"path": str(path)}}]
    aggs = {"total": "sum(v)", "average": "avg(v)", "top": "max(v)"}
    nodes += [{"name": f"b{i}", "type": "aggregate", "config": {"by": [f"k{i}"], "aggs": aggs}} for i in range(width)]
    doc: dict[str, Any] = {
        "name": name,
        "status": "ACTIVE",
        "nodes": nodes,
        "connections": [{"from": "source", "to": f"b{i}"} for i in range(width)],
    }
    if dask:
        doc["settings"] = {"dask": "local"}
    return doc


def fanout_data(path: Path, rows: int, width: int) -> None:
    """``width`` integer keys of 100 to 100,000 distinct values and a float ``v``, pseudo-random (hashes)."""
    n = pl.int_range(0, rows, eager=True).alias("n")
    keys = [(n.hash(seed=i) % 10 ** (2 + i % 4)).cast(pl.Int64).alias(f"k{i}") for i in range(width)]
    pl.DataFrame([*keys, ((n.hash(seed=99) % 1_000_000) / 1_000_000).alias("v")]).write_parquet(path)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        p.wait(timeout=60)


def worker_rates(
    root: Path, csv: Path, batch: int, repeats: int, settle: float, counts: tuple[int, ...] = (1, 2)
) -> dict[int, dict[str, list[float]]]:
    """Runs per minute of each side, per number of workers (``counts``)."""
    found: dict[int, dict[str, list[float]]] = {}
    deployments: list[UUID] = []
    with (
        config.using(catalog=root / "weflow.duckdb", data_roots=(root,), runs_dir=root / "runs"),
        queued._server(root) as api,
        queued._environ(WEFLOW_WORK_POOL=POOL),
        temporary_settings(updates={PREFECT_API_URL: api}),
    ):
        scope = Scope.current()
        workflows.apply(queued.workflow_document(RUNS, csv, max_concurrent_runs=queued.BATCH_LIMIT), scope)
        try:
            deployed = deploy.deploy(scope)  # "removed": another catalog's (WEFLOW_BENCH_DISPOSABLE_SERVER)
            deployments += [d.deployment_id for d in deployed if d.deployment_id is not None and d.action != "removed"]
            raw_id = blocking(queued._deploy_raw(csv))
            deployments.append(raw_id)
            for count in counts:
                procs = [
                    server.start_worker(api, POOL, deploy.execution_queue(), root / f"w{count}-{i}", limit=WORKER_LIMIT)
                    for i in range(count)
                ]
                first = procs[0].pid  # its process tree is what the batch helpers watch
                try:
                    blocking(queued._wait_for_worker(POOL, procs, count))
                    seconds = interleave(
                        {
                            "weflow": lambda: queued.weflow_batch(scope, RUNS, batch, first).seconds,  # noqa: B023
                            RAW: lambda: queued.raw_batch(raw_id, batch, first).seconds,  # noqa: B023
                        },
                        repeats,
                        warmup=0,
                        max_settle=settle,
                        progress=f"throughput: {batch} runs on {count} worker(s)",
                    )
                    found[count] = {side: [batch * 60 / s for s in samples] for side, samples in seconds.items()}
                finally:
                    _stop(procs)
        finally:
            blocking(queued._cleanup(deployments, POOL))
    return found


def fanout_times(
    root: Path, rows: int, width: int, repeats: int, settle: float, warmup: int, dask_workers: int = DASK_WORKERS
) -> dict[str, list[float]]:
    data = root / "wide.parquet"
    fanout_data(data, rows, width)
    api = prefect_api()
    with (
        config.using(catalog=root / "fanout.duckdb", data_roots=(root,), runs_dir=root / "fanout-runs"),
        queued._environ(PREFECT_API_URL=api, WEFLOW_DASK_WORKERS=str(dask_workers)),
        temporary_settings(updates={PREFECT_API_URL: api}),
    ):
        scope = Scope.current()
        workflows.apply(fanout_document("bench_fan_threads", data, width, dask=False), scope)
        workflows.apply(fanout_document("bench_fan_dask", data, width, dask=True), scope)
        from prefect_dask.task_runners import DaskTaskRunner

        cluster = {"n_workers": dask_workers, "threads_per_worker": 1, "processes": True, "host": "127.0.0.1"}
        raw_threads = raw_fanout.fanout_flow(ThreadPoolTaskRunner(), width)
        raw_dask = raw_fanout.fanout_flow(
            DaskTaskRunner(cluster_kwargs={**cluster, "dashboard_address": "127.0.0.1:0"}), width
        )

        def ours(name: str) -> float:
            t0 = time.perf_counter()
            result = execution.run(name, scope)
            seconds = time.perf_counter() - t0
            if not result.ok:
                raise RuntimeError(f"{name} failed: {result.execution.error_message}")
            return seconds

        def theirs(flow: Any) -> float:
            t0 = time.perf_counter()
            heights = flow(str(data))
            seconds = time.perf_counter() - t0
            assert len(heights) == width
            return seconds

        return interleave(
            {
                "weflow, threads": lambda: ours("bench_fan_threads"),
                "raw, threads": lambda: theirs(raw_threads),
                "weflow, Dask": lambda: ours("bench_fan_dask"),
                "raw, Dask": lambda: theirs(raw_dask),
            },
            repeats,
            warmup=warmup,
            max_settle=settle,
            progress=f"throughput: fan-out of {width} over {rows:,} rows",
        )


def run(quick: bool) -> Section:
    batch = 1 if quick else 16
    repeats = 1 if quick else 3
    rows, width = (20_000, 3) if quick else (4_000_000, 8)
    dask_workers = 1 if quick else DASK_WORKERS  # quick: the same path, one worker process fewer per cluster
    settle = 0.3 if quick else 20.0  # quick: settle()'s path, not a settled server (the numbers are not read)
    section = Section(
        name="throughput",
        title="executions per minute with 1 and 2 workers; a wide fan-out on Dask and on threads",
        description=f"""\
**Workers**: the two-node workflow of the `queued` benchmark, deployed by weflow, and the raw
Prefect deployment of `benchmarks/raw_flow.py`, on a work pool of this benchmark's own. A batch
of {batch} runs is queued at once and timed until all are seen finished, with ONE process worker and
then with TWO (each `--limit {WORKER_LIMIT}` flow runs at once); the rate is {batch} x 60 / seconds
(**more is better**, so a ratio above 1 is weflow ahead). **Fan-out**: a source (`read_parquet`
of {rows:,} rows) fanning out to {width} `aggregate` branches, each grouping by its own key (one
Prefect task per branch), run in-process by `weflow.execution.run` with Prefect's thread-pool
runner and with `settings: {{dask: local}}` (prefect-dask, a local cluster of {dask_workers}
single-threaded worker processes; frames cross as Parquet files); raw Prefect
(`benchmarks/raw_fanout.py`: one task loads the frame, {width} submitted tasks group it) with
`ThreadPoolTaskRunner` and with the same `DaskTaskRunner` (frames pickled to the workers).
Seconds per run, the flow's start to its end (a Dask cluster is started by each run).""",
        baselines=(RAW,),
    )
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-throughput-")).resolve()
    csv = root / "tiny.csv"
    pl.DataFrame({"id": [1, 2, 3], "amount": [10.5, 20.0, 7.25], "region": ["n", "s", "e"]}).write_csv(csv)
    try:
        rates = worker_rates(root, csv, batch, repeats, settle, (1,) if quick else (1, 2))  # quick: one path
        fan = fanout_times(root, rows, width, repeats, settle, warmup=0 if quick else 1, dask_workers=dask_workers)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    for count in rates:
        section.rows.append(
            Row(
                f"{batch} queued runs, {count} worker{'s' if count > 1 else ''}: runs per minute",
                Stat(tuple(rates[count]["weflow"]), "/min"),
                {RAW: Stat(tuple(rates[count][RAW]), "/min")},
            )
        )
    for runner in ("threads", "Dask"):
        section.rows.append(
            Row(
                f"fan-out of {width} over {rows:,} rows, {runner}",
                Stat(tuple(fan[f"weflow, {runner}"])),
                {RAW: Stat(tuple(fan[f"raw, {runner}"]))},
            )
        )
    if 2 in rates:
        gains = {
            side: statistics.median(rates[2][side]) / statistics.median(rates[1][side]) for side in ("weflow", RAW)
        }
        section.notes.append(
            f"Second worker's gain (median rate, 2 workers / 1): weflow {gains['weflow']:.2f}x, raw Prefect "
            f"{gains[RAW]:.2f}x. Both workers are on this machine's 2 cores with the Prefect server, so a "
            "second worker adds flow-process slots, not CPU: each flow run is a new Python process whose "
            "start (imports) is most of its cost."
        )
    section.notes += [
        f"Repeats: {repeats} batches per side and worker count, interleaved; the fan-out: {0 if quick else 1} "
        "warm-up, then "
        f"{repeats} rounds of the four variants in turn.",
    ]
    log("throughput: done")
    return section
