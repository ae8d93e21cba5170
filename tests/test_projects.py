"""weflow in a project folder (issue 22): ``weflow init``, finding the project root, the packaged entrypoint."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import REPO, weflow_exe
from weflow import deploy, projects, workflows
from weflow.config import MARKER, Settings, project_root
from weflow.errors import DeployError
from weflow.prefect_gateway import server

PROJECT_VARIABLES = ("WEFLOW_CATALOG", "WEFLOW_RUNS_DIR", "WEFLOW_DATA_ROOTS", "PREFECT_HOME")


@pytest.fixture
def shell(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No project variable set, and any the code under test sets is removed afterwards."""
    for name in PROJECT_VARIABLES:
        monkeypatch.setenv(name, "")  # recorded, so that the teardown restores the variable's absence
        monkeypatch.delenv(name)
    return monkeypatch


def test_init_scaffolds_a_project_whose_example_checks(tmp_path: Path) -> None:
    made = projects.init(tmp_path / "sales")
    root = tmp_path / "sales"
    assert made.root == root.resolve()
    assert {str(f) for f in made.files} == {
        ".gitignore", "README.md", MARKER, "data/orders.csv", "notebooks/start.ipynb", "workflows/daily_sales.yaml",
    }  # fmt: skip
    ignored = (root / ".gitignore").read_text().split()
    assert {"data/weflow.duckdb", "data/runs/", "data/prefect/"} <= set(ignored)
    readme = (root / "README.md").read_text()
    assert readme.startswith("# sales\n") and "weflow apply workflows/*.yaml" in readme and "weflow up" in readme
    definition = workflows.parse_file(root / "workflows/daily_sales.yaml")
    assert definition.name == "daily_sales" and definition.nodes[0].config["path"] == "data/orders.csv"
    assert (root / "data/orders.csv").read_bytes() == (REPO / "weflow/project_template/data/orders.csv").read_bytes()


def test_init_refuses_a_folder_that_is_not_empty_unless_forced(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    proc = subprocess.run([weflow_exe(), "init", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr == f"error: {tmp_path}: folder is not empty (add --force to scaffold into it)\n"
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]  # nothing written
    projects.init(tmp_path, force=True)
    assert (tmp_path / MARKER).is_file() and (tmp_path / "notes.txt").read_text() == "mine"


def test_init_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(projects.ProjectError, match=r"taken: not a folder$"):
        projects.init(tmp_path / "taken")


def test_the_project_root_is_found_from_any_folder_inside_it(tmp_path: Path, shell: pytest.MonkeyPatch) -> None:
    root = projects.init(tmp_path / "p").root
    assert project_root(root / "notebooks") == root and project_root(root) == root
    assert project_root(tmp_path) is None
    assert project_root(REPO) is None  # weflow's own checkout: everything stays relative to the working directory
    shell.chdir(root / "notebooks")
    found = Settings.from_env()
    assert found.catalog == root / "data/weflow.duckdb" and found.runs_dir == root / "data/runs"
    assert found.data_roots == (root,) and found.prefect_home == root / "data/prefect"
    assert server.default_home() == root / "data/prefect"  # a notebook's kernel in notebooks/: the project's server
    shell.setenv("WEFLOW_CATALOG", str(tmp_path / "elsewhere.duckdb"))  # a variable set still wins
    assert Settings.from_env().catalog == tmp_path / "elsewhere.duckdb"
    shell.chdir(REPO)
    assert Settings.from_env().runs_dir == Path("data/runs")  # outside a project: as before
    assert server.default_home() == Path("data/prefect")


def test_the_cli_from_a_subfolder_uses_the_project(tmp_path: Path, shell: pytest.MonkeyPatch) -> None:
    from weflow.cli.app import app

    root = projects.init(tmp_path / "p").root
    shell.chdir(root / "notebooks")
    applied = CliRunner().invoke(app, ["apply", "../workflows/daily_sales.yaml"])
    assert applied.exit_code == 0, applied.output
    assert (root / "data/weflow.duckdb").is_file() and not (root / "notebooks/data").exists()
    assert os.environ["PREFECT_HOME"] == str(root / "data/prefect")  # what the servers and workers it starts get
    shell.chdir(root)
    listed = CliRunner().invoke(app, ["list", "--format", "json"])
    assert '"daily_sales"' in listed.output


def test_a_run_deployed_by_another_weflow_version_fails_saying_so() -> None:
    mine = deploy.installed_version()
    deploy.check_version(["weflow", f"weflow-version:{mine}"])
    deploy.check_version(["weflow"])  # deployed before deployments carried the version
    with pytest.raises(DeployError) as caught:
        deploy.check_version(["weflow", "weflow-version:0.0.1"])
    assert str(caught.value) == (
        f"this run was deployed with weflow 0.0.1 but this worker runs weflow {mine}: "
        f"install weflow==0.0.1 on the worker, or run `weflow deploy` again with weflow {mine}"
    )


def test_the_entrypoint_loads_from_the_package_the_way_prefect_and_the_worker_load_it() -> None:
    from prefect.flows import load_flow_from_entrypoint

    from weflow.flow_entry import run_workflow

    assert str(Path(".") / deploy.ENTRYPOINT) == deploy.ENTRYPOINT == deploy.entrypoint_path()  # the worker's join
    flow = load_flow_from_entrypoint(deploy.ENTRYPOINT, use_placeholder_flow=False)
    assert flow is run_workflow and flow.name == "run_workflow"
    from flows.run_workflow import run_workflow as for_prefect_yaml

    assert for_prefect_yaml is run_workflow


def test_the_entrypoint_fails_a_run_deployed_by_another_weflow_version(prefect_api: str) -> None:
    from prefect import tags
    from prefect.logging.handlers import APILogHandler

    from weflow.flow_entry import run_workflow
    from weflow.prefect_gateway.client import pointed_at

    with pointed_at(prefect_api), tags("weflow", "weflow-version:0.0.1"):  # as a deployment of weflow 0.0.1 tags it
        state = asyncio.run(run_workflow(workflow="daily_sales", return_state=True))  # type: ignore[call-overload]
        APILogHandler().flush()  # its log lines sent now, not at exit when the session's server is gone
    assert state.is_failed()
    assert "this run was deployed with weflow 0.0.1 but this worker runs weflow" in (state.message or ""), state
