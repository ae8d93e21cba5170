"""The weflow worker process's loops (``worker.WeflowWorker``): polls, wake-ups, health, signals.

``run_worker`` is the body of a worker child (``python -m weflow.workers``): Prefect's two
service loops (poll every ``PREFECT_WORKER_QUERY_SECONDS``, sync and heartbeat); a run announced
by a POST to the worker's loopback wake-up port (``?flow_run=ID``) or by a ``prefect.flow-run.Scheduled``
event of the worker's pool in Prefect's event stream (runs created elsewhere: the Prefect UI's Run
button, ``prefect deployment run``, schedules, automations) is read and started at once without a poll
(``WeflowWorker.take``), else polled for at once (not for a run the worker took or polled lately); and a
check every second that refreshes the
worker's record in the Prefect home (its supervisor's hang watchdog reads it) and recycles the
worker when it is due; SIGTERM or SIGINT drains it the same way. The wake-up port also takes runs
handed over by processes holding the home's token (``worker_home.hand_over``): ``handoff``
(``weflow.handoff.take``, given by ``weflow.workers``) records and queues them. The port is a
Starlette app served by uvicorn on the worker's own event loop, loopback only.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
import uvicorn
from prefect.events import Event
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_WORKER_QUERY_SECONDS, temporary_settings
from prefect.utilities.services import critical_service_loop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from weflow.prefect_gateway import worker_home
from weflow.prefect_gateway.client import async_client
from weflow.prefect_gateway.worker import WeflowWorker, log

Handoff = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any], Callable[[], object] | None]]
"""Takes a run handed over (``/run``, ``/execute``, ``/wait`` and its JSON body): status, answer, work to run after
answering."""
WAITERS = 200  # ``/wait`` slices at once, each a thread for up to 0.5 s (not anyio's 40 shared threads)


BODY_LIMIT = 1 << 20  # bytes of a hand-off's JSON body


class _Server(uvicorn.Server):
    """uvicorn on the worker's loop; SIGTERM and SIGINT stay with the worker's own drain (``_stop_on_signals``)."""

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _app(
    worker: WeflowWorker, woken: Callable[[], None], handoff: Handoff | None, later: anyio.abc.TaskGroup
) -> Starlette:
    """The wake-up port: ``POST /wake`` polls now; ``/run`` and ``/execute`` take runs handed over, ``/wait`` waits
    for one's end."""
    waiters = anyio.CapacityLimiter(WAITERS)

    async def wake(request: Request) -> Response:
        flow_run_id = _uuid(request.query_params.get("flow_run") or "")
        if flow_run_id is None:
            woken()
        else:  # a poll started by the run's Scheduled event, which can come first, may have taken it already
            later.start_soon(_poll_unless_polled, worker, flow_run_id, woken)
        return Response(status_code=204)

    async def take(request: Request) -> Response:
        """Refused without the home's token (401), while recycling (503), on a bad or too large body (400, 413)."""
        if not worker_home.authorized(worker.home, request.headers.get("authorization")):
            return JSONResponse({"error": "hand-off refused: missing or wrong token"}, 401)
        if handoff is None or worker.draining:
            return JSONResponse({"error": "this worker takes no hand-off now"}, 503)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > BODY_LIMIT:
                return JSONResponse({"error": f"hand-off body over {BODY_LIMIT} bytes"}, 413)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return JSONResponse({"error": "hand-off body: expected a JSON object"}, 400)
        path = request.url.path
        if path == "/wait":
            return await wait(payload)
        status, answer, then = await anyio.to_thread.run_sync(handoff, path, payload)
        if then is not None:
            worker.handed += 1
            later.start_soon(_run_handed, worker, then)
        return JSONResponse(answer, status)

    async def wait(payload: dict[str, Any]) -> Response:
        """Slices of ``handoff``'s wait (202: not yet) until the run ended; 503 once this worker is stopping."""
        assert handoff is not None
        while True:
            status, answer, _ = await anyio.to_thread.run_sync(handoff, "/wait", payload, limiter=waiters)
            if status != 202:
                return JSONResponse(answer, status)
            if worker.draining:
                return JSONResponse({"error": "this worker is stopping: read the record from the catalog"}, 503)

    routes = [Route("/wake", wake, methods=["POST"]), Route("/run", take, methods=["POST"]),
              Route("/execute", take, methods=["POST"]), Route("/wait", take, methods=["POST"])]  # fmt: skip
    return Starlette(routes=routes)


async def _run_handed(worker: WeflowWorker, then: Callable[[], object]) -> None:
    try:
        await anyio.to_thread.run_sync(then, limiter=worker._threads)
    except Exception as exc:  # the run recorded its own end; the worker carries on
        log.warning("a handed-over run failed: %s", exc)
    finally:
        worker.handed -= 1
        worker._ended()


async def _listen(server: _Server) -> int:
    """Start ``server`` on a free loopback port; that port once it listens."""
    while not server.started:
        if server.should_exit:
            raise RuntimeError("the weflow worker's wake-up port could not start")
        await anyio.sleep(0.01)
    return int(server.servers[0].sockets[0].getsockname()[1])


async def _poll_on_wake(worker: WeflowWorker, wake: list[anyio.Event]) -> None:
    while True:
        await wake[0].wait()
        wake[0] = anyio.Event()  # a wake-up during this poll gets a poll of its own
        try:
            await worker.get_and_submit_flow_runs()
        except Exception as exc:  # the regular poll carries on; a wake-up is only a shortcut
            log.warning("poll on wake-up failed: %s", exc)


SCHEDULED = "prefect.flow-run.Scheduled"
POOL_CHANGES = ("prefect.work-pool.", "prefect.work-queue.")  # a pool or queue made, changed, paused, deleted
FLOW_RUN = "prefect.flow-run."  # the resource id of a flow run in an event: this, then its id


def _of_pool(event: Event, pool: str) -> bool:
    return any(r.role == "work-pool" and r.name == pool for r in event.related)


def _uuid(text: str) -> UUID | None:
    try:
        return UUID(text)
    except ValueError:
        return None


async def _poll_unless_polled(worker: WeflowWorker, flow_run_id: UUID | None, woken: Callable[[], None]) -> None:
    """Start the announced run ``flow_run_id`` without a poll (``WeflowWorker.take``), else wake the worker's poll,
    unless every slot is taken (the next run to end takes the runs due next: with a deep queue each run's announcement
    was a poll that could take nothing). A run weflow makes is announced twice, by its wake-up and by its Scheduled
    event: the second finds it taken and neither reads nor polls, which would only compete with the run's start for
    the server."""
    if worker.full:
        return
    if flow_run_id is None or not await worker.take(flow_run_id):
        woken()


EVENTS_RETRY_SECONDS = 30.0  # after the event stream failed for good (its own reconnects spent), subscribe again


async def _poll_on_events(worker: WeflowWorker, woken: Callable[[], None]) -> None:
    """Start (or poll for) a run at once when Prefect says a flow run of this pool was scheduled (made outside weflow,
    or by weflow, whose wake-up can come after the event), unless the worker took or polled it already; and read the
    pool and its queues again before the next such start when Prefect says one changed (paused, resumed, its limit).
    While the event stream is refused or down the interval's poll finds them, and the pool's reads hold 2 s."""
    only = EventFilter(event=EventNameFilter(prefix=[SCHEDULED, *POOL_CHANGES]))
    while True:
        try:
            async with get_events_subscriber(filter=only, reconnect_on_clean_close=True) as events:
                worker.watch_pools(True)
                async for event in events:
                    if event.event != SCHEDULED:
                        worker.pools_changed()
                    elif _of_pool(event, worker._work_pool_name):
                        await _poll_unless_polled(worker, _uuid(event.resource.id.removeprefix(FLOW_RUN)), woken)
        except Exception as exc:  # the stream is a shortcut, like a wake-up: polling carries on without it
            log.info("no Prefect event stream (%s): the poll finds runs created outside weflow; "
                     "subscribing again in %.0f s", exc, EVENTS_RETRY_SECONDS)  # fmt: skip
        finally:
            worker.watch_pools(False)
        await anyio.sleep(EVENTS_RETRY_SECONDS)


async def _until_done(worker: WeflowWorker, stop: anyio.Event) -> None:
    checked = 0.0
    while True:
        if stop.is_set() and not worker.draining:
            worker.drain("asked to stop")
        if time.monotonic() - checked > 1.0:
            checked = time.monotonic()
            worker.check_health()
            worker.record()
        if worker.draining and worker.idle():
            return
        await anyio.sleep(0.05)


async def serve(
    worker: WeflowWorker, printer: Callable[[str], None] = print, query_seconds: float | None = None,
    handoff: Handoff | None = None,
) -> None:  # fmt: skip
    """Run ``worker`` until it recycles or SIGTERM/SIGINT asks it to stop; in-flight runs finish first."""
    wake = [anyio.Event()]
    stop = anyio.Event()
    interval = query_seconds or PREFECT_WORKER_QUERY_SECONDS.value()
    worker_home.token(worker.home, create=True)  # the hand-off secret of this home, 0600
    worker.on_slot_free = lambda: wake[0].set()
    async with async_client(), worker, anyio.create_task_group() as loops:  # the worker's client: weflow's
        app = _app(worker, lambda: wake[0].set(), handoff, loops)
        port = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="off")
        server = _Server(port)
        loops.start_soon(server.serve)
        worker.port = await _listen(server)
        worker.record()
        loops.start_soon(_stop_on_signals, stop)
        loops.start_soon(_poll_on_wake, worker, wake)
        loops.start_soon(_poll_on_events, worker, lambda: wake[0].set())
        loops.start_soon(
            lambda: critical_service_loop(worker.get_and_submit_flow_runs, interval, jitter_range=0.3, backoff=4)
        )
        loops.start_soon(
            lambda: critical_service_loop(
                worker.sync_with_backend, worker.heartbeat_interval_seconds, jitter_range=0.3, backoff=4
            )
        )
        worker._started_event = await worker._emit_worker_started_event()  # Prefect's own start() does this
        printer(f"weflow worker {worker.name!r} (pid {os.getpid()}) on pool {worker._work_pool_name!r}, "
                f"wake-up port {worker.port}")  # fmt: skip
        await _until_done(worker, stop)
        server.should_exit = True
        loops.cancel_scope.cancel()
    worker_home.remove(worker.home, os.getpid())
    printer(f"weflow worker {worker.name!r} stopped after {worker.runs_done} run(s)")


async def _stop_on_signals(stop: anyio.Event) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            stop.set()


def run_worker(
    home: Path,
    pool: str,
    queue: str,
    *,
    name: str | None = None,
    limit: int | None = None,
    max_runs: int | None = None,
    max_memory_mb: float | None = None,
    preload: Sequence[str] = (),
    heartbeat_seconds: int | None = None,
    printer: Callable[[str], None] = print,
    handoff: Handoff | None = None,
) -> int:
    """Be a weflow worker on ``pool``/``queue`` until it recycles or is asked to stop; the runs it ran."""
    worker = WeflowWorker(work_pool_name=pool, work_queues=[queue], name=name, limit=limit, home=home.resolve(),
                          max_runs=max_runs, max_memory_mb=max_memory_mb)  # fmt: skip
    worker.preload(preload)
    updates = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat_seconds} if heartbeat_seconds else {}
    with temporary_settings(updates=updates):  # Prefect froze its settings at import: heartbeats of this worker's runs
        anyio.run(serve, worker, printer, None, handoff)
    return worker.runs_done
