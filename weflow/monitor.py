"""Alerts: a workflow's rules checked against each ended execution (and its schedule), sent as webhooks.

Every alert is first claimed in the catalog under (subject, rule) — the subject is the execution
id, or ``missed:<workflow>:<slot>`` for a missed schedule — so a rule fires at most once per
subject however often it is evaluated (the run itself, ``weflow sync``, a second checker). The
POST is retried with backoff on connection errors, 429 and 5xx; the outcome (DELIVERED or
FAILED, attempts, last error) stays in ``alert_deliveries``. A delivery problem never fails a run.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cronsim import CronSim

from weflow import outbound, secrets
from weflow.core.entities import AlertDelivery, Execution, RunState, Status
from weflow.core.model import AlertRule, Definition
from weflow.core.secret_ref import SecretRef
from weflow.errors import OutboundError, OutboundRefused, SecretError
from weflow.workflows import Scope, get, list_workflows, version

log = logging.getLogger("weflow.alerts")
RETRIES = 3
BACKOFF_SECONDS = 0.5
TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Finding:
    rule: AlertRule
    subject: str
    message: str
    facts: dict[str, Any]


def _recent(scope: Scope, execution: Execution, rule: AlertRule) -> list[Execution]:
    """The last ``rule.history`` successful runs of the workflow before ``execution``."""
    found = scope.catalog.executions(scope.user.organization_id, execution.workflow_id, limit=rule.history * 3 + 10)
    ok = [e for e in found if e.id != execution.id and e.status is RunState.SUCCEEDED]
    return ok[: rule.history]


def _rows_of(scope: Scope, execution_id: str, node: str) -> int | None:
    for n in scope.catalog.execution(execution_id).nodes:
        if n.node == node:
            return n.rows_out
    return None


def findings(execution: Execution, definition: Definition, scope: Scope) -> list[Finding]:
    """The rules of ``definition`` that ``execution`` (ended) triggers, each with a human message."""
    found: list[Finding] = []
    name = execution.workflow
    for rule in definition.alerts:
        if rule.on == "failure" and execution.status in (RunState.FAILED, RunState.TIMED_OUT):
            where = f" at node {execution.error_node!r}" if execution.error_node else ""
            message = f"{name}: execution {execution.status.value}{where}: {execution.error_message or ''}".strip()
            found.append(Finding(rule, execution.id, message, {"error_type": execution.error_type}))
        elif rule.on == "duration" and execution.status is RunState.SUCCEEDED and execution.duration_ms is not None:
            seconds = execution.duration_ms / 1000
            if rule.max_seconds is not None and seconds > rule.max_seconds:
                message = f"{name}: took {seconds:.1f} s, over the limit of {rule.max_seconds:g} s"
                found.append(Finding(rule, execution.id, message, {"seconds": seconds, "limit": rule.max_seconds}))
                continue
            if rule.p95_factor is not None:
                past = [e.duration_ms / 1000 for e in _recent(scope, execution, rule) if e.duration_ms is not None]
                if len(past) >= rule.min_history:
                    p95 = statistics.quantiles(past, n=20, method="inclusive")[18] if len(past) > 1 else past[0]
                    if seconds > rule.p95_factor * p95:
                        message = (
                            f"{name}: took {seconds:.1f} s, over {rule.p95_factor:g} x the p95 of its last "
                            f"{len(past)} runs ({p95:.1f} s)"
                        )
                        found.append(Finding(rule, execution.id, message, {"seconds": seconds, "p95": p95}))
        elif rule.on == "rows" and execution.status is RunState.SUCCEEDED and rule.node is not None:
            rows = _rows_of(scope, execution.id, rule.node)
            if rows is None:
                continue
            low, high = rule.min_rows, rule.max_rows
            if (low is not None and rows < low) or (high is not None and rows > high):
                bounds = f"{low if low is not None else '-'}..{high if high is not None else '-'}"
                message = f"{name}: node {rule.node!r} gave {rows} rows, outside {bounds}"
                found.append(Finding(rule, execution.id, message, {"rows": rows, "min": low, "max": high}))
                continue
            if rule.median_factor is not None:
                past_rows = [_rows_of(scope, e.id, rule.node) for e in _recent(scope, execution, rule)]
                counts = [r for r in past_rows if r is not None]
                if len(counts) >= rule.min_history:
                    median = statistics.median(counts)
                    if rows > rule.median_factor * median or rows * rule.median_factor < median:
                        message = (
                            f"{name}: node {rule.node!r} gave {rows} rows, far from the median of its last "
                            f"{len(counts)} runs ({median:g}; factor {rule.median_factor:g})"
                        )
                        found.append(Finding(rule, execution.id, message, {"rows": rows, "median": median}))
    return found


def _payload(finding: Finding, workflow: str, execution: Execution | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "alert": finding.rule.name,
        "kind": finding.rule.on,
        "workflow": workflow,
        "subject": finding.subject,
        "message": finding.message,
        "at": datetime.now(UTC).isoformat(),
        **finding.facts,
    }
    if execution is not None:
        body |= {
            "execution_id": execution.id,
            "version": execution.version,
            "status": execution.status.value,
            "duration_ms": execution.duration_ms,
            "flow_run_id": execution.flow_run_id,
        }
    return body


def post(url: str, payload: dict[str, Any], shown: str | None = None) -> tuple[bool, int, str | None]:
    """POST ``payload``; retry connection errors, 429 and 5xx with backoff. (ok, attempts, last error).

    The URL goes through ``weflow.outbound``: a host the operator does not allow is refused at once.
    ``shown``: what errors call the URL (a secret's reference when a secret holds it).
    """
    error: str | None = None
    for attempt in range(1, RETRIES + 1):
        try:
            status = outbound.post_json(url, payload, TIMEOUT_SECONDS, shown=shown)
        except OutboundRefused as exc:
            return False, attempt, str(exc)  # asking again will not change the answer
        except OutboundError as exc:
            error = str(exc)
        else:
            if 200 <= status < 300:
                return True, attempt, None
            error = f"HTTP {status} from {shown or outbound.redact(url)}"
            if status != 429 and status < 500:
                return False, attempt, error  # the receiver refuses it: asking again will not help
        if attempt < RETRIES:
            time.sleep(BACKOFF_SECONDS * 2 ** (attempt - 1))
    return False, RETRIES, error


def _deliver(scope: Scope, webhook: str | SecretRef, payload: dict[str, Any]) -> tuple[bool, int, str | None]:
    """``post`` to the webhook, or to the URL its secret holds (read now; scrubbed from the error)."""
    if isinstance(webhook, str):
        return post(webhook, payload)
    try:
        url, used = secrets.resolve(secrets.organization(scope), webhook)
    except SecretError as exc:
        return False, 1, str(exc)
    ok, attempts, error = post(url, payload, shown=str(webhook))
    return ok, attempts, None if error is None else secrets.scrub(error, used)


def send(
    scope: Scope, workflow_id: int, workflow: str, finding: Finding, execution: Execution | None
) -> AlertDelivery | None:
    """Claim, deliver and record one alert; None when this rule already fired for this subject."""
    payload = _payload(finding, workflow, execution)
    target = str(finding.rule.webhook)  # a secret's reference, never its value
    claim = AlertDelivery(
        workflow_id, finding.subject, finding.rule.name, finding.rule.on, target, "PENDING", 0, payload
    )
    if not scope.catalog.claim_alert(claim):
        return None
    ok, attempts, error = _deliver(scope, finding.rule.webhook, payload)
    status = "DELIVERED" if ok else "FAILED"
    delivered = datetime.now(UTC) if ok else None
    scope.catalog.update_alert(
        finding.subject, finding.rule.name, status=status, attempts=attempts, last_error=error, delivered_at=delivered
    )
    if not ok:
        log.warning(
            "alert %s for %s not delivered after %d attempt(s): %s", finding.rule.name, workflow, attempts, error
        )
    return AlertDelivery(
        workflow_id, finding.subject, finding.rule.name, finding.rule.on, target, status, attempts,
        payload, error, None, delivered,
    )  # fmt: skip


def alert(execution: Execution, definition: Definition, scope: Scope) -> list[AlertDelivery]:
    """Check an ended execution against its workflow's rules and send what fires (once each)."""
    if not definition.alerts or not execution.status.final:
        return []
    sent = []
    for finding in findings(execution, definition, scope):
        try:
            delivery = send(scope, execution.workflow_id, execution.workflow, finding, execution)
        except Exception:  # an alert must never fail or hide the run it is about
            log.exception("alert %s for execution %s could not be processed", finding.rule.name, execution.id)
            continue
        if delivery is not None:
            sent.append(delivery)
    return sent


def missed_schedules(scope: Scope, now: datetime | None = None) -> list[AlertDelivery]:
    """Alert on cron slots of ACTIVE workflows that passed their grace time with no run started."""
    now = now or datetime.now(UTC)
    sent = []
    for wf in list_workflows(scope):
        if wf.status is not Status.ACTIVE:
            continue
        definition = version(wf.name, scope).definition
        rules = [r for r in definition.alerts if r.on == "missed_schedule"]
        if not rules:
            continue
        runs = scope.catalog.executions(scope.user.organization_id, wf.id, limit=500)
        for rule in rules:
            deadline = now - timedelta(seconds=rule.grace_seconds)
            for cron in definition.schedule:
                slot = next(CronSim(cron, deadline.replace(microsecond=0), reverse=True))
                if slot < wf.updated_at:
                    continue  # the slot came before the workflow's last change (its activation)
                window_end = slot + timedelta(seconds=rule.grace_seconds)
                started = [e for e in runs if e.created_at is not None and slot <= e.created_at <= window_end]
                if started:
                    continue
                finding = Finding(
                    rule,
                    f"missed:{wf.name}:{slot.isoformat()}",
                    f"{wf.name}: no run started for its {cron!r} slot at {slot:%Y-%m-%d %H:%M} UTC "
                    f"within {rule.grace_seconds:g} s",
                    {"slot": slot.isoformat(), "cron": cron},
                )
                delivery = send(scope, wf.id, wf.name, finding, None)
                if delivery is not None:
                    sent.append(delivery)
    return sent


def stats(scope: Scope, workflow: str | None = None, since: datetime | None = None) -> dict[str, Any]:
    """Metrics per workflow of the organization over finished executions (``Catalog.stats``)."""
    if workflow:
        get(workflow, scope)  # a clear error for an unknown name
    return scope.catalog.stats(scope.user.organization_id, workflow, since)


def deliveries(scope: Scope, workflow: str | None = None) -> list[tuple[str, AlertDelivery]]:
    """Alerts of the organization's live workflows (of ``workflow``, if given), oldest first, with its name."""
    workflow_id = get(workflow, scope).id if workflow else None
    mine = {w.id: w.name for w in list_workflows(scope)}
    return [(mine[d.workflow_id], d) for d in scope.catalog.alert_deliveries(workflow_id) if d.workflow_id in mine]
