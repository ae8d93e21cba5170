"""Long-lived execution workers (``weflow worker``, DESIGN decision 12): a small supervisor over one worker child.

``supervise`` runs in the ``weflow worker`` process and imports neither Prefect nor the engine:
it starts the real worker (``python -m weflow.workers``, the gateway's ``WeflowWorker``) as its
child, starts a fresh one when the child recycles (after ``--max-runs`` runs or above
``--max-memory-mb``, in-flight runs finished first) or dies, and stops it on SIGTERM or Ctrl-C
(DESIGN decision 14: the child also dies with its supervisor). When a child dies with runs in
flight (a node called ``os._exit``, a SIGKILL), those runs, which the child listed in its record
in the Prefect home, are ended CRASHED in Prefect at once and the catalog mirror is synced from
Prefect (FAILED, never RUNNING), as ``weflow sync`` does. A child whose event loop stops refreshing
its record (a node holding the interpreter, e.g. a C call that keeps the GIL) for
``WEFLOW_WORKER_HANG_SECONDS`` (default 60) is killed and treated the same.

The child (``child_main``) makes the execution service record in batches, points the job env at
the same catalog, data roots and API as ``weflow deploy`` puts into each deployment, loads the
entrypoint flow once and serves the execution queue, and the runs handed over to it (``weflow.handoff``:
``weflow run``, and the API's runs of workflows that are not deployed).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from weflow.prefect_gateway import server, worker_home

DEFAULT_LIMIT = 4  # flow runs at once per worker: the in-process floor stops growing past 4 on 2 cores (DESIGN facts)
QUICK_DEATH_SECONDS = 10.0  # a child dying sooner than this after its start is restarted with a growing delay
# glibc's malloc gives a process's threads up to 8 arenas per core; the child runs each flow run in a thread of its
# own (and Prefect starts more per run), so what runs free is spread over many arenas and RSS creeps up. Two arenas
# (unless MALLOC_ARENA_MAX is set): RSS after 410 runs 337 -> 318 MB, growth from run 10 to 410 +64 -> +47 MB.
MALLOC_ARENAS = "2"


@dataclass(frozen=True)
class WorkerOptions:
    limit: int = DEFAULT_LIMIT
    max_runs: int | None = None
    max_memory_mb: int | None = None
    name: str | None = None
    parent: int | None = None  # the process that started this one: stop when it ends (``weflow up``)


class Supervisor:
    """One ``weflow worker``: its child, restarted until a signal stops both."""

    def __init__(self, options: WorkerOptions, say: Callable[[str], None] = print) -> None:
        if options.parent is not None:  # first: a parent already gone starts nothing (its end: a SIGTERM, see run)
            worker_home.die_with(options.parent, "the process that started this weflow worker")
        self.options = options
        self.say = say
        self.grace = worker_home.grace_seconds()  # read first: a bad value is refused before anything starts
        self.hang = worker_home.hang_seconds()
        self.poll = worker_home.poll_seconds()
        self.home = server.default_home().resolve()
        self.api_url = server.ensure(quiet=True).api_url  # PREFECT_API_URL, else the home's server
        self.name = options.name or f"weflow {socket.gethostname()} {os.getpid()}"
        self.child: subprocess.Popen[bytes] | None = None
        self.stopping = False
        self.deadline = 0.0

    def argv(self) -> list[str]:
        o = self.options
        argv = [sys.executable, "-m", "weflow.workers", "--home", str(self.home), "--parent", str(os.getpid()),
                "--name", self.name, "--limit", str(o.limit)]  # fmt: skip
        argv += ["--max-runs", str(o.max_runs)] if o.max_runs else []
        argv += ["--max-memory-mb", str(o.max_memory_mb)] if o.max_memory_mb else []
        return argv

    def start(self) -> subprocess.Popen[bytes]:
        env = {"MALLOC_ARENA_MAX": MALLOC_ARENAS, **os.environ, "PREFECT_API_URL": self.api_url,
               "PREFECT_WORKER_QUERY_SECONDS": str(self.poll)}  # fmt: skip
        self.child = worker_home.start_child(self.argv(), env, self.home / "worker-weflow.log")
        self.say(f"worker {self.child.pid} started (log: {self.home / 'worker-weflow.log'})")
        return self.child

    def run(self) -> int:
        """Start children until a signal stops it (then the child's runs get a grace period); 0."""
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):  # a tied parent's end too (``parent``)
            signal.signal(signum, self._signal)
        self.sweep()
        quick_deaths = 0
        while True:
            started = time.monotonic()
            child = self.start()
            ended = self._wait(child)
            self.repair(child.pid, ended)
            if self.stopping:
                return 0
            quick_deaths = quick_deaths + 1 if time.monotonic() - started < QUICK_DEATH_SECONDS else 0
            self.say(f"worker {child.pid} {ended}; starting another")
            if quick_deaths > 1:  # a child that cannot start (a bad environment) is not restarted in a hot loop
                time.sleep(min(30.0, 0.5 * 2**quick_deaths))

    def _signal(self, signum: int, frame: FrameType | None) -> None:
        """First signal: the child finishes its runs (up to the grace period); a second one: kill it now."""
        grace = 0.0 if self.stopping else self.grace
        self.stopping = True
        self.deadline = time.monotonic() + grace
        self.say(f"{signal.Signals(signum).name}: stopping the worker; its runs in flight get {grace:g} s to finish")
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)

    def _wait(self, child: subprocess.Popen[bytes]) -> str:
        """How the child ended: exited (recycled, or died with a code), or killed (past the grace period, or hung)."""
        while child.poll() is None:
            why = None
            if self.stopping and time.monotonic() > self.deadline:
                why = "still busy after the grace period"
            elif (silent := worker_home.silent_for(self.home, child.pid)) > self.hang:
                why = f"silent for {silent:.0f} s (a node holds the interpreter?)"
            if why is not None:
                self.say(f"worker {child.pid} {why}: killing it")
                child.kill()
                child.wait()
                return f"was killed: {why}"
            time.sleep(0.1)
        return "recycled" if child.returncode == 0 else f"died with exit code {child.returncode}"

    def sweep(self) -> list[str]:
        """End the runs that workers of this home left in flight when they died with their supervisor (a ``kill -9`` of
        the whole tree, the machine restarted) as ``repair`` ends a child's; their ids. Such a run that sent a heartbeat
        is also caught by Prefect (``deployments.crash_detection``), but a run in a worker sends its first only half a
        heartbeat period in (``worker._Engine``): one killed sooner is found only here."""
        crashed = []
        for pid in worker_home.orphans(self.home):
            try:
                crashed += self.repair(pid, "died with its supervisor")
            except Exception as exc:  # its record stays for the next supervisor; this one serves anyway
                self.say(f"worker {pid} died with its supervisor; could not end its runs in flight: {exc}")
        return crashed

    def repair(self, pid: int, ended: str) -> list[str]:
        """End the runs a dead child left in flight: CRASHED in Prefect, FAILED in the catalog; their ids.

        The record goes once they ended: if Prefect could not be told, the next supervisor on the home tries again
        (``sweep``)."""
        record = worker_home.read(self.home, pid)
        in_flight, crashed = [str(i) for i in (record or {}).get("in_flight", [])], []
        if in_flight:
            crashed = crash_runs(in_flight, f"the weflow worker running it (pid {pid}) {ended}")
            self.say(f"worker {pid} {ended}, {len(in_flight)} run(s) in flight; ended CRASHED: "
                     f"{', '.join(crashed) or 'none'}")  # fmt: skip
        worker_home.remove(self.home, pid)
        return crashed


def crash_runs(flow_run_ids: list[str], message: str) -> list[str]:
    """CRASHED in Prefect, then the catalog mirror synced from Prefect (no catalog here on a remote worker)."""
    # deferred: a supervisor that never sees a crash never imports Prefect or the engine (~2 s, ~150 MB)
    from weflow.execution import history
    from weflow.prefect_gateway import worker
    from weflow.workflows import Scope

    if not os.environ.get("PREFECT_API_URL"):
        server.use_api(server.ensure(quiet=True).api_url)
    crashed = worker.crash(flow_run_ids, message)
    if not os.environ.get("WEFLOW_API_URL"):
        history.sync(Scope.current())
    return crashed


def supervise(options: WorkerOptions, say: Callable[[str], None] = print) -> int:
    """``weflow worker``: run a worker child (restarted when it recycles or dies) until SIGTERM or Ctrl-C."""
    return Supervisor(options, say).run()


def child_main(argv: list[str] | None = None) -> int:
    """The worker child: batched records, the deployments' job env, the entrypoint loaded once, then serve."""
    parser = argparse.ArgumentParser(prog="python -m weflow.workers")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--name", required=True)
    parser.add_argument("--limit", type=int, default=DEFAULT_LIMIT)
    parser.add_argument("--max-runs", type=int, default=None)
    parser.add_argument("--max-memory-mb", type=int, default=None)
    args = parser.parse_args(argv)
    worker_home.die_with(args.parent)
    from weflow import deploy, handoff  # the child pays for Prefect and the engine once, for all its runs
    from weflow.execution import deployed
    from weflow.prefect_gateway import worker_serve

    deployed.record_in_batches()
    os.environ.update(deploy.job_env(os.environ.get("WEFLOW_API_URL") or None))
    worker_serve.run_worker(
        args.home, deploy.work_pool(), deploy.execution_queue(), name=args.name, limit=args.limit,
        max_runs=args.max_runs, max_memory_mb=args.max_memory_mb, preload=[deploy.entrypoint_path()],
        heartbeat_seconds=deploy.heartbeat_seconds(), printer=lambda line: print(line, flush=True),
        handoff=handoff.take,
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
