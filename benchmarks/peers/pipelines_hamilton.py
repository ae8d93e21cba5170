"""Hamilton: TPC-H Q1, Q3, Q5, Q10 (modules ``hamilton_qNN.py``, a function per step over eager Polars
frames) run by a Hamilton driver built for each run, and the trivial chain (one ``@parameterize``d
function, one node per link). The pipeline's code is the module's functions (counted by the runner)
plus the driver lines here.
"""

from __future__ import annotations

import importlib

import polars as pl
from hamilton import ad_hoc_utils, driver
from hamilton.function_modifiers import parameterize, source

FINAL = {"q01": "ordered", "q03": "answer", "q05": "ranked", "q10": "answer"}


def chain_module(n: int) -> object:
    def source_frame(csv: str) -> pl.DataFrame:
        return pl.read_csv(csv)

    @parameterize(**{f"n{i}": {"previous": source(f"n{i - 1}" if i > 1 else "source_frame")} for i in range(1, n)})
    def link(previous: pl.DataFrame) -> pl.DataFrame:
        return previous.head(1_000_000)

    return ad_hoc_utils.create_temporary_module(source_frame, link)


CHAINS: dict[int, object] = {}


def run(job: str, root: str, csv: str) -> pl.DataFrame:
    if job.startswith("chain"):
        n = int(job.removeprefix("chain"))
        if n not in CHAINS:
            CHAINS[n] = chain_module(n)
        module = CHAINS[n]
        dr = driver.Builder().with_modules(module).build()
        return dr.execute([f"n{n - 1}"], inputs={"csv": csv})[f"n{n - 1}"]
    # >>> q01 q03 q05 q10
    dr = driver.Builder().with_modules(importlib.import_module(f"hamilton_{job}")).build()
    answer: pl.DataFrame = dr.execute([FINAL[job]], inputs={"root": root})[FINAL[job]]
    # <<< q01 q03 q05 q10
    return answer
