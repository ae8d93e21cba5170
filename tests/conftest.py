"""Shared fixtures: a real catalog file per test, data roots at the repository."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path

import httpx
import pytest

from weflow import config
from weflow.catalog import Catalog
from weflow.workflows import Scope

REPO = Path(__file__).resolve().parent.parent

# The tests' own HTTP requests go through one client: httpx.get/post build a client, and with it an SSL context
# loaded from the CA bundle, for every call, even to http:// (~20 ms of CPU each: ~30 s of a full run under py-spy).
# Thread-safe; like those calls it keeps no cookies between requests.
web = httpx.Client(cookies=CookieJar(DefaultCookiePolicy(allowed_domains=[])))
RESOURCES = Path(__file__).resolve().parent / "resources"


# The longest files first (seconds per file in a full run here, longest first): with `--dist loadfile` each xdist
# worker takes the next file when it is done with one, so a long file handed out last runs on one core while the
# other idles. The rest keep their collection order after these. The Makefile's `--no-loadscope-reorder` keeps
# this order: by default xdist hands files out by their number of tests, most first, which put the one-test
# benchmark smoke files (20-50 s each) last.
LONGEST_FIRST = (
    "tests/hostile/test_servers.py", "tests/test_hot_worker.py", "tests/test_deploy.py", "tests/test_scale_out.py",
    "tests/hostile/test_crashes.py", "tests/hostile/test_timeouts.py", "tests/test_benchmarks_throughput.py",
    "tests/test_api.py", "tests/test_benchmarks_processes.py", "tests/test_wheel.py",
    "tests/hostile/test_cli_output.py", "tests/hostile/test_outbound.py", "tests/test_benchmarks_hot.py",
    "tests/test_notebooks.py", "tests/test_benchmarks_profiles.py", "tests/test_execution.py",
    "tests/hostile/test_data_roots.py", "tests/test_handoff.py", "tests/test_benchmarks.py",
    "tests/hostile/test_expressions.py", "tests/test_backfills.py", "tests/test_catalog_cost.py", "tests/test_dask.py",
    "tests/test_node_queue.py", "tests/test_cli.py", "tests/hostile/test_documents.py", "tests/test_object_storage.py",
    "tests/test_postgres_nodes.py",
)  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: order within a file kept


def weflow_exe() -> str:
    exe = Path(sys.executable).with_name("weflow")
    found = str(exe) if exe.exists() else shutil.which("weflow")
    assert found, "the weflow console script is not installed"
    return found


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Prefect server on loopback for the whole session; PREFECT_API_URL points at it."""
    from weflow.prefect_gateway import server

    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS"] = "5"  # cron tests should not wait a minute
    # a run queued behind a deployment's concurrency limit tries again after this, not 30 s
    os.environ["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] = "2"
    # events still flow to automations (the triggers service reads the stream, not the table), but the test
    # servers do not store them: no test reads Prefect's event feed, and storing them is ~1/4 of the server's
    # CPU per flow run (~11 events with ~110 related-resource rows each run, measured here: 0.22 -> 0.16 s)
    os.environ["PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED"] = "false"
    # a free port per xdist worker; owned by this process: an interrupted session leaves no server behind
    found = server.start(home, port=0, timeout=180, quiet=True, owner=os.getpid())
    server.use_api(found.api_url)  # Prefect is imported by now (collection): its global settings too
    # the fresh, migrated database: every other server the tests or benchmarks start in a new home begins from it
    template = tmp_path_factory.mktemp("prefect-template") / "prefect.db"
    with sqlite3.connect(home / "prefect.db") as src, sqlite3.connect(template) as dst:
        src.backup(dst)
    os.environ["WEFLOW_PREFECT_DB_TEMPLATE"] = str(template)
    yield found.api_url
    # what Prefect still holds for the server goes now: after the stop, its exit-time flush would retry for minutes
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)
    server.stop(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ.pop("WEFLOW_PREFECT_DB_TEMPLATE", None)


@pytest.fixture(scope="session")
def migrated_catalog(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty catalog with every migration applied, made once per session (migrating a new file: ~0.2 s)."""
    path = tmp_path_factory.mktemp("catalog-template") / "weflow.duckdb"
    Catalog(path).organizations()  # opening it migrates it; the session closes it (no write-ahead log left)
    return path


@pytest.fixture
def catalog_path(tmp_path: Path, migrated_catalog: Path) -> Path:
    """The test's catalog file: a copy of the migrated empty catalog (what the first use would have made)."""
    path = tmp_path / "catalog" / "weflow.duckdb"
    path.parent.mkdir(parents=True)
    shutil.copyfile(migrated_catalog, path)
    return path


@pytest.fixture
def settings(catalog_path: Path, tmp_path: Path) -> Iterator[config.Settings]:
    with config.using(
        catalog=catalog_path,
        data_roots=(REPO, tmp_path.resolve()),
        runs_dir=tmp_path / "runs",
        organization="acme",
        user="ada",
        python_node_modules=("tests.resources.pynodes",),
        shared_data_roots=True,  # the repository is every test organization's data root
    ) as current:
        yield current


@pytest.fixture
def scope(settings: config.Settings) -> Scope:
    return Scope.current(Catalog(settings.catalog))


@pytest.fixture
def cli_env(catalog_path: Path, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        WEFLOW_CATALOG=str(catalog_path),
        WEFLOW_DATA_ROOTS=f"{REPO}:{tmp_path}",
        WEFLOW_RUNS_DIR=str(tmp_path / "runs"),
        WEFLOW_PYTHON_NODE_MODULES="tests.resources.pynodes",
        WEFLOW_SHARED_DATA_ROOTS="true",  # the repository is every test organization's data root
        PYTHONPATH=str(REPO),
        COLUMNS="200",
    )
    return env


CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def render(url: str, tmp_path: Path, budget_ms: int = 15000) -> str:
    """The DOM of ``url`` after headless Chromium (Debian's, installed by `make test`) ran its scripts."""
    exe = shutil.which("chromium")
    assert exe, "Debian's chromium is missing: `make test` installs it (apt-get install chromium)"
    profile = tmp_path / f"chromium-{abs(hash(url))}"
    proc = subprocess.run(
        [exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return proc.stdout


def eventually(check: Callable[[], object], seconds: float = 180) -> object:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError("condition not met in time")


def zombie(pid: int) -> bool:
    """Whether ``pid`` has ended (gone, or a zombie its parent has not reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def descendants(pid: int) -> set[int]:
    """Every process started (transitively) by ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, frontier = set(), [pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            found.add(child)
            frontier.append(child)
    return found
