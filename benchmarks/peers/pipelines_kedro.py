"""Kedro: TPC-H Q1, Q3, Q5, Q10 (modules ``kedro_qNN.py``: node functions and ``create_pipeline()``)
with the tables as ``polars.EagerPolarsDataset`` catalog entries and every other dataset in memory,
run by Kedro's ``SequentialRunner``; and the trivial chain. The pipeline's code is the module's
functions and pipeline (counted by the runner) plus the catalog and runner lines here.
"""

from __future__ import annotations

import importlib

import polars as pl
from kedro.io import DataCatalog
from kedro.pipeline import Pipeline, node, pipeline
from kedro.runner import SequentialRunner


def source_frame(csv: pl.DataFrame) -> pl.DataFrame:
    return csv


def link(previous: pl.DataFrame) -> pl.DataFrame:
    return previous.head(1_000_000)


def chain_pipeline(n: int) -> Pipeline:
    links = [node(link, f"n{i - 1}", f"n{i}", name=f"n{i}") for i in range(2, n)]
    return pipeline([node(source_frame, "csv", "n1", name="n1"), *links])


def run(job: str, root: str, csv: str) -> pl.DataFrame:
    if job.startswith("chain"):
        n = int(job.removeprefix("chain"))
        catalog = DataCatalog.from_config({"csv": {"type": "polars.EagerPolarsDataset", "filepath": csv,
                                                   "file_format": "csv"}})  # fmt: skip
        return SequentialRunner().run(chain_pipeline(n), catalog)[f"n{n - 1}"].load()
    # >>> q01 q03 q05 q10
    module = importlib.import_module(f"kedro_{job}")
    catalog = DataCatalog.from_config(
        {t: {"type": "polars.EagerPolarsDataset", "filepath": f"{root}/{t}.parquet", "file_format": "parquet"}
         for t in module.TABLES}
    )  # fmt: skip
    answer: pl.DataFrame = SequentialRunner().run(module.create_pipeline(), catalog)[module.FINAL].load()
    # <<< q01 q03 q05 q10
    return answer
