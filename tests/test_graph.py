"""Graph checks: every bad definition is refused with the path of the offending element."""

from __future__ import annotations

from pathlib import Path

import pytest

from weflow import DefinitionError, parse
from weflow.core.graph import find_cycle, problems, topological_order, upstream
from weflow.nodes.registry import signatures
from weflow.workflows import check, read

from .conftest import RESOURCES

BAD = sorted((RESOURCES / "bad").glob("*.yaml"))
GOOD = sorted((RESOURCES / "good").glob("*"))


def expected(path: Path) -> str:
    first = path.read_text().splitlines()[0]
    assert first.startswith("# expect: "), f"{path.name} must start with '# expect: ...'"
    return first[len("# expect: ") :]


@pytest.mark.parametrize("path", BAD, ids=[p.stem for p in BAD])
def test_bad_definition_is_refused_with_its_path(path: Path, settings) -> None:
    with pytest.raises(DefinitionError) as err:
        read(path)
    assert expected(path) in str(err.value)


@pytest.mark.parametrize("path", GOOD, ids=[p.stem for p in GOOD])
def test_good_definitions_pass(path: Path, settings) -> None:
    assert read(path).nodes


def test_all_problems_are_reported_at_once(settings) -> None:
    text = """
name: many
nodes:
  - {name: a, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: a, type: read_csv, config: {path: data/samples/orders.csv}}
  - {name: b, type: nope}
  - {name: c, type: limit, config: {}}
connections:
  - {from: a, to: c}
  - {from: zz, to: c}
"""
    with pytest.raises(DefinitionError) as err:
        check(parse(text))
    paths = [p for p, _ in err.value.problems]
    assert paths == ["nodes[1].name", "nodes[2].type", "nodes[3].config.n", "connections[1].from"]
    assert "and 3 more" in str(err.value)


def test_cycle_names_its_nodes_and_order_is_stable(settings) -> None:
    d = parse(
        "name: w\nnodes:\n"
        "  - {name: s, type: read_csv, config: {path: a.csv}}\n"
        "  - {name: x, type: union}\n  - {name: y, type: union}\n  - {name: z, type: union}\n"
        "connections: [{from: s, to: x}, {from: x, to: y}, {from: y, to: z}, {from: z, to: y}]\n"
    )
    assert find_cycle(d) == ["y", "z"]
    ok = parse(
        "name: w\nnodes:\n"
        "  - {name: c, type: union}\n  - {name: a, type: read_csv}\n  - {name: b, type: read_csv}\n"
        "connections: [{from: a, to: c}, {from: b, to: c}]\n"
    )
    assert topological_order(ok) == ["a", "b", "c"]
    assert upstream(ok, "c") == {"a", "b", "c"}


def test_the_checks_are_pure_passes_returning_paths_and_cycles_come_last() -> None:
    text = (
        "name: w\nnodes:\n"
        "  - {name: s, type: read_csv, config: {path: a.csv}}\n"
        "  - {name: x, type: union}\n  - {name: y, type: union}\n"
        "connections: [{from: s, to: x}, {from: x, to: y}, {from: y, to: x}]\n"
    )
    assert problems(parse(text), signatures()) == [("connections", "cycle: x -> y -> x")]
    unchecked = parse(text.replace("{path: a.csv}", "{pth: a.csv}"))  # cycles only once all else is right
    assert problems(unchecked, signatures()) == [
        ("nodes[0].config.path", "field required"),
        ("nodes[0].config.pth", "unknown field"),
    ]
