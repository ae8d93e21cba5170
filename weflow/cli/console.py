"""The ``weflow`` Typer app every command module adds to, the global options' state, and how results print."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum, StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast

import typer

from weflow.config import settings
from weflow.errors import WeflowError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

    from weflow.workflows import Scope

app = typer.Typer(
    name="weflow",
    help="Workflows stored as data in DuckDB, run as Prefect flows over Polars frames.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class _Deferred:
    """A rich Console made on first use (or by ``prepare``): rich costs ~45 ms of import, which ``weflow run`` spends
    while its run runs on a worker rather than before handing it over."""

    def __init__(self, make: Callable[[], Console]) -> None:
        self._make: Callable[[], Console] = make
        self._made: Console | None = None

    def made(self) -> Console:
        if self._made is None:
            self._made = self._make()
        return self._made

    def __getattr__(self, name: str) -> Any:
        return getattr(self.made(), name)


def _out() -> Console:
    from rich.console import Console

    # Markup and emoji codes off: names, descriptions, conditions, paths and log lines are user text,
    # and a description with `[/x]` made `weflow list` exit 1 (issue 14); styles come from Text only.
    made = Console(soft_wrap=True, markup=False, emoji=False)
    if not made.is_terminal:
        made.width = 200  # scripts and logs: never truncate columns
    return made


def _note() -> Console:
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True, highlight=False, markup=False, emoji=False)


_OUT, _NOTE = _Deferred(_out), _Deferred(_note)
out = cast("Console", _OUT)
# What came before a secret on stdout: secrets go alone to stdout, what they are to stderr.
note = cast("Console", _NOTE)


def stderr_console() -> Console:
    """``note`` itself, for what takes a Console and uses it as more than its methods (rich's progress bars)."""
    return _NOTE.made()


def prepare() -> None:
    """Import rich and make the consoles now (``weflow run`` does it in a thread while it waits for its run)."""
    from rich.table import Table  # noqa: F401  (``table`` needs it next)

    _OUT.made()
    _NOTE.made()


_catalog: dict[str, Path | None] = {"path": None}
_verbose = {"on": False}


class Format(StrEnum):
    table = "table"
    json = "json"


class DocFormat(StrEnum):
    yaml = "yaml"
    json = "json"


FormatOpt = Annotated[Format, typer.Option("--format", "-f", help="table for people, json for scripts")]


class BadInput(WeflowError):
    """A command-line value is wrong."""


def use(catalog: Path | None, verbose: bool) -> None:
    """Keep the global options for the command that runs next."""
    _catalog["path"] = catalog
    _verbose["on"] = verbose


def catalog_path() -> Path:
    """The ``--catalog`` given to ``weflow`` (or WEFLOW_CATALOG), else the default catalog."""
    return _catalog["path"] or settings().catalog


def scope() -> Scope:
    from weflow.workflows import Scope  # deferred: a command that needs no catalog loads no DuckDB

    return Scope.current(catalog_path())


def _quiet_prefect_console() -> None:
    """Silence the console handler Prefect puts on the root logger, unless ``--verbose``.

    A failing run printed two full Prefect tracebacks on stderr (issue 14); the CLI prints one line
    instead. Prefect's API handler sits on its own loggers, so every line still reaches ``weflow logs``.
    Importing Prefect configures its logging once per process, so the run engine (which imports Prefect) is loaded
    first: ``weflow.execution`` loads its names on first use, and a handler added after this would print.
    """
    import weflow.execution.lifecycle  # noqa: F401  (the callers run flows next: nothing extra to load)

    if _verbose["on"]:
        return
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.setLevel(logging.CRITICAL + 1)


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "to_document"):
        return value.to_document()
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")


def table(title: str | None, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    from rich.table import Table
    from rich.text import Text

    t = Table(title=title, header_style="bold")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*[Text("" if v is None else str(v)) for v in r])
    out.print(t)


def bold(text: str) -> Text:
    from rich.text import Text

    return Text(text, style="bold")


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""
