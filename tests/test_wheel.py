"""weflow outside its own repository (issue 22): the wheel, installed in a fresh venv, runs a project's queued runs.

The wheel is built from a copy of the package (nothing is written into the checkout) and installed
with ``--no-deps`` into a new venv outside the checkout; that venv sees this venv's dependencies
through a ``.pth`` file, so weflow itself comes from the wheel. A project made by ``weflow init``
is deployed from ``notebooks/`` to the session's Prefect server (a work pool of its own), and a
``weflow worker`` whose working directory is an unrelated empty folder, and which knows nothing but
the Prefect API, runs the runs queued from the project root and from ``notebooks/``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from weflow import config, execution
from weflow.catalog import Catalog
from weflow.core.entities import RunState
from weflow.workflows import Scope

pytestmark = pytest.mark.slow


def _sh(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.fixture(scope="module")
def clean_env() -> dict[str, str]:
    """This environment without weflow's, Prefect's or the checkout's settings (a user's shell)."""
    drop = ("WEFLOW_", "PREFECT_", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop)} | {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory: pytest.TempPathFactory, clean_env: dict[str, str]) -> Path:
    """The bin folder of a fresh venv holding weflow from the wheel, and this venv's dependencies."""
    place = tmp_path_factory.mktemp("wheel")
    source = place / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "weflow", source / "weflow", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    # built by this venv's setuptools (pinned in constraints.txt): an isolated build would first install one
    _sh([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(place / "dist"), str(source)], place, clean_env)
    [wheel] = (place / "dist").glob("weflow-*.whl")
    venv = place / "venv"
    _sh([sys.executable, "-m", "venv", "--without-pip", str(venv)], place, clean_env)
    python = venv / "bin" / "python"
    # installed before the .pth exists: pip must see no other weflow (this venv's editable one) to replace
    _sh([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], place, clean_env)
    site = _sh([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], place, clean_env)
    Path(site.strip(), "weflow_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    prefect = Path(sys.executable).with_name("prefect").read_text().split("\n", 1)[1]  # its console script, re-aimed
    (venv / "bin" / "prefect").write_text(f"#!{python}\n{prefect}")
    (venv / "bin" / "prefect").chmod(0o755)
    return venv / "bin"


@pytest.fixture(scope="module")
def env(clean_env: dict[str, str], prefect_api: str) -> dict[str, str]:
    """A user's shell on the session's Prefect server, with a work pool of this module's own."""
    return clean_env | {"PREFECT_API_URL": prefect_api, "WEFLOW_WORK_POOL": "weflow-wheel"}


@pytest.fixture(scope="module")
def project(bin_dir: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``weflow init`` in a temp folder, its example applied."""
    root = tmp_path_factory.mktemp("user") / "sales"
    weflow = str(bin_dir / "weflow")
    _sh([weflow, "init", str(root)], root.parent, env)
    _sh([weflow, "apply", "workflows/daily_sales.yaml"], root, env)
    return root


@pytest.fixture(scope="module")
def worker(bin_dir: Path, env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A ``weflow worker`` (from the wheel) in an empty folder, knowing only the Prefect API: no checkout or project."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    home = tmp_path_factory.mktemp("worker-home")
    log = (home / "worker.out").open("wb")
    proc = subprocess.Popen([str(bin_dir / "weflow"), "worker"], cwd=elsewhere, env=env | {"PREFECT_HOME": str(home)},
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        yield elsewhere
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=120) == 0, (home / "worker.out").read_text()
    assert not any(elsewhere.iterdir()), "the worker wrote nothing into its working directory"


def _queue(bin_dir: Path, cwd: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    args = [str(bin_dir / "weflow"), "run", "daily_sales", "--queue", "--format", "json"]
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_wheel_runs_a_project_on_a_worker_in_an_empty_folder(
    bin_dir: Path, project: Path, worker: Path, env: dict[str, str]
) -> None:
    found = _sh([str(bin_dir / "python"), "-c", "import weflow; print(weflow.__file__)"], worker, env)
    assert Path(found.strip()).is_relative_to(bin_dir.parent), found  # weflow from the wheel, not the checkout
    deployed = _sh([str(bin_dir / "weflow"), "deploy"], project / "notebooks", env)
    assert "run_workflow/daily_sales" in deployed, deployed

    queuing = [_queue(bin_dir, project, env), _queue(bin_dir, project / "notebooks", env)]  # root and a subfolder
    outputs = [(p.communicate(timeout=300), p.returncode) for p in queuing]
    assert [code for _, code in outputs] == [0, 0], outputs
    with config.using(catalog=project / "data/weflow.duckdb", organization="default", user="admin"):
        scope = Scope.current(Catalog(project / "data/weflow.duckdb"))
        ended = [execution.wait(json.loads(out)["id"], scope, timeout=180) for (out, _), _ in outputs]
    assert [e.status for e in ended] == [RunState.SUCCEEDED, RunState.SUCCEEDED], [e.error_message for e in ended]
    assert (project / "data/out/daily_sales.csv").read_text().startswith("region,revenue,orders")
    assert sorted(p.name for p in (project / "notebooks").iterdir()) == ["start.ipynb"]  # no second catalog or home
