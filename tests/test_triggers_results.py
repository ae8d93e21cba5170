"""Issue 18 items 1 and 4: event triggers (``after``, ``file``) and a run's result in the Prefect UI.

Real parts: the session's Prefect server (its triggers and actions services run the automations),
`weflow worker` as a process, the deployment entrypoint, DuckDB catalog files, headless Chromium.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.conftest import eventually, render, web
from tests.stack import Hot, running_worker, stack_env, stack_scope
from weflow import deploy, execution, file_triggers, parse, workflows
from weflow.cli import app as cli_app
from weflow.core.entities import Execution, Mode, RunState
from weflow.engine import results
from weflow.errors import DefinitionError
from weflow.execution import resolve_inputs
from weflow.workflows import Scope

MODULES = ("tests.resources.pynodes",)
pytestmark = pytest.mark.usefixtures("prefect_api")

SOURCE = "nodes:\n  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}\n"
UP = 'inputs:\n  up: {type: string, default: ""}\n  st: {type: string, default: ""}\n'
CHOICE = "  region: {type: string, default: eu, description: sales region, allowed: [eu, us]}\n"
FIRST = "name: t_first\nstatus: ACTIVE\nsettings: {result_preview: 3}\ninputs:\n" + CHOICE + SOURCE
SECOND = (
    "name: t_second\nstatus: ACTIVE\nsettings: {result_preview: false}\n" + UP
    + "triggers:\n  - after: {workflow: t_first, status: succeeded, inputs: {up: execution_id, st: status}}\n"
    + SOURCE
)  # fmt: skip
THIRD = (
    "name: t_third\nstatus: ACTIVE\n" + UP
    + "triggers:\n  - after: {workflow: t_second, status: any, inputs: {up: execution_id, st: inputs.st}}\n" + SOURCE
)  # fmt: skip
DRAFT = SECOND.replace("t_second", "t_draft").replace("ACTIVE", "DRAFT")
PAUSED = SECOND.replace("t_second", "t_paused").replace("ACTIVE", "PAUSED")
FILES = (
    'name: t_files\nstatus: ACTIVE\ninputs:\n  path: {type: string, default: ""}\n'
    'triggers:\n  - file: {glob: "*.csv", root: incoming, input: path}\n'
    "nodes:\n  - {name: landed, type: read_csv, config: {path: $path}}\n"  # the new file itself
)


def _doc(text: str) -> Any:
    return parse(text)


def test_after_triggers_in_a_circle_are_refused_at_apply_naming_it(scope: Scope) -> None:
    ring = {n: f"name: {n}\ntriggers:\n  - after: {{workflow: {u}}}\n" + SOURCE for n, u in
            [("ra", "rc"), ("rb", "ra"), ("rc", "rb")]}  # fmt: skip
    workflows.apply(_doc(ring["ra"]), scope)
    workflows.apply(_doc(ring["rb"]), scope)
    with pytest.raises(DefinitionError) as refused:
        workflows.apply(_doc(ring["rc"]), scope)
    assert str(refused.value).endswith("triggers[0].after.workflow: trigger cycle: rc after rb after ra after rc")
    assert [w.name for w in workflows.list_workflows(scope)] == ["ra", "rb"]  # nothing stored
    with pytest.raises(DefinitionError, match="trigger cycle: ra after rb after ra"):
        workflows.apply(_doc(ring["ra"].replace("workflow: rc", "workflow: rb")), scope)
    assert workflows.version("ra", scope).number == 1


def test_the_run_form_shows_descriptions_defaults_and_allowed_values(scope: Scope) -> None:
    form = deploy.parameter_schema(_doc(FIRST))["properties"]["input_data"]
    assert form["properties"]["region"] == {
        "type": "string", "title": "region", "description": "sales region", "default": "eu", "enum": ["eu", "us"],
    }  # fmt: skip
    with pytest.raises(
        DefinitionError, match=r"input_data\.region: 'asia' is not one of the allowed values \['eu', 'us'\]"
    ):
        resolve_inputs(_doc(FIRST), {"region": "asia"})  # what the API, the CLI and a deployment's run get
    assert resolve_inputs(_doc(FIRST), {"region": "us"})["region"] == "us"


def test_result_rows_are_bounded_and_their_markdown_escaped() -> None:
    hostile = pl.DataFrame({"a|b": ["<script>x</script>", "[x](javascript:alert(1))", "two\nlines", "z" * 200]})
    table = results.rows_table(hostile, 3)
    assert table.splitlines()[:2] == ["| a\\|b |", "|---|"]
    assert "\\<script\\>x\\</script\\>" in table and "\\[x\\](javascript:alert(1))" in table
    assert "two lines" in table and "zzz" not in table.splitlines()[-1][:3] and len(table.splitlines()) == 5


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("triggers")


@pytest.fixture(scope="module")
def stack(prefect_api: str, place: Path) -> Iterator[tuple[Scope, Hot]]:
    # runs the automations create are found by a poll (weflow wakes its worker only for runs it creates)
    env = stack_env(
        prefect_api, place, MODULES, WEFLOW_UI_URL="http://weflow.example:8000", PREFECT_WORKER_QUERY_SECONDS="1"
    )
    with stack_scope(place, MODULES) as scope:
        for text in (FIRST, SECOND, THIRD, DRAFT, PAUSED, FILES):
            workflows.apply(_doc(text), scope)
        deploy.deploy(scope)
        with running_worker(place / "home", env, "--limit", "4") as hot:
            hot.child()
            yield scope, hot


def runs_of(scope: Scope, workflow: str) -> list[Execution]:
    return [e for e in scope.catalog.executions(scope.user.organization_id, limit=200) if e.workflow == workflow]


def ended(scope: Scope, workflow: str, count: int = 1) -> list[Execution]:
    found = eventually(lambda: (r := [e for e in runs_of(scope, workflow) if e.status.final]) and len(r) >= count and r)
    assert isinstance(found, list)
    return found


def _prefect(prefect_api: str, path: str, body: Any) -> Any:
    """POST to Prefect's API; SQLite's 503 under load is asked again."""
    response = eventually(lambda: (r := web.post(f"{prefect_api}{path}", json=body)).status_code < 500 and r, 30)
    assert response.status_code < 300, response.text  # type: ignore[union-attr]
    return response.json() if response.content else None  # type: ignore[union-attr]


def test_a_chain_of_three_runs_each_once_and_shows_its_result_in_prefect(
    stack: tuple[Scope, Hot], prefect_api: str, tmp_path: Path
) -> None:
    scope, _ = stack
    assert ("t_draft", "DRAFT: set status ACTIVE (or PAUSED) to deploy it") in deploy.skipped(scope)
    foreign = {"prefect.resource.id": "weflow.execution.x", "weflow.workflow": "t_first", "weflow.organization": "evil"}
    event = {"id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": "weflow.execution.succeeded"}
    _prefect(prefect_api, "/events", [{**event, "resource": foreign}])  # another organization's t_first: no run here
    first = execution.submit("t_first", scope, Mode.API, queue=True)
    [third] = ended(scope, "t_third")
    [second] = ended(scope, "t_second")
    [done] = ended(scope, "t_first")
    assert done.id == first.id and done.status is RunState.SUCCEEDED
    assert second.status is RunState.SUCCEEDED and second.input_data == {"up": first.id, "st": "SUCCEEDED"}
    assert third.status is RunState.SUCCEEDED and third.input_data == {"up": second.id, "st": "SUCCEEDED"}
    assert (first.mode, second.mode, third.mode) == (Mode.API, Mode.TRIGGER, Mode.TRIGGER)  # started by automations
    assert runs_of(scope, "t_draft") == [] and runs_of(scope, "t_paused") == []  # not deployed; disabled

    # the result artifact on t_first's flow run, read back through Prefect's API
    flow_run = {"flow_run_id": {"any_": [done.flow_run_id]}}
    [artifact] = _prefect(prefect_api, "/artifacts/filter", {"artifacts": flow_run})
    text = artifact["data"]
    assert artifact["key"] == "result-t-first" and artifact["type"] == "markdown"
    assert f"[Execution {first.id} in the weflow UI](http://weflow.example:8000/ui/executions/{first.id})" in text
    rows = done.output["orders"]["rows"] if done.output else None
    assert f"## orders: {rows} rows (SUCCEEDED)" in text
    assert text.count("\n| ") == 1 + 3  # the header and result_preview: 3 rows
    assert "| order\\_id | customer\\_id |" in text  # a cell's Markdown is escaped
    of_second = {"flow_run_id": {"any_": [second.flow_run_id]}}
    assert _prefect(prefect_api, "/artifacts/filter", {"artifacts": of_second}) == []  # result_preview: false

    # the deployment's run form lists the input's allowed values; the UI shows the artifact's Markdown
    [deployed] = [d for d in _prefect(prefect_api, "/deployments/filter", {}) if d["name"] == "t_first"]
    form = deployed["parameter_openapi_schema"]["properties"]["input_data"]["properties"]
    assert form["region"]["enum"] == ["eu", "us"]
    ui = prefect_api.removesuffix("/api")
    assert eventually(lambda: "in the weflow UI" in render(f"{ui}/artifacts/artifact/{artifact['id']}", tmp_path), 60)


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str]:
    """The console script's entry point in this process: (exit code, stdout)."""
    monkeypatch.setattr(sys, "argv", ["weflow", *args])
    with pytest.raises(SystemExit) as ended_cli:
        cli_app.run()
    return int(ended_cli.value.code or 0), capsys.readouterr().out


def test_weflow_deploy_says_which_workflows_it_skipped_and_why(
    stack: tuple[Scope, Hot], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = cli(capsys, monkeypatch, "deploy")
    assert code == 0 and "skipped t_draft: DRAFT: set status ACTIVE (or PAUSED) to deploy it" in out
    assert "t_first" in out and "unchanged" in out


def test_a_file_dropped_into_a_watched_folder_runs_once(
    stack: tuple[Scope, Hot], place: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    scope, _ = stack
    incoming = place / "incoming"
    incoming.mkdir()
    (incoming / "old.csv").write_text("a\n1\n")
    assert file_triggers.scan(scope) == []  # the first look records what is there
    (incoming / "new.csv").write_text("a\n2\n")
    (incoming / "skip.txt").write_text("not a csv")
    code, out = cli(capsys, monkeypatch, "watch-files", "--once")
    assert code == 0 and out == "t_files: new file incoming/new.csv\n"
    assert file_triggers.scan(scope) == []  # seen: kept in the runs folder, so a restart does not see it again
    [run] = ended(scope, "t_files")
    assert run.status is RunState.SUCCEEDED and run.input_data == {"path": "incoming/new.csv"}
    assert [(n.node, n.rows_out) for n in execution.current(run.id, scope).nodes] == [("landed", 1)]


def test_a_path_input_is_declared_a_string_and_read_under_the_data_roots(scope: Scope, tmp_path: Path) -> None:
    (tmp_path / "landed.csv").write_text("a\n1\n2\n")
    text = (
        "name: by_path\ninputs:\n  path: {type: string}\nnodes:\n  - {name: f, type: read_csv, config: {path: $path}}"
    )
    workflows.apply(_doc(text), scope)
    done = execution.run("by_path", scope, input_data={"path": str(tmp_path / "landed.csv")})
    assert done.ok and done.execution.nodes[0].rows_out == 2
    outside = execution.run("by_path", scope, input_data={"path": "/etc/passwd"})  # the value is checked as any path
    assert not outside.ok and "outside the data roots" in (outside.execution.error_message or "")
    for bad, says in (
        (text.replace("$path", "$nope"), "nodes[0].config.path: $nope: not an input of the workflow"),
        (text.replace("{type: string}", "{type: integer}"), "nodes[0].config.path: $path: a integer input"),
    ):
        with pytest.raises(DefinitionError, match=re.escape(says)):
            workflows.apply(_doc(bad.replace("by_path", "by_bad")), scope)
    assert [w.name for w in workflows.list_workflows(scope)] == ["by_path"]


def test_a_process_pointed_at_its_server_after_importing_prefect_starts_no_temporary_server(prefect_api: str) -> None:
    """weflow sets PREFECT_API_URL when it finds its server, often after Prefect was imported: Prefect's events
    worker (the end-of-run event) used to start a temporary server of its own in such a process."""
    code = (
        "import sys, prefect; from prefect.events import emit_event; from prefect.events.worker import EventsWorker;"
        "from prefect.settings import get_current_settings; from weflow.prefect_gateway import server;"
        "server.use_api(sys.argv[1]); assert get_current_settings().api.url == sys.argv[1];"
        "emit_event('weflow.test.pointed', resource={'prefect.resource.id': 'weflow.test'}); EventsWorker.drain_all()"
    )
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    done = subprocess.run([sys.executable, "-c", code, prefect_api], env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "temporary server" not in done.stdout + done.stderr, done.stderr[-2000:]
