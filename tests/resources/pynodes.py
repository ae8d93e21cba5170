"""Python node callables the tests allow through WEFLOW_PYTHON_NODE_MODULES."""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl


def flaky(frame: pl.DataFrame, marker: str, fail_times: int = 1) -> pl.DataFrame:
    """Fail the first ``fail_times`` calls (counted in a file), then pass the frame on."""
    path = Path(marker)
    calls = int(path.read_text()) if path.exists() else 0
    path.write_text(str(calls + 1))
    if calls < fail_times:
        raise RuntimeError(f"flaky failure on call {calls + 1}")
    return frame.with_columns(pl.lit(calls + 1).alias("attempt"))


def slow(
    frame: pl.DataFrame | None = None, seconds: float = 1.0, marker: str | None = None, hold: str | None = None
) -> pl.DataFrame:
    """Sleep in small steps (so a timeout can interrupt), then write ``marker`` if given; with ``hold``, only while
    that file exists (at most ``seconds``)."""
    start = time.time()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and (hold is None or Path(hold).exists()):
        time.sleep(0.01)
    if marker:
        Path(marker).write_text("finished")
    return pl.DataFrame({"started": [start], "finished": [time.time()]})


def double(frame: pl.DataFrame, column: str = "amount") -> pl.DataFrame:
    return frame.with_columns((pl.col(column) * 2).alias(column))


def not_a_frame(frame: pl.DataFrame) -> int:
    return 42


def whoami(frame: pl.DataFrame, seconds: float = 0.0) -> pl.DataFrame:
    """The frame with the id of the process that ran this node (after an optional nap)."""
    import os

    time.sleep(seconds)
    return frame.with_columns(pl.lit(os.getpid()).alias("pid"))


def counted(frame: pl.DataFrame, counter: str) -> pl.DataFrame:
    """Pass the frame on, counting calls in the file ``counter`` (to prove a node did or did not run)."""
    path = Path(counter)
    path.write_text(str((int(path.read_text()) if path.exists() else 0) + 1))
    return frame


def fail_if_exists(frame: pl.DataFrame, marker: str) -> pl.DataFrame:
    """Fail while the file ``marker`` exists (a fault the test can switch off)."""
    if Path(marker).exists():
        raise RuntimeError(f"failing on purpose while {marker} exists")
    return frame


def die(frame: pl.DataFrame | None = None, code: int = 1) -> pl.DataFrame:
    """End the interpreter at once, the way a crashing native extension does (no exception, no cleanup)."""
    import os

    os._exit(code)
