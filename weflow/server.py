"""The local Prefect server weflow talks to (DESIGN decision 10: never an accidental ephemeral one).

``PREFECT_API_URL`` wins when set. Otherwise weflow uses the server it started before (state in
``<prefect home>/weflow-server.json``), or starts one in the background and reuses it afterwards.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

from weflow.errors import WeflowError

DEFAULT_HOME = Path("data/prefect")
T = TypeVar("T")


class ServerError(WeflowError):
    """The Prefect server could not be reached or started."""


@dataclass(frozen=True)
class Server:
    api_url: str
    pid: int | None = None
    started: bool = False

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        # verify only https: a plain-http check needs no CA bundle (loading it is ~45 ms per call here)
        verify = api_url.startswith("https://")
        return httpx.get(f"{api_url}/health", timeout=timeout, verify=verify).status_code == 200
    except httpx.HTTPError:
        return False


def _free_port(preferred: int) -> int:
    for port in (preferred, 0):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise ServerError("no free port on 127.0.0.1")


def _state_file(home: Path) -> Path:
    return home / "weflow-server.json"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running(home: Path = DEFAULT_HOME, patience: float = 60.0) -> Server | None:
    """The server weflow started earlier in ``home``, if it still answers.

    A busy server can miss a 2 s health check; while its process is alive it is waited for (up
    to ``patience`` seconds) rather than replaced by a second server on the same database.
    """
    state = _state_file(home)
    if not state.exists():
        return None
    data = json.loads(state.read_text())
    deadline = time.monotonic() + patience
    while True:
        if healthy(data["api_url"]):
            return Server(data["api_url"], data.get("pid"))
        if not _alive(data.get("pid")) or time.monotonic() > deadline:
            return None
        time.sleep(1)


def server_env(home: Path, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PREFECT_API_URL", None)
    env.update(
        PREFECT_HOME=str(home.resolve()),
        PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",  # the UI would otherwise call port 4200
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE="500",
        PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE="500",
    )
    return env


def start(
    home: Path = DEFAULT_HOME,
    port: int = 4200,
    timeout: float = 90.0,
    quiet: bool = False,
    env_extra: Mapping[str, str] | None = None,
) -> Server:
    """Start ``prefect server start`` on 127.0.0.1 in the background and wait until it answers.

    ``env_extra`` adds server settings, e.g. ``PREFECT_API_DATABASE_CONNECTION_URL`` for PostgreSQL.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = _free_port(port)
    api_url = f"http://127.0.0.1:{port}/api"
    if healthy(api_url, timeout=0.5):  # taken between the port check and now: never adopt another server
        raise ServerError(f"port {port} is already served by another process")
    prefect = Path(sys.executable).with_name("prefect")
    log = (home / "server.log").open("ab")
    proc = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**server_env(home, port), **(env_extra or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    if not quiet:
        print(f"starting a local Prefect server on {api_url} (log: {home / 'server.log'}) ...", file=sys.stderr)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the Prefect server exited with code {proc.returncode}; see {home / 'server.log'}")
        if healthy(api_url, timeout=1.0) and proc.poll() is None:
            _state_file(home).write_text(json.dumps({"api_url": api_url, "pid": proc.pid}))
            return Server(api_url, proc.pid, started=True)
        time.sleep(0.3)
    proc.terminate()
    raise ServerError(f"the Prefect server did not answer within {timeout:.0f} s; see {home / 'server.log'}")


def stop(home: Path = DEFAULT_HOME) -> bool:
    state = _state_file(home)
    if not state.exists():
        return False
    pid = json.loads(state.read_text()).get("pid")
    state.unlink()
    if pid:
        try:
            os.killpg(pid, 15)
        except ProcessLookupError:
            return False
    return True


_checked: dict[str, float] = {}
_RECHECK_SECONDS = 30.0


def ensure(home: Path = DEFAULT_HOME, quiet: bool = False) -> Server:
    """The API to use: PREFECT_API_URL if set, else weflow's local server (started if needed).

    A server found healthy is trusted for 30 s, so back-to-back runs skip the health check.
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if time.monotonic() - _checked.get(url, -_RECHECK_SECONDS) < _RECHECK_SECONDS:
            return Server(url)
        if not healthy(url):
            raise ServerError(f"PREFECT_API_URL={url} does not answer")
        _checked[url] = time.monotonic()
        return Server(url)
    found = running(home) or start(home, quiet=quiet)
    return found


def start_worker(
    api_url: str,
    pool: str,
    queue: str,
    home: Path = DEFAULT_HOME,
    name: str | None = None,
    env_extra: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> subprocess.Popen[bytes]:
    """A Prefect process worker for ``pool``/``queue``, polling every second, logging to ``home``.

    ``limit``: the most flow runs this worker runs at once (``prefect worker start --limit``).
    """
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(env_extra or {})
    env.update(PREFECT_API_URL=api_url, PREFECT_WORKER_QUERY_SECONDS="1", PREFECT_RUNNER_POLL_FREQUENCY="1")
    log = (home / f"worker-{name or queue}.log").open("ab")
    cmd = [str(Path(sys.executable).with_name("prefect")), "worker", "start", "--pool", pool, "--type", "process",
           "--work-queue", queue]  # fmt: skip
    if name:
        cmd += ["--name", name]
    if limit:
        cmd += ["--limit", str(limit)]
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


def start_node_worker(api_url: str, queue: str, home: Path = DEFAULT_HOME, limit: int = 10) -> subprocess.Popen[bytes]:
    """A weflow node worker (a Prefect task worker) taking steps from the node queue ``queue``."""
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(PREFECT_API_URL=api_url, WORKFLOW_NODE_QUEUE=queue)
    log = (home / f"node-worker-{queue}.log").open("ab")
    cmd = [str(Path(sys.executable).with_name("weflow")), "node-worker", "--limit", str(limit)]
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


_prefect_settings: dict[str, tuple[Any, Any]] = {}


@contextmanager
def pointed_at(api_url: str) -> Iterator[None]:
    """Prefect's settings with ``PREFECT_API_URL=api_url`` for the block.

    ``prefect.settings.temporary_settings`` rebuilds every Prefect setting from the environment, ~85 ms
    here (a sixth of a flow run's fixed cost); this copy is made once per base settings and URL and
    then reused, and none is made when the current settings already point there.
    """
    from prefect.context import SettingsContext, get_settings_context
    from prefect.settings import PREFECT_API_URL

    current = get_settings_context()
    if current.settings.api.url == api_url:
        yield
        return
    base, pointed = _prefect_settings.get(api_url, (None, None))
    if base is not current.settings:
        base, pointed = current.settings, current.settings.copy_with_update(updates={PREFECT_API_URL: api_url})
        _prefect_settings[api_url] = (base, pointed)
    with SettingsContext(profile=current.profile, settings=pointed):
        yield


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from sync code, also where a loop already runs (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    failure: list[BaseException] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            result.append(context.run(asyncio.run, coro))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="weflow-blocking")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]
