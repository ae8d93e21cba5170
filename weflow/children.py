"""Child processes that run queued executions for a long-lived parent (``weflow serve``).

A node runs Polars, DuckDB and allowed Python code; one that kills its interpreter
(``os._exit``, a segfault, the OOM killer) must end only its own run, never the API that serves
every organization. So the API hands each run that no Prefect deployment takes to a child
process (``python -m weflow.child``), at most WEFLOW_MAX_CHILD_RUNS at once (default: the number
of cores), one execution per child; it reaps them, cancels them, stops them when it shuts down,
and keeps one spare child that has done its imports ready for the next run. A run waiting for a
slot is held by this process's lease, so it ends FAILED if the parent dies first; a child whose
parent is gone stops itself.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

from weflow import leases
from weflow.core.entities import RunState
from weflow.errors import WeflowError
from weflow.workflows import Scope

log = logging.getLogger(__name__)

MAX_ENV = "WEFLOW_MAX_CHILD_RUNS"
STOP_GRACE_SECONDS = 5.0  # how long stop() waits for the loop thread's current turn


def max_children() -> int:
    """How many child runs at once, from WEFLOW_MAX_CHILD_RUNS (default: the number of cores)."""
    text = os.environ.get(MAX_ENV, "").strip()
    if not text:
        return os.cpu_count() or 2
    if not text.isdigit() or int(text) < 1:
        raise WeflowError(f"{MAX_ENV}={text!r}: must be a positive number of processes")
    return int(text)


@dataclass
class _Child:
    execution_id: str
    scope: Scope
    process: subprocess.Popen[bytes] | None = None


def _exit_text(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class RunProcesses:
    """Runs executions in child processes, a bounded number at once; ends the records of those that die."""

    def __init__(self, limit: int | None = None, poll_seconds: float = 0.1) -> None:
        self.limit = limit or max_children()
        self.poll_seconds = poll_seconds
        self._pending: deque[_Child] = deque()
        self._running: dict[str, _Child] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopped = False
        self._thread: threading.Thread | None = None
        self._spare: tuple[str, subprocess.Popen[bytes]] | None = None  # (catalog, a child waiting for its run)

    def start(self, execution_id: str, scope: Scope) -> None:
        """Run the QUEUED execution in a child process as soon as a slot is free."""
        with self._lock:
            if self._stopped:
                raise WeflowError("weflow is shutting down: it starts no new run")
            self._pending.append(_Child(execution_id, scope))
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="weflow-run-processes", daemon=True)
                self._thread.start()
        self._wake.set()

    def cancel(self, execution_id: str) -> bool:
        """Stop a run this process holds (waiting, or in a child); its record ends CANCELLED. False if not held.

        The record ends first, so that no reader takes the kill for a crash; the child then gets
        SIGKILL, so that no signal handler of its records another end over this one.
        """
        with self._lock:
            waiting = next((c for c in self._pending if c.execution_id == execution_id), None)
            if waiting is not None:
                self._pending.remove(waiting)
            running = self._running.pop(execution_id, None)
        found = waiting or running
        if found is None:
            return False
        self._ended(found, "execution cancelled", RunState.CANCELLED)
        if found.process is not None:
            found.process.kill()
            found.process.wait()
        return True

    def pids(self) -> list[int]:
        with self._lock:
            return [c.process.pid for c in self._running.values() if c.process is not None]

    def _loop(self) -> None:
        next_beat = 0.0
        while True:
            self._wake.wait(self.poll_seconds)
            self._wake.clear()
            try:
                held = self._step()
                if held is None:
                    return
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + leases.heartbeat_seconds()
                    self._beat(held)
            except Exception:  # one bad turn must not stop the runs of every organization
                log.exception("run processes: turn failed")

    def _step(self) -> list[_Child] | None:
        """Reap ended children, start waiting runs in free slots; what is still held, None once stopped."""
        with self._lock:
            if self._stopped:
                return None
            ended = [c for c in self._running.values() if c.process is not None and c.process.poll() is not None]
            for c in ended:
                del self._running[c.execution_id]
            while self._pending and len(self._running) < self.limit:
                child = self._pending.popleft()
                self._running[child.execution_id] = child
                self._launch(child)
            held = [*self._pending, *self._running.values()]
        for c in ended:
            assert c.process is not None
            code = _exit_text(c.process.returncode)
            self._ended(c, f"the process running this execution ended ({code}) before recording its end")
        return held

    def _launch(self, child: _Child) -> None:
        """Hand the run to the spare child (imports done), else to a new one; then warm the next spare.

        Each child still runs one execution only: the spare saves the ~2 s of imports a fresh
        interpreter pays here before it can run anything.
        """
        catalog = str(child.scope.catalog.path.resolve())
        spare, self._spare = self._spare, None
        try:
            if spare is not None and spare[0] == catalog and _hand(spare[1], child.execution_id):
                child.process = spare[1]
            else:  # none yet, another catalog's, or one that died while it waited
                _discard(spare)
                child.process = _spawn(catalog)
                _hand(child.process, child.execution_id)
            self._spare = (catalog, _spawn(catalog))
        except OSError as exc:
            if child.process is None:
                del self._running[child.execution_id]
                why = f"could not start a process to run it: {exc}"
                threading.Thread(target=self._ended, args=(child, why)).start()

    def _ended(self, child: _Child, message: str, status: RunState = RunState.FAILED) -> None:
        error_type = leases.DIED if status is RunState.FAILED else status.value
        try:
            leases.abandon(child.scope, [child.execution_id], error_type, message, status)
        except Exception:  # the loop must go on for every other run; a reader repairs this one later
            log.exception("could not record the end of execution %s", child.execution_id)

    def _beat(self, held: list[_Child]) -> None:
        if not held:
            return
        by_catalog: dict[str, list[_Child]] = {}
        for c in held:
            by_catalog.setdefault(str(c.scope.catalog.path), []).append(c)
        for group in by_catalog.values():
            try:
                group[0].scope.catalog.heartbeat([c.execution_id for c in group])
            except WeflowError as exc:
                log.warning("heartbeat of queued runs not recorded: %s", exc)

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """Stop every child and end the runs they held FAILED.

        As in ``cancel``, the records end first and the children then get SIGKILL: a child sent
        SIGTERM records its own end ("TerminationSignal", no message) before this one could.
        """
        with self._lock:
            self._stopped = True
            running, pending = list(self._running.values()), list(self._pending)
            self._running.clear()
            self._pending.clear()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=grace)
        with self._lock:
            _discard(self._spare)
            self._spare = None
        for c in [*running, *pending]:
            self._ended(c, "weflow stopped before this execution ended")
        for c in running:
            if c.process is not None:
                c.process.kill()
                c.process.wait()


def _spawn(catalog: str) -> subprocess.Popen[bytes]:
    """A child that imports what a run needs, then waits for an execution id on its stdin."""
    return subprocess.Popen(
        [sys.executable, "-m", "weflow.child", str(os.getpid())],
        env={**os.environ, "WEFLOW_CATALOG": catalog},
        stdin=subprocess.PIPE,
        start_new_session=True,  # terminal signals go to the parent, which stops its children itself
    )


def _hand(process: subprocess.Popen[bytes], execution_id: str) -> bool:
    """Give a waiting child its execution id; False if it is gone."""
    assert process.stdin is not None
    try:
        process.stdin.write(f"{execution_id}\n".encode())
        process.stdin.close()
    except BrokenPipeError:
        return False
    return True


def _discard(spare: tuple[str, subprocess.Popen[bytes]] | None) -> None:
    """Stop an idle spare: it holds no execution, so nothing is lost."""
    if spare is not None:
        spare[1].kill()
        spare[1].wait()


_default: RunProcesses | None = None
_default_lock = threading.Lock()


def default() -> RunProcesses:
    """This process's run processes, made on first use and stopped when the process exits."""
    global _default
    with _default_lock:
        if _default is None:
            _default = RunProcesses()
            atexit.register(_default.stop)
        return _default


def cancel(execution_id: str) -> bool:
    """Cancel a run held by this process's run processes; False if it holds none such (or has none)."""
    found = _default
    return found is not None and found.cancel(execution_id)


def stop_default() -> None:
    """Stop this process's run processes, if any were made (the API's shutdown)."""
    global _default
    with _default_lock:
        found, _default = _default, None
    if found is not None:
        atexit.unregister(found.stop)
        found.stop()
