"""The weflow worker process's loops (``worker.WeflowWorker``): polls, wake-ups, health, signals.

``run_worker`` is the body of a worker child (``python -m weflow.workers``): Prefect's two
service loops (poll every ``PREFECT_WORKER_QUERY_SECONDS``, sync and heartbeat), a poll at once
on each POST to the worker's loopback wake-up port, and a check every second that refreshes the
worker's record in the Prefect home (its supervisor's hang watchdog reads it) and recycles the
worker when it is due; SIGTERM or SIGINT drains it the same way.
"""

from __future__ import annotations

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


async def _wake_ups(listener: anyio.abc.Listener[Any], woken: Callable[[], None]) -> None:
    """Answer each connection to the wake-up port (a POST from ``worker_home.wake``) with a poll."""

    async def answer(stream: anyio.abc.ByteStream) -> None:
        with suppress(Exception):
            async with stream:
                woken()
                await stream.send(b"HTTP/1.0 204 No Content\r\n\r\n")

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
    worker: WeflowWorker, printer: Callable[[str], None] = print, query_seconds: float | None = None
) -> None:
    """Run ``worker`` until it recycles or SIGTERM/SIGINT asks it to stop; in-flight runs finish first."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    worker.port = int(listener.extra(anyio.abc.SocketAttribute.local_port))
    wake = [anyio.Event()]
    stop = anyio.Event()
    interval = query_seconds or PREFECT_WORKER_QUERY_SECONDS.value()
    async with worker:
        worker.record()
        async with anyio.create_task_group() as loops:
            loops.start_soon(_stop_on_signals, stop)
            loops.start_soon(_wake_ups, listener, lambda: wake[0].set())
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
) -> int:
    """Be a weflow worker on ``pool``/``queue`` until it recycles or is asked to stop; the runs it ran."""
    worker = WeflowWorker(work_pool_name=pool, work_queues=[queue], name=name, limit=limit, home=home.resolve(),
                          max_runs=max_runs, max_memory_mb=max_memory_mb)  # fmt: skip
    worker.preload(preload)
    updates = {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: heartbeat_seconds} if heartbeat_seconds else {}
    with temporary_settings(updates=updates):  # Prefect froze its settings at import: heartbeats of this worker's runs
        anyio.run(serve, worker, printer)
    return worker.runs_done
