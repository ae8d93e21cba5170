"""The owner of one local Prefect server (DESIGN decision 14): its child, its record, its idle stop.

Also where a home's processes are found again from /proc (``find``, ``terminate``), whatever the
record says, for ``weflow server status`` and ``weflow server stop``.

``server.start`` runs this file by path (``python -P .../supervisor.py --home H --port P
--idle S``); it starts ``prefect server start`` as its child (through ``prefect_server.py``, which
begins the server's SQLite write transactions IMMEDIATE), takes it down with itself on SIGTERM
(and the child dies with it on SIGKILL, through ``PR_SET_PDEATHSIG``), and, when ``--idle`` is
positive, stops both once no weflow client has touched the home's activity file for that long and
the server has no active flow run. It imports only the standard library: a supervisor per server
cost 105 MB and 0.75 s with the ``weflow`` package imported, 22 MB and under 0.1 s of CPU without it here.

The home's files, shared with ``server``:

- ``weflow-server.json``: the record (``api_url``, ``pid`` of the supervisor, ``idle_seconds``;
  ``null`` = never idle-stop, which ``weflow server start`` writes to keep a server running);
- ``weflow-server.lock``: ``flock``-ed to start a server, and by the supervisor to stop one, so a
  client never gets a server that is being stopped and concurrent first runs start one server;
- ``weflow-activity``: its mtime is the last time a weflow client used the server.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

STATE = "weflow-server.json"
LOCK = "weflow-server.lock"
ACTIVITY = "weflow-activity"
HOME_MARKER = "WEFLOW_SERVER_HOME"  # in the environment of a supervisor and its server: found again by it
ACTIVE_STATES = ("PENDING", "RUNNING", "CANCELLING")
# A flow run whose process was killed stays RUNNING in Prefect (issue 14, item 5): only runs that
# began in the last day keep an idle server up, so such a run cannot pin it forever.
ACTIVE_WINDOW = timedelta(days=1)


class LockTimeout(Exception):
    """Another process held a home's lock for longer than the caller would wait."""


@contextmanager
def locked(home: Path, timeout: float = 300.0) -> Iterator[None]:
    """Hold ``home``'s exclusive lock for the block (the kernel frees it if this process dies)."""
    home.mkdir(parents=True, exist_ok=True)
    with (home / LOCK).open("a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise LockTimeout(f"{home / LOCK} was held for over {timeout:.0f} s") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def touch(home: Path) -> None:
    """Mark the home's server as used now."""
    (home / ACTIVITY).touch()


def read_record(home: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((home / STATE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_record(home: Path, record: dict[str, Any]) -> None:
    """Replace the record in one step, so a reader never sees half of it."""
    partial = home / f"{STATE}.{os.getpid()}"
    partial.write_text(json.dumps(record))
    partial.replace(home / STATE)


def idle_for(home: Path, since: float) -> float:
    """Seconds since a client last used the server (or since ``since``, the server's start, if later)."""
    try:
        last = max(since, (home / ACTIVITY).stat().st_mtime)
    except OSError:
        last = since
    return time.time() - last


def active_runs(api_url: str) -> int:
    """Flow runs of the server that are pending, running or cancelling (0 when it does not answer)."""
    import urllib.error  # here: this module is imported by every `weflow` command, which seldom asks (~8 ms)
    import urllib.request

    after = (datetime.now(UTC) - ACTIVE_WINDOW).isoformat()
    body = {"flow_runs": {"state": {"type": {"any_": list(ACTIVE_STATES)}}, "expected_start_time": {"after_": after}}}
    request = urllib.request.Request(
        f"{api_url}/flow_runs/count",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via an env proxy
    try:
        with direct.open(request, timeout=10) as response:
            return int(json.loads(response.read()))
    except (OSError, ValueError, urllib.error.URLError):
        return 0


# --- finding a home's processes again (weflow server status and stop) ---


@dataclass(frozen=True)
class Process:
    """A process serving a home: a supervisor, or a Prefect server (under one or started by hand)."""

    pid: int
    parent: int
    supervisor: bool
    api_url: str | None
    idle_seconds: float | None  # a supervisor's ``--idle``; None: no idle stop
    recorded: bool = False


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` from the state field on (the command name may hold spaces)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it is this process's exited child
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    fields = _stat(pid)
    return fields is None or fields[0] != "Z"  # no /proc (not Linux): trust kill(0)


def _prefect_server(argv: list[str]) -> bool:
    return any(Path(arg).name in ("prefect", "prefect_server.py") and argv[i + 1 : i + 3] == ["server", "start"]
               for i, arg in enumerate(argv))  # fmt: skip


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv[:-1] else None


def describe(pid: int, home: Path) -> Process | None:
    """The process if it serves ``home``: its environment carries weflow's marker, or it is a Prefect
    server whose ``PREFECT_HOME`` is ``home`` (one started by an older weflow or by hand)."""
    proc = Path(f"/proc/{pid}")
    try:
        argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        env = dict(
            item.decode(errors="replace").partition("=")[::2]
            for item in (proc / "environ").read_bytes().split(b"\0")
            if b"=" in item
        )
        cwd = os.readlink(proc / "cwd")
    except OSError:
        return None
    fields = _stat(pid)
    if not argv or fields is None:
        return None
    marked = env.get(HOME_MARKER) == str(home)
    prefect_home = env.get("PREFECT_HOME", "")
    by_hand = bool(prefect_home) and _prefect_server(argv) and (Path(cwd) / prefect_home).resolve() == home
    if not (marked or by_hand):
        return None
    is_supervisor = any(a.endswith("supervisor.py") for a in argv)
    port = _option(argv, "--port")
    idle = float(_option(argv, "--idle") or 0) if is_supervisor else 0.0
    return Process(
        pid=pid,
        parent=int(fields[1]),
        supervisor=is_supervisor,
        api_url=f"http://127.0.0.1:{port}/api" if port else None,
        idle_seconds=idle if idle > 0 else None,
    )


def find(home: Path) -> list[Process]:
    """Every process serving ``home`` (an absolute, resolved path), from /proc."""
    me = os.getpid()
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()] if Path("/proc").is_dir() else []
    return [p for pid in sorted(pids) if pid != me and (p := describe(pid, home)) is not None]


def terminate(pids: Iterable[int], patience: float = 20.0) -> list[int]:
    """SIGTERM each process (its whole group when it leads one), SIGKILL what is left after ``patience``."""
    targets = [pid for pid in pids if alive(pid)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in targets:
            try:
                if os.getpgid(pid) == pid:
                    os.killpg(pid, sig)
                else:
                    os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + patience
        while any(alive(pid) for pid in targets) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not any(alive(pid) for pid in targets):
            break
    return targets


class _Stop(Exception):
    """A signal asked the supervisor to stop."""


def _stop_signal(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signal.Signals(signum).name)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM when the supervisor dies, even by SIGKILL."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _end(home: Path, proc: subprocess.Popen[bytes]) -> None:
    """Stop the server and drop the record; signals arriving meanwhile cannot cut this short."""
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    _release(home)
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _release(home: Path) -> None:
    """Remove the record if it still names this supervisor (a newer server may have replaced it)."""
    record = read_record(home)
    if record is not None and record.get("pid") == os.getpid():
        (home / STATE).unlink(missing_ok=True)


def _idle_limit(home: Path, default: float | None) -> float | None:
    """The idle period in force: the record's (``null`` once pinned by ``weflow server start``)."""
    record = read_record(home)
    if record is not None and record.get("pid") == os.getpid():
        value = record.get("idle_seconds")
        return float(value) if value else None
    return default


def _say(message: str) -> None:
    print(f"[weflow supervisor {os.getpid()} {time.strftime('%H:%M:%S')}] {message}", flush=True)


def supervise(home: Path, port: int, idle: float | None, owner: int | None = None) -> int:
    """Run the server until a signal, its own exit, ``idle`` seconds without a client or the end of the
    ``owner`` process; its exit code."""
    started = time.time()
    api_url = f"http://127.0.0.1:{port}/api"
    prefect = Path(__file__).with_name("prefect_server.py")  # `prefect server start`, SQLite's writes begun IMMEDIATE
    _say(f"starting a Prefect server on {api_url}; " + (f"stops after {idle:g} s idle" if idle else "no idle stop"))
    proc = subprocess.Popen(
        [sys.executable, "-P", str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # safe: this process has one thread
    )
    poll = min(5.0, max(0.5, (idle or 20.0) / 4))
    stopped = True
    try:
        while proc.poll() is None:
            time.sleep(poll)
            if owner is not None and not alive(owner):
                _say(f"its owner, process {owner}, ended: stopping {api_url}")
                return 0
            limit = _idle_limit(home, idle)
            if limit is None or idle_for(home, started) < limit or active_runs(api_url):
                continue
            try:
                with locked(home, timeout=60):  # no client is between finding this server and using it
                    if idle_for(home, started) >= limit:
                        _say(f"no weflow client for {limit:g} s and no active flow run: stopping {api_url}")
                        _end(home, proc)
                        return 0
            except LockTimeout:
                continue  # a client is starting or finding a server: it will touch the activity file
        stopped = False  # the server exited by itself: pass its code on
        _say(f"the Prefect server exited with code {proc.returncode}")
    except _Stop as stop:
        _say(f"{stop}: stopping {api_url}")
    finally:
        _end(home, proc)
    return 0 if stopped else proc.returncode


def main(argv: list[str] | None = None) -> int:
    import argparse  # here: only the supervisor process parses arguments

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--idle", type=float, default=0.0, help="seconds without a client before stopping; 0: never")
    parser.add_argument("--owner", type=int, default=None, help="stop when this process ends")
    args = parser.parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, _stop_signal)
    return supervise(args.home, args.port, args.idle if args.idle > 0 else None, args.owner)


if __name__ == "__main__":
    sys.exit(main())
