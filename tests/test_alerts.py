"""Alert rules against a real local HTTP receiver: each fires once per triggering execution, never for healthy ones.

Real parts: a ``http.server`` on 127.0.0.1 recording every POST, the session's Prefect server for
the runs, a DuckDB catalog file; history for the relative rules is recorded as the engine records it.
"""

from __future__ import annotations

import json
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from weflow import execution, monitor, parse, workflows
from weflow.core.entities import Execution, Mode, NodeExecution, RunState
from weflow.errors import DefinitionError
from weflow.workflows import Scope

from .conftest import weflow_exe

pytestmark = pytest.mark.usefixtures("prefect_api")


@pytest.fixture(autouse=True)
def loopback_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver listens on 127.0.0.1, which webhooks reach only when the operator allows it."""
    monkeypatch.setenv("WEFLOW_OUTBOUND_ALLOW", "127.0.0.1/32")  # autouse: set before `settings` reads it


class Receiver:
    """A webhook receiver: records JSON bodies; answers ``fail_next`` requests with ``fail_status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.fail_next = 0
        self.fail_status = 500
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.fail_next:
                    receiver.fail_next -= 1
                    self.send_response(receiver.fail_status)
                else:
                    receiver.bodies.append(body)
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def alerts(self, name: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["alert"] == name]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


def flow(name: str, url: str, alerts: str, condition: str = "status = 'paid'", nap: float = 0.0) -> str:
    return f"""
name: {name}
schedule: "0 6 * * *"
alerts:
{alerts.replace("URL", url)}
nodes:
  - {{name: orders, type: read_csv, config: {{path: data/samples/orders.csv}}}}
  - {{name: paid, type: filter, config: {{condition: "{condition}"}}}}
  - name: nap
    type: python
    config: {{callable: "tests.resources.pynodes:fail_if_exists", kwargs: {{marker: "MARKER"}}}}
  - {{name: slow, type: python, config: {{callable: "tests.resources.pynodes:whoami", kwargs: {{seconds: {nap}}}}}}}
connections:
  - {{from: orders, to: paid}}
  - {{from: paid, to: nap}}
  - {{from: nap, to: slow}}
"""


def test_failure_alert_fires_once_per_failed_execution(scope: Scope, receiver: Receiver, tmp_path) -> None:
    marker = tmp_path / "fault"
    text = flow("alerted", receiver.url, "  - {name: broken, on: failure, webhook: URL}")
    text = text.replace("MARKER", str(marker))
    workflows.apply(parse(text), scope)
    assert execution.run("alerted", scope).ok
    assert receiver.bodies == []  # healthy: nothing sent

    marker.write_text("on")
    failed = execution.run("alerted", scope).execution
    [body] = receiver.alerts("broken")
    assert body["execution_id"] == failed.id and body["status"] == "FAILED" and body["kind"] == "failure"
    assert "nap" in body["message"] and body["workflow"] == "alerted"
    definition = parse(text)
    assert monitor.alert(scope.catalog.execution(failed.id), definition, scope) == []  # evaluated again: no duplicate
    assert len(receiver.alerts("broken")) == 1
    [delivery] = scope.catalog.alert_deliveries(subject=failed.id)
    assert (delivery.status, delivery.attempts, delivery.last_error) == ("DELIVERED", 1, None)

    second = execution.run("alerted", scope).execution
    assert [b["execution_id"] for b in receiver.alerts("broken")] == [failed.id, second.id]


def test_duration_and_row_bound_alerts(scope: Scope, receiver: Receiver, tmp_path) -> None:
    rules = (
        "  - {name: too_slow, on: duration, max_seconds: 0.3, webhook: URL}\n"
        "  - {name: too_few, on: rows, node: paid, min_rows: 1000, webhook: URL}"
    )
    text = flow("bounded", receiver.url, rules, nap=0.6).replace("MARKER", str(tmp_path / "none"))  # > 2 x 0.3 s
    workflows.apply(parse(text), scope)
    slow = execution.run("bounded", scope).execution
    assert slow.status is RunState.SUCCEEDED
    assert [b["execution_id"] for b in receiver.alerts("too_slow")] == [slow.id]
    assert receiver.alerts("too_slow")[0]["seconds"] > 0.3
    [rows] = receiver.alerts("too_few")
    assert rows["rows"] == {n.node: n for n in slow.nodes}["paid"].rows_out < 1000

    healthy = text.replace("max_seconds: 0.3", "max_seconds: 120").replace("min_rows: 1000", "min_rows: 1")
    workflows.apply(parse(healthy), scope)
    fine = execution.run("bounded", scope).execution
    assert fine.status is RunState.SUCCEEDED
    assert all(b["execution_id"] != fine.id for b in receiver.bodies)


def remember(scope: Scope, wf_id: int, name: str, ms: float, rows: int, when: datetime) -> None:
    """A successful past run, recorded the way the engine records one."""
    eid = str(uuid.uuid4())
    queued = Execution(eid, wf_id, name, 1, Mode.CRON, scope.user.id, RunState.QUEUED, created_at=when)
    scope.catalog.insert_execution(queued)
    final = Execution(
        eid, wf_id, name, 1, Mode.CRON, scope.user.id, RunState.SUCCEEDED, started_at=when,
        finished_at=when + timedelta(milliseconds=ms), duration_ms=ms,
    )  # fmt: skip
    scope.catalog.finish_execution(final, [NodeExecution(eid, "paid", RunState.SUCCEEDED, 1, None, rows)])


def test_anomaly_alerts_compare_with_recent_runs(scope: Scope, receiver: Receiver, tmp_path) -> None:
    rules = (
        "  - {name: slower, on: duration, p95_factor: 3, min_history: 5, webhook: URL}\n"
        "  - {name: odd_rows, on: rows, node: paid, median_factor: 2, min_history: 5, webhook: URL}"
    )
    # the nap alone is over the p95 of the history (~115 ms) times 3, the steady history (1.5 s) times 3 far over it
    text = flow("anomalous", receiver.url, rules, nap=0.5).replace("MARKER", str(tmp_path / "none"))
    wf = workflows.apply(parse(text), scope).workflow
    now = datetime.now(UTC)
    for i in range(6):  # fast runs of about 100 ms that kept 1,000 paid rows
        remember(scope, wf.id, "anomalous", 90.0 + i * 5, 1000, now - timedelta(hours=i + 1))
    result = execution.run("anomalous", scope).execution  # takes over half a second; far fewer paid rows
    paid = {n.node: n for n in result.nodes}["paid"].rows_out
    assert paid is not None and paid * 2 < 1000
    [slower] = receiver.alerts("slower")
    assert slower["execution_id"] == result.id and slower["p95"] < 0.2
    [odd] = receiver.alerts("odd_rows")
    assert odd["median"] == 1000 and odd["rows"] == paid

    receiver.bodies.clear()
    wf2 = workflows.apply(parse(text.replace("name: anomalous", "name: steady")), scope).workflow
    for i in range(6):
        remember(scope, wf2.id, "steady", 1500.0, paid, now - timedelta(hours=i + 1))
    assert execution.run("steady", scope).execution.status is RunState.SUCCEEDED
    assert receiver.bodies == []  # in line with its history


def test_missed_schedule_alert_once_per_slot(scope: Scope, receiver: Receiver, tmp_path, cli_env) -> None:
    rules = "  - {name: missed, on: missed_schedule, grace_seconds: 60, webhook: URL}"
    text = flow("punctual", receiver.url, rules).replace("MARKER", str(tmp_path / "none"))
    text = text.replace('"0 6 * * *"', '"*/5 * * * *"').replace("name: punctual", "name: punctual\nstatus: ACTIVE")
    workflows.apply(parse(text), scope)
    later = datetime.now(UTC) + timedelta(minutes=12)  # two slots have passed by then, none had a run
    sent = monitor.missed_schedules(scope, now=later)
    assert [d.rule for d in sent] == ["missed"]
    assert receiver.alerts("missed")[0]["subject"].startswith("missed:punctual:")
    assert monitor.missed_schedules(scope, now=later) == []  # same slot: not again
    assert monitor.missed_schedules(scope) == []  # now: no slot has passed since it was saved
    listed = subprocess.run(
        [weflow_exe(), "alerts", "list", "punctual", "--format", "json"], capture_output=True, text=True,
        env={**cli_env, "WEFLOW_ORG": "acme", "WEFLOW_USER": "ada"}, check=True,
    )  # fmt: skip
    assert [d["status"] for d in json.loads(listed.stdout)] == ["DELIVERED"]


def test_delivery_is_retried_and_failures_recorded(
    scope: Scope, receiver: Receiver, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitor, "BACKOFF_SECONDS", 0.05)  # the retries, not their pauses (1.5 s a delivery)
    marker = tmp_path / "fault"
    marker.write_text("on")
    text = flow("retried", receiver.url, "  - {name: broken, on: failure, webhook: URL}")
    text = text.replace("MARKER", str(marker))
    workflows.apply(parse(text), scope)
    receiver.fail_next = 2  # two 500s, then accepted
    first = execution.run("retried", scope).execution
    [delivery] = scope.catalog.alert_deliveries(subject=first.id)
    assert (delivery.status, delivery.attempts) == ("DELIVERED", 3)
    assert len(receiver.alerts("broken")) == 1

    receiver.fail_next, receiver.fail_status = 100, 503  # the receiver stays down
    second = execution.run("retried", scope).execution
    assert second.status is RunState.FAILED  # the run's own outcome, untouched by the alert
    [failed] = scope.catalog.alert_deliveries(subject=second.id)
    assert (failed.status, failed.attempts) == ("FAILED", monitor.RETRIES) and "HTTP 503" in (failed.last_error or "")


@pytest.mark.parametrize(
    ("rule", "where", "what"),
    [
        ("{name: a, on: duration, webhook: URL}", "alerts[0]", "needs max_seconds or p95_factor"),
        ("{name: a, on: rows, node: ghost, min_rows: 1, webhook: URL}", "alerts[0].node", "unknown node 'ghost'"),
        ("{name: a, on: failure, webhook: 'file:///etc/passwd'}", "alerts[0].webhook", "should match pattern"),
        ("{name: a, on: fire, webhook: URL}", "alerts[0].on", "failure"),
    ],
)
def test_bad_alert_rules_are_refused_with_their_path(scope: Scope, rule: str, where: str, what: str) -> None:
    text = flow("bad_alerts", "http://127.0.0.1:9/x", f"  - {rule}")
    with pytest.raises(DefinitionError) as info:
        workflows.apply(parse(text), scope)
    assert where in str(info.value) and what in str(info.value)
    assert "bad_alerts" not in {w.name for w in workflows.list_workflows(scope)}  # nothing half-written
