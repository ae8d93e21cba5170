"""The weflow worker process's loops (``worker.WeflowWorker``): polls, wake-ups, health, signals.

``run_worker`` is the body of a worker child (``python -m weflow.workers``): Prefect's two
service loops (poll every ``PREFECT_WORKER_QUERY_SECONDS``, sync and heartbeat), a poll at once
on each POST to the worker's loopback wake-up port, and a check every second that refreshes the
worker's record in the Prefect home (its supervisor's hang watchdog reads it) and recycles the
worker when it is due; SIGTERM or SIGINT drains it the same way. The wake-up port also takes runs
handed over by processes holding the home's token (``worker_home.hand_over``): ``handoff``
(``weflow.handoff.take``, given by ``weflow.workers``) records and queues them.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_WORKER_QUERY_SECONDS, temporary_settings
from prefect.utilities.services import critical_service_loop

from weflow.prefect_gateway import worker_home
from weflow.prefect_gateway.worker import WeflowWorker, log

Handoff = Callable[[str, dict[str, Any]], tuple[int, dict[str, Any], Callable[[], object] | None]]
"""Takes a run handed over (``/run``, ``/execute`` and its JSON body): status, answer, work to run after answering."""


async def _read_request(stream: anyio.abc.ByteStream) -> tuple[str, dict[str, str], bytes]:
    """The path, headers and body of one small HTTP/1.x request."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += await stream.receive(65536)
        if len(data) > 1 << 20:
            raise ValueError("request too large")
    head, _, body = data.partition(b"\r\n\r\n")
    first, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    length = min(int(headers.get("content-length") or 0), 1 << 20)
    while len(body) < length:
        body += await stream.receive(65536)
    return [*first.split(), "", ""][1], headers, body[:length]


def _response(status: int, answer: dict[str, Any] | None = None) -> bytes:
    payload = json.dumps(answer).encode() if answer is not None else b""
    kind = b"Content-Type: application/json\r\n" if answer is not None else b""
    return b"HTTP/1.0 %d X\r\n%sContent-Length: %d\r\n\r\n%s" % (status, kind, len(payload), payload)


async def _take(worker: WeflowWorker, handoff: Handoff | None, path: str, headers: dict[str, str], body: bytes,
                later: anyio.abc.TaskGroup) -> bytes:  # fmt: skip
    """Answer a hand-off: refused without the home's token (401), while recycling (503) or on a bad body (400)."""
    if not worker_home.authorized(worker.home, headers.get("authorization")):
        return _response(401, {"error": "hand-off refused: missing or wrong token"})
    if handoff is None or worker.draining:
        return _response(503, {"error": "this worker takes no hand-off now"})
    try:
        request = json.loads(body)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        return _response(400, {"error": "hand-off body: expected a JSON object"})
    status, answer, then = await anyio.to_thread.run_sync(handoff, path, request)
    if then is not None:
        worker.handed += 1
        later.start_soon(_run_handed, worker, then)
    return _response(status, answer)


async def _run_handed(worker: WeflowWorker, then: Callable[[], object]) -> None:
    try:
        await anyio.to_thread.run_sync(then, limiter=worker._threads)
    except Exception as exc:  # the run recorded its own end; the worker carries on
        log.warning("a handed-over run failed: %s", exc)
    finally:
        worker.handed -= 1
        worker._ended()


async def _wake_ups(
    worker: WeflowWorker, listener: anyio.abc.Listener[Any], woken: Callable[[], None], handoff: Handoff | None,
    later: anyio.abc.TaskGroup,
) -> None:  # fmt: skip
    """Answer each connection to the wake-up port: a POST /wake polls now; /run and /execute hand runs over."""

    async def answer(stream: anyio.abc.ByteStream) -> None:
        with suppress(Exception):
            async with stream:
                with anyio.fail_after(5):
                    path, headers, body = await _read_request(stream)
                if path not in ("/run", "/execute"):
                    woken()
                    await stream.send(b"HTTP/1.0 204 No Content\r\n\r\n")
                    return
                await stream.send(await _take(worker, handoff, path, headers, body, later))

    await listener.serve(answer)


async def _poll_on_wake(worker: WeflowWorker, wake: list[anyio.Event]) -> None:
    while True:
        await wake[0].wait()
        wake[0] = anyio.Event()  # a wake-up during this poll gets a poll of its own
        try:
            await worker.get_and_submit_flow_runs()
        except Exception as exc:  # the regular poll carries on; a wake-up is only a shortcut
            log.warning("poll on wake-up failed: %s", exc)


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
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    worker.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    wake = [anyio.Event()]
    stop = anyio.Event()
    interval = query_seconds or PREFECT_WORKER_QUERY_SECONDS.value()
    worker_home.token(worker.home, create=True)  # the hand-off secret of this home, 0600
    worker.on_slot_free = lambda: wake[0].set()
    async with worker:
        worker.record()
        async with anyio.create_task_group() as loops:
            loops.start_soon(_stop_on_signals, stop)
            loops.start_soon(_wake_ups, worker, listener, lambda: wake[0].set(), handoff, loops)
            loops.start_soon(_poll_on_wake, worker, wake)
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
            loops.cancel_scope.cancel()
        await listener.aclose()
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
