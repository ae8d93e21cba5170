"""Hamilton: TPC-H Q10 as a module of functions over eager Polars frames (a node per weflow node)."""

from datetime import date

import polars as pl


def _times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q10
def customer(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/customer.parquet")


def orders(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/orders.parquet")


def orders_q4_1993(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate").is_between(date(1993, 10, 1), date(1994, 1, 1), closed="left"))


def lineitem(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/lineitem.parquet")


def returned(lineitem: pl.DataFrame) -> pl.DataFrame:
    return lineitem.filter(pl.col("l_returnflag") == "R")


def nation(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/nation.parquet")


def customer_orders(customer: pl.DataFrame, orders_q4_1993: pl.DataFrame) -> pl.DataFrame:
    return customer.join(orders_q4_1993, left_on="c_custkey", right_on="o_custkey")


def lines(returned: pl.DataFrame, customer_orders: pl.DataFrame) -> pl.DataFrame:
    return returned.join(customer_orders, left_on="l_orderkey", right_on="o_orderkey")


def with_nation(lines: pl.DataFrame, nation: pl.DataFrame) -> pl.DataFrame:
    return lines.join(nation, left_on="c_nationkey", right_on="n_nationkey")


def revenue(with_nation: pl.DataFrame) -> pl.DataFrame:
    disc_price = _times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4)
    keys = ["c_custkey", "c_name", "c_acctbal", "c_phone", "n_name", "c_address", "c_comment"]
    return with_nation.group_by(keys).agg(revenue=disc_price.sum())


def ranked(revenue: pl.DataFrame) -> pl.DataFrame:
    return revenue.sort("revenue", descending=True)


def top(ranked: pl.DataFrame) -> pl.DataFrame:
    return ranked.head(20)


def answer(top: pl.DataFrame) -> pl.DataFrame:
    return top.select("c_custkey", "c_name", "revenue", "c_acctbal", "n_name", "c_address", "c_phone", "c_comment")


# <<< q10
