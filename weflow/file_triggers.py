"""The watcher behind ``file`` triggers: one Prefect event per new file, so Prefect runs the workflow once per file.

Prefect has no file sensor, so weflow looks: ``scan`` globs each ACTIVE workflow's ``file`` triggers
under its organization's data roots (``nodes.base.resolve_files``: no file outside them, none of
weflow's own), and for each file not seen before emits a ``weflow.file.arrived`` event, which the
workflow deployment's automation (``prefect_gateway.triggers``) turns into a run with the file's
path as the trigger's input. What was seen is kept per organization in the runs folder
(``file-triggers/<organization>.json``), so a restart triggers nothing again; the first scan of a
new trigger only records what is already there. A PAUSED workflow's new files are recorded, not
run; DRAFT and ARCHIVED ones are not watched. ``watch`` repeats ``scan`` (a weflow worker's loop or
``weflow up`` calls it); one scan at a time per organization (a file lock), so two watchers never
emit one file twice.
"""

from __future__ import annotations

import fcntl
import json
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from weflow.config import settings
from weflow.core.entities import Status
from weflow.core.triggers import FileArrival
from weflow.files import write_atomic
from weflow.nodes.base import resolve_files
from weflow.prefect_gateway import triggers
from weflow.prefect_gateway.triggers import Arrival
from weflow.secrets import organization
from weflow.workflows import Scope, data_roots, list_workflows, version_of

log = logging.getLogger(__name__)
WATCHED = (Status.ACTIVE, Status.PAUSED)


def _state_path(org: str) -> Path:
    return settings().runs_dir.resolve() / "file-triggers" / f"{org}.json"


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.with_suffix(".lock")).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def key(workflow: str, index: int, trigger: FileArrival) -> str:
    """A trigger's entry in the seen-files state: a changed glob or input starts afresh (baseline)."""
    return f"{workflow}|{index}|{trigger.pattern}|{trigger.input}"


def _files(pattern: str, roots: tuple[Path, ...]) -> list[str]:
    """The files ``pattern`` matches under ``roots``, each as a path relative to its root (as nodes take them)."""
    try:
        found = resolve_files(pattern, roots, field="glob")
    except FileNotFoundError:
        return []
    relative = []
    for path in found:
        root = next((r for r in roots if path.is_relative_to(r)), None)
        relative.append(str(path.relative_to(root)) if root else str(path))
    return sorted(relative)


def scan(scope: Scope) -> list[Arrival]:
    """Emit one event per new file of the organization's ``file`` triggers; the arrivals emitted."""
    org = organization(scope)
    roots = data_roots(scope)
    path = _state_path(org)
    with _locked(path):
        seen: dict[str, list[str]] = json.loads(path.read_text()) if path.exists() else {}
        state: dict[str, list[str]] = {}
        arrivals: list[Arrival] = []
        for wf in list_workflows(scope):
            if wf.status not in WATCHED:
                continue
            definition = version_of(wf, scope).definition
            for i, trigger in enumerate(definition.triggers):
                if trigger.file is None:
                    continue
                entry = key(wf.name, i, trigger.file)
                try:
                    files = _files(trigger.file.pattern, roots)
                except Exception as exc:  # a glob leading outside the roots: that trigger only
                    log.warning("file trigger %s of %s: %s", i, wf.name, exc)
                    files = []
                before = set(seen.get(entry, files))  # a trigger seen for the first time: what is there is old
                if wf.status is Status.ACTIVE:
                    arrivals += [(wf.name, org, i, f) for f in files if f not in before]
                state[entry] = sorted(before | set(files))
        triggers.files_arrived(arrivals)  # sent before the state says seen: a failed send is tried again
        _save(path, state)
    return arrivals


def _save(path: Path, state: dict[str, list[str]]) -> None:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(state, indent=0, sort_keys=True))

    write_atomic(path, write)


def watch(scope: Scope, stop: threading.Event, every: float = 2.0) -> None:
    """``scan`` every ``every`` seconds until ``stop`` is set; a failed scan is logged and tried again."""
    while not stop.is_set():
        try:
            scan(scope)
        except Exception as exc:
            log.warning("file triggers: scan failed: %s", exc)
        stop.wait(every)
