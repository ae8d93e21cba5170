"""Issue 14, item 11 (python allow-list): a listed module lends its own functions, not what it imports,
and listing a package does not list its submodules.

Real parts: `weflow serve`, the ``weflow`` console script, DuckDB catalog files, the session's
Prefect server, and ``tests/resources/pkgnodes`` (a listed package that did ``from os import system``
and rebinds one of its functions to it) run as nodes with a shell command that would leave a file.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, weflow_exe
from tests.hostile.conftest import run_unchecked
from tests.test_api import Api, create, stored_names
from weflow import DefinitionError, config, parse, workflows
from weflow.core.entities import RunState
from weflow.execution import run
from weflow.workflows import Scope

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

PACKAGE = "tests.resources.pkgnodes"
SUBMODULE = "tests.resources.pkgnodes.sub"
IMPORTED = f"'system' is not a function defined in module '{PACKAGE}'"
NOT_LISTED = f"module '{SUBMODULE}' is not allowed"


def shell(name: str, callable_: str, marker: Path) -> dict[str, Any]:
    """A python node whose kwargs, given to os.system, would create ``marker``."""
    kwargs = {"command": f"touch {marker}"}
    return {
        "name": name,
        "nodes": [{"name": "p", "type": "python", "config": {"callable": callable_, "kwargs": kwargs}}],
    }


def plain(name: str, callable_: str) -> dict[str, Any]:
    return {"name": name, "nodes": [{"name": "p", "type": "python", "config": {"callable": callable_}}]}


def weflow(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([weflow_exe(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


@pytest.fixture
def listed(settings: config.Settings) -> Iterator[None]:
    with config.using(python_node_modules=(PACKAGE,)):
        yield


def test_an_imported_name_and_an_unlisted_submodule_are_refused_by_the_api(
    serve: Callable[..., Iterator[Api]], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    with serve(env_extra={"WEFLOW_PYTHON_NODE_MODULES": PACKAGE}) as api, api.client("acme") as client:
        for doc, says in (
            (shell("imported", f"{PACKAGE}:system", marker), IMPORTED),
            (shell("submodule", f"{SUBMODULE}:passthrough", marker), NOT_LISTED),
            (plain("dunder", f"{PACKAGE}:__builtins__"), "'__builtins__' is not a function defined"),
        ):
            response = client.post("/workflows", json=doc)
            assert response.status_code == 422, response.text
            problem = response.json()["problems"][0]
            assert problem["path"] == "nodes[0].config.callable" and says in problem["message"], problem
        assert stored_names(api, "acme") == set()
        assert create(client, plain("fine", f"{PACKAGE}:passthrough"))["currentVersion"] == 1
    assert not marker.exists()


def test_apply_refuses_them_in_one_line_and_a_listed_submodule_is_allowed(
    cli_env: dict[str, str], tmp_path: Path, scope: Scope, listed: None
) -> None:
    marker = tmp_path / "pwned"
    env = {**cli_env, "WEFLOW_PYTHON_NODE_MODULES": PACKAGE, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}
    for doc, says in (
        (shell("imported", f"{PACKAGE}:system", marker), IMPORTED),
        (shell("submodule", f"{SUBMODULE}:passthrough", marker), NOT_LISTED),
    ):
        target = tmp_path / f"{doc['name']}.json"
        target.write_text(json.dumps(doc))
        with pytest.raises(DefinitionError, match=r"^nodes\[0\]\.config\.callable: ") as err:
            workflows.read(target)  # what `weflow apply` checks, in this process
        assert says in str(err.value), err.value
    # `weflow apply` itself: one line, exit 1 (one process: the two refusals differ only in the check above)
    proc = weflow(env, REPO, "apply", str(tmp_path / "imported.json"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc
    assert proc.stderr.startswith("error: nodes[0].config.callable: ") and IMPORTED in proc.stderr, proc.stderr
    assert workflows.list_workflows(scope) == []
    # a submodule is allowed once it is listed itself (WEFLOW_PYTHON_NODE_MODULES read by the CLI)
    (tmp_path / "sub.json").write_text(json.dumps(plain("sub", f"{SUBMODULE}:passthrough")))
    proc = weflow(
        {**env, "WEFLOW_PYTHON_NODE_MODULES": f"{PACKAGE},{SUBMODULE}"}, REPO, "apply", str(tmp_path / "sub.json")
    )
    assert proc.returncode == 0, proc.stderr
    assert [w.name for w in workflows.list_workflows(scope)] == ["sub"]
    assert not marker.exists()


def test_run_refuses_them_before_calling_anything(scope: Scope, listed: None, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    with pytest.raises(DefinitionError, match=r"nodes\[0\]\.config\.callable: 'system' is not a function defined"):
        workflows.apply(parse(json.dumps(shell("imported", f"{PACKAGE}:system", marker))), scope)
    # stored before the rule existed: `run` checks again and records nothing
    scope.catalog.save(parse(json.dumps(shell("old", f"{PACKAGE}:system", marker))), scope.user)
    with pytest.raises(DefinitionError, match=IMPORTED):
        run("old", scope)
    assert scope.catalog.executions(scope.user.organization_id) == []
    # were that check skipped, the node refuses when it loads the callable
    for name, callable_, says in (
        ("late", f"{PACKAGE}:system", IMPORTED),
        ("late_sub", f"{SUBMODULE}:passthrough", NOT_LISTED),
        # the source shows `def shadowed`, the module holds os.system: only the run-time check sees it
        ("rebound", f"{PACKAGE}:shadowed", f"'shadowed' is not a function defined in module '{PACKAGE}'"),
    ):
        record = run_unchecked(scope, shell(name, callable_, marker))
        assert record.status is RunState.FAILED, record
        assert says in (record.error_message or ""), record.error_message
    assert not marker.exists()
    # the package's own function still runs
    workflows.apply(parse(json.dumps(plain("fine", f"{PACKAGE}:passthrough"))), scope)
    assert run("fine", scope).ok


def test_the_cli_run_of_a_stored_imported_name_fails_without_running_it(
    scope: Scope, listed: None, cli_env: dict[str, str], tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    scope.catalog.save(parse(json.dumps(shell("old", f"{PACKAGE}:system", marker))), scope.user)
    env = {**cli_env, "WEFLOW_PYTHON_NODE_MODULES": PACKAGE, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}
    proc = weflow(env, REPO, "run", "old")
    assert proc.returncode == 1 and IMPORTED in proc.stderr and "Traceback" not in proc.stderr, proc
    assert not marker.exists()
