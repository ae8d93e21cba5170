"""``prefect server start``, its SQLite write transactions begun IMMEDIATE, in turn: the Prefect server weflow starts.

The supervisor runs this file by path (``python -P .../prefect_server.py server start ...``), in
place of the ``prefect`` command; it imports Prefect only, and the server runs as Prefect's CLI
runs it (uvicorn in this process, Prefect's services beside it).

Why: Prefect begins a write transaction on SQLite DEFERRED (IMMEDIATE only where it locks rows for
an update). Such a transaction reads first, and when another connection writes before it does,
SQLite refuses its write at once (``database is locked``: waiting could not help, whatever the busy
timeout); Prefect's server answers 503 and its client asks again ~2 s later. In a burst of 60 queued
runs here, creating a flow run from a deployment was refused 216 times and labelling one 303 times.
A transaction begun IMMEDIATE takes SQLite's write lock first and waits for it (SQLite's busy
timeout, 60 s in Prefect) instead of failing: the same burst ran 3.0 runs/s instead of 1.5 with no
503, and the server spent 0.30 CPU-s per run instead of 0.46 (benchmarks.hot's stack, a fresh
server). Reads outside a transaction are untouched (WAL: a reader never waits for a writer), and so
is a server on PostgreSQL (another configuration class).

In turn: the server's writers (its API and its services share one event loop) first queue in the process, first
come first served, and only the one whose turn it is begins its transaction. Waiting in SQLite instead, a writer
polls for the lock with sleeps growing to 100 ms (SQLite's busy handler): the lock went free while the next writer
slept, and the writers that came last, still at their shortest sleeps, went first. In 200-run drains here (4 runs at
a time, one weflow worker) a run's write transactions waited 1.5-1.7 s in all for the lock, while it was held
~0.18 s per run: 3.41-3.68 runs/s, 3.98-4.25 in turn (A/B alternated on fresh servers).

And a JSON schema (a work pool's job variables') is checked against JSON Schema's own once, not at each flow run
(``_remember_valid_schemas``); and Python's garbage collector runs less often, never over what the server's imports
made (``_collect_less_often``).
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
from collections import OrderedDict
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any

from prefect.server.database.configurations import SQLITE_BEGIN_MODE, AioSqliteConfiguration

_original_begin = AioSqliteConfiguration.begin_transaction
_inside: ContextVar[bool] = ContextVar("weflow_inside_immediate", default=False)
_turns: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}  # the writers' queue of each event loop
TURN_WAIT = 10.0  # seconds a writer waits for its turn before it waits in SQLite instead (its busy timeout, 60 s)


@asynccontextmanager
async def _turn() -> AsyncGenerator[None]:
    """This event loop's write transactions one at a time, in the order they asked (``asyncio.Lock`` wakes its
    waiters first come first served and lets no newcomer pass them). A writer that waited ``TURN_WAIT`` s goes on to
    SQLite's own wait, which ends in an error after its busy timeout: behind a transaction that never ends, a writer
    fails in time, as it did without the queue, rather than waiting for ever."""
    loop = asyncio.get_running_loop()
    lock = _turns.get(loop)
    if lock is None:
        lock = _turns[loop] = asyncio.Lock()
    try:
        await (asyncio.wait_for(lock.acquire(), TURN_WAIT) if lock.locked() else lock.acquire())
    except TimeoutError:
        yield
        return
    try:
        yield
    finally:
        lock.release()


@asynccontextmanager
async def _begin_immediate(
    self: AioSqliteConfiguration, session: Any, with_for_update: bool = False
) -> AsyncGenerator[Any]:
    """``AioSqliteConfiguration.begin_transaction``, IMMEDIATE whether or not the caller locks rows for update.

    Only its own BEGIN: a session opened inside it (Prefect reads the pool in a session of its own to build the event
    of a work queue paused, while the queue's update holds the write lock) begins as Prefect begins it, DEFERRED. With
    IMMEDIATE it waited for the lock its own task held: pausing a work queue hung the server (SQLite's busy timeout).
    A transaction begun inside one of these is Prefect's own too."""
    if _inside.get():
        async with _original_begin(self, session, with_for_update) as transaction:
            yield transaction
        return
    token, inside = SQLITE_BEGIN_MODE.set("IMMEDIATE"), _inside.set(True)
    try:
        async with _turn(), session.begin() as transaction:
            await session.connection()  # its BEGIN IMMEDIATE now, on its connection
            SQLITE_BEGIN_MODE.set("DEFERRED")  # what a session opened inside it begins with, as in Prefect
            yield transaction
    finally:
        _inside.reset(inside)
        SQLITE_BEGIN_MODE.reset(token)


SCHEMAS_KEPT = 256  # schemas remembered as valid (work pools' job-variable schemas: a few per server)


def _remember_valid_schemas() -> None:
    """Check a JSON schema against JSON Schema's own once, not at every use.

    Creating a flow run from a deployment checks the work pool's job variables against its schema, and Prefect first
    checks that schema itself against the metaschema, twice (``is_valid_schema``, then ``jsonschema.validate``): ~6 ms
    of the server's CPU per flow run here (py-spy), for a schema that changes only with the pool. A schema that passed
    is remembered by its JSON text (the last ``SCHEMAS_KEPT``); one that fails is checked, and refused, every time.
    200-run drains alternated on fresh servers: 4.95 / 4.46 / 4.95 -> 5.24 / 5.26 / 5.06 runs/s, the server's CPU per
    run 182-201 -> 170-179 ms.
    """
    from prefect.utilities.schema_tools import validation

    checker = validation._VALIDATOR
    check = checker.check_schema.__func__  # type: ignore[attr-defined]
    passed: OrderedDict[tuple[str, tuple[int, ...]], None] = OrderedDict()

    def check_schema(cls: type, schema: Any, *args: Any, **kwargs: Any) -> None:
        key = (json.dumps(schema, sort_keys=True, default=repr), tuple(map(id, [*args, *kwargs.values()])))
        if key in passed:
            passed.move_to_end(key)
            return
        check(cls, schema, *args, **kwargs)
        passed[key] = None
        if len(passed) > SCHEMAS_KEPT:
            passed.popitem(last=False)

    checker.check_schema = classmethod(check_schema)  # type: ignore[method-assign,assignment]


GC_THRESHOLDS = (20_000, 20, 20)  # Python's default: (700, 10, 10)


def _collect_less_often() -> None:
    """Freeze what the server's modules made at import, and run Python's cyclic garbage collector less often.

    A request makes many short-lived objects and few cycles. At Python's default thresholds the server's collector
    ran ~10,000 times over a 1000-run drain here (benchmarks.hot's stack, one weflow worker), 12-13 s of the server's
    207-220 s of CPU, 8 s of it in 26 full collections of ~300 ms each that walked every object the server held,
    its modules' included: a pause for each request waiting at that moment. With the imports frozen (``gc.freeze``:
    no collection walks them again) and ``GC_THRESHOLDS``: ~320 collections, 1.9 s, the full ones ~90 ms; alternated
    drains on fresh servers 4.48 / 4.80 -> 4.75 / 4.82 runs/s. A cycle is still freed, by a later collection.
    """
    import prefect.server.api.server  # noqa: F401  the server's code, loaded now so that it is frozen

    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def main() -> int:
    AioSqliteConfiguration.begin_transaction = _begin_immediate  # type: ignore[method-assign,assignment]
    _remember_valid_schemas()
    _collect_less_often()
    from prefect.cli import app

    sys.argv[0] = "prefect"
    app()  # exits with the server's code
    return 0


if __name__ == "__main__":
    sys.exit(main())
