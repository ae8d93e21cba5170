"""A pytest plugin: every workflow test in a collected ``*.yaml`` definition runs as one pytest item.

Opt-in (it must not collect a project's data/workflows by surprise): ``pytest --weflow-tests``, or
``weflow_tests = true`` in the ini file. A definition file with a ``tests:`` section (or a
``NAME.tests.yaml`` beside it) becomes a collector; each test an item named after it. A failure names
the workflow, the test and the node, with the diff of expected and actual rows. Registered through the
``pytest11`` entry point; ``-p weflow.pytest_plugin`` loads it by hand. Nothing heavy is imported
until a definition is collected.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

if TYPE_CHECKING:
    from weflow.core.model import Definition
    from weflow.workflow_tests import Outcome

SUFFIXES = (".yaml", ".yml")
BESIDE = ".tests.yaml"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("weflow")
    group.addoption("--weflow-tests", action="store_true", help="collect workflow tests from *.yaml definitions")
    parser.addini("weflow_tests", "collect workflow tests from *.yaml definitions", type="bool", default=False)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    config = parent.config
    if not (config.getoption("weflow_tests") or config.getini("weflow_tests")):
        return None
    if file_path.suffix not in SUFFIXES or file_path.name.endswith(BESIDE) or not _has_tests(file_path):
        return None
    return DefinitionFile.from_parent(parent, path=file_path)


def _has_tests(path: Path) -> bool:
    """A definition (name and nodes) with a tests section, or a tests file beside it; cheap, no weflow import."""
    if path.with_name(path.stem + BESIDE).is_file():
        return True
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "nodes" in data and bool(data.get("tests"))


class DefinitionFile(pytest.File):
    """A workflow definition file: one item per workflow test."""

    def collect(self) -> Iterator[pytest.Item]:
        from weflow import workflow_tests  # deferred: the engine imports Prefect (~1.5 s)

        definition = workflow_tests.from_file(self.path)
        for index, test in enumerate(definition.tests):
            yield WorkflowTestItem.from_parent(self, name=test.name, definition=definition, index=index)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:  # type: ignore[override]
        from weflow.errors import WeflowError

        if isinstance(excinfo.value, WeflowError):
            return f"{self.path.name}: {excinfo.value}"  # one line naming the path in the document
        return super().repr_failure(excinfo)


class WorkflowTestFailed(Exception):
    """A workflow test did not hold; carries its outcome."""

    def __init__(self, outcome: Outcome) -> None:
        self.outcome = outcome
        super().__init__(outcome.report())


class WorkflowTestItem(pytest.Item):
    """One workflow test, run in-process on Polars (no Prefect server, nothing written)."""

    def __init__(self, *, definition: Definition, index: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.definition = definition
        self.index = index

    def runtest(self) -> None:
        from weflow import workflow_tests

        outcome = workflow_tests.run_test(self.definition, self.index)
        if not outcome.ok:
            raise WorkflowTestFailed(outcome)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from weflow.errors import WeflowError

        if isinstance(excinfo.value, WorkflowTestFailed | WeflowError):
            return str(excinfo.value)
        return super().repr_failure(excinfo, style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"workflow test {self.definition.name}::{self.name}"
