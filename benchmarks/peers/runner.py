"""The peers benchmark: TPC-H Q1, Q3, Q5, Q10 and a trivial chain in weflow, hand-written Prefect,
Hamilton, Kedro and Dagster, each framework in a fresh child process of its own environment.

Every measurement is a child process (``benchmarks/peers/child.py``) started by the interpreter of
the framework's environment (``.peers/<name>/`` for the peers, the project's for weflow and
Prefect); the runner times the whole process from start to exit, and the child reports its import
time, the first and the warm (second) run of its pipeline in the same process, and its peak RSS
(``VmHWM``). Before any timing, one child per framework runs every query once and writes its
answers, each checked equal to DuckDB's (``benchmarks.tpch``); a mismatch fails the benchmark.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks import tpch
from benchmarks.harness import REPO, Row, Stat, log, prefect_api, settle
from benchmarks.peers import envs

HERE = Path(__file__).resolve().parent
CHILD = HERE / "child.py"
QUERIES = ("q01", "q03", "q05", "q10")
NAMES = {"weflow": "weflow", "prefect": "hand-written Prefect", "hamilton": "Hamilton", "kedro": "Kedro",
         "dagster": "Dagster"}  # fmt: skip
FRAMEWORKS = tuple(NAMES)
BASELINES = tuple(NAMES[f] for f in FRAMEWORKS[1:])


@dataclass(frozen=True)
class Measured:
    """One child process: its whole wall time and what it reported about itself."""

    wall_s: float
    import_s: float
    peak_mb: float
    jobs: dict[str, dict[str, Any]]

    def cold(self, job: str) -> float:
        """The whole process as if it had run ``job`` once: its wall time less the warm runs it made after."""
        return self.wall_s - sum(self.jobs[job]["warm_s"])

    def rest(self) -> float:
        """Interpreter start-up and exit: the wall time less the imports and every run."""
        runs = sum(j["first_s"] + sum(j["warm_s"]) for j in self.jobs.values())
        return self.wall_s - self.import_s - runs

    def first(self, job: str) -> float:
        return float(self.jobs[job]["first_s"])

    def warm(self, job: str) -> float:
        return float(statistics.median(self.jobs[job]["warm_s"]))


def child_env(framework: str) -> dict[str, str]:
    """The child's environment: the Prefect server for weflow and Prefect; the peers' telemetry off."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    if framework in ("weflow", "prefect"):
        env["PREFECT_API_URL"] = prefect_api()
    env.update(DO_NOT_TRACK="1", KEDRO_DISABLE_TELEMETRY="true", HAMILTON_TELEMETRY_ENABLED="false")
    return env


def measure(framework: str, root: Path, csv: Path, jobs: Sequence[str], warm: int = 1,
            answers: Path | None = None) -> Measured:  # fmt: skip
    """Run ``jobs`` in one fresh process of ``framework``; raise with the child's last lines if it fails."""
    if not envs.ready(framework):
        raise RuntimeError(f"peers: no environment for {framework} in .peers/{framework}: "
                           "run python -m benchmarks.peers.envs")  # fmt: skip
    command = [str(envs.python(framework)), str(CHILD), framework, str(root), str(csv), *jobs, "--warm", str(warm)]
    if answers is not None:
        command += ["--answers", str(answers)]
    t0 = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=child_env(framework), capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(f"peers: {framework} {' '.join(jobs)} failed:\n{done.stderr.strip()[-3000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    return Measured(wall, report["import_s"], report["peak_mb"], report["jobs"])


def check_answers(frameworks: Sequence[str], root: Path, csv: Path, chains: tuple[int, int], work: Path,
                  side_by_side: bool = False) -> dict[str, Measured]:  # fmt: skip
    """One child per framework runs every query and both chains once more; each answer must equal DuckDB's.

    ``side_by_side`` runs the children at the same time (quick mode: its numbers are not meant to be read).
    """
    jobs = [*QUERIES, *(f"chain{n}" for n in chains)]
    for framework in frameworks:
        (work / framework).mkdir()
    log(f"peers: answers of {', '.join(frameworks)}")
    with ThreadPoolExecutor(len(frameworks) if side_by_side else 1) as pool:
        running = {f: pool.submit(measure, f, root, csv, jobs, 1, work / f) for f in frameworks}
    checked = {f: future.result() for f, future in running.items()}
    verify_answers(frameworks, root, csv, chains, work)
    return checked


def verify_answers(frameworks: Sequence[str], root: Path, csv: Path, chains: tuple[int, int], work: Path) -> None:
    """Each ``work/<framework>/<job>.parquet`` equals DuckDB's answer (the chains: the CSV unchanged)."""
    con = tpch.duckdb_connection(root)
    expected = pl.read_csv(csv)
    try:
        for framework in frameworks:
            for query in QUERIES:
                got = pl.read_parquet(work / framework / f"{query}.parquet")
                tpch.same_answer(got, tpch.with_duckdb(con, query), f"{query}: {NAMES[framework]} vs DuckDB SQL")
            for n in chains:
                if not pl.read_parquet(work / framework / f"chain{n}.parquet").equals(expected):
                    raise AssertionError(f"chain{n}: {NAMES[framework]} changed the frame")
    finally:
        con.close()


# --- lines of code ----------------------------------------------------------------------------

BLOCK = re.compile(r"^[ \t]*# >>> (?P<jobs>[\w ]+)\n(?P<body>.*?)^[ \t]*# <<< (?P=jobs)\n", re.MULTILINE | re.DOTALL)


def code_lines(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


def lines_of_code(framework: str, query: str) -> int:
    """The pipeline's lines: weflow's definition file; a peer's ``# >>> ... query`` blocks (no imports, no helpers)."""
    if framework == "weflow":
        return code_lines((REPO / "benchmarks" / "tpch" / f"{query}.yaml").read_text())
    total = 0
    for path in (HERE / f"pipelines_{framework}.py", HERE / f"{framework}_{query}.py"):
        if path.exists():
            for block in BLOCK.finditer(path.read_text()):
                if query in block["jobs"].split():
                    total += code_lines(block["body"])
    return total


def loc_table(frameworks: Sequence[str]) -> str:
    head = ["lines of code (plain count)", *(NAMES[f] for f in frameworks)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["--:"] * len(frameworks)) + "|"]
    for query in QUERIES:
        lines.append(f"| {query.upper()} | " + " | ".join(str(lines_of_code(f, query)) for f in frameworks) + " |")
    return "\n".join(lines)


# --- the benchmark ------------------------------------------------------------------------------


def timings(frameworks: Sequence[str], root: Path, csv: Path, rounds: int, chains: tuple[int, int],
            chain_warm: int) -> tuple[dict[tuple[str, str], list[Measured]], dict[str, list[Measured]]]:  # fmt: skip
    """Interleaved rounds: each query in a fresh process of every framework, then the chains."""
    per_query: dict[tuple[str, str], list[Measured]] = {}
    per_chain: dict[str, list[Measured]] = {f: [] for f in frameworks}
    for rnd in range(rounds):
        for query in QUERIES:
            log(f"peers: round {rnd + 1}/{rounds}, {query}")
            for framework in frameworks:
                settle(10.0)
                per_query.setdefault((framework, query), []).append(measure(framework, root, csv, [query]))
        log(f"peers: round {rnd + 1}/{rounds}, chains")
        for framework in frameworks:
            settle(10.0)
            jobs = [f"chain{n}" for n in chains]
            per_chain[framework].append(measure(framework, root, csv, jobs, warm=chain_warm))
    return per_query, per_chain


def rows(frameworks: Sequence[str], per_query: dict[tuple[str, str], list[Measured]],
         per_chain: dict[str, list[Measured]], chains: tuple[int, int]) -> list[Row]:  # fmt: skip
    """The table: per query cold, first, warm and peak RSS; then imports and the chain's per-node cost."""

    def row(label: str, value: Any) -> Row:
        stats = {f: value(f) for f in frameworks}
        return Row(label, stats["weflow"], {NAMES[f]: stats.get(f) for f in FRAMEWORKS[1:]})

    def stat(query: str, get: Any, unit: Any = "s") -> Any:
        return lambda f: Stat(tuple(get(m) for m in per_query[f, query]), unit)

    out = []
    for query in QUERIES:
        q = query.upper()
        out += [
            row(f"{q}, whole process (cold)", stat(query, lambda m, q=query: m.cold(q))),
            row(f"{q}, pipeline: first run in the process", stat(query, lambda m, q=query: m.first(q))),
            row(f"{q}, pipeline: second run in the same process (warm)", stat(query, lambda m, q=query: m.warm(q))),
            row(f"{q}, peak RSS of the process", stat(query, lambda m: m.peak_mb, "MB")),
        ]
    out.append(row("imports before any work (all query processes)",
                   lambda f: Stat(tuple(m.import_s for q in QUERIES for m in per_query[f, q]))))  # fmt: skip
    out.append(row("interpreter start-up and exit (wall - imports - runs; all query processes)",
                   lambda f: Stat(tuple(m.rest() for q in QUERIES for m in per_query[f, q]))))  # fmt: skip
    small, large = chains
    out.append(row(f"trivial chain, {small} nodes (warm)", lambda f: Stat(tuple(m.warm(f"chain{small}")
                                                                                for m in per_chain[f]))))  # fmt: skip
    out.append(row(f"trivial chain, per node (warm, marginal {small} to {large} nodes)", lambda f: Stat(tuple(
        (m.warm(f"chain{large}") - m.warm(f"chain{small}")) / (large - small) for m in per_chain[f]))))  # fmt: skip
    return out


def weflow_notes(per_query: dict[tuple[str, str], list[Measured]]) -> list[str]:
    """Where weflow's time goes: inside its fused step task (the plan) against the Prefect flow run around it."""
    inside, around = [], []
    for query in QUERIES:
        runs = per_query.get(("weflow", query), [])
        plan = [statistics.median(m.jobs[query]["inside_s"][1:]) for m in runs if m.jobs[query]["inside_s"][1:]]
        rest = [m.warm(query) - p for m, p in zip(runs, plan, strict=False)]
        if plan:
            inside.append(f"{query.upper()} {Stat(tuple(plan)).cell()}")
            around.append(f"{query.upper()} {Stat(tuple(rest)).cell()}")
    if not inside:
        return []
    return [
        "Of weflow's warm run, the time inside its fused step task (building and collecting the one lazy plan, "
        "from weflow's node records): " + ", ".join(inside) + "; the rest of the run (the Prefect flow run and "
        "task run around it, reading and checking the definition, compiling it): " + ", ".join(around) + "."
    ]


def import_profile(framework: str, top: int = 4) -> str:
    """The packages a framework's child imports, heaviest first (``python -X importtime``, one process, seconds)."""
    code = f"import sys; sys.path.insert(0, {str(HERE)!r}); import pipelines_{framework}"
    done = subprocess.run([str(envs.python(framework)), "-X", "importtime", "-c", code], cwd=REPO,
                          env=child_env(framework), capture_output=True, text=True, timeout=600)  # fmt: skip
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) != 3 or not parts[0].strip().isdigit():
            continue  # the header
        package = parts[2].strip().split(".")[0]  # self times summed by top-level package: no double counting
        found[package] = found.get(package, 0.0) + int(parts[0]) / 1e6
    total = sum(found.values())
    heaviest = sorted(found.items(), key=lambda kv: -kv[1])[:top]
    return f"{NAMES[framework]} {total:.2f} s (" + ", ".join(f"{p} {s:.2f}" for p, s in heaviest) + ")"


def profile_weflow(root: Path, csv: Path, query: str, work: Path) -> str:
    """A pyinstrument call tree of one whole weflow child process running ``query`` once (imports included)."""
    from pyinstrument.session import Session

    from benchmarks.profiles import details, render  # pyinstrument: the project's dev extra

    session_file = work / f"weflow-{query}.pyisession"
    pyinstrument = envs.python("weflow").with_name("pyinstrument")
    command = [str(pyinstrument), "-i", "0.001", "-r", "pyisession", "-o", str(session_file), str(CHILD), "weflow",
               str(root), str(csv), query, "--warm", "0"]  # fmt: skip
    subprocess.run(command, cwd=REPO, env=child_env("weflow"), check=True, capture_output=True, timeout=600)
    title = f"weflow: one whole child process running {query.upper()} once (pyinstrument, 1 ms; imports included)"
    return details(title, render(Session.load(str(session_file))))
