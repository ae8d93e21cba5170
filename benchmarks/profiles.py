"""Where the time goes: pyinstrument profiles of the runs whose ratios miss their targets.

Three scenes, each timed unprofiled against raw Prefect doing the same work (interleaved, like
every other benchmark), then profiled once more with pyinstrument (1 ms sampling, async-aware):

- TPC-H Q6 run in-process by ``execute()`` (one fused Prefect task) against a raw Prefect flow
  whose one task runs the hand-written Polars query: the fixed cost of a flow run around a
  ~0.1 s query;
- a chain of 100 trivial nodes with ``fuse=False`` (one Prefect task per node) against the raw
  Prefect chain of ``benchmarks/overhead.py``: what a task costs;
- a new ``weflow run daily_sales`` process against ``benchmarks/raw_cold.py`` (both on the running
  server): imports and start-up;
- ``workflows.list_workflows`` of 10,000 workflows against a raw ``SELECT`` of the same rows
  (``benchmarks/catalog.py``; the baseline column is then plain DuckDB, not Prefect).

The profile trees keep Prefect's engine and client frames, weflow's and Polars' (others are
folded into them) and drop frames under 4 % of the total.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL, temporary_settings
from pyinstrument import Profiler
from pyinstrument.renderers import ConsoleRenderer
from pyinstrument.session import Session

from benchmarks import catalog, coldstart, overhead, tpch
from benchmarks.harness import Row, Section, Stat, interleave, log, prefect_api, timed
from weflow import config, workflows

RAW = "raw Prefect"
SHOWN = (
    r".*(weflow|benchmarks|prefect/(flow|task)_engine|prefect/client|prefect/results|prefect/context"
    r"|ssl|polars|duckdb).*"
)
THRESHOLD = 0.04


def render(session: Session) -> str:
    """The call tree of ``session`` as plain text, pruned to what explains the time."""
    renderer = ConsoleRenderer(
        unicode=False, color=False, show_all=False,
        processor_options={"filter_threshold": THRESHOLD, "show_regex": SHOWN},
    )  # fmt: skip
    text = renderer.render(session)
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(("Profile at", "Program:"))), 0)
    return "\n".join(line.rstrip() for line in lines[start:] if line.strip()).strip()


def profiled(fn: Any, times: int) -> Session:
    profiler = Profiler(interval=0.001, async_mode="enabled")
    profiler.start()
    for _ in range(times):
        fn()
    return profiler.stop()


def details(title: str, tree: str) -> str:
    return f"<details><summary>{title}</summary>\n\n```text\n{tree}\n```\n\n</details>"


# --- raw Prefect running one TPC-H query -------------------------------------------------------


@task(name="query", cache_policy=NO_CACHE, persist_result=False)
async def _query(query: str, root: str) -> pl.DataFrame:
    return tpch.with_polars(query, Path(root))


@flow(name="bench-raw-prefect-tpch", persist_result=False)
async def raw_tpch(query: str, root: str) -> pl.DataFrame:
    return await _query(query, root)


def run_raw_tpch(query: str, root: Path) -> pl.DataFrame:
    with temporary_settings(updates={PREFECT_API_URL: prefect_api()}):
        return asyncio.run(raw_tpch(query, str(root)))


# --- the benchmark ---------------------------------------------------------------------------


def run(quick: bool) -> Section:
    repeats = 1 if quick else 7
    warmup = 0 if quick else 1
    profiled_runs = 1 if quick else 5
    chain = 10 if quick else 100
    settle = 0.3 if quick else 3.0  # quick: settle()'s path, not a settled server (the numbers are not read)
    section = Section(
        name="profiles",
        title="where the time goes (pyinstrument)",
        description=f"""\
Profiles of the rows that miss their targets, each next to its raw Prefect twin measured in the
same run (interleaved, {repeats} round(s){"" if quick else " after a warm-up"}; medians). **TPC-H Q6** (scale factor
{tpch.scale_factor(quick):g}) run in-process by `execute()` (one fused Prefect task) against a raw
Prefect flow whose one task runs the hand-written Polars query; **a chain of {chain} nodes**
with `fuse=False` (one Prefect task per node) against `benchmarks/overhead.py`'s raw Prefect
chain; **a new `weflow run daily_sales` process** against `benchmarks/raw_cold.py`, both on
the running server; **listing {catalog.many_workflows_count(quick):,} workflows** with
`workflows.list_workflows` against `benchmarks/catalog.py`'s raw `SELECT` (open, query, tuples,
close: plain DuckDB, in the baseline column). Then each weflow scene once more under
pyinstrument (1 ms sampling, async-aware; {profiled_runs} run(s) of the in-process scenes, one
process, {profiled_runs * 4} listings): the trees below keep weflow's, Polars', DuckDB's and
Prefect's engine, client and result-store frames (others are folded into their callers) and
drop frames under {THRESHOLD:.0%} of the total. Profiling slows Python code down, so read the
trees for shares, the table for times.""",
        baselines=(RAW,),
    )
    api = prefect_api()
    root = tpch.generate(tpch.scale_factor(quick))
    tpch.same_answer(tpch.run_weflow("q06", root)[0], run_raw_tpch("q06", root), "weflow q06 vs raw Prefect")

    work = Path(tempfile.mkdtemp(prefix="weflow-bench-profiles-")).resolve()
    csv = work / "rows.csv"
    csv.write_text("a,b\n1,2\n3,4\n5,6\n")
    cold_root = work / "cold"
    cold_root.mkdir()
    report = coldstart.apply_daily_sales(cold_root)
    env = {**coldstart.base_env(cold_root), "PREFECT_API_URL": api}
    weflow_cmd = [str(coldstart.WEFLOW_BIN), "run", "daily_sales"]
    raw_report = work / "raw-daily.parquet"
    raw_cmd = [sys.executable, str(coldstart.RAW_SCRIPT), str(coldstart.SAMPLE), str(raw_report)]

    def process(cmd: list[str], output: Path) -> float:
        return coldstart.launch(cmd, cold_root, env, output).seconds  # a failed run or no output is an error

    listed = catalog.many_workflows(work / "listed.duckdb", catalog.many_workflows_count(quick))
    organization = listed.user.organization_id

    with config.using(data_roots=(work, root, coldstart.REPO)):
        definition = overhead.chain_definition(csv, chain)
        scenes = {
            "q06": {
                "weflow": lambda: tpch.run_weflow("q06", root),
                RAW: lambda: run_raw_tpch("q06", root),
            },
            "chain": {
                "weflow": lambda: overhead.run_weflow(definition, False),
                RAW: lambda: overhead.run_prefect(csv, chain),
            },
            "list": {
                "weflow": lambda: workflows.list_workflows(listed),
                RAW: lambda: catalog.raw_list_workflows(listed.catalog.path, organization),
            },
        }
        samples: dict[str, dict[str, list[float]]] = {}
        for name, variants in scenes.items():
            log(f"profiles: {name}")
            samples[name] = interleave(
                {k: timed(v) for k, v in variants.items()},
                repeats,
                warmup=warmup,
                max_settle=settle,
                progress=f"profiles {name}",
            )
        log("profiles: weflow run process")
        samples["cold"] = interleave(
            {"weflow": lambda: process(weflow_cmd, report), RAW: lambda: process(raw_cmd, raw_report)},
            repeats,
            warmup=warmup,
            max_settle=settle,
            progress="profiles cold",
        )

        labels = {
            "q06": f"TPC-H Q6 (SF {tpch.scale_factor(quick):g}), one in-process run: `execute()` vs a raw Prefect flow",
            "chain": f"chain of {chain} trivial nodes, one Prefect task per node (`fuse=False`)",
            "cold": "`weflow run daily_sales` process vs `benchmarks/raw_cold.py`, server running: start to exit",
            "list": f"list {catalog.many_workflows_count(quick):,} workflows vs a raw `SELECT` (here: plain DuckDB)",
        }
        for name, label in labels.items():
            section.rows.append(Row(label, Stat(samples[name]["weflow"]), {RAW: Stat(samples[name][RAW])}))
        per_task = (statistics.median(samples["chain"]["weflow"]) - statistics.median(samples["chain"][RAW])) / chain
        section.notes.append(
            f"Chain: weflow minus raw Prefect, per node: {per_task * 1000:.2f} ms (medians; both include one flow run)."
        )

        log("profiles: profiling")
        trees = {
            "q06": render(profiled(scenes["q06"]["weflow"], profiled_runs)),
            "q06-raw": render(profiled(scenes["q06"][RAW], profiled_runs)),
            "chain": render(profiled(scenes["chain"]["weflow"], 1)),
            "list": render(profiled(scenes["list"]["weflow"], profiled_runs * 4)),
        }
    session_file = work / "cold.pyisession"
    pyinstrument = Path(sys.executable).with_name("pyinstrument")
    subprocess.run(
        [str(pyinstrument), "-i", "0.001", "-r", "pyisession", "-o", str(session_file), *weflow_cmd],
        cwd=cold_root, env=env, check=True, capture_output=True,
    )  # fmt: skip
    trees["cold"] = render(Session.load(str(session_file)))
    titles = {
        "q06": f"weflow: TPC-H Q6, {profiled_runs} in-process run(s) of `execute()`",
        "q06-raw": f"raw Prefect: the same query in a one-task flow, {profiled_runs} run(s)",
        "chain": f"weflow: one run of the {chain}-node chain, `fuse=False`",
        "cold": "weflow: one `weflow run daily_sales` process (imports included)",
        "list": f"weflow: {profiled_runs * 4} listings of {catalog.many_workflows_count(quick):,} workflows",
    }
    section.details = [details(titles[k], tree) for k, tree in trees.items()]
    return section
