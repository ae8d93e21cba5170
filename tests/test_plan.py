"""Plans: which nodes fuse into one lazy step and where frames are materialised (pure, no Prefect)."""

from __future__ import annotations

from weflow import parse
from weflow.compile.plan import build
from weflow.nodes.registry import node_types

CHAIN = """
name: chain
nodes:
  - {name: orders, type: read_csv, config: {path: a.csv}}
  - {name: customers, type: read_csv, config: {path: b.csv}}
  - {name: paid, type: filter, config: {condition: "amount > 0"}}
  - {name: joined, type: join, config: {on: id}}
  - {name: totals, type: aggregate, config: {by: [k], aggs: {n: "count(id)"}}}
  - {name: out, type: write_parquet, config: {path: o.parquet}}
connections:
  - {from: orders, to: paid}
  - {from: paid, to: joined.left}
  - {from: customers, to: joined.right}
  - {from: joined, to: totals}
  - {from: totals, to: out}
"""


def steps(text: str, **kwargs: bool) -> list[tuple[str, tuple[str, ...]]]:
    return [(s.root, s.nodes) for s in build(parse(text), node_types(), **kwargs).steps]


def test_a_tree_of_polars_nodes_is_one_step_and_sinks_stand_alone() -> None:
    assert steps(CHAIN) == [
        ("totals", ("orders", "customers", "paid", "joined", "totals")),
        ("out", ("out",)),
    ]


def test_fuse_off_gives_one_step_per_node() -> None:
    assert [root for root, _ in steps(CHAIN, fuse=False)] == ["orders", "customers", "paid", "joined", "totals", "out"]
    assert len(steps(CHAIN, persist_all=True)) == 6


def test_contracts_fan_out_and_policies_materialise() -> None:
    text = CHAIN.replace(
        '{name: paid, type: filter, config: {condition: "amount > 0"}}',
        '{name: paid, type: filter, config: {condition: "amount > 0"}, contract: {columns: {amount: {}}}}',
    )
    assert ("paid", ("orders", "paid")) in steps(text)
    fan = CHAIN + "  - {from: paid, to: extra}\n" + ""
    fan = fan.replace("connections:", "  - {name: extra, type: limit, config: {n: 1}}\nconnections:")
    found = steps(fan)
    assert ("paid", ("orders", "paid")) in found and ("extra", ("extra",)) in found
    retried = CHAIN.replace("type: join, config: {on: id}", "type: join, retries: 2, config: {on: id}")
    assert ("joined", ("joined",)) in steps(retried)


def test_step_inputs_are_the_edges_from_other_steps() -> None:
    plan = build(parse(CHAIN), node_types())
    out = plan.step_of("out")
    assert [(e.source, e.target, e.port) for e in out.inputs] == [("totals", "out", "in")]
    assert plan.step_of("paid").name == "totals (+4 fused)"
    assert plan.terminals == ("out",)
