"""The Prefect server weflow starts (``weflow.prefect_gateway.prefect_server``): its SQLite write transactions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import sqlalchemy as sa
from prefect.server.database.configurations import AioSqliteConfiguration

from weflow.prefect_gateway import prefect_server

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
