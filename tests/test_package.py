"""Package hygiene: the public API is exactly __all__, and every module imports on its own."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import weflow


def test_all_is_sorted_and_complete() -> None:
    public = {n for n in dir(weflow) if not n.startswith("_")}
    modules = {m.name for m in pkgutil.iter_modules(weflow.__path__)}
    assert weflow.__all__ == sorted(weflow.__all__)
    assert public - modules == set(weflow.__all__)


def test_every_module_imports_in_a_clean_interpreter() -> None:
    names = [m.name for m in pkgutil.walk_packages(weflow.__path__, "weflow.") if not m.name.endswith("__main__")]
    code = "import importlib, sys\nfor n in sys.argv[1:]: importlib.import_module(n)"
    proc = subprocess.run([sys.executable, "-c", code, *names], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_importing_weflow_does_not_import_prefect() -> None:
    code = "import sys, weflow, weflow.workflows; print('prefect' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "False", proc.stderr


def test_notebook_api_saves_versions_diffs_and_rolls_back(settings) -> None:
    wf = weflow.workflow("nb", description="from a notebook")
    wf.node("orders", "read_csv", path="data/samples/orders.csv") >> wf.node("paid", "filter", condition="amount > 1")
    assert weflow.save(wf, "first").version.number == 1
    assert weflow.save(wf).created is False
    changed = weflow.load("nb").model_copy(update={"description": "changed"})
    assert weflow.save(changed).version.number == 2
    assert weflow.diff("nb", 1, 2).fields_changed == ("description",)
    assert [v.number for v in weflow.versions("nb")] == [1, 2]
    assert weflow.rollback("nb", 1).version.number == 3
    assert weflow.export("nb") == weflow.export("nb", 1)
    assert [w.name for w in weflow.list_workflows()] == ["nb"]
    weflow.delete("nb")
    assert weflow.list_workflows() == []


def test_no_export_shadows_a_submodule() -> None:
    modules = {m.name for m in pkgutil.iter_modules(weflow.__path__)}
    assert not modules & set(weflow.__all__)


def test_every_module_outside_the_prefect_gateway_is_held_to_the_no_prefect_contract() -> None:
    """The import-linter contract lists modules by name: a new top-level module must join it (or be a Prefect one)."""
    import tomllib
    from pathlib import Path

    config = tomllib.loads((Path(weflow.__file__).parent.parent / "pyproject.toml").read_text())
    contract = next(
        c for c in config["tool"]["importlinter"]["contracts"] if c["name"].startswith("Outside the Prefect gateway")
    )
    may_import_prefect = {"weflow.compile", "weflow.engine", "weflow.prefect_gateway"}
    top_level = {f"weflow.{m.name}" for m in pkgutil.iter_modules(weflow.__path__)}
    assert top_level - may_import_prefect == set(contract["source_modules"])


def test_the_execution_packages_lazy_names_are_its_exports_and_each_resolves() -> None:
    """``weflow.execution`` loads its names on first use: the table of where each lives must list exactly
    ``__all__``, and each must be found there (a name added to one and not the other, or moved, fails here)."""
    code = (
        "import sys\nfrom weflow import execution as e\n"
        "assert sorted(e._HOMES) == sorted(e.__all__), set(e._HOMES) ^ set(e.__all__)\n"
        "print('prefect' in sys.modules)\n"
        "for name in e.__all__: getattr(e, name)\n"
        "print('prefect' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True"]  # importing the package loads nothing; the engine on use
