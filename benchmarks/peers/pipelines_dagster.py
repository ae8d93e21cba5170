"""Dagster: TPC-H Q1, Q3, Q5, Q10 (modules ``dagster_qNN.py``: an ``@asset`` per step over eager Polars
frames, the tables read through a ``ConfigurableResource``) materialised in-process and in memory
(``materialize_to_memory``: Dagster's in-memory IO manager; its default IO manager pickles every
asset to disk), and the trivial chain. The pipeline's code is the module's assets (counted by the
runner) plus the resource and materialise lines here.
"""

from __future__ import annotations

import importlib

import polars as pl
from dagster import AssetIn, AssetsDefinition, ConfigurableResource, asset, materialize_to_memory


# >>> q01 q03 q05 q10
class Tables(ConfigurableResource):  # type: ignore[misc]
    root: str

    def read(self, table: str) -> pl.DataFrame:
        return pl.read_parquet(f"{self.root}/{table}.parquet")


# <<< q01 q03 q05 q10


def chain_assets(n: int) -> list[AssetsDefinition]:
    @asset(name="n1")
    def source_frame(tables: Tables) -> pl.DataFrame:
        return pl.read_csv(tables.root)

    def link(previous: pl.DataFrame) -> pl.DataFrame:
        return previous.head(1_000_000)

    links = [asset(name=f"n{i}", ins={"previous": AssetIn(f"n{i - 1}")})(link) for i in range(2, n)]
    return [source_frame, *links]


CHAINS: dict[int, list[AssetsDefinition]] = {}


def run(job: str, root: str, csv: str) -> pl.DataFrame:
    if job.startswith("chain"):
        n = int(job.removeprefix("chain"))
        if n not in CHAINS:
            CHAINS[n] = chain_assets(n)
        result = materialize_to_memory(CHAINS[n], resources={"tables": Tables(root=csv)})
        return result.output_for_node(f"n{n - 1}")  # type: ignore[no-any-return]
    # >>> q01 q03 q05 q10
    module = importlib.import_module(f"dagster_{job}")
    assets = [a for a in vars(module).values() if isinstance(a, AssetsDefinition)]
    result = materialize_to_memory(assets, resources={"tables": Tables(root=root)})
    answer: pl.DataFrame = result.output_for_node(module.FINAL)
    # <<< q01 q03 q05 q10
    return answer
