"""``weflow init``: a project folder anywhere, scaffolded from the template shipped in the package.

The template (``weflow/project_template``) holds ``weflow.toml`` (the marker ``config.project_root``
looks for), a sample CSV in ``data/``, one definition in ``workflows/`` that runs on it, a starter
notebook, a ``.gitignore`` for weflow's own state and a README of the project's two commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from string import Template

from weflow.errors import WeflowError

TEMPLATE = "project_template"
RENAMED = {"gitignore": ".gitignore"}  # stored without the dot: a dotfile is easy to lose from a package's data
SUBSTITUTED = {"README.md"}  # ``$name`` becomes the project folder's name


class ProjectError(WeflowError):
    """A project folder that cannot be made (not empty, not a folder)."""


@dataclass(frozen=True)
class Project:
    root: Path
    files: tuple[Path, ...]  # what init wrote, relative to the root


def _walk(node: Traversable, prefix: Path = Path()) -> list[tuple[Path, Traversable]]:
    found: list[tuple[Path, Traversable]] = []
    for child in sorted(node.iterdir(), key=lambda c: c.name):
        if child.is_dir():
            found += _walk(child, prefix / child.name)
        elif not child.name.endswith((".pyc", ".pyo")):
            found.append((prefix / RENAMED.get(child.name, child.name), child))
    return found


def init(folder: Path, force: bool = False) -> Project:
    """Scaffold a project in ``folder`` (made if missing); a non-empty one only with ``force`` (its files are kept
    unless the template has a file of the same name, which is overwritten)."""
    root = folder.expanduser().resolve()
    if root.exists() and not root.is_dir():
        raise ProjectError(f"{folder}: not a folder")
    if root.is_dir() and any(root.iterdir()) and not force:
        raise ProjectError(f"{folder}: folder is not empty (add --force to scaffold into it)")
    written = []
    for relative, source in _walk(files("weflow") / TEMPLATE):
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.name in SUBSTITUTED:
            target.write_text(Template(source.read_text("utf-8")).safe_substitute(name=root.name), "utf-8")
        else:
            target.write_bytes(source.read_bytes())
        written.append(relative)
    return Project(root, tuple(written))
