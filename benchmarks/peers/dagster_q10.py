"""Dagster: TPC-H Q10 as software-defined assets over eager Polars frames (an asset per weflow node)."""

from datetime import date

import polars as pl
from dagster import asset
from pipelines_dagster import Tables


def _times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q10
@asset
def customer(tables: Tables) -> pl.DataFrame:
    return tables.read("customer")


@asset
def orders(tables: Tables) -> pl.DataFrame:
    return tables.read("orders")


@asset
def orders_q4_1993(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate").is_between(date(1993, 10, 1), date(1994, 1, 1), closed="left"))


@asset
def lineitem(tables: Tables) -> pl.DataFrame:
    return tables.read("lineitem")


@asset
def returned(lineitem: pl.DataFrame) -> pl.DataFrame:
    return lineitem.filter(pl.col("l_returnflag") == "R")


@asset
def nation(tables: Tables) -> pl.DataFrame:
    return tables.read("nation")


@asset
def customer_orders(customer: pl.DataFrame, orders_q4_1993: pl.DataFrame) -> pl.DataFrame:
    return customer.join(orders_q4_1993, left_on="c_custkey", right_on="o_custkey")


@asset
def lines(returned: pl.DataFrame, customer_orders: pl.DataFrame) -> pl.DataFrame:
    return returned.join(customer_orders, left_on="l_orderkey", right_on="o_orderkey")


@asset
def with_nation(lines: pl.DataFrame, nation: pl.DataFrame) -> pl.DataFrame:
    return lines.join(nation, left_on="c_nationkey", right_on="n_nationkey")


@asset
def revenue(with_nation: pl.DataFrame) -> pl.DataFrame:
    disc_price = _times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4)
    keys = ["c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment"]
    return with_nation.group_by(keys).agg(revenue=disc_price.sum())


@asset
def ranked(revenue: pl.DataFrame) -> pl.DataFrame:
    return revenue.sort("revenue", descending=True)


@asset
def top(ranked: pl.DataFrame) -> pl.DataFrame:
    return ranked.head(20)


@asset
def answer(top: pl.DataFrame) -> pl.DataFrame:
    return top.select("c_custkey", "c_name", "revenue", "c_acctbal", "n_name", "c_address", "c_phone", "c_comment")


FINAL = "answer"
# <<< q10
