"""Catalog maintenance service: back up, restore, check and compact the catalog file (``weflow catalog``).

The work happens under the catalog's lock in ``weflow.catalog.maintenance``; this module decides
what may be done: where a backup may be written (not over the catalog or its own files, not
where a workflow could read it), whether a restore may replace the catalog (not while a stack
runs against it), and where the replaced catalog is kept.
"""

from __future__ import annotations

import fnmatch
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from weflow.catalog import maintenance as storage
from weflow.catalog.maintenance import Report as Report
from weflow.config import ORGANIZATION, settings
from weflow.errors import CatalogError
from weflow.files import write_atomic

SIDECARS = (".wal", ".lock", ".queue")  # names after the catalog's that belong to it (DuckDB's log, the lock)
DEFAULT_CATALOG = Path("data/weflow.duckdb")  # what a weflow process without WEFLOW_CATALOG uses


@dataclass(frozen=True)
class Backup:
    path: Path
    counts: dict[str, int]
    size: int


@dataclass(frozen=True)
class Restored:
    catalog: Path
    counts: dict[str, int]
    aside: Path | None  # the catalog it replaced, kept (None: there was none)


@dataclass(frozen=True)
class Compacted:
    catalog: Path
    before: int
    after: int
    counts: dict[str, int]


@dataclass(frozen=True)
class Holder:
    """A running process that uses the catalog: a stack's server, worker, API, or a run."""

    pid: int
    command: str


def backup(catalog: Path, target: Path, force: bool = False) -> Backup:
    """A consistent copy of ``catalog`` at ``target``, written whole or not at all, taken under the lock."""
    _require_catalog(catalog)
    _allowed_target(catalog, target, force)

    def write(tmp: Path) -> None:
        tmp.unlink()  # DuckDB makes its own file: it refuses to open an empty one
        counts.update(storage.copy(catalog, tmp))

    counts: dict[str, int] = {}
    write_atomic(target, write)
    return Backup(target, counts, storage.size(target))


def restore(catalog: Path, source: Path) -> Restored:
    """Replace ``catalog`` with the backup ``source``; the replaced catalog is kept beside it.

    Refused while a process of a stack (``weflow up``, a worker, ``weflow serve``, a run) uses
    the catalog: they keep state about it in memory. A missing catalog is created from the backup.
    """
    if not catalog.parent.is_dir():
        raise CatalogError(f"catalog {catalog}: folder {catalog.parent} does not exist")
    if catalog.exists() and not catalog.is_file():
        raise CatalogError(f"catalog {catalog} is not a file")
    if source.exists() and catalog.exists() and os.path.samefile(source, catalog):
        raise CatalogError(f"{source} is the catalog itself")
    holders = running_against(catalog)
    if holders:
        shown = "; ".join(f"pid {h.pid} ({h.command})" for h in holders[:3])
        raise CatalogError(
            f"catalog {catalog} is in use by {len(holders)} running process(es): {shown}; stop them before restoring"
        )
    aside = _aside(catalog) if catalog.exists() else None
    counts = storage.replace(catalog, source, aside)
    return Restored(catalog, counts, aside if aside is not None and aside.exists() else None)


def check(catalog: Path) -> Report:
    """Schema version, rows per table and problems (unreadable tables, duplicate keys, missing parents)."""
    _require_catalog(catalog)
    return storage.check(catalog)


def compact(catalog: Path) -> Compacted:
    """Rewrite the catalog without the space of deleted rows, under the lock; bytes before and after."""
    _require_catalog(catalog)
    before, after, counts = storage.compact(catalog)
    return Compacted(catalog, before, after, counts)


def _require_catalog(catalog: Path) -> None:
    if not catalog.exists():
        raise CatalogError(f"catalog {catalog} does not exist")
    if not catalog.is_file():
        raise CatalogError(f"catalog {catalog} is not a file")
    if not storage.is_duckdb(catalog):
        raise CatalogError(f"catalog {catalog} is not a DuckDB database file")


def _aside(catalog: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    aside = catalog.with_name(f"{catalog.name}.before-restore-{stamp}")
    return aside if not aside.exists() else aside.with_name(f"{aside.name}-{secrets.token_hex(3)}")


# --- where a backup may go ------------------------------------------------------------


def _allowed_target(catalog: Path, target: Path, force: bool) -> None:
    """Refuse a target that is a folder, the catalog or its files, readable by workflows, or (without force) there."""
    if target.is_dir():
        raise CatalogError(f"{target} is a directory: give the backup's file name")
    if not target.parent.is_dir():
        raise CatalogError(f"{target}: folder {target.parent} does not exist")
    real = target.parent.resolve() / target.name
    home = catalog.resolve()
    if real == home or (target.exists() and os.path.samefile(target, catalog)):
        raise CatalogError(f"{target} is the catalog itself")
    if real.parent == home.parent and (real.name.endswith(".tmp") or any(
            real.name.startswith(home.name + s) for s in SIDECARS)):  # fmt: skip
        raise CatalogError(f"{target} is one of the catalog's own files")
    from weflow.nodes.base import own_state  # deferred: the nodes' module brings Polars (~0.2 s)

    state = (("the catalog", home), *settings().own_state()[1:])
    what = own_state(real, state)
    if what and what != "the catalog":
        raise CatalogError(f"{target} is in weflow's own state ({what})")
    root = None if what else _readable_root(real)
    if root is not None:
        raise CatalogError(
            f"{target} is under the data root {root}, where workflows can read it (it holds key hashes and every "
            f"definition): write it elsewhere, or beside the catalog with a name starting {home.name}."
        )
    if target.exists() and not force:
        raise CatalogError(f"{target} exists (add --force to replace it)")


def _readable_root(real: Path) -> Path | None:
    """The data root (WEFLOW_DATA_ROOTS, any organization's) that ``real`` is under, if any."""
    for root in settings().data_roots:
        if ORGANIZATION not in str(root):
            if real.is_relative_to(root):
                return root
            continue
        parts = root.parts
        if len(real.parts) >= len(parts) and all(
            fnmatch.fnmatchcase(r, p.replace(ORGANIZATION, "*")) for r, p in zip(real.parts, parts, strict=False)
        ):
            return root
    return None


# --- who runs against the catalog -----------------------------------------------------


def running_against(catalog: Path) -> list[Holder]:
    """Running weflow and Prefect processes (other than this one and its parents) that use ``catalog``.

    Found from /proc: a process's catalog is its ``--catalog`` argument, else its WEFLOW_CATALOG,
    else ``data/weflow.duckdb`` in its working folder (relative paths are taken from its folder).
    """
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    target = catalog.resolve()
    skip = _ancestors()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) in skip:
            continue
        used = _catalog_of(entry)
        if used is not None and used[0] == target:
            found.append(Holder(int(entry.name), used[1]))
    return sorted(found, key=lambda h: h.pid)


def _catalog_of(entry: Path) -> tuple[Path, str] | None:
    """The catalog the process at ``/proc/<pid>`` uses and its command line; None when it is no weflow process."""
    try:
        argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0") if a]
        raw = (entry / "environ").read_bytes().split(b"\0")
        cwd = Path(os.readlink(entry / "cwd"))
        exe = Path(os.readlink(entry / "exe")).name
    except OSError:
        return None
    if not argv or not exe.startswith("python"):
        return None  # weflow, Prefect and uvicorn are Python; a shell that exported WEFLOW_CATALOG runs nothing
    env = dict(item.decode(errors="replace").partition("=")[::2] for item in raw if b"=" in item)
    given = _option(argv, "--catalog") or env.get("WEFLOW_CATALOG")
    if not given and not any(Path(a).name in ("weflow", "prefect") or a.startswith("weflow") for a in argv[1:4]):
        return None
    shown = " ".join(Path(a).name if a.startswith("/") else a for a in argv)  # paths by name: the command shows
    return (cwd / (given or DEFAULT_CATALOG)).resolve(), " ".join(shown.split())[:120]


def _option(argv: list[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.partition("=")[2]
    return None


def _ancestors() -> set[int]:
    """This process and its parents (the shell or test that started it), which are not a stack."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat[stat.rindex(")") + 2 :].split()[1])
    return pids
