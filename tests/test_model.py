"""The definition document: parsing, precise errors, normalised round trip, builder."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weflow import DefinitionError, parse, workflow
from weflow.core import document
from weflow.core.input_types import INPUT_TYPES
from weflow.core.model import Definition
from weflow.execution import resolve_inputs
from weflow.workflows import check

from .conftest import REPO, RESOURCES


def test_seed_example_parses_and_checks(settings) -> None:
    d = check(parse((REPO / "data/workflows/daily_sales.yaml").read_text()))
    assert [n.name for n in d.nodes] == ["orders", "paid", "by_region", "ranked", "report"]
    assert d.schedule == ("0 6 * * *",)
    assert d.node("orders").contract is not None
    assert d.node("orders").contract.columns["order_id"].unique


def test_yaml_on_key_stays_a_string() -> None:
    d = parse("name: x\nnodes:\n  - {name: j, type: join, config: {on: id}}\n")
    assert d.nodes[0].config == {"on": "id"}


def test_json_and_yaml_give_the_same_definition(settings) -> None:
    d = check(parse((RESOURCES / "good/union_sql.json").read_text()))
    assert parse(document.to_yaml(d)) == d
    assert parse(document.to_json(d)) == d
    assert d.schedule == ("0 * * * *", "30 2 * * 0")


def test_error_paths_point_into_the_document() -> None:
    with pytest.raises(DefinitionError) as err:
        parse("name: w\nnodes:\n  - {name: a, type: read_csv, retries: -1}\n  - {type: filter}\n")
    paths = [p for p, _ in err.value.problems]
    assert "nodes[0].retries" in paths
    assert "nodes[1].name" in paths
    assert str(err.value).startswith("nodes[0].retries: ")


def test_export_of_import_is_the_normalised_document(settings) -> None:
    raw = document.load((REPO / "data/workflows/customer_revenue.yaml").read_text())
    d = check(document.from_data(raw))
    doc = d.to_document()
    assert document.from_data(doc).to_document() == doc
    assert doc["nodes"][2] == raw["nodes"][2]  # what the user wrote survives as written
    assert "retries" not in doc["nodes"][0]  # defaults are left out


def test_content_hash_ignores_formatting_but_not_content() -> None:
    a = parse("name: w\nnodes: [{name: a, type: read_csv, config: {path: x.csv}}]\n")
    b = parse('{"nodes": [{"config": {"path": "x.csv"}, "type": "read_csv", "name": "a"}], "name": "w"}')
    c = parse("name: w\nnodes: [{name: a, type: read_csv, config: {path: y.csv}}]\n")
    assert document.content_hash(a) == document.content_hash(b)
    assert document.content_hash(a) != document.content_hash(c)


def test_builder_reads_like_the_pipeline(settings) -> None:
    wf = workflow("built", description="from code", schedule="0 6 * * *")
    orders = wf.node("orders", "read_csv", path="data/samples/orders.csv")
    customers = wf.node("customers", "read_csv", path="data/samples/customers.csv")
    joined = wf.node("joined", "join", on="customer_id")
    paid = wf.node("paid", "filter", condition="status = 'paid'")
    orders >> paid >> joined["left"]
    customers >> joined["right"]
    joined >> wf.node("by_segment", "aggregate", by=["segment"], aggs={"revenue": "sum(amount)"}, retries=2)
    d = check(wf.build())
    assert [c.target for c in d.connections] == ["paid", "joined.left", "joined.right", "by_segment"]
    assert d.node("by_segment").retries == 2
    assert parse(document.to_yaml(d)) == d


def test_builder_errors_name_the_node() -> None:
    wf = workflow("built")
    wf.node("orders", "read_csv", path="data/samples/orders.csv") >> wf.node("top", "limit", n="many")
    with pytest.raises(DefinitionError, match=r"nodes\[1\]\.config\.n"):
        check(wf.build())


# --- property: any definition round-trips through its normalised document ------------------

names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
configs = st.dictionaries(
    st.from_regex(r"[a-z]{1,6}", fullmatch=True),
    st.one_of(st.integers(-5, 5), st.text(max_size=8), st.booleans(), st.lists(st.integers(0, 3), max_size=3)),
    max_size=3,
)


@st.composite
def definitions(draw: st.DrawFn) -> Definition:
    node_names = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    nodes = [
        {
            "name": n,
            "type": draw(st.sampled_from(["read_csv", "filter", "custom"])),
            "config": draw(configs),
            "retries": draw(st.integers(0, 3)),
            **({"timeout_seconds": draw(st.floats(1, 100))} if draw(st.booleans()) else {}),
        }
        for n in node_names
    ]
    connections = [
        {"from": node_names[i], "to": node_names[j]}
        for i in range(len(node_names))
        for j in range(i + 1, len(node_names))
        if draw(st.booleans())
    ]
    doc = {
        "name": draw(names),
        "description": draw(st.text(max_size=20)),
        "schedule": draw(st.sampled_from([[], ["0 6 * * *"], ["*/5 * * * *", "0 0 1 * *"]])),
        "nodes": nodes,
        "connections": connections,
    }
    return document.from_data(doc)


@settings(max_examples=60, deadline=None)
@given(definitions())
def test_property_round_trip(d: Definition) -> None:
    doc = d.to_document()
    assert document.from_data(doc) == d
    assert document.from_data(json.loads(json.dumps(doc))).to_document() == doc
    assert parse(document.to_yaml(d)) == d
    assert document.content_hash(parse(document.to_yaml(d))) == document.content_hash(d)


def test_yaml_export_keeps_characters_yaml_reads_as_line_breaks() -> None:
    d = document.from_data({"name": "w", "description": "a\x85b\u2028c", "nodes": [{"name": "n", "type": "t"}]})
    assert parse(document.to_yaml(d)) == d


@pytest.mark.parametrize("kind", sorted(INPUT_TYPES))
def test_an_input_value_is_judged_the_same_at_apply_and_at_run(kind: str) -> None:
    """One table: a value refused as a default when applied is refused as input_data when run, same words."""
    for value in ("7", 7, 7.5, True, False):
        doc = {"name": "w", "nodes": [{"name": "a", "type": "read_csv", "config": {"path": "a.csv"}}]}
        try:
            document.from_data({**doc, "inputs": {"n": {"type": kind, "default": value}}})
            at_apply = None
        except DefinitionError as exc:
            [(path, at_apply)] = exc.problems
            assert path == "inputs.n.default"
        declared = document.from_data({**doc, "inputs": {"n": {"type": kind}}})
        try:
            assert resolve_inputs(declared, {"n": value}) == {"n": value}
            at_run = None
        except DefinitionError as exc:
            [(path, at_run)] = exc.problems
            assert path == "input_data.n"
        assert at_apply == at_run, (kind, value)
        accepted = {"string": str, "integer": int, "number": int | float, "boolean": bool}[kind]
        assert (at_run is None) == (isinstance(value, accepted) and (kind == "boolean") == isinstance(value, bool))


def test_a_bool_default_for_an_integer_input_is_refused_at_apply_with_its_path() -> None:
    with pytest.raises(DefinitionError) as err:
        parse("name: w\ninputs:\n  n: {type: integer, default: true}\nnodes:\n  - {name: a, type: read_csv}\n")
    assert err.value.problems == [("inputs.n.default", "expected integer, got bool")]
