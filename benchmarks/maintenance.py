"""Maintenance: `weflow catalog backup` and `compact` of a catalog holding 100,000 executions, against raw copies.

The catalog holds one workflow (applied with weflow) and its executions, two node executions
each, written in bulk with SQL the way runs record them (timestamps, durations, input and output
JSON). **backup** is ``weflow.maintenance.backup``: under the catalog's lock a checkpoint and a
copy of the file's bytes into a temporary file beside the target, then, with the lock given back,
every row of the copy read (DuckDB checks each block) and counted, and a rename. **compact** is
``weflow.maintenance.compact`` on a copy of the catalog after half of its executions were deleted:
under the lock, ``COPY FROM DATABASE`` into a sibling file, counts compared, rename over the
catalog. Baselines, on the same file in the same rounds: **file copy** (``shutil.copyfile``: the
floor; for a compact it keeps the deleted rows' space) and **COPY FROM DATABASE** (raw DuckDB:
open, attach a new file, copy, close, no lock and no check).
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import duckdb

from benchmarks.catalog import chain_document
from benchmarks.harness import REPO, Row, Section, Stat, clock, interleave, log
from weflow import config, maintenance, workflows
from weflow.catalog import Catalog
from weflow.catalog.session import session
from weflow.core.document import from_data
from weflow.workflows import Scope

FILE_COPY = "file copy"
RAW_COPY = "COPY FROM DATABASE"
PROBE = """
import sys, time
from pathlib import Path
from weflow.catalog.session import session
path, stop = Path(sys.argv[1]), Path(sys.argv[2])
waits = []
while not stop.exists():
    t0 = time.perf_counter()
    with session(path) as con:
        con.execute("SELECT count(*) FROM workflows").fetchall()
    waits.append(time.perf_counter() - t0)
    if len(waits) == 1:
        print("ready", flush=True)
    time.sleep(0.005)
print(max(waits[1:] or waits))
"""


def build(path: Path, executions: int) -> None:
    """A catalog with one applied workflow and ``executions`` finished executions of two node executions each."""
    scope = Scope.current(Catalog(path))
    found = workflows.apply(from_data(chain_document("bench", 2)), scope).workflow
    at = "TIMESTAMPTZ '2026-01-01' + range * INTERVAL 1 SECOND"
    with session(path) as con:
        con.execute(
            "INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status, input_data, "
            "created_at, started_at, finished_at, duration_ms, output) "
            f"SELECT 'e' || lpad(range::VARCHAR, 8, '0'), ?, 1, 'MANUAL', ?, 'SUCCEEDED', '{{\"min\": 1}}', "
            f"{at}, {at}, {at} + INTERVAL 2 SECOND, 2000.0 + range % 97, '{{\"rows\": 42}}' FROM range(?)",
            [found.id, scope.user.id, executions],
        )
        con.execute(
            "INSERT INTO node_executions (execution_id, node, status, attempts, rows_in, rows_out, started_at, "
            "finished_at, duration_ms) "
            f"SELECT 'e' || lpad(range::VARCHAR, 8, '0'), n.node, 'SUCCEEDED', 1, 1000, 900, {at}, "
            f"{at} + INTERVAL 1 SECOND, 1000.0 FROM range(?), (VALUES ('orders'), ('f1')) n(node)",
            [executions],
        )


def delete_half(path: Path) -> None:
    """Delete every second execution (children first, in their own transaction: DuckDB's foreign keys)."""
    odd = "SELECT id FROM workflow_executions WHERE right(id, 1) IN ('1', '3', '5', '7', '9')"
    with session(path) as con:
        con.execute(f"DELETE FROM node_executions WHERE execution_id IN ({odd})")
    with session(path) as con:
        con.execute(f"DELETE FROM workflow_executions WHERE id IN ({odd})")
    with session(path) as con:
        con.execute("CHECKPOINT")


def raw_copy(source: Path, target: Path) -> None:
    con = duckdb.connect(str(source))
    try:
        name = con.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
        con.execute(f"ATTACH '{target}' AS copied")
        con.execute(f'COPY FROM DATABASE "{name}" TO copied')
        con.execute("DETACH copied")
    finally:
        con.close()


def _fresh(target: Path) -> None:
    for leftover in (target, target.with_name(target.name + ".wal")):
        leftover.unlink(missing_ok=True)


def _timed_into(fn: Callable[[Path], object], target: Path) -> Callable[[], float]:
    def run() -> float:
        _fresh(target)
        return clock(fn, target)

    return run


def _compact_variants(template: Path, work: Path, out: Path) -> dict[str, Callable[[], float]]:
    """Each round starts from a fresh copy of ``template`` (untimed), then times one way of compacting it."""

    def weflow() -> float:
        shutil.copyfile(template, work)
        return clock(maintenance.compact, work)

    def file_copy() -> float:
        shutil.copyfile(template, work)
        _fresh(out)
        return clock(shutil.copyfile, work, out)

    def copy_database() -> float:
        shutil.copyfile(template, work)
        _fresh(out)
        return clock(raw_copy, work, out)

    return {"weflow": weflow, FILE_COPY: file_copy, RAW_COPY: copy_database}


def longest_wait(path: Path, action: Callable[[], object]) -> float:
    """The longest catalog call of another process, which calls the catalog in a loop while ``action`` runs."""
    stop = path.with_name("probe.stop")
    stop.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-c", PROBE, str(path), str(stop)]
    with subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            action()
            time.sleep(0.3)
        finally:
            stop.touch()
        out, _ = proc.communicate(timeout=120)
    return float(out.split()[-1])


def _waits(cat: Path, work: Path, out: Path) -> dict[str, float]:
    """The longest wait of another process's catalog call: idle, during a backup of ``cat``, a compact of ``work``."""
    return {
        "none": longest_wait(cat, lambda: time.sleep(1.0)),
        "backup": longest_wait(cat, lambda: maintenance.backup(cat, out, force=True)),
        "compact": longest_wait(work, lambda: maintenance.compact(work)),
    }


def _row(label: str, samples: dict[str, list[float]]) -> Row:
    return Row(label, Stat(tuple(samples["weflow"])), {b: Stat(tuple(samples[b])) for b in (FILE_COPY, RAW_COPY)})


def run(quick: bool) -> Section:
    executions = 500 if quick else 100_000
    repeats = 1 if quick else 3
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-maintenance-"))
    try:
        with config.using(catalog=root / "weflow.duckdb", data_roots=(REPO,), organization="bench"):
            return _measure(root, executions, repeats, quick)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _measure(root: Path, executions: int, repeats: int, quick: bool) -> Section:
    cat, out = root / "weflow.duckdb", root / "out" / "copy.duckdb"
    out.parent.mkdir()
    log(f"maintenance: building a catalog of {executions} executions")
    build(cat, executions)
    with session(cat) as con:
        con.execute("CHECKPOINT")
    rows = sum(maintenance.check(cat).counts.values())
    checked = Stat(tuple(clock(maintenance.check, cat) for _ in range(repeats)))
    backup = interleave(
        {
            "weflow": _timed_into(lambda t: maintenance.backup(cat, t), out),
            FILE_COPY: _timed_into(lambda t: shutil.copyfile(cat, t), out),
            RAW_COPY: _timed_into(lambda t: raw_copy(cat, t), out),
        },
        repeats,
        max_settle=0 if quick else 3.0,  # quick: no wait for a Prefect server this benchmark does not use
        progress="maintenance: backup",
    )
    size = maintenance.backup(cat, root / "out" / "sized.duckdb", force=True).size
    template = root / "template.duckdb"
    shutil.copyfile(cat, template)
    delete_half(template)
    before = template.stat().st_size
    kept = sum(maintenance.check(template).counts.values())
    compact = interleave(
        _compact_variants(template, root / "work.duckdb", out),
        repeats,
        max_settle=0 if quick else 3.0,
        progress="maintenance: compact",
    )
    work = root / "work.duckdb"
    shutil.copyfile(template, work)
    waits = {} if quick else _waits(cat, work, out)  # a probe process costs a second or two to start
    if quick:
        maintenance.compact(work)
    after = work.stat().st_size
    section = Section(
        name="maintenance",
        title="backup and compact of the catalog",
        description=__doc__ or "",
        baselines=(FILE_COPY, RAW_COPY),
    )
    section.rows.append(_row(f"backup, {executions:,} executions ({rows:,} rows)", backup))
    section.rows.append(_row(f"compact after deleting half ({kept:,} rows kept)", compact))
    b, c = statistics.median(backup["weflow"]), statistics.median(compact["weflow"])
    section.notes += [
        f"backup: {rows / b:,.0f} rows/s; catalog {cat.stat().st_size / 2**20:.1f} MiB, backup {size / 2**20:.1f} MiB "
        "(the file's bytes, free blocks included)",
        f"compact: {kept / c:,.0f} rows/s; {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB, every row kept",
        f"check (every column of every row read, keys and parents checked, under the lock): {checked.cell()} "
        f"for {rows:,} rows",
    ]
    if waits:
        section.notes.append(
            f"another process calling the catalog in a loop waited at most {waits['backup'] * 1e3:,.0f} ms for one "
            f"call during a backup, {waits['compact'] * 1e3:,.0f} ms during a compact, {waits['none'] * 1e3:,.0f} ms "
            "with neither running: the lock is held for the file copy of a backup (the copy is read whole after the "
            "lock is given back) and for the whole rewrite of a compact"
        )
    return section
