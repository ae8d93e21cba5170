"""The catalog's lock, served in arrival order (DESIGN decision 13).

A polled ``flock`` let the process holding the lock take it again at once: measured under 4
processes recording, one call waited 86 s and 3 of 4 processes timed out at 60 s. Here every
caller takes a ticket (a counter in ``<catalog>.queue/next``, itself under a brief lock), holds an
``flock`` on its own ticket file, and waits on the ticket file of the caller before it: that
lock is released when the predecessor is done (or dies: the kernel releases a dead process's
locks), so callers go in ticket order and a process coming back for another session queues
behind everyone already waiting. Each ticket file has one waiter, so no wake-up order of the
kernel matters. Mutual exclusion itself comes from ``<catalog>.lock``, taken last: a caller
that gave up only lets its successor reach that lock early, never into the file beside the
holder. The holder writes its pid and start time into ``<catalog>.lock``, so a caller that times
out says who held the catalog and for how long.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from weflow.errors import CatalogError

_WIDTH = 20  # digits of a ticket: file names sort in ticket order


class CatalogBusy(CatalogError):
    """The catalog's lock was not free within the timeout; the message names the process holding it."""


class _Late(Exception):
    """The deadline passed while waiting (a private type: a TimeoutError of the caller's block passes through)."""


def _take(fd: int, deadline: float) -> bool:
    """An exclusive ``flock`` on ``fd``, waiting until ``deadline`` (monotonic).

    The wait is a blocking ``flock`` in a helper thread, woken by the kernel the moment the lock
    is free (polling added its sleep to every hand-over). False: timed out, and ``fd`` now
    belongs to the helper, which closes it when its ``flock`` returns; the caller must not use it.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        pass
    guard = threading.Lock()
    got = threading.Event()
    abandoned = threading.Event()

    def wait() -> None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with guard:
            if abandoned.is_set():
                os.close(fd)
            else:
                got.set()

    threading.Thread(target=wait, name="weflow-catalog-lock", daemon=True).start()
    if got.wait(max(0.0, deadline - time.monotonic())):
        return True
    with guard:
        if got.is_set():
            return True
        abandoned.set()
    return False


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            text = " ".join(f.read().replace(b"\0", b" ").decode(errors="replace").split())
    except OSError:
        return "no longer running" if not _alive(pid) else "command unknown"
    return text[:300] or "command unknown"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(path: Path) -> str:
    """Who holds the catalog's lock, as its holder wrote it: pid, command line, for how long."""
    try:
        pid_text, since_text = Path(str(path) + ".lock").read_text().split()[:2]
        pid, since = int(pid_text), float(since_text)
    except (OSError, ValueError):
        return "a process that did not say which"
    return f"process {pid} ({_command(pid)}), holding it for {max(0.0, time.time() - since):.1f} s"


def _busy(path: Path, timeout: float) -> CatalogBusy:
    return CatalogBusy(f"catalog {path} is busy: gave up after waiting {timeout:g} s for {holder(path)}")


def _ticket(queue: Path, deadline: float) -> tuple[int, int]:
    """The next ticket number and the descriptor of its file, locked; both taken under the counter's lock
    (held for a few system calls), so the next caller always finds this ticket's file."""
    counter = os.open(queue / "next", os.O_RDWR | os.O_CREAT, 0o644)
    if not _take(counter, deadline):
        raise _Late
    try:
        text = os.pread(counter, 64, 0).strip()
        number = int(text) if text.isdigit() else 0
        mine = os.open(queue / str(number).zfill(_WIDTH), os.O_RDWR | os.O_CREAT, 0o644)
        if not _take(mine, deadline):  # free at once unless the counter was reset under a waiter
            raise _Late
        os.pwrite(counter, str(number + 1).rjust(_WIDTH).encode(), 0)
        return number, mine
    finally:
        os.close(counter)


@contextmanager
def _queued(path: Path, deadline: float) -> Iterator[None]:
    """Wait until every caller that took a ticket before this one is done; hold this ticket meanwhile."""
    queue = Path(str(path) + ".queue")
    queue.mkdir(exist_ok=True)
    number, mine = _ticket(queue, deadline)
    try:
        _after(queue / str(number - 1).zfill(_WIDTH), deadline)
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(queue / str(number).zfill(_WIDTH))  # before releasing: the successor finds it gone or free
        os.close(mine)


def _after(before: Path, deadline: float) -> None:
    """Return once the caller holding ``before`` is done (released it, gave up or died)."""
    try:
        fd = os.open(before, os.O_RDWR)
    except FileNotFoundError:
        return  # done already (or the first ticket)
    if not _take(fd, deadline):
        raise _Late
    with contextlib.suppress(FileNotFoundError):
        os.unlink(before)  # left behind when its caller died
    os.close(fd)


@contextmanager
def hold(path: Path, timeout: float) -> Iterator[None]:
    """The catalog's lock, callers served in arrival order; CatalogError naming the holder after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    try:
        with _queued(path, deadline):
            fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
            if not _take(fd, deadline):
                raise _Late
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()} {time.time():.3f}\n".encode(), 0)
                yield
            finally:
                os.close(fd)  # closing the descriptor releases the lock
    except _Late:
        raise _busy(path, timeout) from None
