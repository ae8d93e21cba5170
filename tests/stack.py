"""A weflow stack for a test module: its environment, its scope over a temporary catalog, a real `weflow worker`.

Shared by the modules that run executions through a long-lived worker (`test_hot_worker`, `test_handoff`,
`test_backfills`): the worker is a real `weflow worker` process (its supervisor and worker child) on the
session's Prefect server, in a Prefect home of the module's own.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import REPO, eventually, weflow_exe
from weflow import config
from weflow.catalog import Catalog
from weflow.prefect_gateway import worker_home
from weflow.workflows import Scope


def stack_env(prefect_api: str, place: Path, modules: Sequence[str], **extra: str) -> dict[str, str]:
    """The environment of the module's weflow processes: its catalog, data roots and runs under ``place``."""
    return {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "WEFLOW_CATALOG": str(place / "weflow.duckdb"),
        "WEFLOW_DATA_ROOTS": f"{REPO}:{place}",
        "WEFLOW_RUNS_DIR": str(place / "runs"),
        "WEFLOW_PYTHON_NODE_MODULES": ",".join(modules),
        "WEFLOW_SHARED_DATA_ROOTS": "true",
        "WEFLOW_ORG": "acme",
        "WEFLOW_USER": "ada",
        "PYTHONPATH": str(REPO),
        **extra,
    }


@contextmanager
def stack_scope(place: Path, modules: Sequence[str]) -> Iterator[Scope]:
    """This process's settings and scope for the same catalog (the test's own calls)."""
    with config.using(
        catalog=place / "weflow.duckdb", data_roots=(REPO, place), runs_dir=place / "runs", organization="acme",
        user="ada", python_node_modules=tuple(modules), shared_data_roots=True,
    ) as current:  # fmt: skip
        yield Scope.current(Catalog(current.catalog))


class Hot:
    """A running `weflow worker`: its supervisor process, its home, its output."""

    def __init__(self, home: Path, env: dict[str, str], *args: str) -> None:
        self.home = home
        self.log = home / "supervisor.out"
        home.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([weflow_exe(), "worker", *args], env={**env, "PREFECT_HOME": str(home)},
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip

    def child(self, other_than: int | None = None) -> int:
        """The pid of the worker child serving now (waiting for a fresh one after ``other_than``)."""

        def ready() -> int | None:
            found = [r for r in worker_home.live(self.home) if r["pid"] != other_than and r.get("port")]
            return int(found[0]["pid"]) if found else None

        return int(eventually(ready, 90))  # type: ignore[arg-type]

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout=60)


@contextmanager
def running_worker(home: Path, env: dict[str, str], *args: str) -> Iterator[Hot]:
    """A `weflow worker` in ``home`` for the block, which this process's submits wake (PREFECT_HOME); stopped after,
    cleanly (exit 0)."""
    previous = os.environ.get("PREFECT_HOME")
    os.environ["PREFECT_HOME"] = str(home)
    worker = Hot(home, env, *args)
    try:
        yield worker
    finally:
        assert worker.stop() == 0, worker.log.read_text()
        if previous is None:
            os.environ.pop("PREFECT_HOME", None)
        else:
            os.environ["PREFECT_HOME"] = previous
