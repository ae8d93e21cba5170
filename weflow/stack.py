"""The local stack ``weflow up`` supervises: the home's Prefect server, deployments, a weflow worker, a node worker.

A ``Stack`` owns what it starts: ``stop`` ends its workers, and the server too unless it found one
already running; and all of them end by themselves when the stack's process dies without a ``stop``
(SIGKILL, the OOM killer). Start it from the main thread. ``serve_nodes`` is the node worker itself
(``weflow node-worker``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from weflow import deploy, monitor
from weflow.core.entities import AlertDelivery
from weflow.engine import remote
from weflow.prefect_gateway import server, worker_home
from weflow.workflows import Scope

MISSED_SCHEDULE_CHECK_SECONDS = 60


def node_queue(name: str | None = None) -> str:
    """The node queue node workers take steps from: ``name``, else WORKFLOW_NODE_QUEUE or workflow-nodes."""
    return name or remote.node_queue()


class Stack:
    """The home's Prefect server (started unless one runs) with this process's workers on it."""

    def __init__(self, port: int = 4200) -> None:
        self.home: Path = server.default_home()
        self.server = server.acquire(self.home, port=port, owner=os.getpid())  # one it starts: until ``stop``
        self.reused = not self.server.started
        server.use_api(self.server.api_url)
        self.worker: subprocess.Popen[bytes] | None = None
        self.node_worker: subprocess.Popen[bytes] | None = None

    def deploy(self, scope: Scope) -> list[deploy.Deployed]:
        """One deployment per ACTIVE/PAUSED workflow of the scope."""
        return deploy.deploy(scope)

    def start_worker(self) -> subprocess.Popen[bytes]:
        """A long-lived weflow worker (``weflow worker``, its supervisor) on the execution queue of the work pool."""
        self.worker = server.start_weflow_worker(self.server.api_url, self.home, tied=True)
        return self.worker

    def start_node_worker(self) -> subprocess.Popen[bytes]:
        """A node worker on the node queue."""
        self.node_worker = server.start_node_worker(self.server.api_url, node_queue(), self.home, tied=True)
        return self.node_worker

    def watch(self, scope: Scope) -> Iterator[AlertDelivery]:
        """Until the worker ends: the missed-schedule alerts sent, checked once a minute."""
        checked = 0.0
        while self.worker is not None and self.worker.poll() is None:
            if time.monotonic() - checked > MISSED_SCHEDULE_CHECK_SECONDS:
                checked = time.monotonic()
                yield from monitor.missed_schedules(scope)
            time.sleep(1)

    def stop(self) -> None:
        """Stop the workers (a weflow worker's runs get its grace period), and the server if this stack started it."""
        for proc in (self.worker, self.node_worker):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=worker_home.grace_seconds() + 30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if not self.reused:
            server.stop(self.home)


def point_at_server() -> str:
    """PREFECT_API_URL, set to the home's local server (started if needed) when it is not set."""
    if not os.environ.get("PREFECT_API_URL"):
        server.use_api(server.ensure().api_url)
    return os.environ["PREFECT_API_URL"]


def end_with(parent: int, what: str) -> None:
    """This process (``what``) gets SIGTERM when ``parent``, the process that started it, ends, even killed; it
    exits at once with one line if ``parent`` is gone already."""
    worker_home.die_with(parent, f"the process that started this {what}")


def serve_nodes(queue: str, limit: int) -> None:
    """Be a node worker on ``queue``, ``limit`` steps at a time, until interrupted."""
    from weflow.engine import node_worker  # deferred: Prefect's task worker imports FastAPI and uvicorn

    asyncio.run(node_worker.serve(queue, limit))
