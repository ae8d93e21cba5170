"""Contracts compiled to Pandera: every check kind, frame bounds, schema-only mode, quarantine."""

from __future__ import annotations

import polars as pl

from weflow import contracts
from weflow.core.model import Contract

FRAME = pl.DataFrame({"id": [1, 2, 2, 4], "amount": [5.0, -1.0, 7.0, 900.0], "code": ["AB", "AC", "X", "ABCD"]})


def failed(spec: dict, frame: pl.DataFrame = FRAME) -> set[tuple[str | None, str]]:
    outcome = contracts.apply(Contract.model_validate(spec), frame)
    return {(f["column"], f["check"]) for f in outcome.failures}


def test_every_check_kind_reports_its_column_and_check() -> None:
    spec = {
        "columns": {
            "id": {"dtype": "Int64", "unique": True, "checks": {"notin": [4]}},
            "amount": {"checks": {"ge": 0, "lt": 500, "between": {"min": 0, "max": 10}}},
            "code": {"checks": {"str_matches": "^A", "str_length": {"max": 2}, "isin": ["AB", "AC"]}},
        }
    }
    assert failed(spec) == {
        ("id", "field_uniqueness"), ("id", "notin([4])"),
        ("amount", "greater_than_or_equal_to(0)"), ("amount", "less_than(500)"), ("amount", "in_range(0, 10)"),
        ("code", "str_matches('^A')"), ("code", "str_length(None, 2)"), ("code", "isin(['AB', 'AC'])"),
    }  # fmt: skip
    assert failed({"columns": {"amount": {"checks": {"gt": -5, "le": 1000, "ne": 3}}}}) == set()


def test_dtypes_strict_and_row_bounds() -> None:
    assert ("amount", "dtype('Int64')") in failed({"columns": {"amount": {"dtype": "Int64"}}})
    assert failed({"columns": {"id": {}}, "strict": True}) == {(None, "column_in_schema")}
    assert failed({"min_rows": 5}) == {(None, "min_rows(5)")}
    assert failed({"max_rows": 3}) == {(None, "max_rows(3)")}
    assert failed({"columns": {"missing": {}}}) == {(None, "column_in_dataframe")}


def test_schema_only_checks_names_and_dtypes_without_values() -> None:
    values = {"columns": {"amount": {"dtype": "Float64", "checks": {"ge": 0}}}, "checks_data": False}
    assert failed(values, FRAME) == set()  # bad values pass: only the schema is checked
    wrong_type = {"columns": {"amount": {"dtype": "String"}}, "checks_data": False}
    assert failed(wrong_type) != set()


def test_quarantine_keeps_the_valid_rows_and_reports_the_rest() -> None:
    contract = Contract.model_validate(
        {"columns": {"amount": {"checks": {"ge": 0, "le": 100}}}, "on_failure": "quarantine"}
    )
    outcome = contracts.apply(contract, FRAME.lazy())
    assert isinstance(outcome.frame, pl.DataFrame)
    assert outcome.frame["amount"].to_list() == [5.0, 7.0]
    assert outcome.invalid_rows == 2 and outcome.rows_checked == 4
    assert "column 'amount' failed" in outcome.message("w", "n")
