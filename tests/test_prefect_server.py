"""The Prefect server weflow starts (``weflow.prefect_gateway.prefect_server``): its SQLite write transactions, its
schema checks and its garbage collection."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.server.database.configurations import AioSqliteConfiguration
from prefect.utilities.schema_tools import ValidationError, validation

from weflow.prefect_gateway import prefect_server
from weflow.prefect_gateway.worker import WeflowWorker

WRITERS = 8


def test_write_transactions_begin_in_the_order_they_asked_and_all_commit(tmp_path: Path) -> None:
    """Writers that ask for the write lock while another holds it begin one at a time, first come first served,
    and every one commits: the server's API calls and services queue for SQLite's one writer in the process.

    Before: each waited inside SQLite, polling the lock with sleeps growing to 100 ms, so the lock sat free while
    the next writer slept and the last to ask, at their shortest sleeps, went first."""

    async def writes() -> tuple[list[int], list[int]]:
        config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'prefect.db'}", timeout=60)
        engine = await config.engine()
        async with engine.begin() as connection:
            await connection.execute(sa.text("CREATE TABLE written (i INTEGER)"))
        began: list[int] = []

        async def write(i: int) -> None:
            async with await config.session(engine) as session, prefect_server._begin_immediate(config, session):
                began.append(i)
                await session.execute(sa.text("INSERT INTO written VALUES (:i)"), {"i": i})
                await asyncio.sleep(0.02)  # the others ask for the lock meanwhile

        asked = []
        for i in range(WRITERS):
            asked.append(asyncio.create_task(write(i)))
            await asyncio.sleep(0.005)  # in this order
        await asyncio.gather(*asked)
        async with engine.connect() as connection:
            rows = (await connection.execute(sa.text("SELECT i FROM written ORDER BY rowid"))).scalars().all()
        await engine.dispose()
        return began, list(rows)

    began, committed = asyncio.run(writes())
    assert began == list(range(WRITERS))
    assert committed == list(range(WRITERS))


def test_a_job_variable_schema_is_checked_once_and_a_bad_schema_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each flow run created from a deployment had Prefect check the work pool's job-variable schema against JSON
    Schema's own, twice (~6 ms of the server's CPU a run): the weflow pool's schema, checked as the server checks it
    for three flow runs, is checked twice in all (once per form: as stored, as prepared), and its job variables still
    every time; a schema that is not valid is refused every time."""
    checker = validation._VALIDATOR
    monkeypatch.setattr(checker, "check_schema", checker.check_schema)  # put back after the test
    real = checker.check_schema.__func__  # type: ignore[attr-defined]
    checked: list[str] = []

    def counted(cls: type, schema: Any, *args: Any, **kwargs: Any) -> None:
        checked.append(json.dumps(schema, sort_keys=True))
        real(cls, schema, *args, **kwargs)

    checker.check_schema = classmethod(counted)  # type: ignore[method-assign,assignment]
    prefect_server._remember_valid_schemas()
    schema = WeflowWorker.get_default_base_job_template()["variables"]
    for _ in range(3):  # what the server does for each flow run (``_validate_work_pool_job_variables``)
        validation.is_valid_schema(schema, preprocess=False)
        validation.validate({"isolation": "worker"}, schema, raise_on_error=True, preprocess=True)
    assert len(checked) == 2
    with pytest.raises(ValidationError, match="isolation"):
        validation.validate({"isolation": "nowhere"}, schema, raise_on_error=True, preprocess=True)
    bad = {"type": "object", "properties": {"isolation": {"type": "nonsense"}}}
    for _ in range(2):
        with pytest.raises(ValueError, match="Invalid schema"):
            validation.is_valid_schema(bad, preprocess=False)
    assert len(checked) == 4


_GC_PROBE = """
import gc, json, weakref
from weflow.prefect_gateway import prefect_server
prefect_server._collect_less_often()
from prefect.server.api.server import create_app
walked = any(o is create_app for o in gc.get_objects())  # the frozen are in no generation: never walked
class Node: pass
node = Node(); node.me = node; gone = weakref.ref(node); del node  # a cycle: only the collector frees it
before = sum(s["collections"] for s in gc.get_stats())
kept = [[] for _ in range(200_000)]  # a burst of requests' objects, none of them garbage
print(json.dumps({"walked": walked, "collections": sum(s["collections"] for s in gc.get_stats()) - before,
                  "cycle_freed": gone() is None}))
"""


def test_the_server_collects_garbage_less_often_and_never_walks_its_imports_again() -> None:
    """At Python's default thresholds the server's collector ran ~10,000 times in a 1000-run drain here, 12-13 s of
    its ~210 s of CPU, 8 s of it in 26 full collections of ~300 ms each (a pause for every request then), walking
    the objects Prefect's modules made at import every time. Set up as the server is: Prefect's server code is frozen
    (in no generation), 200,000 new containers cost a few collections (Python's defaults: ~285), and a cycle made
    after start-up is still freed by the collector on its own."""
    done = subprocess.run([sys.executable, "-c", _GC_PROBE], capture_output=True, text=True, timeout=120, check=True)
    probe = json.loads(done.stdout.splitlines()[-1])
    assert probe["walked"] is False
    assert 0 < probe["collections"] <= 20
    assert probe["cycle_freed"] is True
