"""Hamilton: TPC-H Q5 as a module of functions over eager Polars frames (a node per weflow node)."""

from datetime import date

import polars as pl


def _times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q05
def region(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/region.parquet")


def asia(region: pl.DataFrame) -> pl.DataFrame:
    return region.filter(pl.col("r_name") == "ASIA")


def nation(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/nation.parquet")


def asian_nations(nation: pl.DataFrame, asia: pl.DataFrame) -> pl.DataFrame:
    return nation.join(asia, left_on="n_regionkey", right_on="r_regionkey")


def supplier(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/supplier.parquet")


def suppliers(supplier: pl.DataFrame, asian_nations: pl.DataFrame) -> pl.DataFrame:
    return supplier.join(asian_nations, left_on="s_nationkey", right_on="n_nationkey")


def customer(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/customer.parquet")


def orders(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/orders.parquet")


def orders_1994(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate").is_between(date(1994, 1, 1), date(1995, 1, 1), closed="left"))


def lineitem(root: str) -> pl.DataFrame:
    return pl.read_parquet(f"{root}/lineitem.parquet")


def customer_orders(orders_1994: pl.DataFrame, customer: pl.DataFrame) -> pl.DataFrame:
    return orders_1994.join(customer, left_on="o_custkey", right_on="c_custkey")


def lines(lineitem: pl.DataFrame, customer_orders: pl.DataFrame) -> pl.DataFrame:
    return lineitem.join(customer_orders, left_on="l_orderkey", right_on="o_orderkey")


def local_lines(lines: pl.DataFrame, suppliers: pl.DataFrame) -> pl.DataFrame:
    return lines.join(suppliers, left_on=["l_suppkey", "c_nationkey"], right_on=["s_suppkey", "s_nationkey"])


def revenue(local_lines: pl.DataFrame) -> pl.DataFrame:
    disc_price = _times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4)
    return local_lines.group_by("n_name").agg(revenue=disc_price.sum())


def ranked(revenue: pl.DataFrame) -> pl.DataFrame:
    return revenue.sort("revenue", descending=True)


# <<< q05
