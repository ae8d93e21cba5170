"""Dagster: TPC-H Q5 as software-defined assets over eager Polars frames (an asset per weflow node)."""

from datetime import date

import polars as pl
from dagster import asset
from pipelines_dagster import Tables


def _times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q05
@asset
def region(tables: Tables) -> pl.DataFrame:
    return tables.read("region")


@asset
def asia(region: pl.DataFrame) -> pl.DataFrame:
    return region.filter(pl.col("r_name") == "ASIA")


@asset
def nation(tables: Tables) -> pl.DataFrame:
    return tables.read("nation")


@asset
def asian_nations(nation: pl.DataFrame, asia: pl.DataFrame) -> pl.DataFrame:
    return nation.join(asia, left_on="n_regionkey", right_on="r_regionkey")


@asset
def supplier(tables: Tables) -> pl.DataFrame:
    return tables.read("supplier")


@asset
def suppliers(supplier: pl.DataFrame, asian_nations: pl.DataFrame) -> pl.DataFrame:
    return supplier.join(asian_nations, left_on="s_nationkey", right_on="n_nationkey")


@asset
def customer(tables: Tables) -> pl.DataFrame:
    return tables.read("customer")


@asset
def orders(tables: Tables) -> pl.DataFrame:
    return tables.read("orders")


@asset
def orders_1994(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate").is_between(date(1994, 1, 1), date(1995, 1, 1), closed="left"))


@asset
def lineitem(tables: Tables) -> pl.DataFrame:
    return tables.read("lineitem")


@asset
def customer_orders(orders_1994: pl.DataFrame, customer: pl.DataFrame) -> pl.DataFrame:
    return orders_1994.join(customer, left_on="o_custkey", right_on="c_custkey")


@asset
def lines(lineitem: pl.DataFrame, customer_orders: pl.DataFrame) -> pl.DataFrame:
    return lineitem.join(customer_orders, left_on="l_orderkey", right_on="o_orderkey")


@asset
def local_lines(lines: pl.DataFrame, suppliers: pl.DataFrame) -> pl.DataFrame:
    return lines.join(suppliers, left_on=["l_suppkey", "c_nationkey"], right_on=["s_suppkey", "s_nationkey"])


@asset
def revenue(local_lines: pl.DataFrame) -> pl.DataFrame:
    disc_price = _times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4)
    return local_lines.group_by("n_name").agg(revenue=disc_price.sum())


@asset
def ranked(revenue: pl.DataFrame) -> pl.DataFrame:
    return revenue.sort("revenue", descending=True)


FINAL = "ranked"
# <<< q05
