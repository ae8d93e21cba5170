"""Shared fixtures: a real catalog file per test, data roots at the repository."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from weflow import config
from weflow.catalog import Catalog
from weflow.workflows import Scope

REPO = Path(__file__).resolve().parent.parent
RESOURCES = Path(__file__).resolve().parent / "resources"


def weflow_exe() -> str:
    exe = Path(sys.executable).with_name("weflow")
    found = str(exe) if exe.exists() else shutil.which("weflow")
    assert found, "the weflow console script is not installed"
    return found


@pytest.fixture
def catalog_path(tmp_path: Path) -> Path:
    return tmp_path / "catalog" / "weflow.duckdb"


@pytest.fixture
def settings(catalog_path: Path, tmp_path: Path) -> Iterator[config.Settings]:
    with config.using(
        catalog=catalog_path,
        data_roots=(REPO, tmp_path.resolve()),
        runs_dir=tmp_path / "runs",
        organization="acme",
        user="ada",
    ) as current:
        yield current


@pytest.fixture
def scope(settings: config.Settings) -> Scope:
    return Scope.current(Catalog(settings.catalog))


@pytest.fixture
def cli_env(catalog_path: Path, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(WEFLOW_CATALOG=str(catalog_path), WEFLOW_DATA_ROOTS=f"{REPO}:{tmp_path}", COLUMNS="200")
    return env
