"""The local Prefect server weflow talks to (DESIGN decisions 10 and 14).

``PREFECT_API_URL`` wins when set. Otherwise weflow uses the server of the Prefect home:
``$PREFECT_HOME`` when the user set it, else ``data/prefect`` of the working directory. Finding or
starting that server happens under the home's exclusive lock, so concurrent first runs start one
server and the others reuse it (they raced for a port and one SQLite database before). Each server
runs under a supervisor (``supervisor``) that owns it; one started implicitly by a command
(``ensure``) stops after ``WEFLOW_SERVER_IDLE_SECONDS`` (default 300; 0 = never) with no weflow
client and no active flow run, while ``weflow server start`` and ``weflow up`` keep theirs. Every
process of a home is found again from /proc (``find``), whatever the record in the home says.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from weflow.config import project_root
from weflow.errors import ServerError
from weflow.prefect_gateway import supervisor
from weflow.prefect_gateway.supervisor import Process

DEFAULT_HOME = Path("data/prefect")  # when PREFECT_HOME is unset
IDLE_SECONDS = 300.0  # 5 min: gone well within the 10 min issue 14 allows; WEFLOW_SERVER_IDLE_SECONDS overrides


@dataclass(frozen=True)
class Server:
    api_url: str
    pid: int | None = None
    started: bool = False
    idle_seconds: float | None = None  # None: runs until stopped

    @property
    def ui_url(self) -> str:
        return self.api_url.removesuffix("/api")


def use_api(api_url: str) -> None:
    """Point this process at ``api_url``: ``PREFECT_API_URL``, and Prefect's global settings if Prefect is
    already imported (they are read from the environment at import; Prefect's background threads, such as
    its events worker, see only them and would otherwise start a temporary server of their own)."""
    os.environ["PREFECT_API_URL"] = api_url
    context = sys.modules.get("prefect.context")  # not imported here: the CLI's commands stay Prefect-free
    if context is not None:
        context.refresh_global_settings_context()


def default_home() -> Path:
    """``$PREFECT_HOME`` when the user set it (weflow used to replace it), else the project's ``data/prefect``
    (``weflow init``'s project found upward from here: a notebook in ``notebooks/`` uses the project's server),
    else ``data/prefect``."""
    chosen = os.environ.get("PREFECT_HOME", "").strip()
    if chosen:
        return Path(chosen).expanduser()
    root = project_root()
    return root / DEFAULT_HOME if root is not None else DEFAULT_HOME


def idle_seconds() -> float | None:
    """How long an implicitly started server may sit idle (``WEFLOW_SERVER_IDLE_SECONDS``); None: forever."""
    raw = os.environ.get("WEFLOW_SERVER_IDLE_SECONDS", "").strip()
    if not raw:
        return IDLE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ServerError(f"WEFLOW_SERVER_IDLE_SECONDS={raw!r}: expected a number of seconds (0: never stop)") from None
    return value if value > 0 else None


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    import httpx  # deferred here and in ``serves``: `weflow run` handing a run over never checks a server

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


def _home(home: Path | None) -> Path:
    return (home or default_home()).resolve()


def find(home: Path | None = None) -> list[Process]:
    """Every process serving ``home`` (supervisors and Prefect servers), from /proc."""
    return supervisor.find(_home(home))


def servers(home: Path | None = None) -> list[Process]:
    """The servers of ``home``, one entry each (a supervisor stands for its child), with the record's say."""
    target = _home(home)
    found = find(target)
    pids = {p.pid for p in found}
    record = supervisor.read_record(target) or {}
    tops = []
    for p in found:
        if p.parent in pids:
            continue
        if record.get("pid") == p.pid:
            idle = record.get("idle_seconds")
            p = Process(p.pid, p.parent, p.supervisor, record.get("api_url", p.api_url), idle or None, True)
        tops.append(p)
    return tops


def _serves(pid: int | None, home: Path) -> bool:
    if pid is None or not supervisor.alive(pid):
        return False
    return not Path("/proc").is_dir() or supervisor.describe(pid, home) is not None


def running(home: Path | None = None, patience: float = 60.0) -> Server | None:
    """The server recorded in ``home``, if its process still serves that home and answers.

    A busy server can miss a 2 s health check; while its process is alive it is waited for (up
    to ``patience`` seconds) rather than replaced by a second server on the same database.
    """
    target = _home(home)
    data = supervisor.read_record(target)
    if data is None or not _serves(data.get("pid"), target):  # a stale record's port may be another server's
        return None
    deadline = time.monotonic() + patience
    while True:
        if healthy(data["api_url"]):
            return Server(data["api_url"], data.get("pid"), idle_seconds=data.get("idle_seconds") or None)
        if not supervisor.alive(data.get("pid")) or time.monotonic() > deadline:
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
    env[supervisor.HOME_MARKER] = str(home.resolve())
    return env


def serves(api_url: str, home: Path) -> bool:
    """Whether the server at ``api_url`` answers and runs on ``home`` (not another home's on a reused port)."""
    import httpx

    try:
        response = httpx.get(f"{api_url}/admin/settings", timeout=5.0, verify=api_url.startswith("https://"))
        return response.status_code == 200 and Path(str(response.json().get("home"))).resolve() == home.resolve()
    except (httpx.HTTPError, ValueError, AttributeError):
        return False


def start(
    home: Path | None = None,
    port: int = 4200,
    timeout: float = 90.0,
    quiet: bool = False,
    env_extra: Mapping[str, str] | None = None,
    idle_seconds: float | None = None,
    owner: int | None = None,
) -> Server:
    """Start ``prefect server start`` on 127.0.0.1 under a supervisor, record it, wait until it answers.

    The caller holds the home's lock (``acquire``) or owns the home alone (a test's fresh folder).
    ``port`` is a preference (0: any free port). ``env_extra`` adds server settings, e.g.
    ``PREFECT_API_DATABASE_CONNECTION_URL``; ``idle_seconds``: stop after that long without a
    weflow client (None: run until stopped); ``owner``: a pid whose end stops the server too (a
    test session's, so that an interrupted session leaves no server behind).
    """
    home = _home(home)
    home.mkdir(parents=True, exist_ok=True)
    _seed(home, env_extra)
    deadline = time.monotonic() + timeout
    for attempt in range(3):
        # a free port is only free until the server binds it (after its migrations, seconds later):
        # ten first runs in ten folders all chose 4200 here, so a port taken meanwhile is given up
        chosen = _free_port(port if attempt == 0 else 0)
        found = _start_once(home, chosen, deadline, quiet, env_extra, idle_seconds, owner)
        if found is not None:
            return found
    raise ServerError(f"the Prefect server found its port taken 3 times; see {home / 'server.log'}")


def _seed(home: Path, env_extra: Mapping[str, str] | None) -> None:
    """A new home's SQLite database copied from ``WEFLOW_PREFECT_DB_TEMPLATE`` (an already migrated Prefect
    database, as a test session or CI keeps one): its first start skips ~10 s of one core's migrations."""
    template = os.environ.get("WEFLOW_PREFECT_DB_TEMPLATE", "")
    own_db = "PREFECT_API_DATABASE_CONNECTION_URL" in {**os.environ, **(env_extra or {})}
    if template and not own_db and Path(template).is_file() and not (home / "prefect.db").exists():
        shutil.copyfile(template, home / "prefect.db")


def _start_once(
    home: Path,
    port: int,
    deadline: float,
    quiet: bool,
    env_extra: Mapping[str, str] | None,
    idle_seconds: float | None,
    owner: int | None = None,
) -> Server | None:
    """One start on ``port``: the server once it answers, None when another process got the port first."""
    api_url = f"http://127.0.0.1:{port}/api"
    cmd = [sys.executable, "-P", supervisor.__file__, "--home", str(home), "--port", str(port),
           "--idle", str(idle_seconds or 0), *(["--owner", str(owner)] if owner else [])]  # fmt: skip
    with (home / "server.log").open("ab") as log:
        proc = subprocess.Popen(
            cmd,
            env={**server_env(home, port), **(env_extra or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    # recorded before it answers: a process finding the record waits for this one instead of starting another
    supervisor.write_record(home, {"api_url": api_url, "pid": proc.pid, "idle_seconds": idle_seconds})
    if not quiet:
        print(f"starting a local Prefect server on {api_url} (log: {home / 'server.log'}) ...", file=sys.stderr)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"the Prefect server exited with code {proc.returncode}; see {home / 'server.log'}")
        if healthy(api_url, timeout=1.0):
            if serves(api_url, home):
                return Server(api_url, proc.pid, started=True, idle_seconds=idle_seconds)
            supervisor.terminate([proc.pid])  # another home's server answers there: ours could never bind
            return None
        time.sleep(0.3)
    supervisor.terminate([proc.pid])
    raise ServerError(f"the Prefect server did not answer in time; see {home / 'server.log'}")


def _adopt(home: Path, patience: float = 60.0) -> Server | None:
    """An unrecorded server of ``home`` that answers (its record was lost, or started by hand), recorded.

    One still starting is waited for (up to ``patience`` seconds) rather than replaced.
    """
    deadline = time.monotonic() + patience
    while found := [p for p in servers(home) if p.api_url]:
        for p in found:
            if p.api_url and serves(p.api_url, home):
                supervisor.write_record(home, {"api_url": p.api_url, "pid": p.pid, "idle_seconds": p.idle_seconds})
                return Server(p.api_url, p.pid, idle_seconds=p.idle_seconds)
        if time.monotonic() > deadline:
            break
        time.sleep(1)
    return None


def acquire(
    home: Path | None = None,
    port: int = 4200,
    idle_seconds: float | None = None,
    keep: bool = False,
    quiet: bool = False,
    timeout: float = 90.0,
    owner: int | None = None,
) -> Server:
    """The home's one server: the recorded one, else one started with ``idle_seconds`` (``started``).

    Under the home's lock, so concurrent callers start one server. ``keep``: a server already
    running stops idling (``weflow server start``). While this process lives it counts as a client.
    ``owner``: a server started here stops when that process ends (``weflow up``'s, even killed).
    """
    target = _home(home)
    try:
        with supervisor.locked(target, timeout=timeout + 120):
            found = running(target) or _adopt(target)
            if found is None:
                # leftovers of the home that do not answer: never two servers on one database
                supervisor.terminate(p.pid for p in find(target))
                found = start(target, port=port, timeout=timeout, quiet=quiet, idle_seconds=idle_seconds, owner=owner)
            elif keep and found.idle_seconds is not None:
                supervisor.write_record(target, {"api_url": found.api_url, "pid": found.pid, "idle_seconds": None})
                found = Server(found.api_url, found.pid, found.started)
            supervisor.touch(target)
    except supervisor.LockTimeout as exc:
        raise ServerError(f"{exc}: another weflow process is starting the server; try again") from None
    if found.idle_seconds is not None:
        _heartbeat(target, found.idle_seconds)
    return found


_beating: set[Path] = set()


def _heartbeat(home: Path, idle: float) -> None:
    """Touch the home's activity file while this process lives: a notebook or `weflow serve` is a client."""
    if home in _beating:
        return
    _beating.add(home)
    interval = min(60.0, max(0.5, idle / 3))

    def beat() -> None:
        while True:
            time.sleep(interval)
            try:
                supervisor.touch(home)
            except OSError:  # the home is gone (a test's folder)
                _beating.discard(home)
                return

    threading.Thread(target=beat, name="weflow-server-heartbeat", daemon=True).start()


def stop(home: Path | None = None) -> list[int]:
    """Stop every server of ``home`` (and its supervisor), recorded or not; the pids stopped."""
    target = _home(home)
    if not target.is_dir():  # no home, no lock to take (and none to create): only strays named after it
        return supervisor.terminate(p.pid for p in servers(target))
    try:
        with supervisor.locked(target, timeout=30):  # let a server being started finish first
            stopped = supervisor.terminate(p.pid for p in servers(target))
    except supervisor.LockTimeout:
        stopped = supervisor.terminate(p.pid for p in servers(target))
    supervisor.terminate(p.pid for p in find(target))  # children of the stopped ones that outlived them
    (target / supervisor.STATE).unlink(missing_ok=True)
    return stopped


_checked: dict[str, float] = {}
_RECHECK_SECONDS = 30.0


def ensure(home: Path | None = None, quiet: bool = False) -> Server:
    """The API to use: PREFECT_API_URL if set, else the home's local server (started if needed).

    A server named by PREFECT_API_URL found healthy is trusted for 30 s, so back-to-back runs skip
    the health check. A local server this call starts stops after the idle period (``idle_seconds``).
    """
    url = os.environ.get("PREFECT_API_URL")
    if url:
        if time.monotonic() - _checked.get(url, -_RECHECK_SECONDS) < _RECHECK_SECONDS:
            return Server(url)
        if not healthy(url):
            raise ServerError(f"PREFECT_API_URL={url} does not answer")
        _checked[url] = time.monotonic()
        return Server(url)
    # any free port: concurrent first runs in different folders would all prefer 4200
    return acquire(home, port=0, idle_seconds=idle_seconds(), quiet=quiet)


def start_worker(
    api_url: str,
    pool: str,
    queue: str,
    home: Path | None = None,
    name: str | None = None,
    env_extra: Mapping[str, str] | None = None,
    limit: int | None = None,
) -> subprocess.Popen[bytes]:
    """A Prefect process worker for ``pool``/``queue``, polling every second, logging to ``home``.

    ``limit``: the most flow runs this worker runs at once (``prefect worker start --limit``).
    """
    home = _home(home)
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


def start_weflow_worker(
    api_url: str,
    home: Path | None = None,
    limit: int | None = None,
    env_extra: Mapping[str, str] | None = None,
    tied: bool = False,
) -> subprocess.Popen[bytes]:
    """``weflow worker``: the supervisor of a long-lived weflow worker on the execution queue (``worker.py``).

    ``tied``: it stops (its runs get their grace period) when this process ends, even killed."""
    home = _home(home)
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **(env_extra or {}), "PREFECT_API_URL": api_url, "PREFECT_HOME": str(home)}
    log = (home / "weflow-worker-supervisor.log").open("ab")
    cmd = [str(Path(sys.executable).with_name("weflow")), "worker"] + (["--limit", str(limit)] if limit else [])
    cmd += ["--parent", str(os.getpid())] if tied else []
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )


def start_node_worker(
    api_url: str, queue: str, home: Path | None = None, limit: int = 10, tied: bool = False
) -> subprocess.Popen[bytes]:
    """A weflow node worker (a Prefect task worker) taking steps from the node queue ``queue``.

    ``tied``: it stops when this process ends, even killed."""
    home = _home(home)
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(PREFECT_API_URL=api_url, WORKFLOW_NODE_QUEUE=queue)
    log = (home / f"node-worker-{queue}.log").open("ab")
    cmd = [str(Path(sys.executable).with_name("weflow")), "node-worker", "--limit", str(limit)]
    cmd += ["--parent", str(os.getpid())] if tied else []
    return subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
