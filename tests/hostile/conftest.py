"""Hostile inputs (issue 14): a real `weflow serve` per module, with the operator settings a test needs."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from tests.test_api import BODY_LIMIT, Api, weflow_serve
from weflow.catalog import Catalog, auth
from weflow.core.document import parse
from weflow.core.entities import Execution, Mode, RunState
from weflow.execution import execute
from weflow.workflows import Scope

ORGS = (("acme", "ada"), ("globex", "bob"))


@contextmanager
def serving(
    prefect_api: str, folder: Path, env_extra: dict[str, str] | None = None, body_limit: int = BODY_LIMIT
) -> Iterator[Api]:
    """`weflow serve` on a free loopback port, its catalog and runs in ``folder``, one key per organization.

    By default the data roots are ``folder/data`` (created) and the process runs in ``folder``:
    the README's layout, catalog at ``folder/data/weflow.duckdb``.
    """
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(data / "weflow.duckdb")
    keys = {org: auth.create_key(catalog, catalog.ensure_user(org, user))[1] for org, user in ORGS}
    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=prefect_api,
        WEFLOW_CATALOG=str(catalog.path),
        WEFLOW_DATA_ROOTS=str(folder),
        WEFLOW_SHARED_DATA_ROOTS="true",  # acme and globex share the folder; test_data_roots turns it off
        WEFLOW_RUNS_DIR=str(data / "runs"),
        WEFLOW_PYTHON_NODE_MODULES="tests.resources.pynodes",
        WEFLOW_ORG="acme",
        WEFLOW_USER="ada",
        PYTHONPATH=str(REPO),
    )
    env.update(env_extra or {})
    with weflow_serve(env, folder, folder / "serve.log", body_limit) as url:
        yield Api(url, catalog, env, keys)


@pytest.fixture
def serve(prefect_api: str, tmp_path: Path) -> Callable[..., Iterator[Api]]:
    """``with serve(env_extra={...}) as api:`` starts `weflow serve` in this test's folder."""

    def start(
        env_extra: dict[str, str] | None = None, folder: Path | None = None, body_limit: int = BODY_LIMIT
    ) -> Iterator[Api]:
        return serving(prefect_api, folder or tmp_path, env_extra, body_limit)  # type: ignore[return-value]

    return start


def run_unchecked(scope: Scope, doc: dict[str, Any]) -> Execution:
    """Store ``doc`` straight into the catalog and execute it, skipping every apply- and run-time graph check.

    What is left is the check each node makes itself when it runs: the last line of defence.
    """
    scope.catalog.save(parse(json.dumps(doc)), scope.user)
    wf, ver = scope.catalog.workflow_version(scope.user.organization_id, doc["name"], None)
    record = Execution(
        id=str(uuid.uuid4()), workflow_id=wf.id, workflow=wf.name, version=ver.number, mode=Mode.MANUAL,
        user_id=scope.user.id, status=RunState.QUEUED, created_at=datetime.now(UTC), timeout_seconds=60,
    )  # fmt: skip
    execute(ver.definition, record, scope=scope)
    return scope.catalog.execution(record.id)
