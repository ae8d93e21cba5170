"""read_excel on workbooks written by xlsxwriter in the test: sheets by name and position, header
rows, ranges and columns, and the bad inputs (a missing sheet, a path outside the data roots)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import xlsxwriter

from weflow import DefinitionError, config, parse, workflows
from weflow.nodes.base import NodeInputs, RunContext
from weflow.nodes.excel import ExcelConfig
from weflow.nodes.registry import node_type


@pytest.fixture
def book(settings: config.Settings, tmp_path: Path) -> Path:
    """book.xlsx: Orders (a plain table), Report (a title, the table at B3:D6, a total below), Notes."""
    path = tmp_path / "book.xlsx"
    with xlsxwriter.Workbook(path) as workbook:
        orders = workbook.add_worksheet("Orders")
        for row, values in enumerate([["id", "city"], [1, "Oslo"], [2, "Lima"]]):
            orders.write_row(row, 0, values)
        report = workbook.add_worksheet("Report")
        report.write(0, 0, "Quarterly report")
        for row, values in enumerate([["id", "amount", "note"], [1, 9.5, "x"], [2, 3.0, "y"], [3, 4.0, "z"]]):
            report.write_row(2 + row, 1, values)
        report.write_row(8, 0, ["total", 16.5])
        workbook.add_worksheet("Notes").write(0, 0, "nothing")
    return path


def read(**fields: Any) -> pl.DataFrame:
    cfg = ExcelConfig.model_validate(fields)
    frame = node_type("read_excel").run(cfg, NodeInputs(), RunContext("w", "xl"))
    assert isinstance(frame, pl.DataFrame)
    return frame


def check(fields: dict[str, Any]) -> DefinitionError:
    document = {"name": "xl", "nodes": [{"name": "xl", "type": "read_excel", "config": fields}]}
    with pytest.raises(DefinitionError) as err:
        workflows.check(parse(json.dumps(document)))
    return err.value


def test_sheet_by_position_and_by_name(book: Path) -> None:
    first = read(path=str(book))
    assert first.to_dicts() == [{"id": 1, "city": "Oslo"}, {"id": 2, "city": "Lima"}]
    assert read(path="book.xlsx", sheet="Orders").equals(first)  # relative to a data root
    assert read(path=str(book), sheet=3).columns == ["nothing"]


def test_header_row_range_and_columns(book: Path) -> None:
    table = read(path=str(book), sheet="Report", range="B3:D6")
    assert table.to_dicts() == [
        {"id": 1, "amount": 9.5, "note": "x"},
        {"id": 2, "amount": 3.0, "note": "y"},
        {"id": 3, "amount": 4.0, "note": "z"},
    ]
    no_header = read(path=str(book), sheet="Report", range="B4:C5", header_row=None)
    assert no_header.rows() == [(1, 9.5), (2, 3.0)]
    from_row_3 = read(path=str(book), sheet="Report", header_row=3, columns="B:C")
    assert from_row_3.columns == ["id", "amount"] and from_row_3["id"].to_list()[:3] == [1, 2, 3]
    by_name = read(path=str(book), sheet="Report", header_row=3, columns=["note"])
    assert by_name["note"].to_list()[:3] == ["x", "y", "z"]


def test_a_missing_sheet_is_one_line_naming_the_sheet_field(book: Path) -> None:
    err = check({"path": str(book), "sheet": "Sales"})
    assert err.path == "nodes[0].config.sheet"
    assert str(err) == (
        f"nodes[0].config.sheet: {str(book)!r} has no sheet 'Sales' (it has 'Orders', 'Report', 'Notes')"
    )
    assert check({"path": str(book), "sheet": 4}).path == "nodes[0].config.sheet"
    with pytest.raises(ValueError, match=r"^sheet: 'book.xlsx' has 3 sheet\(s\), no sheet 4 "):
        read(path="book.xlsx", sheet=4)  # the workbook changed after apply: refused at run, same words


@pytest.mark.parametrize(
    ("fields", "path", "expect"),
    [
        ({"path": "/etc/passwd.xlsx"}, "nodes[0].config.path", "'/etc/passwd.xlsx' is outside the data roots"),
        ({"path": "../book.xlsx"}, "nodes[0].config.path", "must not contain '..'"),
        ({"path": "*.xlsx"}, "nodes[0].config.path", "must name one file"),
        ({"path": "book.xlsx", "sheet": 0}, "nodes[0].config.sheet", "counted from 1"),
        ({"path": "book.xlsx", "range": "B3-D6"}, "nodes[0].config.range", "string should match pattern"),
        ({"path": "book.xlsx", "range": "B3:D6", "header_row": 3}, "nodes[0].config.header_row", "first row"),
        ({"path": "book.xlsx", "range": "B3:D6", "columns": "B"}, "nodes[0].config.columns", "already picks"),
        ({"path": "book.xlsx", "shet": "x"}, "nodes[0].config.shet", "unknown field"),
    ],
)
def test_bad_configs_name_their_field(book: Path, fields: dict[str, Any], path: str, expect: str) -> None:
    err = check(fields)
    assert err.path == path and expect in str(err), str(err)


def test_not_a_workbook_and_a_file_that_is_gone(book: Path, tmp_path: Path) -> None:
    (tmp_path / "fake.xlsx").write_text("id,city\n1,Oslo\n")
    assert check({"path": "fake.xlsx"}).path == "nodes[0].config.path"
    with pytest.raises(FileNotFoundError, match=r"path: 'gone\.xlsx' is not a file under the data roots"):
        read(path="gone.xlsx")
