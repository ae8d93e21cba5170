"""A throwaway PostgreSQL server on loopback, from Debian's packages (`make test` installs them).

``initdb`` into a fresh folder, ``postgres`` on a free 127.0.0.1 port with trust authentication
for that address only, one database; stopped with ``pg_ctl stop -m fast`` and the folder removed.
PostgreSQL refuses to run as root, so as root it runs as Debian's ``postgres`` user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def bin_dir() -> Path | None:
    """Debian's PostgreSQL server programs (the newest installed major version), if any."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running(database: str = "prefect") -> Iterator[str]:
    """Yield ``postgresql+asyncpg://postgres@127.0.0.1:PORT/<database>`` while the server runs."""
    bins = bin_dir()
    if bins is None:
        raise RuntimeError("PostgreSQL's server is not installed: `make test` installs it (apt-get install postgresql)")
    root = Path(tempfile.mkdtemp(prefix="weflow-pg-"))  # not under pytest's 0700 folders: the postgres user reads it
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*cmd: str | Path) -> None:
        subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, timeout=120)

    run(bins / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    log = root / "server.log"
    run(
        bins / "pg_ctl", "-D", data, "-l", log, "-w", "-t", "60", "start", "-o",
        f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c max_connections=200",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while subprocess.run([bins / "pg_isready", "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not accept connections: {log.read_text()}")
            time.sleep(0.2)
        run(bins / "createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{database}"
    finally:
        subprocess.run([*as_user, str(bins / "pg_ctl"), "-D", str(data), "stop", "-m", "fast"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
