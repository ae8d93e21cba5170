"""Kedro: TPC-H Q1 as node functions and a pipeline over eager Polars frames; the tables are catalog datasets."""

from datetime import date

import polars as pl
from kedro.pipeline import Pipeline, node, pipeline


def _times(left: pl.Expr, right: pl.Expr, scale: int) -> pl.Expr:
    return left.cast(pl.Decimal(38, scale)) * right


# >>> q01
def shipped(lineitem: pl.DataFrame) -> pl.DataFrame:
    return lineitem.filter(pl.col("l_shipdate") <= date(1998, 9, 2))


def summary(shipped: pl.DataFrame) -> pl.DataFrame:
    price, disc_price = pl.col("l_extendedprice"), _times(pl.col("l_extendedprice"), 1 - pl.col("l_discount"), 4)
    return shipped.group_by("l_returnflag", "l_linestatus").agg(
        sum_qty=pl.col("l_quantity").sum(),
        sum_base_price=price.sum(),
        sum_disc_price=disc_price.sum(),
        sum_charge=_times(disc_price, 1 + pl.col("l_tax"), 6).sum(),
        avg_qty=pl.col("l_quantity").mean(),
        avg_price=price.mean(),
        avg_disc=pl.col("l_discount").mean(),
        count_order=pl.len(),
    )


def ordered(summary: pl.DataFrame) -> pl.DataFrame:
    return summary.sort("l_returnflag", "l_linestatus")


def create_pipeline() -> Pipeline:
    return pipeline(
        [
            node(shipped, "lineitem", "shipped"),
            node(summary, "shipped", "summary"),
            node(ordered, "summary", "ordered"),
        ]
    )


TABLES = ["lineitem"]
FINAL = "ordered"
# <<< q01
