"""Hand-written Prefect: TPC-H Q1, Q3, Q5, Q10 as async flows with one task per step, and the trivial chain.

Each step is a task (``cache_policy=NO_CACHE, persist_result=False``: no input hashing, no result
files) passing eager Polars frames, in an async flow (a sync flow joins its heartbeat thread for
~1 s on exit), on the Prefect server in ``PREFECT_API_URL``: the way this repository's raw Prefect
baselines are written. The steps are those of weflow's definitions in ``benchmarks/tpch/``.
Lines between ``# >>> JOB`` and ``# <<< JOB`` are the pipeline's code (counted by the runner).
"""

from __future__ import annotations

import asyncio
from datetime import date

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

# >>> q01 q03 q05 q10
step = task(cache_policy=NO_CACHE, persist_result=False)
# <<< q01 q03 q05 q10


def times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    """``left * right`` exact at the sum of the scales, as SQL (and weflow's expressions) compute decimals."""
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q01 q03 q05 q10
@step
async def read(root: str, table: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/{table}.parquet")


# <<< q01 q03 q05 q10
# >>> q03 q05 q10
@step
async def join(left: pl.DataFrame, right: pl.DataFrame, left_on: list[str], right_on: list[str]) -> pl.DataFrame:
    return left.join(right, left_on=left_on, right_on=right_on)


@step
async def revenue(lines: pl.DataFrame, by: list[str]) -> pl.DataFrame:
    return lines.group_by(by).agg(times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4).sum().alias("revenue"))


# <<< q03 q05 q10
# >>> q01
@step
async def shipped(lineitem: pl.DataFrame) -> pl.DataFrame:
    return lineitem.filter(pl.col("l_shipdate") <= date(1998, 9, 2))


@step
async def summary(shipped: pl.DataFrame) -> pl.DataFrame:
    price, disc_price = pl.col("l_extendedprice"), times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4)
    return shipped.group_by("l_returnflag", "l_linestatus").agg(
        sum_qty=pl.col("l_quantity").sum(),
        sum_base_price=price.sum(),
        sum_disc_price=disc_price.sum(),
        sum_charge=times(disc_price, 1 + pl.col("l_tax"), 6).sum(),
        avg_qty=pl.col("l_quantity").mean(),
        avg_price=price.mean(),
        avg_disc=pl.col("l_discount").mean(),
        count_order=pl.len(),
    )


@step
async def ordered(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.sort("l_returnflag", "l_linestatus")


@flow(name="peers-q01", persist_result=False)
async def q01(root: str) -> pl.DataFrame:
    return await ordered(await summary(await shipped(await read(root, "lineitem"))))


# <<< q01
# >>> q03
@step
async def building(customer: pl.DataFrame) -> pl.DataFrame:
    return customer.filter(pl.col("c_mktsegment") == "BUILDING")


@step
async def open_orders(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate") < date(1995, 3, 15))


@step
async def unshipped(lineitem: pl.DataFrame) -> pl.DataFrame:
    return lineitem.filter(pl.col("l_shipdate") > date(1995, 3, 15))


@step
async def top_orders(revenue: pl.DataFrame) -> pl.DataFrame:
    ranked = revenue.sort(["revenue", "o_orderdate"], descending=[True, False])
    return ranked.head(10).select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")


@flow(name="peers-q03", persist_result=False)
async def q03(root: str) -> pl.DataFrame:
    customers = await building(await read(root, "customer"))
    orders = await open_orders(await read(root, "orders"))
    lines = await unshipped(await read(root, "lineitem"))
    customer_orders = await join(orders, customers, ["o_custkey"], ["c_custkey"])
    lines = await join(lines, customer_orders, ["l_orderkey"], ["o_orderkey"])
    return await top_orders(await revenue(lines, ["l_orderkey", "o_orderdate", "o_shippriority"]))


# <<< q03
# >>> q05
@step
async def asia(region: pl.DataFrame) -> pl.DataFrame:
    return region.filter(pl.col("r_name") == "ASIA")


@step
async def orders_1994(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate").is_between(date(1994, 1, 1), date(1995, 1, 1), closed="left"))


@step
async def by_revenue(revenue: pl.DataFrame) -> pl.DataFrame:
    return revenue.sort("revenue", descending=True)


@flow(name="peers-q05", persist_result=False)
async def q05(root: str) -> pl.DataFrame:
    nations = await join(await read(root, "nation"), await asia(await read(root, "region")), ["n_regionkey"],
                         ["r_regionkey"])  # fmt: skip
    suppliers = await join(await read(root, "supplier"), nations, ["s_nationkey"], ["n_nationkey"])
    orders = await orders_1994(await read(root, "orders"))
    customer_orders = await join(orders, await read(root, "customer"), ["o_custkey"], ["c_custkey"])
    lines = await join(await read(root, "lineitem"), customer_orders, ["l_orderkey"], ["o_orderkey"])
    local = await join(lines, suppliers, ["l_suppkey", "c_nationkey"], ["s_suppkey", "s_nationkey"])
    return await by_revenue(await revenue(local, ["n_name"]))


# <<< q05
# >>> q10
@step
async def orders_q4_1993(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate").is_between(date(1993, 10, 1), date(1994, 1, 1), closed="left"))


@step
async def returned(lineitem: pl.DataFrame) -> pl.DataFrame:
    return lineitem.filter(pl.col("l_returnflag") == "R")


@step
async def top_customers(revenue: pl.DataFrame) -> pl.DataFrame:
    ranked = revenue.sort("revenue", descending=True)
    columns = ["c_custkey", "c_name", "revenue", "c_acctbal", "n_name", "c_address", "c_phone", "c_comment"]
    return ranked.head(20).select(columns)


@flow(name="peers-q10", persist_result=False)
async def q10(root: str) -> pl.DataFrame:
    orders = await orders_q4_1993(await read(root, "orders"))
    customer_orders = await join(await read(root, "customer"), orders, ["c_custkey"], ["o_custkey"])
    lines = await join(await returned(await read(root, "lineitem")), customer_orders, ["l_orderkey"], ["o_orderkey"])
    lines = await join(lines, await read(root, "nation"), ["c_nationkey"], ["n_nationkey"])
    keys = ["c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment"]
    return await top_customers(await revenue(lines, keys))


# <<< q10
# >>> chain
@step
async def source(path: str) -> pl.DataFrame:
    return pl.read_csv(path)


@step
async def limit(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.head(1_000_000)


@flow(name="peers-chain", persist_result=False)
async def chain(path: str, n: int) -> pl.DataFrame:
    frame = await source(path)
    for _ in range(n - 1):
        frame = await limit(frame)
    return frame


# <<< chain
QUERIES = {"q01": q01, "q03": q03, "q05": q05, "q10": q10}


def run(job: str, root: str, csv: str) -> pl.DataFrame:
    if job.startswith("chain"):
        return asyncio.run(chain(csv, int(job.removeprefix("chain"))))
    # >>> q01 q03 q05 q10
    answer: pl.DataFrame = asyncio.run(QUERIES[job](root))
    # <<< q01 q03 q05 q10
    return answer
