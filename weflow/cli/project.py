"""``weflow init``: scaffold a weflow project (sample data, an example definition, a starter notebook)."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from weflow.cli.console import app, bold, out


@app.command("init")
def init_(
    folder: Annotated[Path, typer.Argument(help="the project folder (made if missing)")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="scaffold into a folder that is not empty")] = False,
) -> None:
    """Make a weflow project: data/ with a sample, workflows/ with an example, notebooks/, .gitignore, a README."""
    from weflow import projects

    made = projects.init(folder, force)
    for f in made.files:
        out.print(f"  {f}", highlight=False)
    out.print(Text.assemble("weflow project in ", bold(str(made.root))))
    here = "" if made.root == Path.cwd().resolve() else f"cd {shlex.quote(str(folder))} && "
    out.print(f"next: {here}weflow apply workflows/*.yaml && weflow up --run daily_sales", highlight=False)
