"""`weflow catalog backup|restore|check|compact` on real catalog files, with real writer and API processes."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb
import pytest

from weflow import config, maintenance
from weflow.catalog import Catalog
from weflow.catalog.session import session
from weflow.errors import CatalogError

from .conftest import REPO, weflow_exe
from .test_benchmarks import smoke

BLOCK = 262_144  # DuckDB's block size; blocks start after three 4 KiB headers
WRITER = """
import sys, time
from pathlib import Path
from weflow.catalog.session import session
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
written = 0
while not stop.exists():
    with session(path) as con:
        con.execute("INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status) "
                    "VALUES (?, 1, 1, 'MANUAL', 1, 'SUCCEEDED')", [f"w{written:06d}"])
        con.execute("INSERT INTO node_executions (execution_id, node, status) VALUES (?, 'n', 'SUCCEEDED')",
                    [f"w{written:06d}"])
    written += 1
print(written)
"""


def fill(path: Path, executions: int) -> None:
    """A catalog with one workflow, one version and ``executions`` executions of two node executions each."""
    Catalog(path).ensure_user("acme", "ada")
    with session(path) as con:
        con.execute(
            "INSERT INTO workflows (organization_id, name, status, owner_id, current_version) "
            "VALUES (1, 'w', 'ACTIVE', 1, 1)"
        )
        con.execute("INSERT INTO workflow_versions (workflow_id, number, definition, content_hash, author_id) "
                    "VALUES (1, 1, '{}', 'h', 1)")  # fmt: skip
        con.execute(
            "INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status) "
            "SELECT 'e' || lpad(range::VARCHAR, 7, '0'), 1, 1, 'MANUAL', 1, 'SUCCEEDED' FROM range(?)",
            [executions],
        )
        con.execute(
            "INSERT INTO node_executions (execution_id, node, status) "
            "SELECT 'e' || lpad(range::VARCHAR, 7, '0'), 'n' || k, 'SUCCEEDED' FROM range(?), range(2) t(k)",
            [executions],
        )


def counts(path: Path) -> dict[str, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()]
        return {t: con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}  # type: ignore[index]
    finally:
        con.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def corrupt(path: Path, table: str = "workflow_executions") -> None:
    """Overwrite bytes inside a block that holds ``table``'s rows (DuckDB checks each block's checksum)."""
    con = duckdb.connect(str(path), read_only=True)
    row = con.execute("SELECT max(block_id) FROM pragma_storage_info(?) WHERE block_id >= 0", [table]).fetchone()
    con.close()
    assert row and row[0] is not None
    with path.open("r+b") as f:
        f.seek(3 * 4096 + row[0] * BLOCK + 100)
        f.write(b"\xff" * 64)


def weflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([weflow_exe(), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def refused(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    """The one line a refused command printed; it names ``words``."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


@pytest.fixture
def cat(tmp_path: Path, migrated_catalog: Path) -> Path:
    path = tmp_path / "catalog" / "weflow.duckdb"
    path.parent.mkdir()
    shutil.copyfile(migrated_catalog, path)  # the session's migrated empty catalog: not migrated again here
    fill(path, 50)
    return path


@pytest.fixture
def env(cat: Path, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "data").mkdir()
    return {**os.environ, "WEFLOW_CATALOG": str(cat), "WEFLOW_DATA_ROOTS": str(tmp_path / "data"),
            "PYTHONPATH": str(REPO), "COLUMNS": "200"}  # fmt: skip


@contextmanager
def writer(cat: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    """A process that records executions in a loop, one session each, until its stop file exists."""
    stop = tmp_path / "stop"
    env = {**os.environ, "WEFLOW_CATALOG": str(cat), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(cat), str(stop)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        yield proc, stop
    finally:
        stop.touch()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def written(cat: Path) -> int:
    with session(cat) as con:
        row = con.execute("SELECT count(*) FROM workflow_executions WHERE id LIKE 'w%'").fetchone()
    return int(row[0]) if row else 0


def test_backup_and_compact_while_a_writer_writes_then_restore(cat: Path, env: dict[str, str], tmp_path: Path) -> None:
    backup = tmp_path / "backup.duckdb"
    with writer(cat, tmp_path) as (proc, stop):
        deadline = time.monotonic() + 60
        while written(cat) < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert "backed up" in weflow(env, "catalog", "backup", str(backup)).stdout
        assert "every row kept" in weflow(env, "catalog", "compact").stdout
        # the writer holds the catalog in its environment: restoring under it is refused
        refused(weflow(env, "catalog", "restore", str(backup)), "in use", f"pid {proc.pid}", "stop them")
        stop.touch()
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    total = int(out)
    assert written(cat) == total > 10  # neither the backup nor the compaction lost a record
    saved = counts(backup)
    ids = duckdb.connect(str(backup), read_only=True).execute(
        "SELECT id FROM workflow_executions WHERE id LIKE 'w%' ORDER BY id").fetchall()  # fmt: skip
    taken = len(ids)
    assert 10 <= taken <= total
    assert [i for (i,) in ids] == [f"w{n:06d}" for n in range(taken)]  # a consistent snapshot: a prefix of the writes
    assert saved["node_executions"] == 100 + taken  # each execution with its node, written in one session

    restored = weflow(env, "catalog", "restore", str(backup))
    assert restored.returncode == 0, restored.stderr
    assert counts(cat) == saved
    aside = next(cat.parent.glob("weflow.duckdb.before-restore-*"))
    assert str(aside) in restored.stdout and counts(aside)["workflow_executions"] == 50 + total
    assert "schema version" in weflow(env, "catalog", "check").stdout
    Catalog(cat).ensure_user("acme", "grace")  # the restored catalog takes writes, ids continue
    assert counts(cat)["users"] == 2


def test_restore_is_refused_while_weflow_serve_runs_against_the_catalog(
    cat: Path, env: dict[str, str], tmp_path: Path
) -> None:
    backup = tmp_path / "backup.duckdb"
    maintenance.backup(cat, backup)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    served = {k: v for k, v in env.items() if k != "WEFLOW_CATALOG"}  # the catalog only on its command line
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen([weflow_exe(), "--catalog", str(cat), "serve", "--port", str(port)], env=served,
                            cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).close()
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
                time.sleep(0.3)
        before = digest(cat)
        refused(weflow(env, "catalog", "restore", str(backup)), f"pid {proc.pid}", "serve")
        assert digest(cat) == before and not list(cat.parent.glob("*before-restore*"))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        log.close()
    assert maintenance.running_against(cat) == []


def test_compact_after_deletes_shrinks_the_file_and_keeps_every_row(cat: Path, env: dict[str, str]) -> None:
    with session(cat) as con:
        con.execute(
            "INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status) "
            "SELECT 'x' || range, 1, 1, 'MANUAL', 1, 'SUCCEEDED' FROM range(20000)"
        )
        con.execute("INSERT INTO node_executions (execution_id, node, status) "
                    "SELECT 'x' || range, 'n', 'SUCCEEDED' FROM range(20000)")  # fmt: skip
    with session(cat) as con:
        con.execute("DELETE FROM node_executions WHERE execution_id LIKE 'x%'")
        con.execute("DELETE FROM workflow_executions WHERE id LIKE 'x%'")
    before, kept = cat.stat().st_size, counts(cat)
    done = weflow(env, "catalog", "compact")
    assert done.returncode == 0, done.stderr
    assert "every row kept" in done.stdout and "->" in done.stdout
    assert cat.stat().st_size < before * 0.8, (before, cat.stat().st_size)
    assert counts(cat) == kept
    assert maintenance.check(cat).problems == ()
    Catalog(cat).ensure_user("globex", "lin")  # sequences survive the rewrite: the next id is free
    with session(cat) as con:
        assert con.execute("SELECT id FROM organizations ORDER BY id").fetchall() == [(1,), (2,)]
    assert sorted(p.name for p in cat.parent.iterdir() if p.suffix == ".tmp") == []


def test_check_counts_every_table_and_names_each_problem(cat: Path, env: dict[str, str]) -> None:
    report = json.loads(weflow(env, "catalog", "check", "--format", "json").stdout)
    assert report["problems"] == [] and report["version"] == report["latest"]
    assert report["counts"]["workflow_executions"] == 50 and report["counts"]["node_executions"] == 100
    with session(cat) as con:
        con.execute("INSERT INTO execution_leases (execution_id, host, pid, process_started, heartbeat_at, "
                    "lease_seconds) VALUES ('gone', 'h', 1, 1, now(), 30)")  # fmt: skip
        con.execute("UPDATE workflows SET current_version = 9")
    before = digest(cat)
    found = weflow(env, "catalog", "check")
    refused(found, "table workflows", "and 1 more")
    assert (
        "problem: table workflows: 1 rows whose (id, current_version) has no row in workflow_versions" in found.stdout
    )
    assert "problem: table execution_leases: 1 rows whose (execution_id) has no row in workflow_executions" in (
        found.stdout
    )
    assert digest(cat) == before


def test_check_reads_every_block_and_reports_a_corrupt_one(cat: Path, migrated_catalog: Path) -> None:
    shutil.copyfile(migrated_catalog, big := cat.with_name("big.duckdb"))
    fill(big, 30000)
    corrupt(big)
    report = maintenance.check(big)
    assert any(p.startswith("table workflow_executions cannot be read: ") and "checksum" in p for p in report.problems)


@pytest.mark.parametrize(
    "case",
    ["missing", "directory", "text", "truncated", "corrupt", "not weflow", "newer", "the catalog"],
)
def test_restore_refuses_a_bad_backup_and_leaves_the_catalog_as_it_was(cat: Path, tmp_path: Path, case: str) -> None:
    source = tmp_path / "source.duckdb"
    if case in ("truncated", "corrupt"):  # rows enough for blocks of their own
        fill(big := tmp_path / "big.duckdb", 30000)
        maintenance.backup(big, source)
    elif case != "missing":
        maintenance.backup(cat, source)
    if case == "directory":
        source = tmp_path
    elif case == "text":
        source.write_text("not a database\n" * 100)
    elif case == "truncated":
        os.truncate(source, 3 * 4096 + 4 * BLOCK)  # rows lost (cut in half, only index blocks went: rebuilt)
    elif case == "corrupt":
        corrupt(source)
    elif case in ("not weflow", "newer"):
        con = duckdb.connect(str(source))
        con.execute(
            "DROP TABLE schema_version" if case == "not weflow" else "INSERT INTO schema_version VALUES (999, now())"
        )
        con.close()
    elif case == "the catalog":
        source = cat
    expected = {
        "missing": "does not exist",
        "directory": "is not a file",
        "text": "not a DuckDB database file",
        "truncated": "cannot be opened|could not be copied",
        "corrupt": "could not be copied: .*checksum",
        "not weflow": "no schema_version",
        "newer": "newer than this weflow's",
        "the catalog": "is the catalog itself",
    }[case]
    before, files = digest(cat), sorted(cat.parent.iterdir())
    with pytest.raises(CatalogError, match=expected) as raised:
        maintenance.restore(cat, source)
    assert "\n" not in str(raised.value)
    assert digest(cat) == before and sorted(cat.parent.iterdir()) == files


def test_backup_refuses_a_bad_path_and_writes_nothing(cat: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    for folder in (data, tmp_path / "org-a", tmp_path / "runs"):
        folder.mkdir()
    (tmp_path / "taken.duckdb").write_text("keep me")
    cases = {
        tmp_path: "is a directory",
        tmp_path / "no" / "b.duckdb": "folder",
        tmp_path / "taken.duckdb": "exists (add --force",
        cat: "is the catalog itself",
        cat.with_name("weflow.duckdb.wal"): "one of the catalog's own files",
        data / "b.duckdb": "under the data root",
        tmp_path / "org-a" / "b.duckdb": "under the data root",  # a root with {organization} covers every one
        tmp_path / "runs" / "b.duckdb": "weflow's own state (the run outputs)",
    }
    with config.using(data_roots=(data, tmp_path / "org-{organization}"), runs_dir=tmp_path / "runs"):
        before = digest(cat)
        for target, message in cases.items():
            with pytest.raises(CatalogError, match=re.escape(message)):
                maintenance.backup(cat, target)
        assert digest(cat) == before and (tmp_path / "taken.duckdb").read_text() == "keep me"
        assert not list(tmp_path.rglob("*.tmp")) and not (data / "b.duckdb").exists()
        assert maintenance.backup(cat, tmp_path / "taken.duckdb", force=True).counts["workflow_executions"] == 50
        beside = maintenance.backup(cat, cat.with_name("weflow.duckdb.monday"))  # no node may read it
        assert counts(beside.path) == counts(cat)
    with pytest.raises(CatalogError, match="does not exist"):
        maintenance.backup(tmp_path / "none.duckdb", tmp_path / "x.duckdb")


def test_each_command_refuses_a_missing_or_foreign_catalog_in_one_line(env: dict[str, str], tmp_path: Path) -> None:
    none, text = tmp_path / "none.duckdb", tmp_path / "text.duckdb"
    text.write_text("hello")
    for command in (maintenance.check, maintenance.compact, lambda c: maintenance.backup(c, tmp_path / "b.duckdb")):
        with pytest.raises(CatalogError, match="does not exist"):
            command(none)
        with pytest.raises(CatalogError, match="not a DuckDB database file"):
            command(text)
    refused(weflow({**env, "WEFLOW_CATALOG": str(none)}, "catalog", "check"), "does not exist")
    refused(weflow({**env, "WEFLOW_CATALOG": str(text)}, "catalog", "compact"), "not a DuckDB database file")
    assert text.read_text() == "hello" and not none.exists() and not (tmp_path / "b.duckdb").exists()
    refused(weflow(env, "catalog", "backup", str(tmp_path)), "is a directory")


def test_restore_creates_a_missing_catalog_from_a_backup(cat: Path, tmp_path: Path) -> None:
    backup = maintenance.backup(cat, tmp_path / "b.duckdb").path
    fresh = tmp_path / "fresh.duckdb"
    done = maintenance.restore(fresh, backup)
    assert done.aside is None and counts(fresh) == counts(cat)


def test_quick_benchmark(tmp_path: Path) -> None:
    smoke(("maintenance",), tmp_path / "BENCHMARKS.md")
