"""Kedro: TPC-H Q5 as node functions and a pipeline over eager Polars frames; the tables are catalog datasets."""

from datetime import date

import polars as pl
from kedro.pipeline import Pipeline, node, pipeline


def _times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q05
def asia(region: pl.DataFrame) -> pl.DataFrame:
    return region.filter(pl.col("r_name") == "ASIA")


def asian_nations(nation: pl.DataFrame, asia: pl.DataFrame) -> pl.DataFrame:
    return nation.join(asia, left_on="n_regionkey", right_on="r_regionkey")


def suppliers(supplier: pl.DataFrame, asian_nations: pl.DataFrame) -> pl.DataFrame:
    return supplier.join(asian_nations, left_on="s_nationkey", right_on="n_nationkey")


def orders_1994(orders: pl.DataFrame) -> pl.DataFrame:
    return orders.filter(pl.col("o_orderdate").is_between(date(1994, 1, 1), date(1995, 1, 1), closed="left"))


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


def create_pipeline() -> Pipeline:
    return pipeline(
        [
            node(asia, "region", "asia"),
            node(asian_nations, ["nation", "asia"], "asian_nations"),
            node(suppliers, ["supplier", "asian_nations"], "suppliers"),
            node(orders_1994, "orders", "orders_1994"),
            node(customer_orders, ["orders_1994", "customer"], "customer_orders"),
            node(lines, ["lineitem", "customer_orders"], "lines"),
            node(local_lines, ["lines", "suppliers"], "local_lines"),
            node(revenue, "local_lines", "revenue"),
            node(ranked, "revenue", "ranked"),
        ]
    )


TABLES = ["region", "nation", "supplier", "customer", "orders", "lineitem"]
FINAL = "ranked"
# <<< q05
