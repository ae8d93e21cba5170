"""The raw Prefect baseline of ``benchmarks/queued.py``: a trivial flow, deployed from this file.

One async task doing what the weflow side's ``read_csv`` -> ``filter`` does (read a tiny CSV,
keep some rows), with no result persistence and no input hashing, as a Prefect user would
write it. The deployment's entrypoint is ``benchmarks/raw_flow.py:raw_trivial``, run by the
same process worker as weflow's runs.
"""

from __future__ import annotations

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

FLOW_NAME = "bench-raw-queued"
ENTRYPOINT = "benchmarks/raw_flow.py:raw_trivial"


@task(cache_policy=NO_CACHE, persist_result=False)
async def keep_large(path: str, above: float) -> int:
    return pl.scan_csv(path).filter(pl.col("amount") > above).collect().height


@flow(name=FLOW_NAME, persist_result=False)
async def raw_trivial(path: str, above: float = 10.0) -> int:
    """Read the CSV at ``path`` and count the rows with ``amount > above``."""
    return await keep_large(path, above)
