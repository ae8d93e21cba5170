"""A node worker (``weflow node-worker``): a Prefect task worker serving one node queue's steps.

Apart from ``remote`` so a flow that hands steps over does not import Prefect's task worker (and its
status server's FastAPI and uvicorn).
"""

from __future__ import annotations

import asyncio
import os
import threading
from typing import Any

from prefect.task_worker import TaskWorker

from weflow.engine.remote import node_queue, node_task

STOP_GRACE = 10.0  # seconds a SIGTERMed node worker gives its steps in flight before it exits regardless


class _NodeWorker(TaskWorker):
    """Prefect's task worker, stopped on SIGTERM from its own event loop.

    Prefect's handler runs the stop in its global loop thread and raises the stop exception inside the
    signal handler, wherever the main thread was; a node worker so stopped once never exited (still up
    8 minutes after SIGTERM, its loop idle). Here SIGTERM cancels the serving task in its loop, and the
    process exits (code 1) ``STOP_GRACE`` seconds later if it still waits for something.
    """

    _serving: asyncio.Task[Any] | None = None

    async def astart(self, timeout: float | None = None) -> None:
        self._serving = asyncio.current_task()
        try:
            await super().astart(timeout)
        except asyncio.CancelledError:
            if not self.stopping:
                raise

    def handle_sigterm(self, signum: int, frame: object) -> None:
        self.stopping = True
        if self._serving is not None:
            self._serving.get_loop().call_soon_threadsafe(self._serving.cancel)
        deadline = threading.Timer(STOP_GRACE, _exit_now)
        deadline.daemon = True  # a worker that stops in time exits at once
        deadline.start()


def _exit_now() -> None:
    print(f"error: the node worker did not stop within {STOP_GRACE:g} s of SIGTERM: exiting", flush=True)
    os._exit(1)


async def serve(queue: str | None = None, limit: int | None = 10) -> None:
    """Be a node worker: take steps from ``queue`` (``WORKFLOW_NODE_QUEUE``) until SIGTERM or Ctrl-C."""
    await _NodeWorker(node_task(queue or node_queue()), limit=limit).astart()
