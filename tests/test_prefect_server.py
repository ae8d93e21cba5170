"""The Prefect server weflow starts (``weflow.prefect_gateway.prefect_server``): its SQLite write transactions."""

from __future__ import annotations

import asyncio
import json
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
