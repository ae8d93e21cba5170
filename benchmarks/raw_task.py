"""The Prefect background-task baseline of ``benchmarks/hot.py``: the same read and filter as one task.

``keep_large.delay(path, above)`` from the benchmark; ``python -m benchmarks.raw_task`` serves it
(``prefect.task_worker.serve``), a long-lived process like a weflow worker.
"""

from __future__ import annotations

import polars as pl
from prefect import task
from prefect.cache_policies import NO_CACHE


@task(name="bench-hot-background", cache_policy=NO_CACHE)
async def keep_large(path: str, above: float = 10.0) -> int:
    """Read the CSV at ``path`` and count the rows with ``amount > above``."""
    return pl.scan_csv(path).filter(pl.col("amount") > above).collect().height


if __name__ == "__main__":
    from prefect.task_worker import serve

    serve(keep_large, limit=4)
