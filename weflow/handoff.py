"""One queue for everyone (DESIGN decision 12): runs handed to a live weflow worker of this host.

Client side (``weflow run NAME``, no Prefect, engine or Polars import): ``run_on_worker`` posts
"run workflow W with inputs I for user U" to a live worker of the Prefect home (``POST /run`` on
its loopback port, with the home's 0600 token), gets the execution id back, then asks a worker for
the final record (``POST /wait``: answered the moment the worker's batcher commits the run's end,
no catalog session in the client); when no worker answers that any more (stopped, recycling) it
reads the catalog until the end. None when no worker of this home runs (or none serves this
catalog): the caller then runs it in its own process.

Worker side (``take``, given to the worker by ``weflow.workers``): ``/run`` records the execution
QUEUED and creates its flow run (``execution.submit``), which the worker then takes like any
other; ``/execute`` runs an execution the API recorded for a workflow that is not deployed, in one
of the worker's threads; ``/wait`` answers with an execution's record once it ended (``ended``, a slice
at a time: the worker asks again after each 202 unless it is stopping, then 503 sends the client to
the catalog).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from weflow.config import settings
from weflow.core.records import Execution, Mode
from weflow.errors import ConflictError, NotFoundError, WeflowError
from weflow.prefect_gateway import server, worker_home

if TYPE_CHECKING:
    from weflow.workflows import Catalog, Scope

POLL = 0.1  # seconds at least between reads of the record by a client no worker answers (a read: ~20 ms)
WAIT_SLICE = 0.5  # a /wait slice: the record is read again after this without word from the worker's batcher
DEFAULT_TIMEOUT, SLACK = 300.0, 120.0  # an execution's default timeout; how long past it a waiter still waits


class Outlived(WeflowError):
    """An execution still not ended long after its timeout: its waiter stops waiting."""


@cache
def _records() -> TypeAdapter[Execution]:
    return TypeAdapter(Execution)


def run_on_worker(
    name: str,
    catalog: Path,
    input_data: Mapping[str, Any] | None = None,
    timeout: float | None = None,
    version_number: int | None = None,
    while_waiting: Callable[[], object] | None = None,
) -> Execution | None:
    """Run ``name`` on a live weflow worker and wait for its end; None when no worker takes it. Once the worker took
    the run, what reads its record (pydantic's adapter, ~50 ms) and ``while_waiting`` are prepared in a thread while
    the run runs: this process only waits then."""
    cfg = settings()
    request = {"workflow": name, "input_data": dict(input_data) if input_data is not None else None,
               "timeout": timeout, "version": version_number, "catalog": str(catalog.resolve()),
               "organization": cfg.organization, "user": cfg.user, "mode": Mode.MANUAL.value}  # fmt: skip
    answered = worker_home.hand_over(server.default_home(), "/run", request)
    if answered is None:
        return None
    status, body = answered
    if status >= 300:
        raise WeflowError(str(body.get("error") or f"the weflow worker refused the run (HTTP {status})"))
    execution_id, where = str(body["execution_id"]), str(catalog.resolve())
    preparing = threading.Thread(target=_prepare, args=(while_waiting,), name="weflow-prepare", daemon=True)
    preparing.start()
    limit = (timeout or DEFAULT_TIMEOUT) + SLACK + 60  # the worker gives up first and says so
    waited = worker_home.hand_over(server.default_home(), "/wait", {"execution_id": execution_id, "catalog": where},
                                   timeout=limit)  # fmt: skip
    preparing.join()
    if waited is not None and waited[0] == 200 and isinstance(waited[1].get("execution"), dict):
        return _records().validate_python(waited[1]["execution"])
    if waited is not None and waited[0] == 504:
        raise WeflowError(str(waited[1].get("error")))
    return wait_for_end(catalog, execution_id)  # no worker answers now (stopped, recycling): read the catalog


def _prepare(also: Callable[[], object] | None) -> None:
    _records()
    if also is not None:
        also()


def wait_for_end(catalog: Path, execution_id: str) -> Execution:
    """The execution's record once it ended (no worker to ask), read from the catalog when the file changed, at
    most ``POLL`` s apart otherwise, never sooner than ``POLL`` after the last read."""
    from weflow.workflows import open_catalog  # deferred, as below: the hand-off itself loads no catalog (DuckDB)

    store = open_catalog(catalog)
    while True:
        seen = store.stamp()
        if (found := _slice(store, execution_id, 0.0)) is not None:
            return found
        store.changed(seen, WAIT_SLICE, gap=POLL)


def ended(catalog: str, execution_id: str) -> tuple[int, dict[str, Any]]:
    """In a worker, one slice of a ``/wait``: 200 with the record once it ended, 404 if there is none, 504 once it
    outlived its timeout, else 202 after up to ``WAIT_SLICE``. The caller asks again after a 202, so a stopping
    worker never holds a thread for a run it will not see end."""
    from weflow.workflows import open_catalog

    try:
        found = _slice(open_catalog(catalog), execution_id, WAIT_SLICE)
    except NotFoundError as exc:
        return 404, {"error": str(exc)}
    except Outlived as exc:
        return 504, {"error": str(exc)}
    if found is None:
        return 202, {"execution_id": execution_id}
    return 200, {"execution": _records().dump_python(found, mode="json")}


def _slice(store: Catalog, execution_id: str, wait: float) -> Execution | None:
    """The record if it ended, else None after up to ``wait`` s (read again at once when this process's batcher
    commits its end: ``ENDS``). NotFoundError without a record; Outlived once it outlived its timeout + ``SLACK``
    since it was created."""
    from weflow.catalog.batcher import ENDS

    found = store.execution(execution_id)
    if found.status.final:
        return found
    allowed = (found.timeout_seconds or DEFAULT_TIMEOUT) + SLACK
    since = found.created_at or found.started_at or datetime.now(UTC)
    if (datetime.now(UTC) - since).total_seconds() > allowed:
        raise Outlived(f"execution {execution_id} has not ended after {allowed:.0f} s (weflow execution ID)")
    if not ENDS.wait(execution_id, wait):
        return None
    found = store.execution(execution_id)
    if found.status.final:
        return found
    time.sleep(wait)  # its end was committed, yet it is not final: another process moved it on since
    return None


_scopes: dict[tuple[str, str, str], Scope] = {}


def _scope(catalog: str, organization: str, user: str) -> Scope:
    """The scope of a hand-off's user, looked up once per catalog and user (a write session)."""
    from weflow.workflows import Scope, open_catalog

    key = (catalog, organization, user)
    if key not in _scopes:
        store = open_catalog(catalog)
        _scopes[key] = Scope(store, store.ensure_user(organization, user))
    return _scopes[key]


def _status(exc: WeflowError) -> int:
    return 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 400


def take(path: str, request: dict[str, Any]) -> tuple[int, dict[str, Any], Callable[[], object] | None]:
    """In a worker: a run handed over; (HTTP status, answer, work to run after answering)."""
    from weflow import execution  # the worker imported the engine already

    catalog = str(settings().catalog.resolve())
    if request.get("catalog") != catalog:
        return 409, {"error": f"this worker records in catalog {catalog}, not {request.get('catalog')}"}, None
    if path == "/wait":
        execution_id = str(request.get("execution_id") or "")
        if not execution_id:
            return 400, {"error": "execution_id: required"}, None
        return (*ended(catalog, execution_id), None)
    if path == "/execute":
        execution_id = str(request.get("execution_id") or "")
        if not execution_id:
            return 400, {"error": "execution_id: required"}, None
        return 202, {"execution_id": execution_id}, lambda: execution.run_queued(execution_id)
    try:
        scope = _scope(catalog, str(request["organization"]), str(request["user"]))
        mode = Mode(request.get("mode") or Mode.MANUAL.value)
        queued = execution.submit(
            str(request["workflow"]), scope, mode, request.get("input_data"), request.get("timeout"),
            version_number=request.get("version"),
        )  # fmt: skip
    except KeyError as exc:
        return 400, {"error": f"hand-off body: {exc.args[0]} is required"}, None
    except ValueError as exc:
        return 400, {"error": f"hand-off body: {exc}"}, None
    except WeflowError as exc:
        return _status(exc), {"error": str(exc), "type": type(exc).__name__}, None
    return 201, {"execution_id": queued.id, "flow_run_id": queued.flow_run_id}, None
