"""History: catalog calls on catalogs of 0, 10,000 and 100,000 executions, and prune of 100,000.

Every call is measured on each catalog in the same rounds (interleaved), next to the same call on
the empty catalog and to the raw DuckDB floor on the same file (open, count the executions,
close). The target of issue 16: every call on 100,000 executions within 1.2x of the empty one.
The histories are written in bulk with SQL, as runs write them: ten workflows of three nodes,
one execution a minute, each with three node executions; a tenth of them FAILED with a contract
failure; the metrics rolled up as the catalog rolls them up when an execution ends.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from benchmarks.catalog import chain_document
from benchmarks.harness import Row, Section, Stat, clock, interleave, log
from weflow import leases, monitor, retention, workflows
from weflow.catalog import Catalog
from weflow.catalog.schema import ROLL_UP_HISTORY
from weflow.core.document import from_data
from weflow.core.entities import Mode, NodeExecution, RunState
from weflow.execution import history
from weflow.execution.record import new_execution
from weflow.workflows import Scope

WORKFLOWS = 10
EMPTY = "same call, empty catalog"
RAW = "raw DuckDB: open, count, close (same file)"
DELETE = "raw DuckDB: delete the same rows"


def fill(path: Path, executions: int, count: int = WORKFLOWS) -> Scope:
    """A catalog of ``count`` 3-node workflows and ``executions`` ended executions, written in bulk (untimed)."""
    scope = Scope.current(Catalog(path))
    saved = workflows.apply_many([from_data(chain_document(f"wf_{i:02d}", 3)) for i in range(count)], scope)
    ids = [r.workflow.id for r in saved]
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN")
        con.execute(
            "INSERT INTO workflow_executions (id, workflow_id, version, mode, user_id, status, created_at, started_at, "
            "finished_at, duration_ms, error_type, error_message, error_node, output, timeout_seconds) "
            "SELECT printf('00000000-0000-4000-8000-%012d', i), list_extract(?, (i % ?)::INTEGER + 1), 1, 'CRON', ?, "
            "CASE WHEN i % 10 = 0 THEN 'FAILED' ELSE 'SUCCEEDED' END, t, t, t + INTERVAL 2 SECOND, "
            "1000 + (i % 97) * 10.0, CASE WHEN i % 10 = 0 THEN 'ContractError' END, "
            "CASE WHEN i % 10 = 0 THEN '1 failure' END, CASE WHEN i % 10 = 0 THEN 'f2' END, "
            '\'{"f2": {"rows": 250}}\', 300 '
            "FROM (SELECT i, now() - to_minutes(? - i) AS t FROM range(?) r(i))",
            [ids, count, scope.user.id, executions, executions],
        )
        con.execute(
            "INSERT INTO node_executions (execution_id, node, status, attempts, rows_in, rows_out, started_at, "
            "finished_at, duration_ms) SELECT e.id, n.node, CASE WHEN e.status = 'FAILED' AND n.node = 'f2' "
            "THEN 'FAILED' ELSE 'SUCCEEDED' END, 1, 500, 250, e.started_at, e.finished_at, 3.0 "
            "FROM workflow_executions e, (VALUES ('orders'), ('f1'), ('f2')) n(node)"
        )
        con.execute(
            "INSERT INTO contract_failures SELECT id, 'f2', 'amount', 'ge(0)', '-1', 3 FROM workflow_executions "
            "WHERE status = 'FAILED'"
        )
        con.execute(
            "UPDATE workflows w SET execution_count = c.n, last_executed_at = c.last FROM (SELECT workflow_id, "
            "count(*) AS n, max(finished_at) AS last FROM workflow_executions GROUP BY 1) c WHERE c.workflow_id = w.id"
        )
        con.execute(ROLL_UP_HISTORY)
        con.execute("COMMIT")
    finally:
        con.close()
    scope.catalog.mark_pruned(datetime.now(UTC))  # `sync` below must not prune what is measured
    return scope


def raw_count(path: Path) -> None:
    con = duckdb.connect(str(path))
    try:
        con.execute("SELECT count(*) FROM workflow_executions").fetchall()
    finally:
        con.close()


def run_calls(scope: Scope) -> None:
    """A run's catalog calls, as ``weflow run`` makes them: pin the version, begin with a lease, beat, finish, read."""
    _, queued = new_execution(scope, "wf_03", mode=Mode.MANUAL, input_data=None, timeout=None)
    now = datetime.now(UTC)
    running = replace(queued, status=RunState.RUNNING, started_at=now)
    scope.catalog.insert_execution(running, lease=leases.here(now))
    scope.catalog.heartbeat([running.id])
    nodes = [
        NodeExecution(running.id, n, RunState.SUCCEEDED, 1, 500, 250, now, now, 1.0) for n in ("orders", "f1", "f2")
    ]
    done = replace(running, status=RunState.SUCCEEDED, finished_at=datetime.now(UTC), duration_ms=5.0)
    scope.catalog.finish_execution(done, nodes)
    scope.catalog.execution(running.id)


def calls(scope: Scope) -> dict[str, Callable[[], object]]:
    """The catalog calls whose cost must not grow with history, by what a user runs."""
    org = scope.user.organization_id
    known = [e.id for e in scope.catalog.executions(org, limit=1)]

    def get() -> object:  # the empty catalog's first execution comes from the measured runs (warm-up round)
        if not known:
            known.append(scope.catalog.executions(org, limit=1)[0].id)
        return leases.current(known[0], scope)

    return {
        "`weflow list`": lambda: workflows.list_workflows(scope),
        "`weflow show wf_03`": lambda: (workflows.get("wf_03", scope), workflows.version("wf_03", scope)),
        "a run's catalog calls (version, begin with lease, heartbeat, finish with 3 nodes, read)": lambda: run_calls(
            scope
        ),
        "`weflow stats`": lambda: monitor.stats(scope),
        "`weflow executions` page of 50 (API list)": lambda: history.executions(scope, limit=50),
        "one execution with its nodes (API get)": get,
        "`weflow sync` with nothing to repair": lambda: history.sync(scope),
    }


def raw_delete(path: Path, executions: int) -> None:
    """The floor of pruning everything: the same rows deleted in two transactions (children, then executions)."""
    con = duckdb.connect(str(path))
    try:
        con.execute("BEGIN")
        for table in ("node_executions", "contract_failures"):
            con.execute(f"DELETE FROM {table}")
        con.execute("COMMIT")
        con.execute("DELETE FROM workflow_executions")
    finally:
        con.close()
    assert executions >= 0


@contextmanager
def _workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="weflow-bench-history-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _measure_calls(section: Section, scopes: dict[int, Scope], repeats: int) -> None:
    sizes = sorted(scopes)
    by_size = {size: calls(scope) for size, scope in scopes.items()}
    for name in by_size[0]:
        variants: dict[str, Callable[[], float]] = {}
        for size in sizes:
            fn = by_size[size][name]
            variants[f"weflow {size}"] = lambda fn=fn: clock(fn)  # type: ignore[misc]
            variants[f"raw {size}"] = lambda path=scopes[size].catalog.path: clock(raw_count, path)  # type: ignore[misc]
        found = {
            k: Stat(tuple(v))
            for k, v in interleave(variants, repeats, max_settle=0, progress=f"history: {name}").items()
        }
        for size in sizes:
            section.rows.append(
                Row(
                    f"{name}, {size:,} executions",
                    found[f"weflow {size}"],
                    {EMPTY: found["weflow 0"] if size else None, RAW: found[f"raw {size}"], DELETE: None},
                )
            )


def _measure_prune(section: Section, source: Path, size: int, work: Path, repeats: int) -> float:
    """Prune every execution of copies of ``source`` (policy: 14 days, seen from 1,000 days on); the rate."""
    far = datetime.now(UTC) + timedelta(days=1000)
    prunes: list[float] = []
    deletes: list[float] = []
    raws: list[float] = []
    for round_ in range(repeats):
        log(f"history: prune {size:,} executions, round {round_ + 1}/{repeats}")
        copy = work / f"prune-{uuid.uuid4().hex}.duckdb"
        shutil.copy(source, copy)
        raws.append(clock(raw_count, copy))
        t0 = time.perf_counter()
        report = retention.prune(Catalog(copy), now=far)
        prunes.append(time.perf_counter() - t0)
        if report.executions != size:
            raise RuntimeError(f"prune removed {report.executions} of {size} executions")
        shutil.copy(source, copy)
        deletes.append(clock(raw_delete, copy, size))
        copy.unlink()
    stat = Stat(tuple(prunes))
    section.rows.append(
        Row(f"prune {size:,} executions (and their {3 * size:,} node executions)", stat,
            {EMPTY: None, RAW: Stat(tuple(raws)), DELETE: Stat(tuple(deletes))})
    )  # fmt: skip
    return size / stat.median


def run(quick: bool) -> Section:
    sizes = (0, 100, 500) if quick else (0, 10_000, 100_000)
    repeats = 2 if quick else 9
    section = Section(
        "history",
        "catalog calls as history grows, and prune",
        __doc__ or "",
        [EMPTY, RAW, DELETE],
    )
    with _workdir() as work:
        scopes: dict[int, Scope] = {}
        for size in sizes:
            t0 = time.perf_counter()
            scopes[size] = fill(work / f"history-{size}.duckdb", size)
            log(f"history: {size:,} executions written in {time.perf_counter() - t0:.1f} s")
        pristine = work / "pristine.duckdb"
        shutil.copy(scopes[sizes[-1]].catalog.path, pristine)  # before the measured runs add to it
        _measure_calls(section, scopes, repeats)
        rate = _measure_prune(section, pristine, sizes[-1], work, 1 if quick else 3)
    section.notes += [
        f"Sizes {', '.join(f'{s:,}' for s in sizes)}; every measured call of a run adds one execution, so the "
        f"empty catalog holds the few executions of {repeats + 1} rounds of runs by its end.",
        "`weflow stats` reads the metrics kept per workflow and hour when an execution ends (no execution row); a "
        "page of executions is looked for in the last day, then month, then all (DuckDB skips older row groups by "
        "their min/max); `sync` reads only unfinished executions.",
        f"Prune: {rate:,.0f} executions a second, in batches of {retention.BATCH:,} (each two short sessions, so "
        "other processes wait at most one batch); no output files in these histories.",
    ]
    return section
