"""Retention: prune ended executions, every row and file that hangs off them, by policy.

A workflow's policy is ``settings.retention`` of its current version (``max_age_days``,
``max_executions``); a value it leaves out takes the catalog's default, from
``WEFLOW_RETENTION_MAX_AGE_DAYS`` and ``WEFLOW_RETENTION_MAX_EXECUTIONS``: 14 days and 10,000
executions per workflow unless set, as n8n prunes by default (336 hours, 10,000 executions); 0
keeps everything on that count. Queued and running executions, versions, ``executionCount`` and
the metrics of ``weflow stats`` are never pruned.

Files: the spill folder of each pruned execution (``<runs>/executions/<id>/``) and the outputs its
node records name, unless a kept execution names the same file (a resume reuses its outputs;
persisted outputs are content-addressed and shared). Only files inside the runs folder are
deleted, after the rows are gone: a crash between leaves unreferenced files, never a reference
to a missing file. Entry points: ``prune`` (``weflow prune``), ``prune_due`` (after ``weflow
sync``), ``prune_periodically`` and ``pruning`` (a thread of ``weflow up``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from weflow.catalog import Catalog
from weflow.config import settings
from weflow.core.model import Retention
from weflow.errors import NotFoundError, WeflowError

log = logging.getLogger(__name__)

AGE_ENV = "WEFLOW_RETENTION_MAX_AGE_DAYS"
COUNT_ENV = "WEFLOW_RETENTION_MAX_EXECUTIONS"
DEFAULT_MAX_AGE_DAYS = 14.0
DEFAULT_MAX_EXECUTIONS = 10_000
BATCH = 5_000  # executions per removal: each batch is two short sessions, so writers wait little
DUE_SECONDS = 3600.0  # ``weflow sync`` prunes when the last prune is older than this


@dataclass(frozen=True)
class Policy:
    """How much history to keep: 0 keeps everything on that count."""

    max_age_days: float
    max_executions: int

    @classmethod
    def default(cls) -> Policy:
        """The catalog's default, from the environment (one clear error for a bad value)."""
        age = _env_number(AGE_ENV, DEFAULT_MAX_AGE_DAYS, float)
        count = _env_number(COUNT_ENV, DEFAULT_MAX_EXECUTIONS, int)
        return cls(age, int(count))

    def over(self, retention: Retention) -> Policy:
        """A workflow's policy: its own values, this default where it gives none."""
        age = self.max_age_days if retention.max_age_days is None else retention.max_age_days
        count = self.max_executions if retention.max_executions is None else retention.max_executions
        return Policy(age, count)

    def text(self) -> str:
        age = f"{self.max_age_days:g} days" if self.max_age_days else "any age"
        count = f"the last {self.max_executions:,}" if self.max_executions else "any number"
        return f"{age}, {count}"


def _env_number(name: str, default: float, kind: type[float] | type[int]) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        value = -1
    if value < 0:
        what = "a whole number" if kind is int else "a number"
        raise WeflowError(f"{name}={text!r}: must be {what} >= 0 (0 keeps everything)")
    return value


@dataclass
class Pruned:
    """What a prune removed (or, dry, would remove) from one workflow."""

    organization: str
    workflow: str
    policy: Policy
    rows: dict[str, int] = field(default_factory=dict)
    files: int = 0
    bytes: int = 0

    @property
    def executions(self) -> int:
        return self.rows.get("workflow_executions", 0)


@dataclass
class Report:
    """What a prune of the catalog removed (or would remove), workflow by workflow."""

    dry_run: bool
    runs: Path  # the runs folder: only files inside it are deleted
    workflows: list[Pruned] = field(default_factory=list)
    left: list[str] = field(default_factory=list)  # files outside the runs folder, named by pruned rows: kept

    @property
    def executions(self) -> int:
        return sum(p.executions for p in self.workflows)

    @property
    def files(self) -> int:
        return sum(p.files for p in self.workflows)

    @property
    def bytes(self) -> int:
        return sum(p.bytes for p in self.workflows)


def _tail(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _files(
    catalog: Catalog, ids: list[str], named: Iterable[str], runs: Path, counted: list[str]
) -> tuple[set[Path], list[str]]:
    """The files pruning ``ids`` frees (inside ``runs``, named by no other execution), and those left outside.

    ``counted``: executions a dry run counted as pruned (still in the catalog): their names do not keep a file.
    """
    spill = runs / "executions"
    candidates = {Path(p).resolve() for p in named}
    for execution_id in ids:
        folder = spill / execution_id
        if folder.is_dir():
            candidates |= {f.resolve() for f in folder.iterdir() if f.is_file()}
    inside = {p for p in candidates if p.is_relative_to(runs)}
    left = sorted(str(p) for p in candidates - inside)
    kept = {Path(p).resolve() for p in catalog.named_paths({_tail(p) for p in inside}, counted)}
    return {p for p in inside - kept if p.is_file()}, left


def _remove_files(files: set[Path], ids: list[str], runs: Path) -> int:
    """Delete ``files`` and the emptied spill folders of ``ids``; the bytes freed."""
    freed = 0
    for path in files:
        try:
            size = path.stat().st_size
            path.unlink()
            freed += size
        except OSError as exc:  # gone meanwhile, or not ours to delete: the rows are gone either way
            log.warning("retention: %s not deleted: %s", path, exc.strerror)
    for execution_id in ids:
        folder = runs / "executions" / execution_id
        try:
            folder.rmdir()  # only when empty: a file a kept execution names stays, with its folder
        except OSError:
            pass
    return freed


def _prune_workflow(
    catalog: Catalog, item: Pruned, workflow_id: int, now: datetime, report: Report, say: Callable[[str], None]
) -> None:
    """Remove (or count) a workflow's expired executions batch by batch, then its old missed-schedule alerts."""
    policy, runs, dry = item.policy, report.runs, report.dry_run
    counted: list[str] = []  # a dry run removes nothing: it looks past what it counted already
    while True:
        skip = len(counted)
        ids = catalog.expired(workflow_id, policy.max_age_days, policy.max_executions, now, BATCH + skip)[skip:]
        if not ids:
            break
        removed = catalog.remove_executions(ids, dry_run=dry, counted=counted)
        counted += ids if dry else []
        files, left = _files(catalog, ids, removed.paths, runs, counted)
        report.left += left
        item.files += len(files)
        item.bytes += sum(p.stat().st_size for p in files) if dry else _remove_files(files, ids, runs)
        for table, count in removed.rows.items():
            item.rows[table] = item.rows.get(table, 0) + count
        if len(ids) < BATCH:
            break
        verb = "to remove" if dry else "removed"
        say(f"{item.organization}/{item.workflow}: {item.executions:,} executions {verb}...")
    if policy.max_age_days:
        before = now - timedelta(days=policy.max_age_days)
        alerts = catalog.expired_alerts(workflow_id, before, dry_run=dry)
        item.rows["alert_deliveries"] = item.rows.get("alert_deliveries", 0) + alerts


def prune(
    catalog: Catalog | str | Path | None = None,
    *,
    dry_run: bool = False,
    progress: Callable[[str], None] | None = None,
    now: datetime | None = None,
    stop: threading.Event | None = None,
) -> Report:
    """Apply every workflow's retention policy to the catalog (all organizations); ``dry_run`` removes nothing.

    ``now``: the time the ages count from; ``stop``: set, the prune ends after the workflow it is on.
    """
    cat = _existing(catalog)
    default, now = Policy.default(), now or datetime.now(UTC)
    report = Report(dry_run, settings().runs_dir.resolve())
    say = progress or (lambda _: None)
    for target in cat.retention_targets():
        if stop is not None and stop.is_set():
            return report  # not a whole prune: not marked, so the next sync prunes again
        item = Pruned(target.organization, target.workflow, default.over(target.retention))
        _prune_workflow(cat, item, target.workflow_id, now, report, say)
        if item.executions or item.rows.get("alert_deliveries"):
            report.workflows.append(item)
    if not dry_run:
        cat.mark_pruned(datetime.now(UTC))
    return report


def _existing(catalog: Catalog | str | Path | None) -> Catalog:
    cat = catalog if isinstance(catalog, Catalog) else Catalog(catalog or settings().catalog)
    if not cat.path.is_file():
        raise NotFoundError(f"catalog {cat.path} does not exist")
    return cat


def prune_due(catalog: Catalog, every_seconds: float = DUE_SECONDS) -> Report | None:
    """Prune if the last prune finished over ``every_seconds`` ago (or never): what ``weflow sync`` runs."""
    last = catalog.last_pruned()
    if last is not None and datetime.now(UTC) - last < timedelta(seconds=every_seconds):
        return None
    return prune(catalog)


def prune_periodically(
    stop: threading.Event, every_seconds: float = DUE_SECONDS, catalog: str | Path | None = None
) -> None:
    """Prune the catalog now and every ``every_seconds`` until ``stop`` is set (run it in a thread).

    A failed prune is logged and tried again next period: retention never stops the stack.
    """
    while not stop.is_set():
        try:
            report = prune(catalog, stop=stop)
            if report.executions:
                log.info("pruned %d executions, %d files (%d bytes)", report.executions, report.files, report.bytes)
        except Exception:  # a broken disk or catalog must not end the thread: the next period tries again
            log.exception("retention: prune failed")
        if stop.wait(every_seconds):
            return


@contextmanager
def pruning(catalog: str | Path | None = None, every_seconds: float = DUE_SECONDS) -> Iterator[threading.Thread]:
    """Prune now and every ``every_seconds`` in a daemon thread while the block runs (``weflow up``'s loop)."""
    stop = threading.Event()
    thread = threading.Thread(
        target=prune_periodically, args=(stop, every_seconds, catalog), name="weflow-retention", daemon=True
    )
    thread.start()
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=60)  # a batch in progress ends first (a few seconds at most)


def after_sync(catalog: Catalog) -> None:
    """``prune_due`` for ``weflow sync``: a failed prune is logged, never fails the repair before it."""
    try:
        prune_due(catalog)
    except WeflowError as exc:
        log.warning("retention: prune after sync failed: %s", exc)
