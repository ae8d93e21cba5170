"""The catalog's lock with real processes: arrival order under a hammering process, who holds it on a timeout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from weflow.catalog import Catalog
from weflow.catalog import session as catalog_session
from weflow.catalog.lock import hold
from weflow.catalog.session import session
from weflow.config import Settings
from weflow.errors import CatalogError
from weflow.nodes.base import own_state

from .conftest import REPO

# A process writing the catalog in back-to-back sessions until its stop file appears (its rows count them).
HAMMER = """
import sys, pathlib
from weflow.catalog.session import session
path, stop = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
while not stop.exists():
    with session(path) as con:
        con.execute("INSERT INTO hammered VALUES (now())")
"""
# A process that makes ``count`` catalog calls and writes how long each waited, or the error that ended it.
CALLER = """
import json, sys, time
from weflow.catalog import Catalog
catalog, count, out = Catalog(sys.argv[1], lock_timeout=float(sys.argv[3])), int(sys.argv[2]), sys.argv[4]
waits = []
try:
    for _ in range(count):
        t0 = time.perf_counter()
        catalog.organizations()
        waits.append(time.perf_counter() - t0)
    result = {"waits": waits}
except Exception as exc:
    result = {"waits": waits, "error": f"{type(exc).__name__}: {exc}"}
open(out, "w").write(json.dumps(result))
"""
# A process that holds the lock until killed, after saying so on stdout.
HOLDER = """
import sys, time
from pathlib import Path
from weflow.catalog.lock import hold
from weflow.catalog.session import session
with hold(Path(sys.argv[-1]), 60):
    print("holding", flush=True)
    time.sleep(120)
"""


def _python(code: str, *args: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, text=True,
                            stdout=subprocess.PIPE, cwd=REPO)  # fmt: skip


@contextmanager
def _stopped(*procs: subprocess.Popen[str]) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
            if proc.stdout:
                proc.stdout.close()


def _hammered(path: Path) -> int:
    with session(path) as con:
        row = con.execute("SELECT count(*) FROM hammered").fetchone()
    return row[0] if row else 0


def test_a_hammering_process_starves_nobody(tmp_path: Path) -> None:
    path = tmp_path / "weflow.duckdb"
    with session(path) as con:  # created and migrated before the clock matters
        con.execute("CREATE TABLE hammered (written TIMESTAMPTZ)")
    stop = tmp_path / "stop"
    hammer = _python(HAMMER, path, stop)
    with _stopped(hammer):
        deadline = time.monotonic() + 60
        while _hammered(path) < 5 and time.monotonic() < deadline:  # the hammer is in its loop
            time.sleep(0.05)
        outs = [tmp_path / f"caller-{i}.json" for i in range(3)]
        callers = [_python(CALLER, path, 8, 20, out) for out in outs]
        with _stopped(*callers):
            for proc in callers:
                proc.wait(timeout=120)
        before = _hammered(path)
        time.sleep(0.5)
        assert hammer.poll() is None and _hammered(path) > before, "the hammer kept making progress"
        stop.touch()
        hammer.wait(timeout=60)
    results = [json.loads(out.read_text()) for out in outs]
    assert [r.get("error") for r in results] == [None] * 3
    waits = sorted(w for r in results for w in r["waits"])
    assert len(waits) == 24
    # served in turn, a call waits for the sessions queued ahead of it (at most the 3 others), not for the
    # hammer's whole run: 10 s is a loose bound for a loaded 2-core machine; the polled lock timed out at 20 s
    assert waits[-1] < 10, waits


def test_a_timeout_names_the_holding_process_and_how_long(tmp_path: Path) -> None:
    path = tmp_path / "weflow.duckdb"
    Catalog(path).organizations()
    holder = _python(HOLDER, "--marker-for-the-test", path)
    with _stopped(holder):
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        time.sleep(0.3)
        t0 = time.monotonic()
        with pytest.raises(CatalogError) as caught:
            Catalog(path, lock_timeout=0.5).organizations()
        assert time.monotonic() - t0 < 5
    message = str(caught.value)
    assert "\n" not in message
    assert f"catalog {path} is busy: gave up after waiting 0.5 s for process {holder.pid} (" in message
    assert "--marker-for-the-test" in message and sys.executable in message
    held = float(message.rsplit("holding it for ", 1)[1].split(" s")[0])
    assert 0.5 <= held < 60
    assert Catalog(path, lock_timeout=5).organizations() is not None  # free again once the holder died


def test_a_waiter_killed_in_the_queue_does_not_block_the_ones_behind_it(tmp_path: Path) -> None:
    path = tmp_path / "weflow.duckdb"
    Catalog(path).organizations()
    holder = _python(HOLDER, path)
    with _stopped(holder):
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        queued = _python(HOLDER, path)  # takes the next ticket and waits behind the holder
        with _stopped(queued):
            deadline = time.monotonic() + 30
            while len(list(Path(f"{path}.queue").glob("0*"))) < 2 and time.monotonic() < deadline:
                time.sleep(0.02)
            queued.send_signal(signal.SIGKILL)
            queued.wait(timeout=30)
        holder.kill()
        holder.wait(timeout=30)
    t0 = time.monotonic()
    with hold(path, 5):
        pass
    assert time.monotonic() - t0 < 2


def test_a_block_raising_timeout_error_is_not_reported_as_a_busy_catalog(tmp_path: Path) -> None:
    with pytest.raises(TimeoutError, match="the caller's own"), hold(tmp_path / "weflow.duckdb", 5):
        raise TimeoutError("the caller's own")
    with hold(tmp_path / "weflow.duckdb", 1):  # and the lock was given back
        pass


def test_the_lock_files_are_weflow_s_own_state(tmp_path: Path) -> None:
    catalog = (tmp_path / "weflow.duckdb").resolve()
    state = Settings(
        catalog=catalog, organization="o", user="u", data_roots=(tmp_path,), python_node_modules=(),
        runs_dir=tmp_path / "runs",
    ).own_state()  # fmt: skip
    Catalog(catalog).organizations()
    for made in (Path(f"{catalog}.lock"), Path(f"{catalog}.queue"), Path(f"{catalog}.queue") / "next"):
        assert made.exists(), made
        assert own_state(made, state) == "the catalog"


def test_a_long_lived_process_gets_a_fresh_in_memory_duckdb_every_so_many_sessions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions attach the catalog to one in-memory DuckDB, which keeps some memory from every attach: a worker's
    sessions move to a fresh one every HOST_SESSIONS, and a session still open on the old one carries on."""
    monkeypatch.setattr(catalog_session, "HOST_SESSIONS", 3)
    monkeypatch.setattr(catalog_session, "_host", catalog_session._Host())
    path = tmp_path / "c.duckdb"
    hosts = []
    for n in range(7):
        with session(path) as con:
            con.execute("CREATE TABLE IF NOT EXISTS t (n INTEGER)")
            con.execute("INSERT INTO t VALUES (?)", [n])
            hosts.append(id(catalog_session._host.db))
    assert [hosts.index(h) for h in hosts] == [0, 0, 0, 3, 3, 3, 6]  # a fresh one after every third session
    with session(path) as first:  # the 3rd host's 2nd session, open while a 4th host is made
        third_host = catalog_session._host.db
        with session(tmp_path / "b.duckdb") as second, session(tmp_path / "c2.duckdb") as third:
            assert catalog_session._host.db is not third_host  # the third session is the 4th host's first
            second.execute("CREATE TABLE u AS SELECT 1 AS one")
            third.execute("CREATE TABLE u AS SELECT 2 AS two")
        first.execute("INSERT INTO t VALUES (7)")  # its host is no longer the process's, and it still works
    with session(path) as con:
        assert con.execute("SELECT count(*), sum(n) FROM t").fetchone() == (8, 28)


# A process that writes one user of a new organization once it is told to (a line on stdin).
WRITER = """
import sys
from weflow.catalog import Catalog
sys.stdin.readline()
Catalog(sys.argv[1]).ensure_user("elsewhere", "someone")
"""


def test_a_reader_waiting_for_a_write_sees_another_process_commit_and_never_its_own_reads(tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "weflow.duckdb")
    catalog.ensure_user("here", "me")
    seen = catalog.stamp()
    for _ in range(3):  # reads, as many as a waiter makes, are not taken for a change
        catalog.organizations()
    assert not catalog.changed(seen, 0.3)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(catalog.path)], env=env, text=True,
                              stdin=subprocess.PIPE, cwd=REPO)  # fmt: skip
    with _stopped(writer):
        assert writer.stdin is not None
        writer.stdin.write("go\n")
        writer.stdin.close()
        assert catalog.changed(seen, 60)  # the waiter holds no session: the writer gets the catalog meanwhile
        assert writer.wait(timeout=60) == 0
    assert {o.name for o in catalog.organizations()} == {"here", "elsewhere"}
    began = time.monotonic()  # a waiter's gap: a change seen at once is still answered no sooner than it
    assert catalog.changed(seen, 60, gap=0.3) and time.monotonic() - began >= 0.3
    assert not catalog.changed(catalog.stamp(), 0.1)  # and no change once it is seen
