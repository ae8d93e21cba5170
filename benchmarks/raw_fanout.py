"""The raw Prefect baseline of the fan-out part of ``benchmarks/throughput.py``.

What a Prefect user writes by hand for the same work as weflow's fan-out workflow: one task
reads the Parquet file into a frame, ``width`` tasks each group it by their own key, submitted
together so the task runner runs them side by side; no result persistence, no input hashing.
The flow is built per task runner (Prefect's ``ThreadPoolTaskRunner`` or prefect-dask's
``DaskTaskRunner`` on a local cluster), as its decorator takes one.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from prefect import Flow, flow, task
from prefect.cache_policies import NO_CACHE


@task(cache_policy=NO_CACHE, persist_result=False)
def load(path: str) -> pl.DataFrame:
    return pl.read_parquet(path)


@task(cache_policy=NO_CACHE, persist_result=False)
def branch(frame: pl.DataFrame, key: str) -> pl.DataFrame:
    return frame.group_by(key).agg(
        pl.col("v").sum().alias("total"), pl.col("v").mean().alias("average"), pl.col("v").max().alias("top")
    )


def fanout_flow(task_runner: Any, width: int) -> Flow[[str], list[int]]:
    @flow(name="bench-raw-fanout", task_runner=task_runner, persist_result=False)
    def raw_fanout(path: str) -> list[int]:
        frame = load(path)
        futures = [branch.submit(frame, f"k{i}") for i in range(width)]
        return [f.result().height for f in futures]

    return raw_fanout
