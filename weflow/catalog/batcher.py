"""Runs' records written in batches, one short catalog session each (DESIGN decision 13).

A process that records many runs (the API, a worker, a hot worker) hands each begin and end to a
``Batcher``; its daemon thread writes what has gathered with ``weflow.catalog.batch.write`` in
one transaction, so while one batch waits for the catalog lock the next one grows, and the
sessions per second stay flat as the load grows. A ``put`` either returns at once (the record
is written in the next batch: at once if none is being written, else right after it, or within
``max_delay`` when one is set, or its own ``linger``, or when ``max_records`` gathered, or at
``flush``/exit, or with any batch that is due first) or, with ``wait``, returns when its batch is
committed (a group commit: durable, raising what failed).

``ENDS`` tells waiters in the same process which executions' ends were committed, so a long-lived
worker answers "has it ended?" (``weflow.handoff.ended``) without reading the catalog in a loop.

What a crash can lose: the records ``put`` without ``wait`` since the last committed batch. A
batch is one transaction, so it is written whole or not at all. See the README, "Durability of
run records", for what ``weflow sync`` restores from Prefect.
"""

from __future__ import annotations

import atexit
import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from weflow.catalog.batch import Batch, Begun, Finished, write
from weflow.catalog.lock import CatalogBusy
from weflow.catalog.session import Repository

log = logging.getLogger(__name__)

MAX_RECORDS = 1000  # begins and ends per batch: about 0.2 s of a session on this machine
MAX_DELAY = 0.0  # seconds a record waits for others: none, the batch in flight is the wait (group commit)
ENDS_KEPT = 10_000  # ended executions remembered for late waiters (a few hundred KB)


class Ends:
    """The executions whose end a batcher of this process committed lately; waiters are woken as they end."""

    def __init__(self, kept: int = ENDS_KEPT) -> None:
        self._kept = kept
        self._ids: dict[str, None] = {}  # insertion-ordered: the oldest is dropped first
        self._changed = threading.Condition()

    def add(self, execution_ids: Iterable[str]) -> None:
        with self._changed:
            for execution_id in execution_ids:
                self._ids[execution_id] = None
            while len(self._ids) > self._kept:
                del self._ids[next(iter(self._ids))]
            self._changed.notify_all()

    def wait(self, execution_id: str, timeout: float) -> bool:
        """True once this process committed the end of ``execution_id`` (at once if it did), else False."""
        with self._changed:
            return self._changed.wait_for(lambda: execution_id in self._ids, timeout)


ENDS = Ends()


@dataclass
class _Entry:
    """One ``put`` (or a ``flush`` marker, without an item) and, for a waiting caller, its outcome."""

    item: Begun | Finished | None
    after: Callable[[], object] | None = None
    done: threading.Event | None = None
    error: BaseException | None = None
    skipped: bool = False
    settled: bool = False  # written, or failed for good
    at: float = field(default_factory=time.monotonic)
    due: float = 0.0  # when its batch is written at the latest (sooner if another entry is due first)


class Batcher:
    """Writes the begins and ends ``put`` to it in batches, from one daemon thread; flushed at exit."""

    def __init__(self, catalog: Repository, max_records: int = MAX_RECORDS, max_delay: float = MAX_DELAY) -> None:
        self.catalog = catalog
        self.max_records = max_records
        self.max_delay = max_delay
        self._pending: list[_Entry] = []
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        atexit.register(self.close)

    def __repr__(self) -> str:
        return f"Batcher({self.catalog!r}, {len(self._pending)} pending)"

    def put(
        self, item: Begun | Finished, wait: bool = False, after: Callable[[], object] | None = None,
        linger: float | None = None,
    ) -> bool:  # fmt: skip
        """Queue a begin or an end; ``after`` runs once it is written. With ``wait``: block until it is
        committed and return False if it was an ``only_if_unfinished`` end whose run had already ended.
        ``linger``: how long it may wait for others (default ``max_delay``), e.g. a begin for its run's end."""
        entry = _Entry(item, after, threading.Event() if wait else None)
        entry.due = entry.at + (self.max_delay if linger is None else linger)
        self._add(entry)
        if entry.done is None:
            return True
        entry.done.wait()
        if entry.error is not None:
            raise entry.error
        return not entry.skipped

    def flush(self) -> None:
        """Return once everything ``put`` before this call is written (or has failed and been logged)."""
        marker = _Entry(None, done=threading.Event())
        self._add(marker)
        assert marker.done is not None
        marker.done.wait()

    def close(self) -> None:
        """Flush, then stop the thread (at interpreter exit too: registered with ``atexit``)."""
        with self._ready:
            if self._closed:
                return
        if self._thread is not None and self._thread.is_alive():
            self.flush()
        with self._ready:
            self._closed = True
            self._ready.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=60)
        atexit.unregister(self.close)

    def _add(self, entry: _Entry) -> None:
        with self._ready:
            if self._closed:
                raise RuntimeError(f"{self!r} is closed")
            self._pending.append(entry)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="weflow-record-batches", daemon=True)
                self._thread.start()
            self._ready.notify_all()

    def _next(self) -> list[_Entry] | None:
        """The next batch once it is due (None: closed and drained): full, waited for, or past its delay."""
        with self._ready:
            while True:
                if not self._pending:
                    if self._closed:
                        return None
                    self._ready.wait()
                    continue
                due = min(e.due for e in self._pending)
                urgent = any(e.done is not None for e in self._pending)
                if urgent or self._closed or len(self._pending) >= self.max_records or time.monotonic() >= due:
                    taken, self._pending = self._pending[: self.max_records], self._pending[self.max_records :]
                    return taken
                self._ready.wait(max(0.0, due - time.monotonic()))

    def _run(self) -> None:
        while (entries := self._next()) is not None:
            try:
                self._write(entries)
            except BaseException as exc:  # never leave a waiter blocked
                self._failed(entries, exc, retry=False)
            ENDS.add(e.item.execution.id for e in entries
                     if isinstance(e.item, Finished) and e.settled and e.error is None)  # fmt: skip
            for entry in entries:
                if not entry.settled:
                    continue  # back in the queue
                if entry.after is not None and entry.error is None and not entry.skipped:
                    try:
                        entry.after()
                    except Exception:  # an alert must never stop the records of other runs
                        log.exception("after recording %s", entry.item)
                if entry.done is not None:
                    entry.done.set()

    def _write(self, entries: Sequence[_Entry]) -> None:
        """One transaction for all; if it fails, each run's records alone, so one bad record fails alone."""
        batch = Batch()
        for entry in entries:
            if entry.item is not None:
                batch.add(entry.item)
        if not batch:
            for entry in entries:
                entry.settled = True
            return
        try:
            skipped = write(self.catalog, batch)
        except CatalogBusy as exc:  # nothing written: the waiters hear why, the others are tried again
            self._failed(entries, exc, retry=True)
            return
        except Exception as exc:
            runs = sorted({e.item.execution.id for e in entries if e.item is not None})
            if len(runs) == 1:
                self._failed(entries, exc, retry=False)
                return
            for run in runs:
                self._write([e for e in entries if e.item is not None and e.item.execution.id == run])
            back = sum(1 for e in entries if e.item is not None and not e.settled)  # at the queue's front
            for marker in (e for e in entries if e.item is None):
                if back:
                    with self._ready:
                        self._pending.insert(back, marker)
                else:
                    marker.settled = True
            return
        for entry in entries:
            entry.skipped = isinstance(entry.item, Finished) and entry.item.execution.id in skipped
            entry.settled = True

    def _failed(self, entries: Sequence[_Entry], exc: BaseException, retry: bool) -> None:
        """Waiters get ``exc``; with ``retry`` the others go back to the front of the queue (flush markers
        too, so a flush still waits for them), else they are logged as lost."""
        again = []
        for entry in entries:
            if retry and (entry.done is None or entry.item is None):
                again.append(entry)
                continue
            entry.error, entry.settled = exc, True
            if entry.done is None and entry.item is not None:
                log.error("the record of execution %s was not written: %s", entry.item.execution.id, exc)
        if again:
            log.warning("records of runs not written yet, trying again: %s", exc)
            with self._ready:
                self._pending[:0] = again


_shared: dict[tuple[str, float], Batcher] = {}
_shared_lock = threading.Lock()


def shared(catalog: Repository) -> Batcher:
    """This process's batcher for the catalog file of ``catalog`` (one per file and lock timeout)."""
    key = (str(catalog.path.resolve()), catalog.lock_timeout)
    with _shared_lock:
        found = _shared.get(key)
        if found is None or found._closed:
            found = _shared[key] = Batcher(catalog)
        return found
