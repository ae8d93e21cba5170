"""Hot execution path (issue 17): trigger to SUCCEEDED catalog record through ONE long-lived ``weflow worker``.

The two-node sample of ``benchmarks/queued.py`` (``read_csv`` of a 3-row CSV -> ``filter``) in a
fresh catalog, deployed with ``weflow.deploy.deploy`` to a work pool of this benchmark's own (type
``weflow``) served by one ``weflow worker`` (its supervisor and worker child, started like
``weflow up`` starts it). Triggers, each timed until the catalog record is SUCCEEDED: the REST API
(``weflow serve`` on loopback, ``POST /workflows/{id}/executions`` with an API key), a webhook
(``POST /hooks/{token}``), ``weflow run NAME`` from a shell (the command's wall clock) and the
Prefect UI's route (``POST /deployments/{id}/create_flow_run``, what the UI's Run button and
``prefect deployment run`` send). Baselines in the same rounds: ``benchmarks/raw_flow.py`` deployed
to a Prefect process worker on a pool of its own, and ``benchmarks/raw_task.py`` as a Prefect
background task (``.delay()`` to a ``prefect.task_worker.serve`` process); in full runs also the
old path (the same weflow deployment on the Prefect process worker). Then the sustained rate of a
batch of queued runs with 1 and 2 weflow workers against in-process flow runs of the raw flow on
the same server (one at a time and 4 at once), and the worker child's RSS after the first runs and
after the batch. Every process the benchmark starts is stopped at the end (DESIGN decision 14).
``BENCH_HOT_BATCH`` sets the full run's batch size (default 1,000).
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import polars as pl
from prefect.client.orchestration import get_client
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

from benchmarks import queued, raw_flow, raw_task
from benchmarks.harness import REPO, Row, Section, Stat, interleave, log
from weflow import accounts, config, deploy, execution, workflows
from weflow.core.entities import Execution, Mode, RunState
from weflow.prefect_gateway import server, worker_home
from weflow.prefect_gateway.client import blocking
from weflow.workflows import Scope

POOL = f"weflow-bench-hot-{os.getpid()}"  # the weflow workers' pool (type weflow, made by deploy)
RAW_POOL = f"weflow-bench-hot-raw-{os.getpid()}"  # the Prefect process worker's pool
NAME = "bench_hot"  # max_concurrent_runs: null, no deployment limit (as the raw Prefect deployment has none)
LIMITED = "bench_hot_limited"  # the same with a deployment limit, RUN_LIMIT: each run takes and gives back its lease
WORKER_LIMIT = 4  # flow runs at once per weflow worker (weflow worker's default)
RUN_LIMIT = 2 * WORKER_LIMIT  # LIMITED's max_concurrent_runs: never the limit with 2 workers
ABOVE = queued.ABOVE
ROWS_KEPT = 2  # of the CSV's 3 rows, amount > ABOVE
POLL = 0.05  # seconds between two looks at a flow run (the baselines' runs, Prefect's states)
# seconds at most between two reads of a record when the catalog file did not change (``record``): a commit changes
# it, so these reads are a safety net; at 0.05 s they were a catalog session every 50 ms (~20% of a core and the
# catalog's lock) beside the run being timed, which weflow's own waiters (``execution.wait``, ``weflow run``) do not do
RECORD_POLL = 1.0
BATCH_POLL = 0.5
SYNC_EVERY = 10.0  # seconds between two syncs from Prefect while a batch runs
RUN_TIMEOUT = 180.0
BATCH_TIMEOUT = 3600.0
SUBMITTERS = 2  # threads submitting a batch's runs
QUICK_BATCH = 2  # a --quick run's batch (the smoke test: the rows exist, not what they say)
FIRST_RUNS = 10  # the worker's RSS is read after these (quick: 1), then after the batch
RAW = "raw Prefect process worker"
TASK = "Prefect background task"
FLOOR = "in-process Prefect flow runs"
WEFLOW_EXE = str(Path(sys.executable).with_name("weflow"))


# --- processes ------------------------------------------------------------------------------


def _start(cmd: Sequence[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as out:
        return subprocess.Popen(list(cmd), env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def _stop(procs: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to each process group, then wait (SIGKILL past 60 s)."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def _until(
    check: Callable[[], Any], what: str, procs: Sequence[subprocess.Popen[bytes]], timeout: float = 120.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        dead = [p.args for p in procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{what}: {dead[0]} exited with code {[p.returncode for p in procs if p.poll()]}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Requests without the API key (webhooks, Prefect's API, health) share one client: httpx.get/post build a client and
# an SSL context from the CA bundle per call (~20 ms of CPU, timed in a webhook row and spent beside the runs).
_plain = httpx.Client(timeout=60)


def _healthy(url: str) -> bool:
    try:
        return _plain.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def worker_children(home: Path) -> list[int]:
    """The pids of the home's weflow worker children that take wake-ups (serving now)."""
    return [int(r["pid"]) for r in worker_home.live(home) if r.get("port")]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


# --- the stack -----------------------------------------------------------------------------


@dataclass
class Stack:
    """What the benchmark started and made: processes, the API's key and hook token, the deployments."""

    root: Path
    csv: Path
    api: str  # Prefect's
    home: Path  # PREFECT_HOME of the weflow workers and the API (where wake-ups are found)
    env: dict[str, str]
    scope: Scope
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    baselines: list[subprocess.Popen[bytes]] = field(default_factory=list)  # the process and task workers
    url: str = ""  # weflow serve
    key: str = ""
    token: str = ""
    workflow_id: int = 0
    deployments: dict[str, UUID] = field(default_factory=dict)
    child: int = 0  # the first weflow worker's child
    served: int = 0  # runs the weflow worker pool has run
    trips: list[tuple[float, Execution, float]] = field(default_factory=list)  # API runs: trigger, record, seen
    failed: list[str] = field(default_factory=list)  # batch runs that did not succeed: status and error

    def weflow_worker(self) -> subprocess.Popen[bytes]:
        proc = _start([WEFLOW_EXE, "worker", "--limit", str(WORKER_LIMIT)], self.env, self.root / "weflow-worker.log")
        self.procs.append(proc)
        return proc


async def _clone_on_raw_pool(deployment_id: UUID) -> UUID:
    """The weflow deployment, copied to the process worker's pool: the path before issue 17."""
    async with get_client() as client:
        d = await client.read_deployment(deployment_id)
        return await client.create_deployment(
            flow_id=d.flow_id, name=f"{NAME}-process", entrypoint=d.entrypoint, path=d.path,
            work_pool_name=RAW_POOL, work_queue_name=deploy.execution_queue(),
            job_variables={k: v for k, v in (d.job_variables or {}).items() if k != "isolation"},
            parameters=d.parameters, enforce_parameter_schema=False,
        )  # fmt: skip


async def _pool_ready(pool: str) -> bool:
    """Whether ``pool`` exists and has a worker (the worker makes a missing pool when it starts)."""
    async with get_client() as client:
        try:
            return bool(await client.read_workers_for_work_pool(pool))
        except PrefectHTTPStatusError as exc:  # 404 until the worker made the pool
            if exc.response.status_code != 404:
                raise
            return False


def _setup(stack: Stack, old_path: bool) -> None:
    """Workflow, deployments, key, hook; the workers, the task worker and ``weflow serve``, all ready."""
    scope, env = stack.scope, stack.env
    unlimited = queued.workflow_document(NAME, stack.csv)
    unlimited["settings"] = {"max_concurrent_runs": None}
    workflows.apply(unlimited, scope)
    workflows.apply(queued.workflow_document(LIMITED, stack.csv, RUN_LIMIT), scope)
    stack.workflow_id = workflows.get(NAME, scope).id
    found = [d for d in deploy.deploy(scope) if d.workflow == NAME and d.deployment_id is not None]
    stack.deployments["weflow"] = found[0].deployment_id  # type: ignore[assignment]
    cfg = config.settings()
    stack.key = accounts.create_key(cfg.catalog, cfg.organization, cfg.user)[1]
    stack.token = accounts.create_hook(scope, workflows.get(NAME, scope))[1]
    first = stack.weflow_worker()
    raw = server.start_worker(stack.api, RAW_POOL, deploy.execution_queue(), stack.root / "raw-worker")
    stack.procs.append(raw)
    storage = str(get_current_settings().results.local_storage_path)
    task_env = {**env, "PREFECT_RESULTS_LOCAL_STORAGE_PATH": storage, "PREFECT_LOCAL_STORAGE_PATH": storage}
    tasks = _start([sys.executable, "-m", "benchmarks.raw_task"], task_env, stack.root / "task-worker.log")
    stack.procs.append(tasks)
    stack.baselines += [raw, tasks]
    port = _free_port()
    serve = _start([WEFLOW_EXE, "serve", "--port", str(port)], env, stack.root / "serve.log")
    stack.procs.append(serve)
    stack.url = f"http://127.0.0.1:{port}"
    _until(lambda: blocking(_pool_ready(RAW_POOL)), "Prefect process worker", [raw])  # its worker makes the pool
    with queued._environ(WEFLOW_WORK_POOL=RAW_POOL):
        stack.deployments[RAW] = blocking(queued._deploy_raw(stack.csv))
    if old_path:
        stack.deployments["old"] = blocking(_clone_on_raw_pool(stack.deployments["weflow"]))
    blocking(queued._wait_for_worker(POOL, [first]))
    stack.child = _until(lambda: worker_children(stack.home), "weflow worker", [first])[0]
    _until(lambda: _healthy(stack.url), "weflow serve", [serve])
    log(f"hot: weflow worker child {stack.child}, raw worker {raw.pid}, task worker {tasks.pid}, API {stack.url}")


@contextmanager
def _stack(root: Path, old_path: bool) -> Iterator[Stack]:
    csv = root / "tiny.csv"
    pl.DataFrame({"id": [1, 2, 3], "amount": [10.5, 20.0, 7.25], "region": ["n", "s", "e"]}).write_csv(csv)
    home = root / "home"
    home.mkdir()
    with (
        config.using(
            catalog=root / "weflow.duckdb",
            data_roots=(root,),
            runs_dir=root / "runs",
            organization="bench",
            user="hot",
            shared_data_roots=False,
        ),  # fmt: skip
        queued._server(root) as api,
        queued._environ(WEFLOW_WORK_POOL=POOL, PREFECT_HOME=str(home)),  # submit wakes the home's workers
        temporary_settings(updates={PREFECT_API_URL: api}),
    ):
        # the job env the deployments carry, so the worker runs them in its own process (worker.py)
        env = {**os.environ, **deploy.job_env(), "PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
        stack = Stack(root, csv, api, home, env, Scope.current())
        try:
            _setup(stack, old_path)
            yield stack
        finally:
            _stop(stack.procs)
            blocking(queued._cleanup([v for k, v in stack.deployments.items() if k != RAW], POOL))
            blocking(queued._cleanup([stack.deployments[RAW]] if RAW in stack.deployments else [], RAW_POOL))


# --- one run, each way ---------------------------------------------------------------------


def _succeeded(found: Execution) -> Execution:
    if found.status is not RunState.SUCCEEDED:
        raise RuntimeError(f"weflow run {found.id} ended {found.status.value}: {found.error_message}")
    return found


def record(scope: Scope, execution_id: str) -> Execution:
    """Until the catalog record of ``execution_id`` is final (read whenever the catalog file changed, at least every
    RECORD_POLL s: ``Catalog.changed``, two stats every 5 ms and no session in between); it must be SUCCEEDED."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        seen = scope.catalog.stamp()
        if (found := scope.catalog.execution(execution_id)).status.final:
            return _succeeded(found)
        if time.monotonic() > deadline:
            raise RuntimeError(f"weflow run {execution_id} still {found.status.value} after {RUN_TIMEOUT:g} s")
        scope.catalog.changed(seen, RECORD_POLL)


def record_of(stack: Stack, flow_run_id: str) -> Execution:
    """Until the flow run's catalog record (made by the flow itself: a run created outside weflow) is final."""
    deadline = time.monotonic() + RUN_TIMEOUT
    org = stack.scope.user.organization_id
    while True:
        seen = stack.scope.catalog.stamp()
        mine = [
            e for e in stack.scope.catalog.executions(org, stack.workflow_id, limit=10) if e.flow_run_id == flow_run_id
        ]
        if mine and mine[0].status.final:
            return _succeeded(mine[0])
        if time.monotonic() > deadline:
            raise RuntimeError(f"flow run {flow_run_id} has no final weflow record after {RUN_TIMEOUT:g} s")
        stack.scope.catalog.changed(seen, RECORD_POLL)  # as ``record``


def via_api(stack: Stack, http: httpx.Client) -> float:
    triggered, t0 = time.time(), time.perf_counter()
    made = http.post(f"{stack.url}/workflows/{stack.workflow_id}/executions", json={})
    if made.status_code != 202:
        raise RuntimeError(f"POST executions answered {made.status_code}: {made.text}")
    done = record(stack.scope, made.json()["id"])
    seconds = time.perf_counter() - t0
    stack.trips.append((triggered, done, time.time()))
    stack.served += 1
    return seconds


def via_hook(stack: Stack, http: httpx.Client) -> float:
    t0 = time.perf_counter()
    made = _plain.post(f"{stack.url}/hooks/{stack.token}", json={})  # a caller of its own, no key
    if made.status_code != 202:
        raise RuntimeError(f"POST /hooks answered {made.status_code}: {made.text}")
    record(stack.scope, made.json()["id"])
    stack.served += 1
    return time.perf_counter() - t0


def via_cli(stack: Stack) -> float:
    """``weflow run NAME`` from a shell: the command's wall clock (it exits once the run ended)."""
    t0 = time.perf_counter()
    done = subprocess.run([WEFLOW_EXE, "run", NAME], env=stack.env, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"weflow run {NAME} exited {done.returncode}: {done.stderr.strip()[-500:]}")
    return seconds


def _prefect(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request to the Prefect server, retried on 503 as Prefect's client does (SQLite busy under load)."""
    for attempt in range(6):
        answer = _plain.request(method, url, **kwargs)
        if answer.status_code != 503:
            break
        time.sleep(0.5 * 2**attempt)
    return answer


def _create_flow_run(stack: Stack, which: str) -> str:
    made = _prefect("POST", f"{stack.api}/deployments/{stack.deployments[which]}/create_flow_run", json={})
    if made.status_code != 201:
        raise RuntimeError(f"create_flow_run answered {made.status_code}: {made.text}")
    return str(made.json()["id"])


def via_ui(stack: Stack, which: str = "weflow") -> float:
    """The Prefect UI's Run button (``prefect deployment run``): a flow run created outside weflow."""
    t0 = time.perf_counter()
    record_of(stack, _create_flow_run(stack, which))
    stack.served += which == "weflow"
    return time.perf_counter() - t0


def _completed(stack: Stack, what: str, run_id: str) -> None:
    """Until the Prefect flow run or task run (``what``: flow_runs, task_runs) is final; it must be COMPLETED."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while True:
        state = _prefect("GET", f"{stack.api}/{what}/{run_id}").json().get("state") or {}
        if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            if state["type"] != "COMPLETED":
                raise RuntimeError(f"{what} {run_id} ended {state['type']}: {state.get('message')}")
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} {run_id} not finished after {RUN_TIMEOUT:g} s")
        time.sleep(POLL)


def via_raw_worker(stack: Stack) -> float:
    t0 = time.perf_counter()
    _completed(stack, "flow_runs", _create_flow_run(stack, RAW))
    return time.perf_counter() - t0


def via_task(stack: Stack) -> float:
    """``.delay()``, then its task run read every POLL s (as the other rows; ``future.wait()`` listens for
    an event and, once in a few runs here, missed it and waited its whole timeout)."""
    t0 = time.perf_counter()
    future = raw_task.keep_large.delay(str(stack.csv), ABOVE)
    _completed(stack, "task_runs", str(future.task_run_id))
    return time.perf_counter() - t0


# --- rates ---------------------------------------------------------------------------------


def floor_seconds(csv: Path, n: int, at_once: int) -> float:
    """``n`` in-process runs of the raw flow, ``at_once`` at a time in one event loop."""

    async def go() -> None:
        gate = asyncio.Semaphore(at_once)

        async def one() -> None:
            async with gate:
                if await raw_flow.raw_trivial(str(csv), ABOVE) != ROWS_KEPT:
                    raise RuntimeError("the raw flow kept the wrong rows")

        await asyncio.gather(*(one() for _ in range(n)))

    t0 = time.perf_counter()
    blocking(go())
    return time.perf_counter() - t0


def batch_seconds(stack: Stack, n: int, workflow: str = NAME) -> tuple[float, float]:
    """``n`` runs of ``workflow`` queued at once (``execution.submit`` from SUBMITTERS threads, as that many API
    callers would) until every record is final (each must be SUCCEEDED).

    Returns the seconds to the last record final and to the last run submitted.
    """
    scope, org = stack.scope, stack.scope.user.organization_id

    def submit() -> str | None:
        try:
            return execution.submit(workflow, scope, Mode.API, queue=True).id
        except Exception as exc:  # the server's 503 under load, after Prefect's client retried: counted, reported
            stack.failed.append(f"submit raised {type(exc).__name__}: {str(exc).splitlines()[0][:120]}")
            return None

    contexts = [contextvars.copy_context() for _ in range(n)]  # made here: config.using and Prefect's settings
    t0 = time.perf_counter()
    with ThreadPoolExecutor(SUBMITTERS) as pool:
        ids = [i for i in pool.map(lambda context: context.run(submit), contexts) if i is not None]
    submitted = time.perf_counter() - t0
    deadline, synced = time.monotonic() + BATCH_TIMEOUT, time.monotonic()
    while {e.id for e in scope.catalog.unfinished(org)} & set(ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"a batch of {n} not finished after {BATCH_TIMEOUT:g} s")
        if time.monotonic() > synced + SYNC_EVERY:  # as execution.wait does: a run Prefect ended but no one recorded
            execution.sync(scope)
            synced = time.monotonic()
        time.sleep(BATCH_POLL)
    seconds = time.perf_counter() - t0
    found = {e.id: e for e in scope.catalog.executions(org, workflows.get(workflow, scope).id, limit=n)}
    bad = [found[i] for i in ids if found[i].status is not RunState.SUCCEEDED]
    lost = n - len(ids)  # submits that raised
    stack.failed += [f"{e.status.value}: {(e.error_message or '').splitlines()[0][:160]}" for e in bad]
    if len(bad) + lost > n // 20:
        raise RuntimeError(f"{len(bad) + lost} of {n} batch runs did not succeed: {stack.failed[-1]}")
    stack.served += len(ids) - len(bad)
    return seconds * n / (len(ids) - len(bad)), submitted  # the seconds per successful run, times n


def _warm(stack: Stack, first: int) -> float:
    """``first`` queued runs, one after the other; the worker child's RSS after them. Checks they ran in it."""
    done = [record(stack.scope, execution.submit(NAME, stack.scope, Mode.API, queue=True).id) for _ in range(first)]
    stack.served += len(done)
    deadline = time.monotonic() + 10  # the worker writes the pid beside the run: it may land after the record's end
    while (
        ran := _prefect("GET", f"{stack.api}/flow_runs/{done[-1].flow_run_id}").json().get("infrastructure_pid")
    ) is None:
        if time.monotonic() > deadline:
            break
        time.sleep(POLL)
    if ran != str(stack.child):
        raise RuntimeError(f"a run ran in process {ran}, not in the weflow worker {stack.child}")
    return rss_mb(stack.child)


# --- the benchmark -------------------------------------------------------------------------


def p99(samples: Sequence[float]) -> float:
    return statistics.quantiles(samples, n=100, method="inclusive")[98] if len(samples) > 1 else samples[0]


@dataclass
class Found:
    latency: dict[str, list[float]]
    rates: dict[str, list[float]]  # per minute
    rss: tuple[float, float]  # after the first runs, after the batch
    served: int
    first: int
    submitted: dict[str, float]  # seconds to submit each batch
    trips: list[tuple[float, Execution, float]]
    failed: list[str]


def measure(
    root: Path,
    repeats: int,
    warmup: int,
    batch: int,
    floor_runs: int,
    settle: float,
    old: bool,
    first: int,
    two: bool = True,
) -> Found:
    with _stack(root, old) as stack, httpx.Client(headers={"Authorization": f"Bearer {stack.key}"}, timeout=60) as http:
        rss_first = _warm(stack, first)
        variants: dict[str, Callable[[], float]] = {
            "api": lambda: via_api(stack, http),
            "hook": lambda: via_hook(stack, http),
            "cli": lambda: via_cli(stack),
            "ui": lambda: via_ui(stack),
            RAW: lambda: via_raw_worker(stack),
            TASK: lambda: via_task(stack),
        }
        if old:
            variants["old"] = lambda: via_ui(stack, "old")
        latency = interleave(variants, repeats, warmup=warmup, max_settle=settle, progress="hot: one run")
        floor = interleave(
            {f"{FLOOR}, 1": lambda: floor_seconds(stack.csv, floor_runs, 1),
             f"{FLOOR}, 4": lambda: floor_seconds(stack.csv, floor_runs, 4)},
            1, warmup=0, max_settle=settle, progress=f"hot: {floor_runs} in-process flow runs",
        )  # fmt: skip
        rates = {k: [floor_runs * 60 / s for s in v] for k, v in floor.items()}
        _stop(stack.baselines)  # the baselines' workers poll the server each second: not during the batches
        log(f"hot: {batch} queued runs on 1 weflow worker")
        seconds, submitted = batch_seconds(stack, batch)
        rates["1 worker"], sent = [batch * 60 / seconds], {"1 worker": submitted}
        log(f"hot: {batch} queued runs of a workflow with a limit ({RUN_LIMIT}) on 1 weflow worker")
        seconds, sent[LIMITED] = batch_seconds(stack, batch, LIMITED)
        rates[LIMITED] = [batch * 60 / seconds]
        rss_last, served = rss_mb(stack.child), stack.served
        if worker_children(stack.home) != [stack.child]:
            raise RuntimeError("the weflow worker child changed during the batch (recycled or died)")
        if not two:  # quick: the second worker's batch is the same code path, and ~10 s of the smoke test
            return Found(latency, rates, (rss_first, rss_last), served, first, sent, stack.trips, stack.failed)
        second = stack.weflow_worker()
        blocking(queued._wait_for_worker(POOL, [second], 2))
        _until(lambda: len(worker_children(stack.home)) == 2, "second weflow worker", [second])
        log(f"hot: {batch} queued runs on 2 weflow workers")
        seconds, sent["2 workers"] = batch_seconds(stack, batch)
        rates["2 workers"] = [batch * 60 / seconds]
    return Found(latency, rates, (rss_first, rss_last), served, first, sent, stack.trips, stack.failed)


TRIGGERS = {
    "api": "REST API (`POST /workflows/{id}/executions`)",
    "hook": "webhook (`POST /hooks/{token}`)",
    "cli": "`weflow run NAME` from a shell, stack up (command wall clock)",
    "ui": "Prefect UI's route (`POST /deployments/{id}/create_flow_run`)",
}


def run(quick: bool) -> Section:
    repeats, warmup = (1, 0) if quick else (10, 1)
    batch, floor_runs = (QUICK_BATCH, 4) if quick else (int(os.environ.get("BENCH_HOT_BATCH", "1000")), 100)
    settle = 0.2 if quick else 3.0
    old = not quick  # ~9 s a run on the process worker: full runs only
    section = Section(
        name="hot",
        title="trigger to SUCCEEDED record through one long-lived weflow worker",
        description=f"""\
The two-node sample (`read_csv` of a 3-row CSV -> `filter`) deployed to a work pool of its own
(type `weflow`) served by ONE `weflow worker` (`--limit {WORKER_LIMIT}`). Each weflow row is a trigger
timed until the run's catalog record is SUCCEEDED (read as soon as the catalog file changed, which is looked at
every 5 ms without opening it, and at least every {RECORD_POLL:g} s): the REST API (`weflow serve`
on loopback with an API key), a webhook, `weflow run NAME` from a shell with the stack up (the
command's wall clock; it hands the run to the worker and waits on the worker's `/wait`) and the Prefect
UI's route (a flow run created outside weflow, which wakes the worker through Prefect's event stream).
**{RAW}**: `benchmarks/raw_flow.py` (an async flow awaiting one async task
doing the same read and filter) deployed to a Prefect process worker on a pool of its own, timed
from `create_flow_run` until COMPLETED. **{TASK}**: `benchmarks/raw_task.py`, the same work as one
task, `.delay()` to a `prefect.task_worker.serve` process, timed until its state is Completed.
**{FLOOR}**: the raw flow called in this process on the same server, {floor_runs} runs one at a time
and 4 at once. Rates: a batch of {batch} runs queued at once with `execution.submit` from
{SUBMITTERS} threads (each a Prefect flow run and a catalog record) until every record is final, with
1 then 2 weflow workers, the baselines' process and task workers stopped by then (**more is better**: a ratio
above 1 is weflow ahead). The workflow has no concurrency limit of its own (`max_concurrent_runs: null`), as the
raw Prefect deployment has none; the `workflow limit {RUN_LIMIT}` row is the same batch, 1 worker, of a copy with
that limit (never reached), whose runs each take and give back the deployment's lease. One-run rows: {repeats}
interleaved rounds after {warmup} warm-up; p99 from those samples (inclusive quantiles).""",
        baselines=(RAW, TASK, FLOOR),
    )
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-hot-")).resolve()
    try:
        found = measure(root, repeats, warmup, batch, floor_runs, settle, old, 1 if quick else FIRST_RUNS, not quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    _rows(section, found, batch, floor_runs, old)
    log("hot: done")
    return section


def _rows(section: Section, found: Found, batch: int, floor_runs: int, old: bool) -> None:
    lat = found.latency
    raw, task = Stat(tuple(lat[RAW])), Stat(tuple(lat[TASK]))
    raw99, task99 = Stat((p99(lat[RAW]),)), Stat((p99(lat[TASK]),))
    for key, label in TRIGGERS.items():
        section.rows.append(Row(f"{label}: p50", Stat(tuple(lat[key])), {RAW: raw, TASK: task}))
        section.rows.append(Row(f"{label}: p99", Stat((p99(lat[key]),)), {RAW: raw99, TASK: task99}))
    if old:
        section.rows.append(Row("old path, weflow on a Prefect process worker (UI route): p50", Stat(tuple(lat["old"])),
                                {RAW: raw, TASK: task}))  # fmt: skip
    rate = {k: Stat(tuple(v), "/min") for k, v in found.rates.items()}
    one, four = rate[f"{FLOOR}, 1"], rate[f"{FLOOR}, 4"]
    section.rows += [
        Row(f"{batch} queued runs, 1 weflow worker: runs per minute (vs floor one at a time)", rate["1 worker"],
            {FLOOR: one}),
        Row(f"{batch} queued runs, 1 weflow worker: runs per minute (vs floor 4 at once)", rate["1 worker"],
            {FLOOR: four}),
        *([Row(f"{batch} queued runs, 2 weflow workers: runs per minute (vs floor 4 at once)", rate["2 workers"],
               {FLOOR: four})] if "2 workers" in rate else []),
        Row(f"{batch} queued runs, 1 weflow worker, workflow limit {RUN_LIMIT}: runs per minute (vs floor 4 at once)",
            rate[LIMITED], {FLOOR: four}),
        Row(f"{batch} queued runs, 1 weflow worker: all submitted", Stat((found.submitted["1 worker"],)), {}),
        *([Row(f"{batch} queued runs, 2 weflow workers: all submitted", Stat((found.submitted["2 workers"],)), {})]
          if "2 workers" in found.submitted else []),
        Row(f"{batch} queued runs, 1 weflow worker, workflow limit {RUN_LIMIT}: all submitted",
            Stat((found.submitted[LIMITED],)), {}),
        Row(f"weflow worker child RSS after {found.first} runs", Stat((found.rss[0],), "MB"), {}),
        Row(f"weflow worker child RSS after {found.served} runs", Stat((found.rss[1],), "MB"), {}),
    ]  # fmt: skip
    section.rows += [Row(label, Stat(tuple(values)), {}) for label, values in _phases(found.trips).items()]
    _notes(section, found, batch)


def _phases(trips: Sequence[tuple[float, Execution, float]]) -> dict[str, list[float]]:
    """Where a REST API run's time goes, from the record's own start and end times."""
    found: dict[str, list[float]] = {
        "  REST API run: trigger → record RUNNING (API, flow run, wake-up, worker, engine start)": [],
        "  REST API run: record RUNNING → finished (the nodes)": [],
        "  REST API run: finished → SUCCEEDED seen (the record's batched write, the poll)": [],
    }
    for triggered, done, seen in trips:
        assert done.started_at is not None and done.finished_at is not None
        start, end = done.started_at.timestamp(), done.finished_at.timestamp()
        for values, value in zip(found.values(), (start - triggered, end - start, seen - end), strict=True):
            values.append(value)
    return found


def _notes(section: Section, found: Found, batch: int) -> None:
    lat = found.latency
    ok = {key: (statistics.median(lat[key]), p99(lat[key])) for key in TRIGGERS}
    met = [
        f"{TRIGGERS[k].split(' (')[0]} p50 {p50:.2f} s / p99 {tail:.2f} s "
        f"({'met' if p50 <= 0.5 and tail <= 2 else 'NOT met'})"
        for k, (p50, tail) in ok.items()
        if k != "cli"
    ]
    cli = statistics.median(lat["cli"])
    per_s = {k: statistics.median(found.rates[k]) / 60 for k in ("1 worker", "2 workers") if k in found.rates}
    floor4 = statistics.median(found.rates[f"{FLOOR}, 4"]) / 60
    limited = statistics.median(found.rates[LIMITED]) / 60
    growth = found.rss[1] / found.rss[0]
    section.notes += [
        "Targets (issue 17): trigger to done p50 <= 0.5 s and p99 <= 2 s; " + "; ".join(met) + ". "
        f"`weflow run` <= 0.6 s: {cli:.2f} s ({'met' if cli <= 0.6 else 'NOT met'}). "
        f">= 5 executions/s sustained, or within 1.2x of the in-process floor ({floor4:.2f}/s 4 at once): "
        + ", ".join(f"{k} {v:.2f}/s ({'met' if v >= 5 or v * 1.2 >= floor4 else 'NOT met'})" for k, v in per_s.items())
        + f"; a workflow with a concurrency limit (its lease), 1 worker: {limited:.2f}/s. "
        f"Worker RSS after {found.served} runs within 1.2x of after {found.first}: {growth:.2f}x "
        f"({'met' if growth <= 1.2 else 'NOT met'}).",
        "Why this mechanism: the weflow worker is a Prefect worker type of weflow's own (Prefect's process "
        "worker, so BaseWorker's polling, pool sync, heartbeats, per-worker limit and pending-run cancel) "
        "that loads the deployment's entrypoint once and runs each flow run with Prefect's own async flow "
        "engine on the existing flow run, in a thread of its own; every execution stays a flow run of its "
        "deployment (states, task runs, logs, cancel, concurrency limits, the Prefect UI's pool and Run "
        "button), while the ~2.5-3 s and ~200 MB of two new interpreters per run that the process worker "
        "pays (the old path row) are gone. A background task is faster to start but is not a flow run of "
        "a deployment (no deployment concurrency limit, no Run button, no flow-run cancel).",
        f"The weflow rows' runs all ran in the worker child (checked with the flow run's infrastructure pid); "
        f"runs weflow creates wake the worker at once, runs created elsewhere (the UI route) through the "
        f"`prefect.flow-run.Scheduled` event of its pool (its 1 s poll is the fallback). `weflow run NAME` is timed "
        f"as a command: a new interpreter, the hand-off and the wait. The batches: {batch} runs "
        f"submitted from {SUBMITTERS} threads of this process while the workers run them; the second worker "
        "shares the machine's 2 cores with the first, the server and this process. Batch runs that did not succeed "
        f"(a rate counts only the others): {'; '.join(found.failed) or 'none'}. RSS is the worker "
        "child's VmRSS (the supervisor, which imports neither Prefect nor the engine, apart).",
    ]
