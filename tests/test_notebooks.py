"""The authoring notebooks run top to bottom, against a temporary catalog and a real Prefect server."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from .conftest import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.usefixtures("prefect_api")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = tmp_path / "project"
    for folder in ("data/samples", "data/workflows"):
        shutil.copytree(REPO / folder, work / folder)
    monkeypatch.setenv("WEFLOW_CATALOG", str(work / "data/weflow.duckdb"))
    monkeypatch.setenv("WEFLOW_DATA_ROOTS", str(work))
    monkeypatch.setenv("WEFLOW_RUNS_DIR", str(work / "data/runs"))
    book = nbformat.read(path, as_version=4)
    NotebookClient(book, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    errors = [o for c in book.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors == []
    shown = [
        o["data"]["text/markdown"]
        for c in book.cells
        if c.cell_type == "code"
        for o in c.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    ]
    assert any("```mermaid" in text for text in shown), "no graph was displayed"
