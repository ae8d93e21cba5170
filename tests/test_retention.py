"""Retention: `weflow prune` removes old executions with every row and file that hangs off them, and nothing else.

Real catalog files and real files in the runs folder, laid out as runs lay them out: a spill folder
per execution (``<runs>/executions/<id>/<node>.parquet``) and content-addressed persisted outputs
(``<runs>/<sha256>.parquet``, shared by every execution that produced the same bytes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest

from weflow import config, retention, workflows
from weflow.core.document import from_data
from weflow.core.entities import AlertDelivery, Compensation, Execution, Mode, NodeExecution, RunState
from weflow.errors import DefinitionError, WeflowError
from weflow.execution import history
from weflow.files import write_addressed, write_atomic
from weflow.workflows import Scope

from .conftest import weflow_exe

TABLES = (
    "workflow_executions", "node_executions", "contract_failures", "compensations", "execution_resumes",
    "execution_leases", "alert_deliveries", "workflow_versions", "execution_hours", "recent_durations",
)  # fmt: skip
NOW = datetime.now(UTC)


def document(name: str, **retention_policy: float) -> dict:
    source = {"name": "orders", "type": "read_csv", "config": {"path": "data/samples/orders.csv"}}
    doc = {"name": name, "nodes": [source, {"name": "paid", "type": "filter", "config": {"condition": "amount > 0"}}],
           "connections": [{"from": "orders", "to": "paid"}]}  # fmt: skip
    if retention_policy:
        doc["settings"] = {"retention": retention_policy}
    return doc


def spill(runs: Path, execution_id: str, node: str) -> str:
    """A spilled output, where a run spills it."""
    folder = (runs / "executions" / execution_id).resolve()
    return str(write_atomic(folder / f"{node}.parquet", pl.DataFrame({"node": [node, execution_id]}).write_parquet))


def persisted(runs: Path, content: str) -> str:
    """A persisted output, as ``lifecycle.persist_output`` writes it (content-addressed; relative runs folder)."""
    return str(write_addressed(runs, ".parquet", pl.DataFrame({"v": [content]}).write_parquet, label="paid"))


def record(
    scope: Scope, wf_id: int, days: float, outputs: dict[str, str], status: RunState = RunState.SUCCEEDED,
    resumed_from: str | None = None, failures: int = 0, undone: int = 0, eid: str | None = None,
) -> str:  # fmt: skip
    """An execution as the engine records it: inserted RUNNING, then ended with node records in one batch."""
    at = NOW - timedelta(days=days)
    eid = eid or str(uuid.uuid4())
    running = Execution(eid, wf_id, "", 1, Mode.MANUAL, scope.user.id, RunState.RUNNING, created_at=at,
                        started_at=at, resumed_from=resumed_from)  # fmt: skip
    scope.catalog.insert_execution(running, from_node="paid" if resumed_from else None)
    if status is RunState.RUNNING:
        return eid
    nodes = [NodeExecution(eid, node, RunState.SUCCEEDED, 1, 5, 5, at, at, 1.0, output_path=path)
             for node, path in outputs.items()]  # fmt: skip
    cases = [{"node": "paid", "column": "amount", "check": "gt(0)", "failure_case": "-1", "index": i}
             for i in range(failures)]  # fmt: skip
    done = replace(running, status=status, finished_at=at + timedelta(seconds=1), duration_ms=1000.0,
                   compensations=tuple(Compensation("paid", "delete", "DONE") for _ in range(undone)))  # fmt: skip
    scope.catalog.finish_execution(done, nodes, cases)
    return eid


def counts(path: Path) -> dict[str, int]:
    with duckdb.connect(str(path), read_only=True) as con:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}  # type: ignore[index]


def files(runs: Path) -> dict[str, int]:
    return {str(p.relative_to(runs)): p.stat().st_size for p in sorted(runs.rglob("*")) if p.is_file()}


@dataclass
class History:
    scope: Scope
    runs: Path
    ids: dict[str, str]
    paths: dict[str, str]


def build_history(scope: Scope) -> History:
    """``daily`` keeps its last 2 ended executions at any age; ``other`` takes the default (14 days, 10,000).

    Run from the folder the runs folder is in: persisted outputs are named relative to the working folder.
    """
    runs = Path(config.settings().runs_dir.name)
    daily = workflows.apply(from_data(document("daily", max_executions=2, max_age_days=0)), scope).workflow
    other = workflows.apply(from_data(document("other")), scope).workflow
    ids: dict[str, str] = {}
    paths = {"shared": persisted(runs, "shared"), "only_e1": persisted(runs, "only e1")}
    ids.update({k: str(uuid.uuid4()) for k in ("e1", "e2")})
    paths["e1_orders"] = spill(runs, ids["e1"], "orders")
    paths["e2_orders"], paths["e2_paid"] = spill(runs, ids["e2"], "orders"), spill(runs, ids["e2"], "paid")
    e1_outputs = {"orders": paths["e1_orders"], "paid": paths["only_e1"], "extra": paths["shared"]}
    record(scope, daily.id, 5, e1_outputs, RunState.FAILED, failures=2, undone=1, eid=ids["e1"])
    record(scope, daily.id, 4, {"orders": paths["e2_orders"], "paid": paths["e2_paid"]}, eid=ids["e2"])
    ids["e3"] = record(scope, daily.id, 3, {"paid": paths["shared"]}, resumed_from=ids["e1"])
    ids["e4"] = record(scope, daily.id, 2, {"orders": paths["e2_orders"]}, resumed_from=ids["e2"])
    ids["e5"] = record(scope, daily.id, 1, {"paid": paths["shared"]})
    ids["running"] = record(scope, daily.id, 30, {}, RunState.RUNNING)  # old, but never pruned while it runs
    ids["o_old"] = record(scope, other.id, 20, {"paid": persisted(runs, "o_old")})
    ids["o_new"] = record(scope, other.id, 2, {})
    for subject in (ids["e1"], ids["e5"]):
        scope.catalog.claim_alert(AlertDelivery(daily.id, subject, "failed", "failure", "http://x", "PENDING", 0, {}))
    return History(scope, runs, ids, paths)


@pytest.fixture(scope="module")
def history_folders(tmp_path_factory: pytest.TempPathFactory, migrated_catalog: Path) -> tuple[History, Path]:
    """The history built once per module (~40 catalog transactions, ~2.5 s of CPU) in a work folder, and a
    pristine copy of that folder (catalog, runs folder) that each test gets back in the same place.

    The same place: spilled outputs are recorded under their absolute paths, as runs record them.
    """
    work, pristine = tmp_path_factory.mktemp("history-work"), tmp_path_factory.mktemp("history") / "pristine"
    (work / "catalog").mkdir()
    shutil.copyfile(migrated_catalog, work / "catalog" / "weflow.duckdb")
    here = Path.cwd()
    os.chdir(work)
    try:
        with config.using(catalog=work / "catalog" / "weflow.duckdb", runs_dir=work / "runs",
                          organization="acme", user="ada"):  # fmt: skip
            built = build_history(Scope.current())
    finally:
        os.chdir(here)
    shutil.copytree(work, pristine)
    return replace(built, runs=work), pristine


@pytest.fixture
def old_history(
    history_folders: tuple[History, Path], settings: config.Settings, monkeypatch: pytest.MonkeyPatch
) -> Iterator[History]:
    """The module's history, as built: every test starts from the same rows and files, in the same folder."""
    built, pristine = history_folders
    work = built.runs
    shutil.rmtree(work)
    shutil.copytree(pristine, work)
    monkeypatch.chdir(work)  # persisted outputs are named relative to the working folder
    with config.using(catalog=work / "catalog" / "weflow.duckdb", runs_dir=work / "runs"):
        scope = Scope.current()
        yield History(scope, Path("runs"), built.ids, built.paths)


def test_prune_removes_every_dependent_row_and_file_and_keeps_the_rest(old_history: History) -> None:
    h = old_history
    path = h.scope.catalog.path
    before, counters = counts(path), {w.name: w.execution_count for w in workflows.list_workflows(h.scope)}
    stats = h.scope.catalog.stats(h.scope.user.organization_id)

    report = retention.prune(h.scope.catalog)

    by_name = {p.workflow: p for p in report.workflows}
    assert by_name["daily"].executions == 3 and by_name["other"].executions == 1
    kept = {h.ids[k] for k in ("e4", "e5", "running", "o_new")}
    with duckdb.connect(str(path), read_only=True) as con:
        assert {r[0] for r in con.execute("SELECT id FROM workflow_executions").fetchall()} == kept
        for table in ("node_executions", "contract_failures", "compensations", "execution_leases"):
            left = {r[0] for r in con.execute(f"SELECT execution_id FROM {table}").fetchall()}
            assert left <= kept, table
        assert con.execute("SELECT count(*) FROM execution_resumes").fetchone() == (0,)  # e3->e1 and e4->e2 went
        assert {r[0] for r in con.execute("SELECT subject FROM alert_deliveries").fetchall()} == {h.ids["e5"]}
    after = counts(path)
    assert after["workflow_versions"] == before["workflow_versions"]  # versions are never pruned
    assert after["node_executions"] == 2 and after["contract_failures"] == 0 and after["compensations"] == 0
    # counters shown to users keep counting pruned runs; so do the metrics
    assert {w.name: w.execution_count for w in workflows.list_workflows(h.scope)} == counters
    assert h.scope.catalog.stats(h.scope.user.organization_id) == stats
    # files: the shared persisted output and the spilled output a kept execution reuses stay
    assert Path(h.paths["shared"]).is_file() and Path(h.paths["e2_orders"]).is_file()
    assert not Path(h.paths["only_e1"]).exists() and not Path(h.paths["e2_paid"]).exists()
    assert not (h.runs / "executions" / h.ids["e1"]).exists()
    assert report.files == 4 and report.bytes > 0  # e1's spilled and persisted outputs, e2's paid, o_old's output
    assert h.scope.catalog.execution(h.ids["e4"]).nodes[0].output_path == h.paths["e2_orders"]
    again = retention.prune(h.scope.catalog)  # nothing left to remove
    assert (again.executions, again.files, counts(path)) == (0, 0, after)


@pytest.mark.parametrize("batch", [retention.BATCH, 1])
def test_dry_run_changes_nothing_and_tells_what_prune_then_removes(
    old_history: History, batch: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    h = old_history
    monkeypatch.setattr(retention, "BATCH", batch)  # 1: a dry run looks past the batches it counted
    before, on_disk = counts(h.scope.catalog.path), files(h.runs)
    dry = retention.prune(h.scope.catalog, dry_run=True)
    assert counts(h.scope.catalog.path) == before and files(h.runs) == on_disk
    assert h.scope.catalog.last_pruned() is None  # a dry run is not a prune
    real = retention.prune(h.scope.catalog)
    summary = [(p.workflow, p.rows, p.files, p.bytes) for p in dry.workflows]
    assert summary == [(p.workflow, p.rows, p.files, p.bytes) for p in real.workflows]
    assert (dry.executions, dry.files, dry.bytes) == (real.executions, real.files, real.bytes) == (4, 4, real.bytes)


def test_the_catalog_default_comes_from_the_environment(old_history: History, monkeypatch) -> None:
    h = old_history
    monkeypatch.setenv(retention.AGE_ENV, "30")
    monkeypatch.setenv(retention.COUNT_ENV, "0")  # 0: no limit on the count
    found = retention.prune(h.scope.catalog, dry_run=True)
    assert [(p.workflow, p.executions) for p in found.workflows] == [("daily", 3)]  # o_old is 20 days old: kept
    assert found.workflows[0].policy == retention.Policy(0, 2)  # daily's own values win
    for name, value in ((retention.AGE_ENV, "-1"), (retention.COUNT_ENV, "2.5"), (retention.AGE_ENV, "soon")):
        monkeypatch.setenv(name, value)
        with pytest.raises(WeflowError, match=f"^{name}='{value}': must be"):
            retention.prune(h.scope.catalog)
        monkeypatch.delenv(name)


def test_bad_policy_values_are_refused_at_apply_with_their_path(scope: Scope) -> None:
    for policy, path in (({"max_age_days": -1}, "settings.retention.max_age_days"),
                         ({"max_executions": 1.5}, "settings.retention.max_executions"),
                         ({"max_executions": "all"}, "settings.retention.max_executions"),
                         ({"forever": True}, "settings.retention.forever")):  # fmt: skip
        with pytest.raises(DefinitionError) as err:
            workflows.apply({**document("bad"), "settings": {"retention": policy}}, scope)
        assert err.value.path == path
    assert workflows.list_workflows(scope) == []
    stored = workflows.apply(document("kept", max_age_days=7), scope)
    again = workflows.apply(document("kept", max_age_days=8), scope)  # a policy change is a new version
    assert (stored.version.number, again.version.number) == (1, 2)
    assert workflows.export("kept", scope)["settings"] == {"retention": {"max_age_days": 8}}


def test_sync_prunes_when_a_prune_is_due(old_history: History) -> None:
    h = old_history
    history.sync(h.scope)  # never pruned: due
    assert len(counts(h.scope.catalog.path)) and h.scope.catalog.last_pruned() is not None
    left = counts(h.scope.catalog.path)["workflow_executions"]
    assert left == 4
    record(h.scope, h.scope.catalog.workflow(h.scope.user.organization_id, "daily").id, 0.5, {})
    history.sync(h.scope)  # pruned less than an hour ago: not due
    assert counts(h.scope.catalog.path)["workflow_executions"] == 5


def test_prune_periodically_prunes_until_stopped(old_history: History) -> None:
    with retention.pruning(old_history.scope.catalog.path, every_seconds=3600) as thread:
        for _ in range(200):
            if old_history.scope.catalog.last_pruned() is not None:
                break
            thread.join(0.05)
    assert not thread.is_alive()  # stopped at the end of the block, though its next prune was an hour away
    assert counts(old_history.scope.catalog.path)["workflow_executions"] == 4


def test_weflow_prune_cli(old_history: History, cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada", "WEFLOW_RUNS_DIR": str(old_history.runs),
           "WEFLOW_CATALOG": str(old_history.scope.catalog.path)}  # fmt: skip
    here = old_history.runs.resolve().parent  # where the outputs' relative names were written from

    def weflow(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([weflow_exe(), *args], env={**env, **extra}, cwd=here, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    path = old_history.scope.catalog.path
    before = counts(path)
    dry = weflow("prune", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove 4 executions and 4 files" in dry.stdout and "acme/daily" in dry.stdout
    assert counts(path) == before
    missing = tmp_path / "nowhere.duckdb"
    for args, extra, message in (
        (("--catalog", str(missing), "prune"), {}, f"error: catalog {missing} does not exist"),
        (("prune",), {"WEFLOW_RETENTION_MAX_AGE_DAYS": "a week"}, "error: WEFLOW_RETENTION_MAX_AGE_DAYS='a week'"),
    ):
        bad = weflow(*args, **extra)
        assert bad.returncode == 1 and bad.stderr.startswith(message) and bad.stderr.count("\n") == 1, bad.stderr
    assert not missing.exists() and counts(path) == before
    done = weflow("prune", "-f", "json")
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert (found["executions"], found["files"], found["dry_run"]) == (4, 4, False)
    assert counts(path)["workflow_executions"] == 4
