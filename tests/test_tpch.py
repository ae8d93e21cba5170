"""The TPC-H benchmark's queries: weflow's definitions, Polars by hand and DuckDB's SQL give one answer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest

from benchmarks import tpch
from weflow import config
from weflow.compile import plan
from weflow.core import document
from weflow.nodes.registry import node_types
from weflow.workflows import read

pytestmark = pytest.mark.usefixtures("prefect_api")

BUILT_IN_POLARS_NODES = {"read_parquet", "filter", "join", "with_columns", "aggregate", "sort", "limit", "select"}


@pytest.fixture(scope="module")
def sf001(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TPC-H at scale factor 0.01 (about 3 MiB of Parquet), generated once for the module."""
    return tpch.generate(0.01, tmp_path_factory.mktemp("tpch"))


@pytest.fixture(scope="module", autouse=True)
def _drained() -> Iterator[None]:
    """Send Prefect's queued logs and events while the session's server still answers.

    The last runs' are still queued when the session stops its server; Prefect then retries them
    at interpreter exit, against a closed port, for up to a minute and more.
    """
    yield
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=10)
    EventsWorker.drain_all(timeout=10)


def test_generate_writes_every_table_once(sf001: Path) -> None:
    assert sf001.name == "sf0.01"
    assert {p.stem for p in sf001.glob("*.parquet")} == set(tpch.TABLES)
    assert pl.scan_parquet(sf001 / "region.parquet").select(pl.len()).collect().item() == 5
    stamp = (sf001 / "lineitem.parquet").stat().st_mtime_ns
    assert tpch.generate(0.01, sf001.parent) == sf001  # reused, not generated again
    assert (sf001 / "lineitem.parquet").stat().st_mtime_ns == stamp


@pytest.mark.parametrize("query", tpch.QUERIES)
def test_definition_is_one_fused_plan_of_built_in_polars_nodes(query: str, sf001: Path) -> None:
    text = (tpch.DEFINITIONS / f"{query}.yaml").read_text()
    types = {node.type for node in document.parse(text).nodes}
    assert types <= BUILT_IN_POLARS_NODES, types - BUILT_IN_POLARS_NODES
    with config.using(data_roots=(sf001,)):
        definition = read(tpch.DEFINITIONS / f"{query}.yaml")  # every apply-time check, paths included
    (step,) = plan.build(definition, node_types()).steps  # no fan-out: one lazy plan, collected once
    assert len(step.nodes) == len(definition.nodes)


@pytest.mark.parametrize("query", tpch.QUERIES)
def test_weflow_polars_and_duckdb_agree(query: str, sf001: Path, settings: config.Settings) -> None:
    con = tpch.duckdb_connection(sf001)
    try:
        want = tpch.with_duckdb(con, query)
    finally:
        con.close()
    assert not want.is_empty()
    got = tpch.with_weflow(query, sf001)
    assert got.columns == want.columns
    tpch.same_answer(got, want, f"{query}: weflow vs DuckDB")
    tpch.same_answer(tpch.with_polars(query, sf001), want, f"{query}: Polars vs DuckDB")


def test_a_wrong_answer_fails_loudly() -> None:
    want = pl.DataFrame({"n_name": ["CHINA", "INDIA"], "revenue": [1.0, 2.0]})
    tpch.same_answer(want.reverse(), want, "same rows in another order")
    with pytest.raises(AssertionError, match="q05: off by a cent"):
        tpch.same_answer(want.with_columns(pl.col("revenue") + 0.01), want, "q05: off by a cent")
