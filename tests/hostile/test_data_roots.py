"""Issue 14, items 1, 4 and 11 (paths): nodes never reach weflow's own state, another organization's
files or what a glob's symlinks lead to; messages name no server path; sinks' files follow the umask.

Real parts: `weflow serve` in the README's layout (catalog ``data/weflow.duckdb`` inside the data
root), the ``weflow`` console script, DuckDB catalog files, the session's Prefect server, real
symlinks to ``/etc``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REPO, weflow_exe
from tests.hostile.conftest import run_unchecked
from tests.test_api import Api, create, stored_names, wait_final
from weflow import DefinitionError, config, parse, workflows
from weflow.catalog import Catalog, auth
from weflow.core.entities import RunState
from weflow.execution import run
from weflow.workflows import Scope

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]

ORDERS = str(REPO / "data/samples/orders.csv")
PASSWD = "root:x:0:0"  # the first line of /etc/passwd: it must show up nowhere


def read_duckdb(name: str, database: str, query: str = "SELECT * FROM api_keys") -> dict[str, Any]:
    steal = {"name": "steal", "type": "read_duckdb", "config": {"database": database, "query": query}}
    return {"name": name, "nodes": [steal]}


def forge(name: str, database: str, source: str = ORDERS) -> dict[str, Any]:
    """Append rows from ``source`` into ``database``'s api_keys table (the issue's attack)."""
    sink = {"database": database, "table": "api_keys", "mode": "append"}
    return {
        "name": name,
        "nodes": [
            {"name": "keys", "type": "read_csv", "config": {"path": source}},
            {"name": "sink", "type": "write_duckdb", "config": sink},
        ],
        "connections": [{"from": "keys", "to": "sink"}],
    }


def read_csv(name: str, path: str, sink: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": name, "nodes": [{"name": "src", "type": "read_csv", "config": {"path": path}}]}
    if sink is not None:
        doc["nodes"].append({"name": "out", "type": "write_csv", "config": {"path": sink}})
        doc["connections"] = [{"from": "src", "to": "out"}]
    return doc


def weflow(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([weflow_exe(), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120)


def refused(client: httpx.Client, doc: dict[str, Any], where: str, says: str) -> str:
    """POST ``doc``: a 422 whose first problem is at ``where`` and says ``says``; its message."""
    response = client.post("/workflows", json=doc)
    assert response.status_code == 422, (doc, response.text)
    problem = response.json()["problems"][0]
    assert problem["path"] == where and says in problem["message"], (doc, problem)
    return str(problem["message"])


def api_keys(catalog: Catalog) -> int:
    with catalog.transaction() as con:
        row = con.execute("SELECT count(*) FROM api_keys").fetchone()
    assert row is not None
    return int(row[0])


# --- item 1: weflow's own state ------------------------------------------------------


def test_api_users_cannot_reach_the_catalog_or_glob_out_of_the_root(
    serve: Callable[..., Iterator[Api]], tmp_path: Path
) -> None:
    catalog = tmp_path / "data" / "weflow.duckdb"
    with serve() as api, api.client("acme") as client:
        (tmp_path / "catalog-link.duckdb").symlink_to(catalog)
        os.link(catalog, tmp_path / "hard-link.duckdb")
        keys = api_keys(api.catalog)
        where, own = "nodes[0].config.database", "weflow's own state (the catalog)"
        for i, database in enumerate(
            ["data/weflow.duckdb", str(catalog), "catalog-link.duckdb", "hard-link.duckdb", "data/weflow.duckdb.wal",
             "data/weflow.duckdb.lock", "./data/weflow.duckdb"]
        ):  # fmt: skip
            message = refused(client, read_duckdb(f"steal{i}", database), where, own)
            assert str(tmp_path) not in message.replace(str(catalog), "")  # only the caller's own text
        refused(client, read_duckdb("steal_glob", "data/*.duckdb"), where, "must name one file")
        refused(client, read_duckdb("steal_up", "./data/../data/weflow.duckdb"), where, "must not contain '..'")
        (tmp_path / "keys.csv").write_text("id,user_id,key_hash\n99,1,forged\n")
        refused(client, forge("forge", "data/weflow.duckdb", "keys.csv"), "nodes[1].config.database", own)
        refused(client, read_csv("runs", "data/runs/*.parquet"), "nodes[0].config.path", "(the run outputs)")
        refused(client, read_csv("runs", "data/runs/x.parquet"), "nodes[0].config.path", "(the run outputs)")
        refused(client, read_csv("home", "data/prefect/prefect.db"), "nodes[0].config.path", "(the Prefect home)")
        # the server's data root is never shown, only the path the caller gave
        message = refused(client, read_csv("etc", "/etc/passwd"), "nodes[0].config.path", "outside the data roots")
        assert message == "'/etc/passwd' is outside the data roots (see WEFLOW_DATA_ROOTS)"
        assert str(tmp_path) not in client.post("/workflows", json=read_csv("etc", "/etc/passwd")).text
        # item 4: a glob whose matches lead through a symlink out of the root
        (tmp_path / "etclink").symlink_to("/etc")
        for path in ("etclin[k]/passwd", "*/passwd", "etcl?nk/pass*"):
            message = refused(client, read_csv("leak", path), "nodes[0].config.path", "which is outside the data roots")
            assert "'etclink/passwd'" in message and PASSWD not in message
        assert stored_names(api, "acme") == set()
        assert api_keys(api.catalog) == keys

        (tmp_path / "attack.json").write_text(json.dumps(read_duckdb("steal", "data/weflow.duckdb")))
        proc = weflow(api.env, tmp_path, "apply", "attack.json")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert proc.stderr.startswith("error: ") and f"{where}: 'data/weflow.duckdb' is {own}" in proc.stderr
        assert stored_names(api, "acme") == set()


def test_a_stored_definition_reaching_the_catalog_is_refused_at_run(scope: Scope, settings: config.Settings) -> None:
    auth.create_key(scope.catalog, scope.user)
    keys = api_keys(scope.catalog)
    database = str(settings.catalog)  # inside the data roots (tmp_path), as in the README's layout
    with pytest.raises(DefinitionError, match=r"nodes\[1\]\.config\.database: .* is weflow's own state"):
        workflows.apply(parse(json.dumps(forge("forge", database))), scope)

    # stored before the rule existed: `run` refuses it before it starts, nothing recorded
    scope.catalog.save(parse(json.dumps(forge("old_forge", database))), scope.user)
    with pytest.raises(DefinitionError, match=r"nodes\[1\]\.config\.database: .* is weflow's own state"):
        run("old_forge", scope)
    assert scope.catalog.executions(scope.user.organization_id) == []

    # and were that check skipped, the node itself refuses: FAILED, the catalog untouched
    for doc in (forge("late_forge", database), read_duckdb("late_steal", database)):
        record = run_unchecked(scope, doc)
        assert record.status is RunState.FAILED, record
        assert "is weflow's own state (the catalog)" in (record.error_message or "")
    assert api_keys(scope.catalog) == keys


# --- one data root per organization ----------------------------------------------------


def test_each_organization_reaches_only_its_own_root(serve: Callable[..., Iterator[Api]], tmp_path: Path) -> None:
    for org in ("acme", "globex"):
        (tmp_path / "orgs" / org).mkdir(parents=True)
        (tmp_path / "orgs" / org / f"{org}.csv").write_text(f"id,org\n1,{org}\n")
    roots = {"WEFLOW_DATA_ROOTS": f"{tmp_path}/orgs/{{organization}}", "WEFLOW_SHARED_DATA_ROOTS": "false"}
    with serve(env_extra=roots) as api, api.client("globex") as globex:
        refused(globex, read_csv("peek", "../acme/acme.csv"), "nodes[0].config.path", "must not contain '..'")
        acme_file = f"{tmp_path}/orgs/acme/acme.csv"
        message = refused(globex, read_csv("peek", acme_file), "nodes[0].config.path", "outside the data roots")
        assert f"{tmp_path}/orgs/globex" not in message
        refused(globex, read_csv("peek", f"{tmp_path}/orgs/*/acme.csv"), "nodes[0].config.path", "outside the data")
        assert stored_names(api, "globex") == set()

        # the server runs as WEFLOW_ORG=acme: globex's paths are checked and read in globex's root
        create(globex, read_csv("own_abs", f"{tmp_path}/orgs/globex/globex.csv"))
        wf = create(globex, read_csv("own", "globex.csv"))
        started = globex.post(f"/workflows/{wf['id']}/executions", json={})
        assert started.status_code == 202, started.text
        final = wait_final(globex, started.json()["id"])
        assert final["status"] == "SUCCEEDED", final["errorMessage"]
        assert stored_names(api, "globex") == {"own_abs", "own"}


def test_a_root_shared_by_organizations_needs_the_operators_opt_in(
    serve: Callable[..., Iterator[Api]], tmp_path: Path
) -> None:
    (tmp_path / "orders.csv").write_text("id\n1\n")
    with serve(env_extra={"WEFLOW_SHARED_DATA_ROOTS": "false"}) as api, api.client("acme") as acme:
        says = "WEFLOW_SHARED_DATA_ROOTS=true"
        for path in ("orders.csv", str(tmp_path / "orders.csv"), "*.csv"):
            message = refused(acme, read_csv("shared", path), "nodes[0].config.path", says)
            assert "{organization}" in message and str(tmp_path) not in message
        nap = {"name": "p", "type": "python", "config": {"callable": "tests.resources.pynodes:slow"}}
        create(acme, {"name": "no_files", "nodes": [nap]})
        assert stored_names(api, "acme") == {"no_files"}

        (tmp_path / "shared.json").write_text(json.dumps(read_csv("shared", "orders.csv")))
        proc = weflow(api.env, tmp_path, "apply", "shared.json")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "nodes[0].config.path: no data root is open" in proc.stderr and says in proc.stderr
        assert stored_names(api, "acme") == {"no_files"}


def test_shared_roots_are_refused_at_run_when_a_second_organization_arrives(scope: Scope, tmp_path: Path) -> None:
    with config.using(shared_data_roots=False):
        workflows.apply(parse(json.dumps(read_csv("mine", ORDERS))), scope)  # alone in the catalog: allowed
        scope.catalog.ensure_user("globex", "bob")
        with pytest.raises(DefinitionError, match=r"nodes\[0\]\.config\.path: no data root is open"):
            run("mine", scope)
        record = run_unchecked(scope, read_csv("mine_late", ORDERS))
        assert record.status is RunState.FAILED and "WEFLOW_SHARED_DATA_ROOTS" in (record.error_message or "")
    assert run("mine", scope).execution.status is RunState.SUCCEEDED  # the fixture's opt-in


# --- item 4: globs through symlinks ----------------------------------------------------


@pytest.fixture
def etclink(tmp_path: Path) -> Iterator[Path]:
    link = tmp_path / "etclink"
    link.symlink_to("/etc")
    yield link
    link.unlink()


def test_glob_matches_leading_outside_the_roots_are_refused_at_apply(
    cli_env: dict[str, str], tmp_path: Path, etclink: Path, scope: Scope
) -> None:
    for i, path in enumerate(("etclin[k]/passwd", "*/passwd", "etcl?nk/pass*")):
        with pytest.raises(DefinitionError) as err:
            workflows.read(_write(tmp_path / f"leak{i}.json", read_csv("leak", path)))
        assert f"nodes[0].config.path: {path!r} matches 'etclink/passwd', which is outside" in str(err.value)
        assert PASSWD not in str(err.value) and str(tmp_path) not in str(err.value)
    # `weflow apply` says the same in one line, exit 1 (one process: the three globs differ only in the check above)
    proc = weflow(cli_env, tmp_path, "apply", "leak1.json")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "nodes[0].config.path: '*/passwd' matches 'etclink/passwd', which is outside" in proc.stderr
    assert PASSWD not in proc.stderr and str(tmp_path) not in proc.stderr.replace(f"{tmp_path}/leak", "")
    assert workflows.list_workflows(scope) == []


def _write(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(json.dumps(doc))
    return path


def test_glob_matches_are_checked_again_when_the_node_runs(scope: Scope, tmp_path: Path, etclink: Path) -> None:
    sink = str(tmp_path / "out" / "leak.csv")
    for i, path in enumerate((f"{tmp_path}/etclin[k]/passwd", "*/passwd", f"{tmp_path}/**/passwd")):
        record = run_unchecked(scope, read_csv(f"leak{i}", path, sink))
        assert record.status is RunState.FAILED, record
        message = record.error_message or ""
        assert ("which is outside the data roots" in message) or ("matches no file" in message), message
        assert PASSWD not in repr(record)
        assert not Path(sink).exists()
    with pytest.raises(DefinitionError, match="matches 'etclink/passwd', which is outside"):
        run("leak1", scope)  # checked again before the run: the symlink came after the apply
    # a glob that matches only files under the roots still reads them all, in order
    for name in ("b", "a"):
        (tmp_path / "parts" / name).mkdir(parents=True)
        (tmp_path / "parts" / name / "x.csv").write_text(f"part\n{name}\n")
    workflows.apply(parse(json.dumps(read_csv("parts", str(tmp_path / "parts/*/x.csv")))), scope)
    assert run("parts", scope)["src"]["part"].to_list() == ["a", "b"]


def test_a_matched_name_with_glob_characters_is_read_as_itself(scope: Scope, tmp_path: Path) -> None:
    """Polars globs each path it is given: a match named 'a[1].json' must not read 'a1.json' instead."""
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / "a[1].json").write_text('{"v": "bracket"}\n')
    (tmp_path / "n" / "a1.json").write_text('{"v": "plain"}\n')
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "b[1].csv").write_text("v\nbracket\n")
    (tmp_path / "c" / "b1.csv").write_text("v\nplain\n")
    doc = {
        "name": "brackets",
        "nodes": [
            {"name": "nd", "type": "read_ndjson", "config": {"path": str(tmp_path / "n/*.json")}},
            {"name": "cs", "type": "read_csv", "config": {"path": str(tmp_path / "c/*.csv")}},
        ],
    }
    workflows.apply(parse(json.dumps(doc)), scope)
    result = run("brackets", scope)
    assert sorted(result["nd"]["v"].to_list()) == ["bracket", "plain"]
    assert sorted(result["cs"]["v"].to_list()) == ["bracket", "plain"]


# --- item 11: sinks follow the umask ---------------------------------------------------


def test_sink_files_get_the_mode_the_umask_gives(scope: Scope, tmp_path: Path) -> None:
    out = tmp_path / "out"
    doc = read_csv("modes", ORDERS, str(out / "orders.csv"))
    doc["nodes"].append({"name": "pq", "type": "write_parquet", "config": {"path": str(out / "orders.parquet")}})
    doc["connections"].append({"from": "src", "to": "pq"})
    workflows.apply(parse(json.dumps(doc)), scope)
    for mask in (0o022, 0o027):
        before = os.umask(mask)
        try:
            assert run("modes", scope).execution.status is RunState.SUCCEEDED
        finally:
            os.umask(before)
        for name in ("orders.csv", "orders.parquet"):
            assert (out / name).stat().st_mode & 0o777 == 0o666 & ~mask, (name, oct(mask))
    assert sorted(p.name for p in out.iterdir()) == ["orders.csv", "orders.parquet"]  # no temporary file left
