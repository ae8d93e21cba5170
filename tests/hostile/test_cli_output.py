"""Issue 14, items 7, 9 and two of 11: what the console shows for hostile text and failed runs.

User text (names, descriptions, conditions, paths, error and log lines) prints literally, never as
Rich markup; a failed `weflow run` is one error line and a pointer to `weflow logs`; `--catalog`
in a missing folder is refused. (`HEAD /health` answers like GET: tests/test_api.py, on its `weflow serve`.)

The definitions are applied in this process (a set-up step, `weflow apply` prints no user text):
the commands under test run as real processes.
"""

from __future__ import annotations

import itertools
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, weflow_exe
from weflow import workflows
from weflow.catalog import Catalog
from weflow.workflows import Scope

# Rich reads each as markup: `[/x]` closes no tag (MarkupError, exit 1), `[b]`/`[/b]` vanish as a style,
# `:thumbs_up:` becomes an emoji.
HOSTILE = "Totals [/x] for [b]bold[/b] :thumbs_up:"


def weflow(env: dict[str, str], *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([weflow_exe(), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == code, (proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:])
    return proc


def definition(path: Path, name: str, nodes: list[dict[str, Any]], description: str = HOSTILE) -> Path:
    """A chain of ``nodes`` from the sample orders, as a JSON definition file (JSON is YAML)."""
    chain = [{"name": "orders", "type": "read_csv", "config": {"path": "data/samples/orders.csv"}}, *nodes]
    doc = {
        "name": name,
        "description": description,
        "status": "ACTIVE",
        "nodes": chain,
        "connections": [{"from": a["name"], "to": b["name"]} for a, b in itertools.pairwise(chain)],
    }
    path.write_text(json.dumps(doc))
    return path


def apply(scope: Scope, path: Path, message: str = "") -> None:
    """Stores the definition file as organization acme, user ada (the ``settings`` fixture's, and ``env``'s)."""
    workflows.apply(workflows.parse_file(path), scope, message)


def test_markup_in_definitions_and_admin_names_prints_literally(
    cli_env: dict[str, str], scope: Scope, tmp_path: Path
) -> None:
    env = {**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}
    keep = {"name": "paid", "type": "filter", "config": {"condition": "status != '[/x]'"}}
    apply(scope, definition(tmp_path / "v1.json", "markup", [keep]), "[/x] first [b]cut[/b]")
    second = definition(tmp_path / "v2.json", "markup", [{**keep, "config": {"condition": "status != '[b]'"}}])
    apply(scope, second)

    listed = weflow(env, "list").stdout
    assert HOSTILE in listed
    shown = weflow(env, "show", "markup").stdout
    assert HOSTILE in shown and "status != '[b]'" in shown
    assert "status != '[/x]'" in weflow(env, "show", "markup", "--version", "1").stdout
    assert "[/x] first [b]cut[/b]" in weflow(env, "versions", "markup").stdout
    assert "~ node paid: config.condition" in weflow(env, "diff", "markup", "1", "2").stdout

    added = weflow(env, "users", "add", "[/x]org", "[b]eve").stdout
    assert added.startswith("user [b]eve (id ") and added.rstrip().endswith("in organization [/x]org")
    created = weflow(env, "keys", "create", "[/x]org", "[b]eve")
    assert "for [/x]org/[b]eve" in created.stderr
    users = weflow(env, "users", "list").stdout
    assert "[/x]org" in users and "[b]eve" in users
    assert "[/x]org" in weflow(env, "keys", "list").stdout


@pytest.fixture
def run_env(prefect_api: str, cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "PREFECT_API_URL": prefect_api, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}


def test_failed_run_is_one_line_and_its_text_prints_literally(
    run_env: dict[str, str], scope: Scope, tmp_path: Path
) -> None:
    marker = tmp_path / "[b]" / "[" / "x]"  # `[b]` in a path, and a `[/x]` that Rich cannot parse
    marker.parent.mkdir(parents=True)
    marker.write_text("fail")
    call = {"callable": "tests.resources.pynodes:fail_if_exists", "kwargs": {"marker": str(marker)}}
    boom = {"name": "boom", "type": "python", "config": call}
    apply(scope, definition(tmp_path / "boom.json", "boom", [boom]))

    proc = weflow(run_env, "run", "boom", code=1)
    cause = f"failing on purpose while {marker} exists"
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr
    assert lines[0] == f"error: run of boom FAILED: node 'boom': RuntimeError: {cause}"
    assert lines[1].startswith("details: weflow logs ")
    assert "Traceback" not in proc.stderr and "Finished in state" not in proc.stderr
    assert cause in proc.stdout and "FAILED" in proc.stdout  # the summary, literal
    execution_id = lines[1].removeprefix("details: weflow logs ")

    assert cause in weflow(run_env, "execution", execution_id).stdout
    assert str(marker) in weflow(run_env, "executions", "boom").stdout  # a table cell wraps at spaces
    logged = weflow(run_env, "logs", execution_id).stdout
    assert cause in logged  # the node's error still reached Prefect's API handler
    assert "Traceback" in weflow(run_env, "logs", execution_id, "-f", "json").stdout

    resumed = weflow(run_env, "resume", execution_id, code=1).stderr.splitlines()
    assert len(resumed) == 2 and resumed[0] == lines[0] and resumed[1] != lines[1], resumed

    verbose = weflow(run_env, "--verbose", "run", "boom", code=1)
    assert "Traceback" in verbose.stderr and cause in verbose.stderr
    said = verbose.stderr.splitlines()
    # the same two lines, literal, after the traceback (a log line of a background thread may still follow them)
    assert lines[0] in said and said[said.index(lines[0]) + 1].startswith("details: weflow logs "), said[-8:]


def test_failing_condition_with_markup_shows_in_every_command(
    run_env: dict[str, str], scope: Scope, tmp_path: Path
) -> None:
    odd = {"name": "odd", "type": "filter", "config": {"condition": "amount > '[/x]'"}}
    apply(scope, definition(tmp_path / "odd.json", "odd", [odd]))

    proc = weflow(run_env, "run", "odd", code=1)
    lines = proc.stderr.splitlines()
    assert len(lines) == 2, proc.stderr  # Polars' message has 4 lines: the first one, and " ..."
    cause = "ComputeError: cannot compare string with numeric type (f64)"
    assert lines[0] == f"error: run of odd FAILED: node 'odd': {cause} ..."
    assert "Traceback" not in proc.stderr
    shown = '[(col("amount")) > ("[/x]")]'  # Polars quotes the condition on the message's last line
    assert shown in proc.stdout
    execution_id = lines[1].removeprefix("details: weflow logs ")
    for args in (("execution", execution_id), ("executions", "odd"), ("logs", execution_id)):
        assert shown in weflow(run_env, *args).stdout, args


def test_catalog_in_a_missing_folder_is_refused(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "weflow.duckdb"
    sample = str(REPO / "data/workflows/daily_sales.yaml")
    for args in (("list",), ("apply", sample), ("users", "list"), ("serve", "--port", "1")):
        proc = weflow(cli_env, "--catalog", str(missing), *args, code=2)
        assert proc.stderr == (
            f"error: --catalog {missing}: folder {missing.parent} does not exist (add --create-catalog to create it)\n"
        )
        assert not missing.parent.exists()

    weflow(cli_env, "--catalog", str(missing), "--create-catalog", "apply", sample)
    assert missing.is_file()
    with Catalog(missing).transaction() as con:  # the new catalog holds what was applied
        assert con.execute("SELECT name FROM workflows").fetchall() == [("daily_sales",)]
