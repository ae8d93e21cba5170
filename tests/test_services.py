"""Service seams the interfaces rely on: a checked definition is proof, and it is trusted only where it holds."""

from __future__ import annotations

from pathlib import Path

import pytest

from weflow import config, workflows
from weflow.core import document
from weflow.core.model import Definition
from weflow.errors import DefinitionError
from weflow.workflows import Scope


def _reader(path: Path) -> Definition:
    return document.from_data(
        {"name": "reader", "nodes": [{"name": "x", "type": "read_csv", "config": {"path": str(path)}}]}
    )


def test_a_checked_definition_cannot_be_made_by_hand(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"made by workflows\.checked"):
        workflows.Checked(_reader(tmp_path / "x.csv"), (tmp_path,), "acme")


def test_a_definition_checked_in_other_data_roots_is_checked_again_when_stored(scope: Scope, tmp_path: Path) -> None:
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    (mine / "x.csv").write_text("a\n1\n")
    with config.using(data_roots=(mine,)):
        checked = workflows.checked(_reader(mine / "x.csv"))
        assert checked.roots == (mine.resolve(),)
        assert workflows.apply_many([checked], scope)[0].version.number == 1  # same roots: stored as checked
        renamed = workflows.checked(_reader(mine / "x.csv").model_copy(update={"name": "moved"}))
    with config.using(data_roots=(other,)), pytest.raises(DefinitionError, match=r"nodes\[0\]\.config\.path: "):
        workflows.apply_many([renamed], scope)  # checked where the file was inside the roots: not trusted here
    assert [w.name for w in workflows.list_workflows(scope)] == ["reader"]
