"""The weflow console script, run as a user would: real process, real catalog file."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from weflow import config, workflows
from weflow.workflows import Scope

from .conftest import REPO, RESOURCES, weflow_exe


def weflow(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([weflow_exe(), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def applied(cli_env: dict[str, str], scope: Scope, settings: config.Settings) -> dict[str, str]:
    """The two samples applied in this process (a set-up step; `weflow apply` itself is tested below)."""
    samples = [workflows.parse_file(REPO / "data/workflows" / f"{n}.yaml") for n in ("daily_sales", "customer_revenue")]
    workflows.apply_many(samples, scope)
    return {**cli_env, "WEFLOW_ORG": settings.organization, "WEFLOW_USER": settings.user}


def names(scope: Scope) -> list[tuple[str, int]]:
    return [(w.name, w.current_version) for w in workflows.list_workflows(scope)]


def test_apply_list_show_export(cli_env: dict[str, str], tmp_path: Path) -> None:
    applied = cli_env
    samples = ("data/workflows/daily_sales.yaml", "data/workflows/customer_revenue.yaml")
    assert "version 1" in weflow(applied, "apply", *samples).stdout
    listed = json.loads(weflow(applied, "list", "--format", "json").stdout)
    assert [(w["name"], w["current_version"], w["status"]) for w in listed] == [
        ("customer_revenue", 1, "ACTIVE"),
        ("daily_sales", 1, "ACTIVE"),
    ]
    shown = json.loads(weflow(applied, "show", "daily_sales", "--format", "json").stdout)
    assert [n["name"] for n in shown["definition"]["nodes"]] == ["orders", "paid", "by_region", "ranked", "report"]
    table = weflow(applied, "show", "daily_sales").stdout
    assert "by_region" in table and "aggregate" in table and "0 6 * * *" in table
    exported = weflow(applied, "export", "daily_sales").stdout
    again = tmp_path / "again.yaml"
    again.write_text(exported)
    assert "unchanged (version 1)" in weflow(applied, "apply", str(again)).stdout


def test_versions_diff_rollback(applied: dict[str, str], tmp_path: Path) -> None:
    text = (REPO / "data/workflows/daily_sales.yaml").read_text().replace("status = 'paid'", "status = 'refunded'")
    changed = tmp_path / "daily_sales.yaml"
    changed.write_text(text)
    assert "version 2" in weflow(applied, "apply", str(changed), "-m", "refunds only").stdout
    versions = json.loads(weflow(applied, "versions", "daily_sales", "--format", "json").stdout)
    assert [(v["number"], v["message"]) for v in versions] == [(1, ""), (2, "refunds only")]
    diff = weflow(applied, "diff", "daily_sales", "1", "2").stdout
    assert "~ node paid: config.condition" in diff
    assert json.loads(weflow(applied, "diff", "daily_sales", "1", "2", "-f", "json").stdout)["nodes_changed"] == [
        {"node": "paid", "fields": ["config.condition"]}
    ]
    assert "version 3" in weflow(applied, "rollback", "daily_sales", "1").stdout
    v1 = weflow(applied, "export", "daily_sales", "--version", "1", "-f", "json").stdout
    assert weflow(applied, "export", "daily_sales", "-f", "json").stdout == v1
    old = weflow(applied, "show", "daily_sales", "--version", "2").stdout
    assert "version 2 of 3" in old


def test_delete_then_missing_is_a_clear_error(applied: dict[str, str]) -> None:
    assert "deleted" in weflow(applied, "delete", "customer_revenue").stdout
    proc = weflow(applied, "show", "customer_revenue", ok=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: no workflow named 'customer_revenue'"


@pytest.mark.parametrize("name", ["missing_port", "cycle", "path_outside_roots", "not_yaml", "input_default_bool"])
def test_bad_file_is_one_line_non_zero_and_stores_nothing(applied: dict[str, str], scope: Scope, name: str) -> None:
    path = RESOURCES / "bad" / f"{name}.yaml"
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    before = names(scope)
    proc = weflow(applied, "apply", "data/workflows/daily_sales.yaml", str(path), ok=False)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ")
    assert expect in proc.stderr
    assert "Traceback" not in proc.stderr
    assert names(scope) == before  # read in this process: the catalog file is what the CLI wrote


def test_usage_errors_exit_non_zero(applied: dict[str, str]) -> None:
    assert weflow(applied, "diff", "daily_sales", "1", ok=False).returncode == 2
    proc = weflow(applied, "show", "daily_sales", "--version", "7", ok=False)
    assert proc.returncode == 1 and "no version 7" in proc.stderr


def test_nodes_lists_types_and_config_fields(cli_env: dict[str, str]) -> None:
    types = {t["type"]: t for t in json.loads(weflow(cli_env, "nodes", "-f", "json").stdout)}
    assert {"read_csv", "filter", "join", "aggregate", "sql", "python", "write_duckdb"} <= set(types)
    assert types["join"]["inputs"] == ["left", "right"]
    assert {f["name"] for f in types["filter"]["config"]} == {"condition"}
    assert types["union"]["variadic"] is True


def test_a_command_loads_only_its_own_module_and_the_table_of_commands_is_the_whole_cli(
    cli_env: dict[str, str],
) -> None:
    import typer.main

    from weflow.cli import app as cli

    whole = typer.main.get_command(cli.app)  # every module loaded
    assert isinstance(whole, typer.core.TyperGroup)
    made_by = {}
    for name, command in whole.commands.items():
        inner = list(getattr(command, "commands", {}).values()) or [command]  # a group: its commands' module
        made_by[name] = {c.callback.__module__.removeprefix("weflow.cli.") for c in inner if c.callback}
    assert made_by == {name: {module} for name, module in cli.COMMANDS.items()}
    assert set(cli.MODULES) == set(cli.COMMANDS.values())
    valued = {o for p in whole.params if not getattr(p, "is_flag", True) for o in p.opts}  # global options' values
    assert valued == cli.VALUED
    assert cli.modules_for(["--catalog", "run", "run", "x"]) == ("runs",)  # a catalog file named "run"
    assert cli.modules_for(["--verbose", "--catalog=c.duckdb", "users", "list"]) == ("admin",)
    for everything in ([], ["--help"], ["--help", "run"], ["no-such-command"], ["--verbose"]):
        assert cli.modules_for(everything) == cli.MODULES, everything
    # the console script: an unknown command still gets click's usage error naming it, with every command known
    proc = weflow(cli_env, "lst", ok=False)
    assert proc.returncode == 2 and "No such command 'lst'" in proc.stderr, proc.stderr
    listed = weflow(cli_env, "--help").stdout
    assert all(name in listed for name in cli.COMMANDS)


def test_the_console_script_loads_its_command_with_the_collector_off_then_frozen(cli_env: dict[str, str]) -> None:
    """Python's cyclic collector walked the ~45k objects the CLI's imports make, over and over and again at exit:
    ~130 ms of a `weflow run` handed to a worker (0.81 -> 0.68 s p50). The console script loads its command with the
    collector off, freezes what loading made, and runs the command with the collector on."""
    [script] = entry_points(group="console_scripts", name="weflow")
    assert script.value == "weflow.cli:main"
    probe = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print(gc.get_freeze_count(), gc.isenabled(), file=sys.stderr))\n"
        "sys.argv = ['weflow', 'list', '--format', 'json']\n"
        "from weflow.cli import main\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], env=cli_env, cwd=REPO, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    frozen, enabled = done.stderr.split()[-2:]
    assert int(frozen) > 10_000 and enabled == "True", done.stderr
    assert isinstance(json.loads(done.stdout), list)
