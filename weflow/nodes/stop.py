"""A run's stop switch: how a timeout, a cancel or the memory limit stops node work running in C.

An exception raised into a node's thread (``PyThreadState_SetAsyncExc``) waits until the thread
runs Python again, which a Polars collect or a DuckDB query may not do for minutes. So node code
collects and queries through a ``Stop``: a collect runs on Polars' streaming engine batch by batch
and stops at the next batch; a DuckDB connection is interrupted (``con.interrupt()``).

Measured here (polars 2.1): ``collect(background=True)`` then ``InProcessQuery.cancel()`` left the
in-memory engine running (0.4 core busy and RSS growing 120 MB/s after the cancel), while dropping
a ``collect_batches`` iterator stopped the work at once (no CPU after it). What yields no batch
until it is done (a group-by or sort over a huge input; a filter keeping no row of a 10^10-row
cross join yielded none in 12 s) cannot be stopped inside the process, only by ending it; Polars
stops a query on a KeyboardInterrupt in the main thread, which would also stop the run's engine.

``watch_memory`` samples the process RSS for ``settings.max_memory_mb`` and stops the run's switch
with ``MemoryLimitExceeded``; ``settle`` waits (bounded) for a stopped run's node threads.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow.parquet as pq

Frame = pl.LazyFrame | pl.DataFrame

# Batches are joined in groups of about this many rows: a cross join yields batches that share
# memory (10^10 rows in 2.4 s at 264 MB here) and concatenating them all at once materialised
# them in one call nothing could stop (4 GB after 7 s); a group at a time is bounded work between
# checks, and joining groups of materialised batches stays zero-copy (5M rows: 43 ms against 33).
GROUP_ROWS = 1_000_000

# How long a stopped run waits for its node threads before it returns: a DuckDB query ends within
# milliseconds of its interrupt and a Polars collect at its next batch; a thread still running after
# this is in code nothing can stop (a C call, a blocking Polars operator), and is left behind.
SETTLE_SECONDS = 3.0
MEMORY_SAMPLE_SECONDS = 0.1


class MemoryLimitExceeded(Exception):
    """The process went over the run's ``settings.max_memory_mb``: the run stops and ends FAILED."""


class Stop:
    """Set once with the reason the work must stop; node threads raise that reason at their next check.

    A step's switch is a child of its run's: stopping the run (timeout, memory limit) stops every step.
    """

    def __init__(self, memory_limit_mb: int | None = None, parent: Stop | None = None) -> None:
        self.memory_limit_mb: int | None = memory_limit_mb if parent is None else parent.memory_limit_mb
        self._lock = threading.Lock()
        self._reason: BaseException | None = None
        self._hooks: dict[object, Callable[[], None]] = {}
        self._connections: dict[int, Callable[[], None]] = {}
        self._children: set[Stop] = set()
        self._parent = parent
        if parent is not None:
            with parent._lock:
                parent._children.add(self)
                reason = parent._reason
            if reason is not None:
                self.stop(reason)

    def child(self) -> Stop:
        """A step attempt's switch; it stays attached, so that a stopped run still reaches the
        connections of steps whose threads outlived their (cancelled) attempt."""
        return Stop(parent=self)

    @property
    def reason(self) -> BaseException | None:
        return self._reason

    def stop(self, reason: BaseException) -> None:
        """Stop the work (the first reason wins): interrupt DuckDB, let collects end at their next batch."""
        with self._lock:
            if self._reason is None:
                self._reason = reason
            children = list(self._children)
        for child in children:
            child.stop(reason)
        with self._lock:
            hooks = list(self._hooks.values())
        _call(hooks)

    def interrupt(self) -> None:
        """Call the hooks: interrupt the connections (again: an interrupt before a query starts is lost)."""
        with self._lock:
            hooks = list(self._hooks.values())
            children = list(self._children)
        for child in children:
            child.interrupt()
        _call(hooks)

    def check(self) -> None:
        """Raise the stop reason (a fresh exception of its type) once the switch is set."""
        reason = self._reason
        if reason is not None:
            raise fresh(reason)

    def collect(self, frame: Frame) -> pl.DataFrame:
        """``frame`` as a DataFrame, collected on the streaming engine and stopped at the next batch."""
        if isinstance(frame, pl.DataFrame):
            return frame
        return _joined(list(self._groups(frame)), frame)

    def _groups(self, frame: pl.LazyFrame) -> Iterator[pl.DataFrame]:
        """The collected rows, a group at a time; dropping the batch iterator stops Polars."""
        self.check()
        pending: list[pl.DataFrame] = []
        rows = 0
        for part in frame.collect_batches(engine="streaming", maintain_order=True):
            self.check()
            pending.append(part)
            rows += part.height
            if rows >= GROUP_ROWS:
                yield pl.concat(pending, how="vertical", rechunk=False)
                pending, rows = [], 0
        self.check()
        if pending:
            yield pending[0] if len(pending) == 1 else pl.concat(pending, how="vertical", rechunk=False)

    def write_parquet(self, frame: Frame, target: Path) -> pl.DataFrame:
        """Write ``frame`` to ``target`` a group of rows at a time, checking the switch between groups."""
        groups: list[pl.DataFrame] = []
        writer: pq.ParquetWriter | None = None
        try:
            for group in self._groups(frame) if isinstance(frame, pl.LazyFrame) else _slices(frame):
                self.check()
                table = group.to_arrow()
                # no dictionaries: 5M rows took 1.2 s (10 MB) so, 1.7 s (12 MB) with them, 1.3 s (9 MB) in Polars
                writer = writer or pq.ParquetWriter(target, table.schema, compression="zstd", use_dictionary=False)
                writer.write_table(table)
                groups.append(group)
        finally:
            if writer is not None:
                writer.close()
        written = _joined(groups, frame)
        if writer is None:
            written.write_parquet(target)
        return written

    def write_csv(self, frame: Frame, target: Path) -> pl.DataFrame:
        """Write ``frame`` as CSV to ``target`` a group of rows at a time, checking between groups."""
        groups: list[pl.DataFrame] = []
        with target.open("wb") as out:
            for group in self._groups(frame) if isinstance(frame, pl.LazyFrame) else _slices(frame):
                self.check()
                group.write_csv(out, include_header=not groups)
                groups.append(group)
            written = _joined(groups, frame)
            if not groups:
                written.write_csv(out)
        return written

    def on_stop(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call ``hook`` when the switch is stopped (and again while a stopped run waits for its threads);
        returns what unregisters it."""
        key = object()
        with self._lock:
            self._hooks[key] = hook
            stopped = self._reason is not None
        if stopped:
            hook()

        def forget() -> None:
            with self._lock:
                self._hooks.pop(key, None)

        return forget

    def connect(self, database: str = ":memory:", **options: Any) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection the switch interrupts, under the run's memory limit; give it back with ``release``."""
        config = dict(options.pop("config", None) or {})
        if self.memory_limit_mb is not None:
            config.setdefault("memory_limit", f"{self.memory_limit_mb}MB")
        con = duckdb.connect(database, config=config, **options)
        forget = self.on_stop(con.interrupt)
        self._connections[id(con)] = forget
        return con

    def release(self, con: duckdb.DuckDBPyConnection) -> None:
        """Unregister and close a connection from ``connect``."""
        forget = self._connections.pop(id(con), None)
        if forget is not None:
            forget()
        con.close()


def _joined(groups: list[pl.DataFrame], frame: Frame) -> pl.DataFrame:
    if not groups:
        return pl.DataFrame(schema=frame.collect_schema())
    return groups[0] if len(groups) == 1 else pl.concat(groups, how="vertical", rechunk=False)


def _slices(frame: pl.DataFrame) -> Iterator[pl.DataFrame]:
    for offset in range(0, frame.height, GROUP_ROWS):
        yield frame.slice(offset, GROUP_ROWS)


def _call(hooks: list[Callable[[], None]]) -> None:
    for hook in hooks:
        try:
            hook()
        except Exception:  # a connection closed or a loop ended under us: nothing left to stop
            pass


def fresh(reason: BaseException) -> BaseException:
    """A new exception like ``reason``, to raise in one more thread (a shared instance would share its traceback)."""
    try:
        return type(reason)(*reason.args)
    except Exception:
        return reason


def settle(threads: list[threading.Thread], stop: Stop, seconds: float = SETTLE_SECONDS) -> list[threading.Thread]:
    """Wait (at most ``seconds``) for stopped node threads to end, interrupting DuckDB again meanwhile
    (an interrupt sent before a query starts is lost); returns the threads still running.

    A process must not exit under a running DuckDB query: its static destructors may then abort
    the process (issue 14 saw exit 134, "terminate called ...", after a timed-out ``sql`` node).
    """
    deadline = time.monotonic() + seconds
    for thread in threads:
        while thread.is_alive() and time.monotonic() < deadline:
            stop.interrupt()
            thread.join(0.05)
    alive = [t for t in threads if t.is_alive()]
    threads[:] = alive
    return alive


def rss_mb() -> float | None:
    """This process's resident memory in MB (Linux ``/proc/self/statm``), None where it cannot be read."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def watch_memory(stop: Stop, limit_mb: int, finished: threading.Event) -> threading.Thread:
    """Sample the RSS until ``finished``; over ``limit_mb``, stop the run with MemoryLimitExceeded."""

    def watch() -> None:
        while not finished.wait(MEMORY_SAMPLE_SECONDS):
            rss = rss_mb()
            if rss is not None and rss > limit_mb:
                message = f"execution stopped: memory limit of {limit_mb} MB exceeded (RSS {rss:.0f} MB)"
                stop.stop(MemoryLimitExceeded(message))
                return

    thread = threading.Thread(target=watch, name="weflow-memory", daemon=True)
    thread.start()
    return thread
