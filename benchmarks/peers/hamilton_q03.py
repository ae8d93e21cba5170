"""Hamilton: TPC-H Q3 as a module of functions over eager Polars frames (a node per weflow node)."""

from datetime import date

import polars as pl


def _times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q03
def customer(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/customer.parquet")


def building(customer: pl.DataFrame) -> pl.DataFrame:
    return customer.filter(pl.col("c_mktsegment") == "BUILDING")


def orders(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/orders.parquet")


def open_orders(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate") < date(1995, 3, 15))


def lineitem(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/lineitem.parquet")


def unshipped(lineitem: pl.DataFrame) -> pl.DataFrame:
    return lineitem.filter(pl.col("l_shipdate") > date(1995, 3, 15))


def customer_orders(open_orders: pl.DataFrame, building: pl.DataFrame) -> pl.DataFrame:
    return open_orders.join(building, left_on="o_custkey", right_on="c_custkey")


def lines(unshipped: pl.DataFrame, customer_orders: pl.DataFrame) -> pl.DataFrame:
    return unshipped.join(customer_orders, left_on="l_orderkey", right_on="o_orderkey")


def revenue(lines: pl.DataFrame) -> pl.DataFrame:
    disc_price = _times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4)
    return lines.group_by("l_orderkey", "o_orderdate", "o_shippriority").agg(revenue=disc_price.sum())


def ranked(revenue: pl.DataFrame) -> pl.DataFrame:
    return revenue.sort(["revenue", "o_orderdate"], descending=[True, False])


def top(ranked: pl.DataFrame) -> pl.DataFrame:
    return ranked.head(10)


def answer(top: pl.DataFrame) -> pl.DataFrame:
    return top.select("l_orderkey", "revenue", "o_orderdate", "o_shippriority")


# <<< q03
