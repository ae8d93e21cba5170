"""Per-node overhead: chains of trivial nodes run by weflow, by raw Prefect and by plain Polars.

weflow: ``read_csv`` of a tiny CSV then N-1 ``limit`` nodes (n = 1,000,000, so every row
passes), run with ``weflow.execution.execute`` and no scope (no catalog writes), once with
``fuse=False`` (one Prefect task per node) and once with the default fusion (the whole chain is
one lazy Polars plan in one task). Raw Prefect: an async flow awaiting N async tasks in
sequence (``cache_policy=NO_CACHE, persist_result=False``), each doing the same Polars
operation. Plain Python: the same N Polars operations called directly.
"""

from __future__ import annotations

import asyncio
import shutil
import statistics
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL, temporary_settings

from benchmarks.harness import Row, Section, Stat, interleave, log, prefect_api, timed
from weflow import config
from weflow.core.document import from_data
from weflow.core.entities import Execution, Mode, RunState
from weflow.core.model import Definition
from weflow.execution import execute

LIMIT = 1_000_000
PREFECT = "raw Prefect"
PYTHON = "plain Polars"
UNFUSED = "weflow fuse=False"
FUSED = "weflow fused"


def chain_definition(path: Path, n: int) -> Definition:
    nodes: list[dict[str, Any]] = [{"name": "source", "type": "read_csv", "config": {"path": str(path)}}]
    connections = []
    for i in range(1, n):
        nodes.append({"name": f"limit_{i}", "type": "limit", "config": {"n": LIMIT}})
        connections.append({"from": nodes[-2]["name"], "to": f"limit_{i}"})
    return from_data({"name": f"bench_chain_{n}", "nodes": nodes, "connections": connections})


def new_execution(name: str) -> Execution:
    return Execution(
        id=str(uuid.uuid4()), workflow_id=0, workflow=name, version=0, mode=Mode.MANUAL, user_id=0,
        status=RunState.QUEUED,
    )  # fmt: skip


def run_weflow(definition: Definition, fuse: bool | None) -> pl.DataFrame:
    result = execute(definition, new_execution(definition.name), fuse=fuse)
    if not result.ok:
        raise RuntimeError(f"weflow run failed: {result.execution.error_message}")
    return result.outputs[definition.nodes[-1].name]


# --- the raw Prefect baseline ----------------------------------------------------------


@task(cache_policy=NO_CACHE, persist_result=False)
async def read_task(path: str) -> pl.DataFrame:
    return pl.scan_csv(path).collect()


@task(cache_policy=NO_CACHE, persist_result=False)
async def limit_task(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.lazy().head(LIMIT).collect()


@flow(name="bench-raw-prefect-chain", persist_result=False)
async def raw_chain(path: str, n: int) -> pl.DataFrame:
    frame = await read_task(path)
    for _ in range(n - 1):
        frame = await limit_task(frame)
    return frame


def run_prefect(path: Path, n: int) -> pl.DataFrame:
    with temporary_settings(updates={PREFECT_API_URL: prefect_api()}):
        return asyncio.run(raw_chain(str(path), n))


def run_python(path: Path, n: int) -> pl.DataFrame:
    frame = pl.scan_csv(path).collect()
    for _ in range(n - 1):
        frame = frame.lazy().head(LIMIT).collect()
    return frame


# --- the benchmark ------------------------------------------------------------------------


def run(quick: bool) -> Section:
    sizes = (5, 10) if quick else (10, 100, 500)
    repeats = 1 if quick else 5  # quick: one round proves the path (the numbers are not read)
    small, large = sizes[0], sizes[-1]
    section = Section(
        name="overhead",
        title="per-node overhead of a chain of trivial nodes",
        description=f"""\
A chain of N nodes: `read_csv` of a 3-row CSV then N-1 `limit` nodes (n = {LIMIT:,}, so the
work per node is close to nothing), for N = {", ".join(map(str, sizes))}. **weflow** runs it
with `weflow.execution.execute` (no scope, so no catalog writes), with `fuse=False` (one
Prefect task per node: the honest comparison with raw Prefect) and with the default fusion
(the whole chain becomes one lazy Polars plan in one task). **{PREFECT}**: an `async` flow
awaiting N `@task(cache_policy=NO_CACHE, persist_result=False)` async tasks in sequence, each
doing the same Polars operation, on the same Prefect server. **{PYTHON}**: the same N Polars
calls in a loop. Every run is end to end as a caller sees it (`execute()` or `asyncio.run` of
the flow), so it includes creating the flow run.

Per node is the **marginal** cost, (T(N) - T({small})) / (N - {small}), computed per round and
then summarised: it removes the fixed cost of a run (creating the flow run, settings, the
event loop) which total / N would spread over the nodes. The fixed cost is the intercept,
T({small}) - {small} x per node. The per-node rows of the fused variant show how little each extra
node costs once the chain is one query.""",
        baselines=(PREFECT, PYTHON),
    )
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-overhead-")).resolve()
    try:
        csv = root / "tiny.csv"
        pl.DataFrame({"id": [1, 2, 3], "amount": [10.5, 20.0, 7.25], "region": ["n", "s", "e"]}).write_csv(csv)
        definitions = {n: chain_definition(csv, n) for n in sizes}
        expected = pl.read_csv(csv)
        with config.using(data_roots=(root,)):
            for n in sizes[-1:] if quick else sizes:  # the answers agree (and everything is warmed up)
                for got in (run_weflow(definitions[n], False), run_weflow(definitions[n], None)):
                    assert got.equals(expected), "weflow's chain changed the frame"
                assert run_prefect(csv, n).equals(expected) and run_python(csv, n).equals(expected)

            variants: dict[str, Callable[[], float]] = {}
            for n in sizes:
                d = definitions[n]
                variants[f"{UNFUSED} {n}"] = timed(run_weflow, d, False)
                variants[f"{FUSED} {n}"] = timed(run_weflow, d, None)
                variants[f"{PREFECT} {n}"] = timed(run_prefect, csv, n)
                variants[f"{PYTHON} {n}"] = timed(run_python, csv, n)
            samples = interleave(
                variants,
                repeats,
                warmup=0,  # warmed up by the checks above
                max_settle=0.3 if quick else 30.0,  # a 500-task run leaves the server seconds of recording
                progress=f"overhead: chains of {', '.join(map(str, sizes))} nodes",
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    def stat(variant: str, n: int) -> Stat:
        return Stat(tuple(samples[f"{variant} {n}"]))

    def marginal(variant: str, n: int) -> Stat:
        pairs = zip(samples[f"{variant} {n}"], samples[f"{variant} {small}"], strict=True)
        return Stat(tuple((big - little) / (n - small) for big, little in pairs))

    def intercept(variant: str) -> Stat:
        per = marginal(variant, large).samples
        return Stat(tuple(t - small * p for t, p in zip(samples[f"{variant} {small}"], per, strict=True)))

    for n in sizes:
        base = {PREFECT: stat(PREFECT, n), PYTHON: stat(PYTHON, n)}
        section.rows.append(Row(f"N={n}: one run, fuse=False", stat(UNFUSED, n), base))
        section.rows.append(Row(f"N={n}: one run, fused", stat(FUSED, n), base))
    for n in sizes[1:]:
        base = {PREFECT: marginal(PREFECT, n), PYTHON: marginal(PYTHON, n)}
        section.rows.append(Row(f"per node, fuse=False (marginal {small}→{n})", marginal(UNFUSED, n), base))
    section.rows.append(
        Row(f"per node, fused (marginal {small}→{large})", marginal(FUSED, large),
            {PREFECT: marginal(PREFECT, large), PYTHON: marginal(PYTHON, large)})
    )  # fmt: skip
    base = {PREFECT: intercept(PREFECT), PYTHON: intercept(PYTHON)}
    section.rows.append(Row("fixed cost per run, fuse=False (intercept)", intercept(UNFUSED), base))
    section.rows.append(Row("fixed cost per run, fused (intercept)", intercept(FUSED), base))

    total_per_node = {v: statistics.median(samples[f"{v} {large}"]) / large for v in (UNFUSED, FUSED, PREFECT, PYTHON)}
    section.notes += [
        f"Total / N at N={large} (medians, fixed cost included): "
        + ", ".join(f"{v} {t * 1000:.2f} ms" for v, t in total_per_node.items())
        + ".",
        "The Prefect server runs on the same cores and records task runs after each flow run "
        "ends; the runner waits for the server to go idle between runs (see the header), but any "
        "backlog it gives up on lands on the next measurement of either side.",
        "Each task run logs a line (console and API) with Prefect's default logging, on both sides.",
    ]
    log("overhead: done")
    return section
