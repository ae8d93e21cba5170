"""The ``read_excel`` node: one sheet of an .xlsx/.xls/.ods workbook under the data roots, read
by Polars through fastexcel (calamine).

Rows and columns are numbered as Excel shows them: ``sheet: 1`` is the first sheet, ``header_row: 3``
the third row, ``range: B3:D20`` columns B to D of rows 3 to 20 (its first row the header unless
``header_row: null``). A sheet the workbook lacks is refused at apply when the file is already
there, and at run otherwise, naming the sheets it has.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, field_validator

from weflow.nodes.base import Frame, NodeConfig, NodeInputs, RunContext, check_path, resolve_path

_RANGE = re.compile(r"^([A-Z]{1,3})([1-9][0-9]*):([A-Z]{1,3})([1-9][0-9]*)$")


class ExcelConfig(NodeConfig):
    path: str = Field(min_length=1, description="workbook under the data roots")
    sheet: int | str = Field(default=1, description="sheet name, or its position (1 is the first)")
    header_row: int | None = Field(default=1, ge=1, description="row of the column names (null: none)")
    range: str | None = Field(default=None, pattern=_RANGE.pattern, description="cells to read, e.g. B3:D20")
    columns: str | list[str] | None = Field(default=None, description="Excel columns ('A:C,E') or column names")

    @field_validator("sheet")
    @classmethod
    def _sheet(cls, sheet: int | str) -> int | str:
        if sheet == "" or (isinstance(sheet, int) and sheet < 1):
            raise ValueError("a sheet name, or a position counted from 1 (the first sheet)")
        return sheet


def _sheet_problem(path: Path, config: Any) -> str | None:
    """Why ``config.sheet`` names no sheet of the workbook at ``path``, else None."""
    import fastexcel  # deferred like Polars defers it: only Excel nodes need it

    try:
        names = fastexcel.read_excel(path).sheet_names
    except fastexcel.FastExcelError as exc:
        raise ValueError(f"path: {config.path!r} is not a workbook fastexcel reads ({type(exc).__name__})") from None
    has = f"it has {', '.join(map(repr, names))}"
    if isinstance(config.sheet, int) and config.sheet > len(names):
        return f"sheet: {config.path!r} has {len(names)} sheet(s), no sheet {config.sheet} ({has})"
    if isinstance(config.sheet, str) and config.sheet not in names:
        return f"sheet: {config.path!r} has no sheet {config.sheet!r} ({has})"
    return None


def check_excel(config: Any) -> None:
    """The apply-time check: the path under the data roots, one file; the sheet, if the file is there."""
    check_path(form="one")(config)
    if config.range is not None and "header_row" in config.model_fields_set and config.header_row is not None:
        raise ValueError("header_row: with a range, the header is the range's first row (header_row: null for none)")
    if config.range is not None and config.columns is not None:
        raise ValueError("columns: the range already picks the columns")
    found = resolve_path(config.path)
    problem = _sheet_problem(found, config) if found.is_file() else None
    if problem is not None:
        raise ValueError(problem)


def read_options(config: ExcelConfig) -> dict[str, Any]:
    """fastexcel's options for the configured header row, range and columns (its rows count from 0)."""
    options: dict[str, Any] = {}
    if config.range is not None:
        match = _RANGE.match(config.range)
        assert match is not None  # the field's pattern
        first_col, first, last_col, last = match.groups()
        options["use_columns"] = f"{first_col}:{last_col}"
        header = config.header_row is not None
        options["header_row"] = int(first) - 1 if header else None
        if not header:
            options["skip_rows"] = int(first) - 1
        options["n_rows"] = int(last) - int(first) + (0 if header else 1)
        return options
    options["header_row"] = None if config.header_row is None else config.header_row - 1
    if config.columns is not None:
        options["use_columns"] = config.columns
    return options


def read_excel(config: ExcelConfig, inputs: NodeInputs, ctx: RunContext) -> Frame:
    """The configured sheet (or range of it) as a DataFrame; Excel files are read whole, not scanned."""
    path = resolve_path(config.path, ctx.data_roots)
    if not path.is_file():
        raise FileNotFoundError(f"path: {config.path!r} is not a file under the data roots")
    sheet = {"sheet_id": config.sheet} if isinstance(config.sheet, int) else {"sheet_name": config.sheet}
    options = read_options(config)
    try:
        frame: pl.DataFrame = pl.read_excel(
            path, engine="calamine", has_header=options["header_row"] is not None, read_options=options, **sheet
        )
    except ValueError as exc:  # Polars: "no matching sheet found when ...": say which sheets there are
        problem = _sheet_problem(path, config) if "no matching sheet" in str(exc) else None
        if problem is None:
            raise
        raise ValueError(problem) from None
    return frame
