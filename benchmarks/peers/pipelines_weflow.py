"""weflow: TPC-H Q1, Q3, Q5, Q10 from their definitions in ``benchmarks/tpch/``, and the trivial chain.

Each run reads and checks the definition (``weflow.workflows.read``) and runs it with
``weflow.execution.execute`` (default fusion, no catalog writes) on the Prefect server in
``PREFECT_API_URL``, with the data folder as the only data root: what ``benchmarks/tpch.py``
times. The chain is ``benchmarks/overhead.py``'s: ``read_csv`` then N-1 ``limit`` nodes.
The pipeline's code is its definition file (counted by the runner), not this module.
"""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path
from typing import Any

import polars as pl

from weflow import config
from weflow.core.document import from_data
from weflow.core.entities import Execution, Mode, RunState
from weflow.core.model import Definition
from weflow.execution import execute
from weflow.workflows import read

DEFINITIONS = Path(__file__).resolve().parents[1] / "tpch"
INSIDE: list[float] = []  # per run: the seconds inside its step tasks (the fused plan), from weflow's node records


def chain_definition(path: Path, n: int) -> Definition:
    """``benchmarks/overhead.py``'s chain (not imported: the child imports only what a weflow user would)."""
    nodes: list[dict[str, Any]] = [{"name": "source", "type": "read_csv", "config": {"path": str(path)}}]
    nodes += [{"name": f"limit_{i}", "type": "limit", "config": {"n": 1_000_000}} for i in range(1, n)]
    connections = [{"from": a["name"], "to": b["name"]} for a, b in itertools.pairwise(nodes)]
    return from_data({"name": f"bench_chain_{n}", "nodes": nodes, "connections": connections})


def execute_one(definition: Definition) -> pl.DataFrame:
    execution = Execution(
        id=str(uuid.uuid4()), workflow_id=0, workflow=definition.name, version=0, mode=Mode.MANUAL, user_id=0,
        status=RunState.QUEUED,
    )  # fmt: skip
    result = execute(definition, execution)
    if not result.ok:
        raise RuntimeError(f"weflow {definition.name} failed: {result.execution.error_message}")
    steps = [n.duration_ms or 0.0 for n in result.execution.nodes if n.group in (None, n.node)]
    INSIDE.append(sum(steps) / 1000)
    (answer,) = result.outputs.values()  # one terminal node per pipeline
    return answer


def run(job: str, root: str, csv: str) -> pl.DataFrame:
    if job.startswith("chain"):
        with config.using(data_roots=(Path(csv).parent,)):
            return execute_one(chain_definition(Path(csv), int(job.removeprefix("chain"))))
    with config.using(data_roots=(Path(root),)):
        return execute_one(read(DEFINITIONS / f"{job}.yaml"))
