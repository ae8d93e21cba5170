"""Peers: the same TPC-H pipelines in weflow, hand-written Prefect, Hamilton, Kedro and Dagster (issue 20).

``python -m benchmarks --only peers`` (or ``make bench-peers``) builds the peers' environments
(``benchmarks/peers/envs.py``) and measures them at scale factor 1 (``WEFLOW_TPCH_SF`` picks
another); quick mode uses scale factor 0.01, measures only the frameworks whose environment
already exists (it never builds one) and takes every number from the one checking process per
framework, run side by side.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks import tpch
from benchmarks.harness import Section, log, prefect_api
from benchmarks.peers.envs import ENVS, PEERS, ensure, ready
from benchmarks.peers.runner import (
    BASELINES,
    NAMES,
    QUERIES,
    check_answers,
    import_profile,
    loc_table,
    profile_weflow,
    rows,
    timings,
    weflow_notes,
)

DESCRIPTION = """\
TPC-H {queries} at scale factor {sf:g} (`data/tpch/sf{sf:g}/`, as in the `tpch` section), each written
as a multi-node pipeline the way each framework's documentation shows, all passing Polars frames.
**weflow** runs its definitions `benchmarks/tpch/qNN.yaml` (read_parquet, filter, join, aggregate,
sort, limit, select nodes; default fusion) with `execute()` on the local Prefect server.
**hand-written Prefect** (`benchmarks/peers/pipelines_prefect.py`): an async flow per query, one
`@task(cache_policy=NO_CACHE, persist_result=False)` per step, eager frames between tasks, same
server. **Hamilton** (`hamilton_qNN.py`): a function per weflow node, run by a driver built per run.
**Kedro** (`kedro_qNN.py`): node functions and `create_pipeline()`, the tables as
`polars.EagerPolarsDataset` catalog entries, `SequentialRunner`, memory datasets between nodes,
Kedro's default logging. **Dagster** (`dagster_qNN.py`): an `@asset` per weflow node, the tables
through a `ConfigurableResource`, `materialize_to_memory` (in-process, in-memory IO manager; its
default IO manager would pickle every frame to disk), Dagster's default logging. The peers pass
eager `DataFrame`s between nodes, as their Polars examples do; weflow fuses the chain into one lazy
plan. Each peer runs in its own virtual environment (`.peers/<name>/`, exact pins in
`benchmarks/peers/requirements-<name>.txt`, Polars at the project's version); weflow and Prefect
in the project's.

Every number comes from a fresh child process of the framework (`benchmarks/peers/child.py`):
**whole process (cold)** is the runner's clock from starting the interpreter to its exit (imports,
one run, interpreter exit) less the warm run the same process made after its first one (timed by the
child); **first run** and **warm** are the pipeline's own time inside that process (the warm one is
a second run, so imports and first-use costs are paid); peak RSS is the
child's `VmHWM` (the Prefect server's memory is not included). Rounds are interleaved: each round
runs every query in every framework in turn, waiting for an idle Prefect server before each. The
**trivial chain** is `benchmarks/overhead.py`'s: read a 3-row CSV, then N-1 `head(1,000,000)`
nodes; per node is (T(large) - T(small)) / (large - small) of warm runs. Before any timing, one
process per framework ran every query and chain once and its answers were checked equal to
DuckDB's (`benchmarks.tpch.same_answer`)."""

LOC_NOTE = """\
Lines of code: weflow's is its definition file (nodes, configs and connections; no Python). A
peer's is the lines between its `# >>> qNN` and `# <<< qNN` markers in `benchmarks/peers/`: its
step functions, tasks, assets or nodes, its wiring (flow body, `create_pipeline()`, catalog entries,
resource) and the lines that run it, including shared blocks the query uses (Prefect's `read`,
`join` and `revenue` tasks). Imports, docstrings of modules and the `times` helper (decimal
products at SQL's scale, which weflow's SQL expressions do by themselves) are not counted; blank
and comment lines never are."""


def tiny_csv(folder: Path) -> Path:
    csv = folder / "tiny.csv"
    pl.DataFrame({"id": [1, 2, 3], "amount": [10.5, 20.0, 7.25], "region": ["n", "s", "e"]}).write_csv(csv)
    return csv


def run(quick: bool) -> Section:
    sf = tpch.scale_factor(quick)
    rounds = 1 if quick else int(os.environ.get("WEFLOW_PEERS_ROUNDS", "5"))
    chains, chain_warm = ((5, 10), 1) if quick else ((10, 100), 3)
    if not quick:
        ensure()
    frameworks = [f for f in NAMES if ready(f)]
    root = tpch.generate(sf)
    prefect_api()
    work = Path(tempfile.mkdtemp(prefix="weflow-bench-peers-"))
    t0 = time.perf_counter()
    try:
        csv = tiny_csv(work)
        checked = check_answers(frameworks, root, csv, chains, work, side_by_side=quick)
        if quick:
            per_query = {(f, q): [checked[f]] for f in frameworks for q in QUERIES}
            per_chain = {f: [checked[f]] for f in frameworks}
        else:
            per_query, per_chain = timings(frameworks, root, csv, rounds, chains, chain_warm)
            log("peers: a profile of weflow's whole process")
            profile = profile_weflow(root, csv, "q01", work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    section = Section(
        name="peers",
        title=f"the same TPC-H pipelines in weflow, Prefect, Hamilton, Kedro and Dagster at scale factor {sf:g}",
        description=DESCRIPTION.format(queries=", ".join(q.upper() for q in QUERIES), sf=sf),
        baselines=BASELINES,
    )
    section.rows += rows(frameworks, per_query, per_chain, chains)
    section.notes += weflow_notes(per_query)
    section.details.append(loc_table(list(NAMES)))
    section.details.append(LOC_NOTE)
    if not quick:
        section.details.append(profile)
    section.notes += extra_notes(quick, sf, frameworks, per_query)
    section.notes.append(f"{rounds} rounds of {len(frameworks)} frameworks in {time.perf_counter() - t0:.0f} s.")
    log("peers: done")
    return section


def extra_notes(quick: bool, sf: float, frameworks: list[str], per_query: dict[Any, list[Any]]) -> list[str]:
    """The environments left out, what each framework imports (full mode), why scale factor 10 is not run."""
    notes = []
    missing = [p for p in PEERS if p not in frameworks]
    if missing:
        notes.append(
            "Not measured (no environment in "
            f"`{ENVS.name}/`; quick mode never builds one): {', '.join(NAMES[m] for m in missing)}."
        )
    if not quick:
        log("peers: import profiles")
        profiles = "; ".join(import_profile(f) for f in frameworks)
        notes.append(
            "What each child imports before any work (`python -X importtime`, one more process each, self "
            f"times summed per top-level package, heaviest four): {profiles}."
        )
    peak = max(m.peak_mb for runs in per_query.values() for m in runs)
    if not quick and sf < 10:
        notes.append(
            "Scale factor 10 is not part of this run: the peers hold every table and every intermediate frame "
            f"eagerly (peak RSS up to {peak / 1024:.1f} GB per query here at scale factor {sf:g}, so about ten "
            "times that at 10) on a shared 24 GiB machine; `WEFLOW_TPCH_SF=10 python -m benchmarks --only peers` "
            "runs it where memory allows."
        )
    if quick:
        notes.append(
            "Quick mode: every row of a framework comes from one process that ran all queries and both chains, "
            "side by side with the other frameworks' (not meaningful numbers)."
        )
    return notes
