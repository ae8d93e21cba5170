"""The home's local Prefect server as ``weflow server`` manages it: start (kept until stopped), stop, status.

Importing this module does not import Prefect: the server is a process found from /proc.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from weflow.prefect_gateway import server
from weflow.prefect_gateway.server import Server


@dataclass(frozen=True)
class Found:
    """One server of the home, as ``weflow server status`` reports it."""

    pid: int
    api_url: str | None
    answers: bool
    idle_seconds: float | None  # None: runs until stopped
    recorded: bool  # the home's record names it


def home() -> Path:
    return server.default_home()


def start() -> Server:
    """The server ``PREFECT_API_URL`` names, else the home's, started (to run until stopped) if none runs."""
    return server.ensure() if os.environ.get("PREFECT_API_URL") else server.acquire(home(), keep=True)


def stop() -> list[int]:
    """Stop every server of the home (and its supervisor), recorded or not; the pids stopped."""
    return server.stop(home())


def status() -> list[Found]:
    """Every server of the home, whether it answers, and whether it stops when idle."""
    return [
        Found(p.pid, p.api_url, bool(p.api_url) and server.healthy(p.api_url or ""), p.idle_seconds, p.recorded)
        for p in server.servers(home())
    ]
