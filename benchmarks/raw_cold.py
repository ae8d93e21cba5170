"""The raw Prefect baseline of ``benchmarks/coldstart.py``: ``daily_sales`` written by hand.

``python benchmarks/raw_cold.py CSV OUT`` runs, in a new process, an async flow of three async
tasks (the Prefect tasks ``weflow run daily_sales`` makes: ``orders`` is materialised for its
contract, ``paid -> by_region -> ranked`` is fused into one task, ``report`` writes): read the
CSV, keep the paid orders, revenue and order count per region, sorted by revenue, written as
Parquet (temp file then rename, as weflow's sink does). No input hashing, no result
persistence. Exit code 0 only if the flow run completed.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State


@task(name="orders", cache_policy=NO_CACHE, persist_result=False)
async def orders(path: str) -> pl.DataFrame:
    return pl.scan_csv(path).collect()


@task(name="ranked", cache_policy=NO_CACHE, persist_result=False)
async def ranked(frame: pl.DataFrame) -> pl.DataFrame:
    return (
        frame.lazy()
        .filter(pl.col("status") == "paid")
        .group_by("region")
        .agg(revenue=pl.col("amount").sum(), orders=pl.col("order_id").count())
        .sort("revenue", descending=True)
        .collect()
    )


@task(name="report", cache_policy=NO_CACHE, persist_result=False)
async def report(frame: pl.DataFrame, out: str) -> int:
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, target)
    return frame.height


@flow(name="raw_daily_sales", persist_result=False)
async def raw_daily_sales(path: str, out: str) -> int:
    return await report(await ranked(await orders(path)), out)


if __name__ == "__main__":
    csv, out = sys.argv[1:3]
    state: State[int] = asyncio.run(raw_daily_sales(csv, out, return_state=True))  # type: ignore[arg-type]
    print(f"raw_daily_sales: {state.name}")
    raise SystemExit(0 if state.is_completed() else 1)
