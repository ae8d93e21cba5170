"""The one atomic writer (weflow.files): sinks, persisted outputs and spills see old or new, never half."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import polars as pl
import pytest

from weflow.files import write_addressed, write_atomic


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    target.write_text("old\n")

    def half(tmp: Path) -> None:
        tmp.write_text("new, but")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, half)
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_outputs_are_named_by_content_and_follow_the_umask(tmp_path: Path) -> None:
    frame = pl.DataFrame({"a": [1, 2, 3]})
    before = os.umask(0o027)
    try:
        first = write_addressed(tmp_path / "runs", ".parquet", frame.write_parquet, label="paid")
        again = write_addressed(tmp_path / "runs", ".parquet", frame.write_parquet, label="paid")
        spilled = write_atomic(tmp_path / "spill" / "paid.parquet", frame.write_parquet)
    finally:
        os.umask(before)
    assert first == again and first.name == f"{hashlib.sha256(first.read_bytes()).hexdigest()}.parquet"
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # no temporary left behind
    assert pl.read_parquet(spilled).equals(frame)
    assert {first.stat().st_mode & 0o777, spilled.stat().st_mode & 0o777} == {0o640}
