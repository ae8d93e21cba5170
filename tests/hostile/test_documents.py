"""Hostile definition documents (issue 14, items 8 and 11): alias bombs, repeated keys, deep nesting,
huge files and long chains are refused with their path, or handled, through the CLI and the API."""

from __future__ import annotations

import json
import re
import resource
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, RESOURCES, weflow_exe
from tests.test_api import Api
from weflow import DefinitionError, parse, workflows
from weflow.compile import plan
from weflow.core import document, mermaid
from weflow.core.diff import diff
from weflow.core.graph import find_cycle, topological_order, upstream
from weflow.execution import preview
from weflow.nodes.registry import node_types
from weflow.workflows import Scope

BAD = RESOURCES / "bad"
SALES = REPO / "data/workflows/daily_sales.yaml"
MEMORY_CAP = 2 << 30  # a regression (an alias bomb expanding) fails with MemoryError instead of eating the machine


def _capped() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def weflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [weflow_exe(), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=60, preexec_fn=_capped
    )


def expected(path: Path) -> str:
    return path.read_text().splitlines()[0].removeprefix("# expect: ")


def chain(n: int, source: str = "data/samples/orders.csv") -> dict[str, Any]:
    """A CSV read and ``n - 1`` filters, each feeding the next."""
    nodes: list[dict[str, Any]] = [{"name": "n0", "type": "read_csv", "config": {"path": source}}]
    nodes += [{"name": f"n{i}", "type": "filter", "config": {"condition": f"amount > {i % 7}"}} for i in range(1, n)]
    connections = [{"from": f"n{i - 1}", "to": f"n{i}"} for i in range(1, n)]
    return {"name": f"chain_{n}", "nodes": nodes, "connections": connections}


def nested(depth: int) -> dict[str, Any]:
    inner: dict[str, Any] = {}
    top = inner
    for _ in range(depth):
        inner["k"] = {}
        inner = inner["k"]
    return top


@pytest.fixture
def stored(scope: Scope) -> Callable[[], list[tuple[str, int]]]:
    """Applies daily_sales (version 1); returns a function listing (workflow, versions) as stored now."""
    workflows.apply(parse(SALES.read_text()), scope)

    def now() -> list[tuple[str, int]]:
        return [(w.name, len(workflows.versions(w.name, scope))) for w in workflows.list_workflows(scope)]

    return now


def _refused_by_cli(env: dict[str, str], bad: Path, tmp_path: Path) -> str:
    """`weflow apply` of a changed good file and ``bad``: one line on stderr, exit 1; its text."""
    changed = tmp_path / "daily_sales.yaml"
    changed.write_text(SALES.read_text().replace("Revenue per region", "Changed in the same apply"))
    started = time.monotonic()
    proc = weflow(env, "apply", str(changed), str(bad))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 30
    return proc.stderr


@pytest.mark.parametrize("name", ["alias_bomb", "duplicate_key", "too_deep"])
def test_cli_refuses_a_hostile_file_with_its_path_and_stores_nothing(
    name: str, cli_env: dict[str, str], stored: Callable[[], list[tuple[str, int]]], tmp_path: Path
) -> None:
    before = stored()
    err = _refused_by_cli(cli_env, BAD / f"{name}.yaml", tmp_path)
    assert expected(BAD / f"{name}.yaml") in err
    assert f"({BAD / name}.yaml, line " in err  # the file, line and column
    assert stored() == before == [("daily_sales", 1)]  # not even the good file of the same apply


def test_alias_bomb_is_refused_in_milliseconds(settings: object) -> None:
    text = (BAD / "alias_bomb.yaml").read_text()
    assert len(text.encode()) < 800  # 9 levels of 9 aliases: 387,420,489 strings once expanded
    started = time.perf_counter()
    with pytest.raises(DefinitionError) as err:
        document.parse(text)
    assert time.perf_counter() - started < 0.1
    assert err.value.path == "nodes[0].config.kwargs.l1[0]"


def test_depth_is_refused_where_it_happens_also_for_data_built_in_code(settings: object) -> None:
    at_limit = {"name": "ok", "nodes": [{"name": "a", "type": "read_csv", "config": {"path": "a.csv"}}]}
    at_limit["nodes"][0]["config"]["extra"] = nested(document.MAX_DEPTH - 4)  # nodes[0].config.extra: 4 levels
    assert document.from_data(at_limit).nodes[0].config["extra"]
    yaml_text = document.to_yaml(document.from_data(at_limit))
    assert document.parse(yaml_text).nodes[0].config == at_limit["nodes"][0]["config"]
    too_deep = json.loads(json.dumps(at_limit))
    too_deep["nodes"][0]["config"]["extra"] = nested(document.MAX_DEPTH - 3)
    for attempt in (lambda: document.from_data(too_deep), lambda: document.parse(json.dumps(too_deep))):
        with pytest.raises(DefinitionError) as err:
            attempt()
        assert err.value.path == "nodes[0].config.extra" + ".k" * (document.MAX_DEPTH - 3)  # 65 levels
        assert "nested deeper than 64 levels" in str(err.value)


def test_repeated_keys_are_refused_at_any_level_in_yaml_and_json(settings: object) -> None:
    for text, path, key in [
        ("name: a\nname: b\nnodes: []\n", "", "name"),
        ("name: a\nnodes:\n  - {name: x, type: read_csv, config: {path: a.csv}, name: y}\n", "nodes[0]", "name"),
        ('{"name": "a", "nodes": [{"name": "x", "config": {"k": {"p": 1, "p": 2}}}]}', "nodes[0].config.k", "p"),
    ]:
        with pytest.raises(DefinitionError) as err:
            document.parse(text)
        assert err.value.path == path and f"duplicate key {key!r} (<document>, line " in str(err.value)
        if text.startswith("{"):
            with pytest.raises(ValueError, match="^" + re.escape(f"{path}: duplicate key {key!r}") + "$"):
                document.loads_json(text)
    assert document.loads_json('{"a": {"b": 1}, "b": {"a": 2}}') == {"a": {"b": 1}, "b": {"a": 2}}


def test_file_over_the_limit_is_refused_unparsed_and_the_limit_is_a_setting(
    cli_env: dict[str, str], stored: Callable[[], list[tuple[str, int]]], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    big = tmp_path / "big.yaml"
    text = SALES.read_text().replace("name: daily_sales", "name: big")
    big.write_text(text + "#" * (document.DEFAULT_MAX_BYTES - len(text.encode()) + 1) + "\n")
    err = _refused_by_cli(cli_env, big, tmp_path)
    assert err == f"error: {big}: over the limit of 1048576 bytes (WEFLOW_MAX_DEFINITION_BYTES)\n"
    assert stored() == [("daily_sales", 1)]
    proc = weflow({**cli_env, "WEFLOW_MAX_DEFINITION_BYTES": str(2 << 20)}, "apply", str(big))
    assert proc.returncode == 0 and "big: version 1" in proc.stdout, proc.stderr
    monkeypatch.setenv("WEFLOW_MAX_DEFINITION_BYTES", "lots")  # read where the file is read (in-process here)
    with pytest.raises(DefinitionError, match="WEFLOW_MAX_DEFINITION_BYTES='lots': must be a positive number"):
        workflows.read(big)


def test_more_nodes_than_the_limit_are_refused_before_validation(
    cli_env: dict[str, str], stored: Callable[[], list[tuple[str, int]]], tmp_path: Path
) -> None:
    many = tmp_path / "many.json"
    many.write_text(json.dumps(chain(5_001)))
    err = _refused_by_cli(cli_env, many, tmp_path)
    assert err == "error: nodes: 5001 nodes, over the limit of 5000\n"
    assert stored() == [("daily_sales", 1)]


def test_a_1000_node_chain_checks_plans_renders_diffs_and_previews(scope: Scope, prefect_api: str) -> None:
    d = workflows.check(document.from_data(chain(1_000)))
    assert topological_order(d)[-1] == "n999" and len(upstream(d, "n999")) == 1_000
    steps = plan.build(d, node_types()).steps
    assert [len(s.nodes) for s in steps] == [1_000]  # lazy filters fuse into one query
    assert plan.build(d, node_types(), fuse=False).steps[-1].root == "n999"
    assert mermaid.graph(*d.outline()).count(" --> ") == 999
    longer = chain(1_001)
    longer["name"] = d.name
    assert diff(d, document.from_data(longer)).nodes_added == ("n1000",)
    cyclic = chain(1_000)
    cyclic["connections"].append({"from": "n999", "to": "n1"})
    cyclic["nodes"][1] = {"name": "n1", "type": "union"}
    assert find_cycle(document.from_data(cyclic)) == [f"n{i}" for i in range(1, 1_000)]
    with pytest.raises(DefinitionError, match=r"^connections: cycle: n1 -> n2 -> .* -> n999 -> n1$"):
        workflows.check(document.from_data(cyclic))
    frame = preview(d, "n999", n=50)
    assert frame.height > 0 and frame["amount"].min() > 6


def test_cli_applies_and_exports_a_1000_node_chain(cli_env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "chain.yaml"
    path.write_text(document.to_yaml(document.from_data(chain(1_000))))
    proc = weflow(cli_env, "apply", str(path))
    assert proc.returncode == 0 and "chain_1000: version 1" in proc.stdout, proc.stderr
    exported = weflow(cli_env, "export", "chain_1000")
    assert exported.returncode == 0 and exported.stdout == path.read_text(), exported.stderr


def _post(client: httpx.Client, body: bytes) -> httpx.Response:
    return client.post("/workflows", content=body, headers={"Content-Type": "application/json"})


def test_api_refuses_hostile_documents_with_their_path_and_takes_a_1000_node_chain(
    serve: Callable[..., Iterator[Api]],
) -> None:
    repeated = json.dumps(chain(2)).replace('"config": {"path"', '"config": {"path": "a.csv", "path"', 1)
    deep = chain(2)
    deep["nodes"][1]["config"]["extra"] = nested(80)
    cases = [
        (repeated.encode(), "body", "invalid JSON: nodes[0].config: duplicate key 'path'"),
        (json.dumps(deep).encode(), "nodes[1].config.extra" + ".k" * 61, "nested deeper than 64 levels"),
        (json.dumps(chain(5_001), separators=(",", ":")).encode(), "nodes", "5001 nodes, over the limit of 5000"),
    ]
    with serve(body_limit=1 << 20) as api, api.client("acme") as client:  # the default limit: room for 5,001 nodes
        for body, path, message in cases:
            response = _post(client, body)
            assert response.status_code == 422, response.text
            assert response.json()["problems"][0] == {"path": path, "message": message}
        assert client.get("/workflows").json()["items"] == []
        created = _post(client, json.dumps(chain(1_000)).encode())
        assert created.status_code == 201, created.text
        got = client.get(f"/workflows/{created.json()['id']}").json()
        assert len(got["definition"]["nodes"]) == 1_000 and len(got["definition"]["connections"]) == 999
