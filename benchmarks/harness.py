"""Shared pieces of every benchmark: interleaved timing, statistics, machine facts, markdown.

A benchmark module builds a ``Section``: rows, each a weflow measurement next to one or more
baselines measured in the same process and the same rounds (weflow, baseline, weflow, baseline,
...), reported as median (min-max) of the repeats. Nothing here asserts a timing.
"""

from __future__ import annotations

import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("prefect", "polars", "duckdb", "pandera", "weflow")

Unit = Literal["s", "MB", "/min"]  # seconds, megabytes, or a rate (more is better)
DASH = "\u2013"  # en dash, for min-max ranges


# --- statistics ----------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    """Repeated measurements of one quantity: seconds (``unit="s"``) or megabytes."""

    samples: tuple[float, ...]
    unit: Unit = "s"

    def __post_init__(self) -> None:
        if not self.samples:
            raise ValueError("a Stat needs at least one sample")

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)

    def per(self, count: float) -> Stat:
        """The same measurements divided by ``count`` (per operation, per node, ...)."""
        return Stat(tuple(s / count for s in self.samples), self.unit)

    def cell(self) -> str:
        """``median (min-max)`` in one unit chosen from the median."""
        if self.unit == "MB":
            return f"{self.median:.0f} MB ({self.low:.0f}{DASH}{self.high:.0f})"
        if self.unit == "/min":
            return f"{self.median:.1f}/min ({self.low:.1f}{DASH}{self.high:.1f})"
        scale, suffix = _time_scale(self.median)
        med, low, high = (v * scale for v in (self.median, self.low, self.high))
        digits = _digits(med)
        return f"{med:.{digits}f} {suffix} ({low:.{digits}f}{DASH}{high:.{digits}f})"


def _time_scale(seconds: float) -> tuple[float, str]:
    if abs(seconds) >= 1:
        return 1.0, "s"
    if abs(seconds) >= 1e-3:
        return 1e3, "ms"
    return 1e6, "µs"


def _digits(value: float) -> int:
    value = abs(value)
    return 0 if value >= 100 else 1 if value >= 10 else 2


def ratio_text(value: float | None) -> str:
    if value is None:
        return "—"
    if 0 < value < 0.01:  # two decimals would print a real, tiny ratio as 0.00
        return f"{value:.2g}"
    return f"{value:.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


@dataclass(frozen=True)
class Row:
    """One line of a table: what was measured, weflow's numbers, each baseline's (or None)."""

    label: str
    weflow: Stat
    baselines: Mapping[str, Stat | None]

    def ratio(self, baseline: str) -> float | None:
        """weflow's median over the baseline's median (> 1: weflow takes longer / more)."""
        other = self.baselines.get(baseline)
        if other is None or other.median <= 0 or self.weflow.median <= 0:
            return None  # a difference of two noisy timings can come out at or below zero
        return self.weflow.median / other.median


@dataclass
class Section:
    """One benchmark's part of BENCHMARKS.md."""

    name: str
    title: str
    description: str
    baselines: Sequence[str]
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: list[str] = field(default_factory=list)  # markdown blocks after the notes (profiles)
    seconds: float = 0.0  # wall time of the whole benchmark, filled in by the runner

    def to_markdown(self) -> str:
        head = ["benchmark", "weflow", *self.baselines, *(f"weflow / {b}" for b in self.baselines)]
        lines = [f"## {self.name}: {self.title}", "", self.description.strip(), ""]
        lines.append("| " + " | ".join(head) + " |")
        lines.append("|" + "|".join(["---"] + ["--:"] * (len(head) - 1)) + "|")
        for row in self.rows:
            cells = [row.label, row.weflow.cell()]
            cells += [(row.baselines.get(b) or _MISSING).cell() for b in self.baselines]
            cells += [ratio_text(row.ratio(b)) for b in self.baselines]
            lines.append("| " + " | ".join(cells) + " |")
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        for block in self.details:
            lines += ["", block]
        lines += ["", f"_This benchmark took {self.seconds:.0f} s of wall time._", ""]
        return "\n".join(lines)


class _Missing:
    def cell(self) -> str:
        return "—"


_MISSING = _Missing()


# --- timing --------------------------------------------------------------------------


def clock(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> float:
    """Seconds taken by one call (setup belongs outside the call)."""
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - t0


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Callable[[], float]:
    """A variant for ``interleave``: each call times one call of ``fn(*args, **kwargs)``."""
    return lambda: clock(fn, *args, **kwargs)


@dataclass
class Quiet:
    """Bookkeeping of ``settle()``: how long we waited for the Prefect server and how often we gave up."""

    waited: float = 0.0
    gave_up: int = 0
    calls: int = 0
    server_pids: tuple[int, ...] = ()  # the local Prefect server's processes, once known


QUIET = Quiet()


def _listening_pid(port: int) -> int | None:
    """The process listening on local TCP ``port`` (Linux /proc), if it is visible to us."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) > 9 and parts[3] == "0A" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{parts[9]}]")
    if not inodes:
        return None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (entry / "fd").iterdir()):
                return int(entry.name)
        except OSError:
            continue
    return None


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()  # fields from "state" on (the name may hold spaces)


def _session_members(pid: int) -> tuple[int, ...]:
    """``pid`` and every process of its session (a server started by weflow has its own session)."""
    fields = _stat_fields(pid)
    if fields is None:
        return ()
    session = fields[3]
    members = [
        int(p.name)
        for p in Path("/proc").iterdir()
        if p.name.isdigit() and (_stat_fields(p.name) or [""] * 4)[3] == session
    ]
    return tuple(sorted({pid, *members}))


def _cpu_ticks(pids: tuple[int, ...]) -> int:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def watch_server(api_url: str) -> None:
    """Let ``settle()`` wait for this Prefect server when it runs on this machine."""
    host_port = api_url.split("://", 1)[-1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    if host not in ("127.0.0.1", "localhost", "0.0.0.0") or not port.isdigit():
        return
    pid = _listening_pid(int(port))
    if pid is not None:
        QUIET.server_pids = _session_members(pid)


def settle(max_wait: float, idle_below: float = 0.15, window: float = 0.1) -> None:
    """Wait (at most ``max_wait`` s) until the local Prefect server uses under ``idle_below`` of a core.

    The server records task runs after a flow run has ended; without this wait that backlog
    lands on whichever variant is measured next. Without a known local server, no wait.
    """
    pids = QUIET.server_pids
    if not pids or max_wait <= 0:
        return
    QUIET.calls += 1
    hz = os.sysconf("SC_CLK_TCK")
    start = time.perf_counter()
    before = _cpu_ticks(pids)
    while True:
        time.sleep(window)
        after = _cpu_ticks(pids)
        if (after - before) / hz / window < idle_below:
            break
        if time.perf_counter() - start >= max_wait:
            QUIET.gave_up += 1
            break
        before = after
    QUIET.waited += time.perf_counter() - start


def interleave(
    variants: Mapping[str, Callable[[], float]],
    repeats: int,
    *,
    warmup: int = 1,
    max_settle: float = 3.0,
    progress: str = "",
) -> dict[str, list[float]]:
    """Run every variant once per round, in order, for ``warmup + repeats`` rounds.

    Each variant returns the seconds it measured (so it can keep its own setup untimed).
    Warm-up rounds are run and thrown away. Returns the samples of each variant by round.
    """
    samples: dict[str, list[float]] = {name: [] for name in variants}
    gc.collect()
    gc.freeze()  # what exists now is never garbage: the collections below stay cheap
    for rnd in range(warmup + repeats):
        if progress:
            kind = "warm-up" if rnd < warmup else f"round {rnd - warmup + 1}/{repeats}"
            log(f"{progress}: {kind}")
        for name, fn in variants.items():
            settle(max_settle)
            gc.collect()
            seconds = fn()
            if rnd >= warmup:
                samples[name].append(seconds)
    return samples


def log(message: str) -> None:
    print(f"[benchmarks {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- the Prefect server --------------------------------------------------------------


@cache
def prefect_api() -> str:
    """The API every Prefect run of a benchmark talks to (weflow's own choice, see weflow.prefect_gateway.server)."""
    from weflow.prefect_gateway import server

    url = server.ensure().api_url
    watch_server(url)
    return url


# --- the machine ---------------------------------------------------------------------


def _meminfo_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def package_versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = dist_version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def machine() -> dict[str, str]:
    """Facts for the header: cores, memory, Python, date, versions, commit, load."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    memory = _meminfo_gib()
    commit = _git("rev-parse", "--short", "HEAD")
    dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "machine": f"{usable} of {cores} cores ({_cpu_model()}), "
        + (f"{memory:.1f} GiB RAM" if memory else "memory unknown")
        + f", {platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": ", ".join(f"{k} {v}" for k, v in package_versions().items()),
        "commit": (commit + (" (with uncommitted changes)" if dirty else "")) if commit else "unknown",
        "load average at start": " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)",
    }


# --- the document --------------------------------------------------------------------

METHOD = """\
How to read the tables:

- Every cell is **median (min-max)** over the repeats of that row. The median is the number to
  compare; a wide min-max says the machine was noisy during that row.
- Each comparison is measured **in the same run, interleaved**: one round runs weflow, then each
  baseline, then the next round does the same again. Every variant first runs untimed (a warm-up
  that also checks the answers agree). Before every measurement the runner waits (up to 30 s)
  for the local Prefect server's processes to go idle, so its recording of the previous run is
  not billed to the next measurement.
- **weflow / X** is weflow's median divided by baseline X's median: above 1, weflow takes longer
  (or more memory). "—" means no such baseline for that row, or a value that came out at or
  below zero (a difference of two noisy timings).
- A garbage collection runs (untimed) before each measurement; Prefect's default logging is left
  as configured, for weflow and raw Prefect alike.
- Timings are never asserted anywhere (the smoke test in `tests/test_benchmarks.py` checks only
  that every table has rows and positive ratios).
- Noise: this is a small shared machine (see the header; two cores here), the Prefect server runs
  on the same cores, and other work may run at the same time. Expect single rows to move by
  10-30 % between runs; ratios of 2x or more are the signal, small ones are not.
"""


def document(blocks: Sequence[str], facts: Mapping[str, str], quick: bool, command: str) -> str:
    """The report: the facts, how to read it, then each section's markdown (``Section.to_markdown``)."""
    lines = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (the `benchmarks/` package); rerun it rather than editing this file.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in facts.items()),
        f"| mode | {'quick (smoke sizes, not meaningful numbers)' if quick else 'full'} |",
        "",
        METHOD,
    ]
    lines += blocks
    return "\n".join(lines).rstrip() + "\n"
