"""Issue 18 item 2: backfills over a workflow's schedule slots, run through the queue by a real weflow worker.

Real parts: the session's Prefect server, `weflow worker` as a process, the deployment entrypoint,
DuckDB catalog files, the API in process (TestClient) and the CLI's own entry point.
"""

from __future__ import annotations

import contextvars
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import eventually, web
from tests.stack import Hot, running_worker, stack_env, stack_scope
from weflow import backfills, config, deploy, execution, parse, workflows
from weflow.api.app import create_app
from weflow.catalog import auth
from weflow.cli import app as cli_app
from weflow.core.entities import Execution, Mode, RunState
from weflow.core.intervals import bind, slots
from weflow.errors import WeflowError
from weflow.workflows import Scope

MODULES = ("tests.resources.pynodes",)

pytestmark = pytest.mark.usefixtures("prefect_api")

# Hourly, but on 29 February only: every slot the tests use is on 2024-02-29 (past, so Prefect runs a scheduled
# slot at once), and the live schedule falls due next on 2028-02-29, never during a run of the suite.
HOURLY = """
name: hourly
status: ACTIVE
schedule: "0 * 29 2 *"
settings: {max_concurrent_runs: 10}
inputs:
  interval_start: {type: string, default: ""}
  interval_end: {type: string, default: ""}
nodes:
  - {name: orders, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: late, type: sql, config: {query: "SELECT * FROM orders WHERE $interval_start >= '2024-02-29T05'"}}
connections:
  - {from: orders, to: late}
"""
NAPS = """
name: naps
status: ACTIVE
schedule: "0 0 29 2 *"
nodes:
  - {name: nap, type: python, config: {callable: "tests.resources.pynodes:slow", kwargs: {seconds: 60}}}
"""
UNSCHEDULED = HOURLY.replace('schedule: "0 * 29 2 *"\n', "").replace("name: hourly", "name: unscheduled")


def _dt(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_slots_are_the_union_of_the_crons_each_ending_at_the_next() -> None:
    found = list(slots(["0 */6 * * *", "30 1 * * *"], _dt("2026-01-01T00:00"), _dt("2026-01-01T12:00")))
    assert [s.start.strftime("%H:%M") for s in found] == ["00:00", "01:30", "06:00"]
    assert [s.end.strftime("%H:%M") for s in found] == ["01:30", "06:00", "12:00"]  # the last ends past the range
    assert found[0].inputs() == {
        "interval_start": "2026-01-01T00:00:00+00:00",
        "interval_end": "2026-01-01T01:30:00+00:00",
    }
    assert bind(["0 * * * *"], ["interval_start"], _dt("2026-01-01T03:00"), {"x": 1}) == {
        "x": 1,
        "interval_start": "2026-01-01T03:00:00+00:00",
    }
    assert bind(["0 * * * *"], [], _dt("2026-01-01T03:00"), None) is None  # not declared: nothing bound


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("backfills")


@pytest.fixture(scope="module")
def env(prefect_api: str, place: Path) -> dict[str, str]:
    # the scheduled run below is found by a poll
    return stack_env(prefect_api, place, MODULES, PREFECT_WORKER_QUERY_SECONDS="1")


@pytest.fixture(scope="module")
def scope(env: dict[str, str], place: Path) -> Iterator[Scope]:
    with stack_scope(place, MODULES) as scope:
        draft = HOURLY.replace("ACTIVE", "DRAFT").replace("name: hourly", "name: dr")
        paused = HOURLY.replace("ACTIVE", "PAUSED").replace("name: hourly", "name: pz")
        for doc in (HOURLY, NAPS, UNSCHEDULED, draft, paused):
            workflows.apply(parse(doc), scope)
        deploy.deploy(scope)
        yield scope


@pytest.fixture(scope="module")
def worker(scope: Scope, env: dict[str, str], place: Path) -> Iterator[Hot]:
    with running_worker(place / "home", env, "--limit", "5") as hot:
        hot.child()  # serving
        yield hot


def runs_of(scope: Scope, workflow: str) -> list[Execution]:
    return [e for e in scope.catalog.executions(scope.user.organization_id, limit=500) if e.workflow == workflow]


def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> tuple[int, str, str]:
    """The console script's entry point in this process: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["weflow", *args])
    with pytest.raises(SystemExit) as ended:
        cli_app.run()
    captured = capsys.readouterr()
    return int(ended.value.code or 0), captured.out, captured.err


def test_a_ten_slot_backfill_twice_makes_no_duplicate_and_binds_each_interval(
    scope: Scope, worker: object, prefect_api: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[dict[str, int]] = []
    first = backfills.create(scope, "hourly", "2024-02-29T00:00", "2024-02-29T10:00", max_parallel=4)
    assert (first.slots, first.skipped, len(first.items)) == (10, 0, 10)
    done = backfills.drive(scope, first.id, lambda b: seen.append(b.counts()), poll=0.2)
    assert done.status == "SUCCEEDED", [(s.status, s.error) for s in done.items]
    assert max(c.get("QUEUED", 0) + c.get("RUNNING", 0) for c in seen) <= 4  # --max-parallel held
    runs = [e for e in runs_of(scope, "hourly") if e.mode is not Mode.CRON]  # not a scheduled run's
    assert len(runs) == 10 and all(e.status is RunState.SUCCEEDED and e.mode is Mode.API for e in runs)
    by_start = {e.input_data["interval_start"]: e for e in runs if e.input_data}
    assert sorted(by_start) == [s.interval_start.isoformat() for s in done.items]
    assert by_start["2024-02-29T03:00:00+00:00"].input_data == {
        "interval_start": "2024-02-29T03:00:00+00:00",
        "interval_end": "2024-02-29T04:00:00+00:00",
    }
    for start, e in by_start.items():  # the node filtered by $interval_start: rows only from 05:00 on
        late = next(n for n in scope.catalog.execution(e.id).nodes if n.node == "late")
        assert (late.rows_out or 0) > 0 if start >= "2024-02-29T05" else late.rows_out == 0, (start, late.rows_out)
    flow_run = web.get(f"{prefect_api}/flow_runs/{runs[0].flow_run_id}").json()
    assert f"backfill:{first.id}" in flow_run["tags"]

    again = backfills.create(scope, "hourly", "2024-02-29T00:00", "2024-02-29T10:00", max_parallel=3)
    assert (again.slots, again.skipped, again.items) == (10, 10, ())
    assert backfills.drive(scope, again.id).status == "SUCCEEDED" and len(runs_of(scope, "hourly")) == 10

    code, out, err = cli(capsys, monkeypatch, "backfill", "hourly", "--start", "2024-02-29T08:00Z",
                         "--end", "2024-02-29T10:00Z", "--rerun", "--max-parallel", "2")  # fmt: skip
    assert code == 0, err
    assert "SUCCEEDED, 2 slots, 0 skipped" in out and "done 2" in err  # the progress line on stderr
    assert len(runs_of(scope, "hourly")) == 12
    code, out, _ = cli(capsys, monkeypatch, "backfills", "hourly")
    assert code == 0 and out.count("hourly") == 3 and "succeeded 8" in out and "succeeded 2" in out
    code, out, _ = cli(capsys, monkeypatch, "backfills", "show", first.id)
    assert code == 0 and out.count("SUCCEEDED") == 9  # 8 slots + the summary: two went to the rerun
    code, out, _ = cli(capsys, monkeypatch, "backfill", "resume", first.id)  # ended: nothing more to do
    assert code == 0 and f"backfill {first.id} of hourly: SUCCEEDED" in out


def test_a_run_the_schedule_starts_gets_its_interval(scope: Scope, worker: object, prefect_api: str) -> None:
    deployment = next(d for d in web.post(f"{prefect_api}/deployments/filter", json={}).json() if d["name"] == "hourly")
    body = {"start_time": "2024-02-29T13:00:00Z", "end_time": "2024-02-29T13:30:00Z", "max_runs": 1}
    url = f"{prefect_api}/deployments/{deployment['id']}/schedule"
    assert eventually(lambda: web.post(url, json=body).status_code < 300, 30)  # SQLite's 503 under load: again
    slot = {"interval_start": "2024-02-29T13:00:00+00:00", "interval_end": "2024-02-29T14:00:00+00:00"}
    # that slot's run, and only once it ended
    found = eventually(lambda: [e for e in runs_of(scope, "hourly") if e.input_data == slot and e.status.final], 90)
    assert isinstance(found, list)
    [run] = found
    assert run.status is RunState.SUCCEEDED and run.mode is Mode.CRON, run.error_message
    again = backfills.create(scope, "hourly", "2024-02-29T13:00", "2024-02-29T14:00")
    assert (again.slots, again.skipped) == (1, 1)  # the scheduled run fills that slot


def test_cancel_ends_the_whole_backfill(scope: Scope, worker: object) -> None:
    started = backfills.create(scope, "naps", "2016-01-01", "2024-03-01", max_parallel=1)  # 3 leap days
    result: list[Any] = []
    here = contextvars.copy_context()  # the test's settings, in the driver's thread too
    driver = threading.Thread(target=here.run, args=(lambda: result.append(backfills.drive(scope, started.id)),))
    driver.start()
    eventually(lambda: backfills.show(scope, started.id).counts().get("RUNNING") == 1, 90)
    time.sleep(0.5)  # the node is asleep in the worker (as in tests/test_hot_worker's cancel)
    cancelled = backfills.cancel(scope, started.id)
    assert cancelled.status == "CANCELLED" and cancelled.counts().get("CANCELLED", 0) >= 2
    driver.join(timeout=30)
    assert result and result[0].status == "CANCELLED"
    [run] = runs_of(scope, "naps")  # the two slots not queued never ran
    assert execution.wait(run.id, scope, timeout=60).status is RunState.CANCELLED
    with pytest.raises(WeflowError, match="already ended CANCELLED"):
        backfills.cancel(scope, started.id)


BAD = [
    (("hourly", "2026-01-02", "2026-01-01"), "--end 2026-01-01T00:00:00+00:00 is not after --start 2026-01-02"),
    (("hourly", "2026-01-01", "2026-01-01"), "is not after"),
    (("hourly", "yesterday", "2026-01-01"), "--start: 'yesterday' is not a timestamp"),
    (("unscheduled", "2026-01-01", "2026-01-02"), "workflow 'unscheduled' has no schedule"),
    (("dr", "2026-01-01", "2026-01-02"), "workflow 'dr' is DRAFT: set 'status: ACTIVE'"),
    (("pz", "2026-01-01", "2026-01-02"), "workflow 'pz' is PAUSED: set 'status: ACTIVE' and apply it"),
    (("nope", "2026-01-01", "2026-01-02"), "no workflow named 'nope'"),
    (("hourly", "1800-01-01", "2026-01-01"), "over 1000 slots of 0 * 29 2 *"),  # 55 leap days of 24 slots
    (("hourly", "2024-02-29T00:10", "2024-02-29T00:20"), "no slot of 0 * 29 2 * in"),
    (("hourly", "9996-02-29T23:00", "9996-02-29T23:59"), "a slot in the range ends past the year 9999"),
]


def test_bad_backfills_are_refused_with_one_line_and_store_nothing(
    scope: Scope, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = backfills.listed(scope)
    for (name, start, end), message in BAD:
        code, _, err = cli(capsys, monkeypatch, "backfill", name, "--start", start, "--end", end)
        assert code == 1 and err.count("\n") == 1 and message in err, (name, start, err)
    with config.using(backfill_max_slots=5):
        with pytest.raises(WeflowError, match="over 5 slots"):
            backfills.create(scope, "hourly", "2024-02-29T00:00", "2024-02-29T06:00")
    code, _, err = cli(capsys, monkeypatch, "backfill", "hourly", "--start", "2026-01-01")
    assert code == 1 and err == "error: backfill hourly: give --start and --end (ISO 8601 timestamps)\n"
    assert [b.id for _, b in backfills.listed(scope)] == [b.id for _, b in before]
    monkeypatch.setenv("WEFLOW_BACKFILL_MAX_SLOTS", "lots")
    with pytest.raises(WeflowError, match="WEFLOW_BACKFILL_MAX_SLOTS='lots': must be a positive whole number"):
        config.Settings.from_env()


def test_the_api_drives_lists_cancels_and_keeps_organizations_apart(scope: Scope, worker: object) -> None:
    catalog = scope.catalog
    mine = auth.create_key(catalog, scope.user)[1]
    theirs = auth.create_key(catalog, catalog.ensure_user("umbrella", "eve"))[1]
    api = TestClient(create_app(catalog.path), headers={"Authorization": f"Bearer {mine}"})
    other = {"Authorization": f"Bearer {theirs}"}
    workflow_id = workflows.get("hourly", scope).id
    route = f"/workflows/{workflow_id}/backfills"
    made = api.post(route, json={"start": "2024-02-29T20:00:00Z", "end": "2024-02-29T22:00:00"})  # naive: UTC
    assert made.status_code == 202, made.text
    backfill_id = made.json()["id"]
    assert made.json()["slots"] == 2 and made.json()["maxParallel"] == 1
    ended = eventually(lambda: api.get(f"/backfills/{backfill_id}").json()["status"] != "RUNNING", 90)
    assert ended
    shown = api.get(f"/backfills/{backfill_id}").json()
    assert shown["status"] == "SUCCEEDED" and [s["status"] for s in shown["items"]] == ["SUCCEEDED"] * 2
    assert backfill_id in [b["id"] for b in api.get("/backfills", params={"workflow": "hourly"}).json()]
    assert api.post(f"/backfills/{backfill_id}/cancel").status_code == 409

    assert api.get(f"/backfills/{backfill_id}", headers=other).status_code == 404
    assert api.post(f"/backfills/{backfill_id}/cancel", headers=other).status_code == 404
    assert api.get("/backfills", headers=other).json() == []
    assert api.post(route, headers=other, json={"start": "2024-02-29", "end": "2024-03-01"}).status_code == 404
    reversed_range = api.post(route, json={"start": "2026-01-03", "end": "2026-01-02"})
    assert reversed_range.status_code == 400 and "is not after" in reversed_range.json()["detail"]
    bad_time = api.post(route, json={"start": "soon", "end": "2026-01-02"})
    assert bad_time.status_code == 422 and bad_time.json()["problems"][0]["path"] == "body.start"
    too_wide = api.post(
        f"/workflows/{workflow_id}/backfills", json={"start": "2026-01-01", "end": "2026-01-03", "maxParallel": 0}
    )
    assert too_wide.status_code == 422
    assert len(api.get("/backfills").json()) == len(backfills.listed(scope))  # the refusals stored nothing
