"""What a Prefect home knows about its weflow workers: one record each, the wake-up, the child process.

A long-lived worker (``worker.py``) writes ``<home>/weflow-workers/<pid>.json``: its name, pool
and queue, the loopback port it takes wake-ups on, and the flow runs it runs right now. ``wake``
(called after weflow creates a flow run) sends every live worker of the home a one-line POST, so
it polls at once instead of at its next poll; its supervisor (``weflow worker``) reads the
in-flight list of a child that died to mark those runs CRASHED, and kills a child whose record
went unrefreshed for ``hang_seconds`` (its event loop is stuck: a node holds the interpreter).
Runs are handed over on the same port (``hand_over``: ``POST /run``, ``POST /execute``), authorised
by a token file (0600) in the home that only processes of the same OS user can read. Only the
standard library: a supervisor and ``weflow run`` import this without Prefect.
"""

from __future__ import annotations

import ctypes
import hmac
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any
from uuid import UUID

from weflow.errors import WeflowError
from weflow.prefect_gateway import supervisor

FOLDER = "weflow-workers"
TOKEN = "handoff.token"  # in FOLDER, mode 0600: only processes of the worker's OS user may hand runs over
HANDOFF_TIMEOUT = 60.0  # seconds for a worker to answer a hand-off (it records the run and creates its flow run)
WAKE_REQUEST = b"POST /wake HTTP/1.0\r\nContent-Length: 0\r\n\r\n"
WAKE_TIMEOUT = 0.2  # seconds per worker: a loopback connect takes well under 1 ms here
GRACE_SECONDS = 30.0  # how long a stopping worker may finish its runs in flight before it is killed


HANG_SECONDS = 60.0  # a worker whose loop did not refresh its record for this long is killed


def hang_seconds() -> float:
    """``WEFLOW_WORKER_HANG_SECONDS``: silence after which a worker counts as hung (a node holding the GIL)."""
    raw = os.environ.get("WEFLOW_WORKER_HANG_SECONDS", "").strip()
    try:
        return max(1.0, float(raw)) if raw else HANG_SECONDS
    except ValueError:
        raise WeflowError(f"WEFLOW_WORKER_HANG_SECONDS={raw!r}: expected a number of seconds") from None


POLL_SECONDS = 1.0  # between a worker's polls for runs no wake-up or Prefect event announced


def poll_seconds() -> float:
    """``WEFLOW_WORKER_POLL_SECONDS``: how often a worker asks Prefect for scheduled runs (besides wake-ups and
    events); a due cron run or one whose concurrency slot freed waits at most this long."""
    raw = os.environ.get("WEFLOW_WORKER_POLL_SECONDS", "").strip()
    try:
        value = float(raw) if raw else POLL_SECONDS
    except ValueError:
        value = -1.0
    if not value > 0:
        raise WeflowError(f"WEFLOW_WORKER_POLL_SECONDS={raw!r}: expected a number of seconds above 0")
    return value


def silent_for(home: Path, pid: int) -> float:
    """Seconds since worker ``pid`` last refreshed its record (it does every second); 0 before its first."""
    try:
        return max(0.0, time.time() - (folder(home) / f"{pid}.json").stat().st_mtime)
    except OSError:
        return 0.0


def grace_seconds() -> float:
    """``WEFLOW_WORKER_GRACE_SECONDS``: a stopping worker's time to finish its runs (then they end CRASHED)."""
    raw = os.environ.get("WEFLOW_WORKER_GRACE_SECONDS", "").strip()
    try:
        return max(0.0, float(raw)) if raw else GRACE_SECONDS
    except ValueError:
        raise WeflowError(f"WEFLOW_WORKER_GRACE_SECONDS={raw!r}: expected a number of seconds") from None


def folder(home: Path) -> Path:
    return home / FOLDER


def write(home: Path, record: Mapping[str, Any]) -> None:
    """Replace this process's record in one step (a reader never sees half of it)."""
    target = folder(home)
    target.mkdir(parents=True, exist_ok=True)
    partial = target / f".{os.getpid()}.json.partial"
    partial.write_text(json.dumps(dict(record)))
    partial.replace(target / f"{os.getpid()}.json")


def read(home: Path, pid: int) -> dict[str, Any] | None:
    try:
        data = json.loads((folder(home) / f"{pid}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove(home: Path, pid: int) -> None:
    (folder(home) / f"{pid}.json").unlink(missing_ok=True)


def live(home: Path) -> list[dict[str, Any]]:
    """The records of the home's workers that still run (a dead one's record is dropped)."""
    found = []
    for path in sorted(folder(home).glob("*.json")) if folder(home).is_dir() else []:
        if not path.stem.isdigit():
            continue
        record = read(home, int(path.stem))
        if record is not None and supervisor.alive(int(path.stem)):
            found.append(record)
        elif record is not None and not record.get("in_flight"):
            path.unlink(missing_ok=True)  # a dead worker's in-flight runs are left for its supervisor
    return found


def orphans(home: Path) -> list[int]:
    """Dead workers of ``home`` with runs in flight whose supervisor is dead too (their records stay until those runs
    ended): no process is left to end those runs (the whole worker tree killed, the machine restarted)."""
    found = []
    for path in sorted(folder(home).glob("*.json")) if folder(home).is_dir() else []:
        record = read(home, int(path.stem)) if path.stem.isdigit() else None
        if record is None or not record.get("in_flight") or supervisor.alive(int(path.stem)):
            continue
        if not supervisor.alive(record.get("supervisor")):  # a live one ends them itself (``Supervisor.repair``)
            found.append(int(path.stem))
    return found


def wake(home: Path, flow_run_id: str | None = None) -> int:
    """Ask every live worker of ``home`` to poll now (for ``flow_run_id``: not if a poll of the worker returned it
    already); how many were reached (0 when none runs)."""
    about = b"" if flow_run_id is None else f"?flow_run={UUID(flow_run_id)}".encode()  # a UUID, nothing else
    request = WAKE_REQUEST.replace(b"/wake", b"/wake" + about)
    reached = 0
    for record in live(home):
        port = record.get("port")
        if not port:
            continue
        try:
            with socket.create_connection(("127.0.0.1", int(port)), timeout=WAKE_TIMEOUT) as conn:
                conn.sendall(request)
            reached += 1
        except OSError:
            continue  # stopping, or busy: its poll (every second) finds the run anyway
    return reached


def token(home: Path, create: bool = False) -> str | None:
    """The home's hand-off secret (made, 0600, by the first worker); None if missing or readable by others."""
    path = folder(home) / TOKEN
    if create and not path.exists():
        folder(home).mkdir(parents=True, exist_ok=True)
        with suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
    try:
        info = path.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            return None  # another user's, or open to others: not a secret
        return path.read_text().strip() or None
    except OSError:
        return None


def authorized(home: Path, header: str | None) -> bool:
    """A hand-off's ``Authorization: Bearer <token>`` matches the home's token."""
    secret = token(home)
    given = (header or "").removeprefix("Bearer ").strip()
    return bool(secret) and hmac.compare_digest(given.encode(), (secret or "").encode())


def hand_over(
    home: Path, path: str, body: Mapping[str, Any], timeout: float = HANDOFF_TIMEOUT
) -> tuple[int, dict[str, Any]] | None:
    """POST ``body`` to a live weflow worker of ``home``: its status and JSON answer; None when none takes it.

    A worker that is recycling or serves another catalog (503, 409) passes it to the next one.
    ``timeout``: seconds to wait for the answer (a ``/wait`` lasts as long as its run).
    """
    secret = token(home)
    if secret is None:
        return None
    payload = json.dumps(dict(body)).encode()
    for record in live(home):
        if not record.get("port") or record.get("draining"):
            continue
        conn = http.client.HTTPConnection("127.0.0.1", int(record["port"]), timeout=timeout)
        try:
            conn.request("POST", path, payload, {"Authorization": f"Bearer {secret}",
                                                 "Content-Type": "application/json"})  # fmt: skip
            answer = conn.getresponse()
            status, data = answer.status, answer.read()
        except OSError:
            continue  # stopping: the next worker, or none
        finally:
            conn.close()
        if status in (409, 503):
            continue
        try:
            found = json.loads(data) if data else {}
        except ValueError:
            found = {"error": data.decode(errors="replace")[:500]}
        return status, found if isinstance(found, dict) else {"value": found}
    return None


def die_with(parent: int, what: str = "the weflow worker supervisor") -> None:
    """Get SIGTERM when ``parent``, the process that started this one (``what``), dies, even by SIGKILL
    (DESIGN decision 14): a worker child and its supervisor; the workers ``weflow up`` starts and ``up``.

    Set by the process itself, not in ``preexec_fn`` (unsafe in a parent with threads); a parent that
    died before this call is caught by the parent check. The parent must start it from a thread that
    lives as long as it does (Linux signals the child when the forking thread ends).
    """
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        raise SystemExit(f"error: {what} (pid {parent}) is gone")


def start_child(argv: Sequence[str], env: Mapping[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A worker child in its own session: Ctrl-C reaches only its supervisor, which stops it gracefully."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
