"""A dataframe workflow over millions of rows: weflow against the same pipeline in Polars lazy.

read_parquet(orders) -> filter -> join customers -> aggregate, as a weflow definition run with
``weflow.execution.execute`` (default fusion: one lazy plan in one Prefect task; and
``fuse=False``: every node materialised in its own task), against ``scan_parquet ... collect()``
written by hand. Peak memory is measured by running each variant once in a fresh process
(``python -m benchmarks.dataframe child VARIANT DIR``) that reports its own ``VmHWM``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from benchmarks.harness import REPO, Row, Section, Stat, interleave, log, prefect_api, settle, timed

POLARS = "Polars lazy (by hand)"
KEYS = ["region", "segment"]
STATUSES = ("paid", "pending", "refunded")
REGIONS = ("north", "south", "east", "west")
SEGMENTS = ("retail", "smb", "enterprise")


def _pick(column: pl.Expr, values: tuple[str, ...]) -> pl.Expr:
    """A deterministic pseudo-random choice among ``values`` from a hashed integer column."""
    index = (column % len(values)).cast(pl.Int64)
    return index.replace_strict(list(range(len(values))), list(values), return_dtype=pl.String)


def generate(root: Path, rows: int) -> tuple[Path, Path]:
    """orders.parquet (order_id, customer_id, status, amount, region) and customers.parquet."""
    customers = max(rows // 50, 100)
    ids = pl.int_range(rows, dtype=pl.Int64)
    orders = pl.select(order_id=ids).with_columns(
        customer_id=(pl.col("order_id").hash(1) % customers).cast(pl.Int64),
        status=_pick(pl.col("order_id").hash(2) % 10 // 4, STATUSES),  # 40 % paid, 40 % pending, 20 % refunded
        amount=(pl.col("order_id").hash(3) % 50_000).cast(pl.Float64) / 100,
        region=_pick(pl.col("order_id").hash(4), REGIONS),
    )
    people = pl.select(customer_id=pl.int_range(customers, dtype=pl.Int64)).with_columns(
        segment=_pick(pl.col("customer_id").hash(5), SEGMENTS),
        name=pl.format("customer {}", pl.col("customer_id")),
    )
    orders_path, customers_path = root / "orders.parquet", root / "customers.parquet"
    orders.write_parquet(orders_path)
    people.write_parquet(customers_path)
    return orders_path, customers_path


def definition_document(orders: Path, customers: Path) -> dict[str, Any]:
    return {
        "name": "bench_revenue",
        "nodes": [
            {"name": "orders", "type": "read_parquet", "config": {"path": str(orders)}},
            {"name": "paid", "type": "filter", "config": {"condition": "status = 'paid' AND amount >= 20"}},
            {"name": "customers", "type": "read_parquet", "config": {"path": str(customers)}},
            {"name": "joined", "type": "join", "config": {"on": "customer_id"}},
            {
                "name": "revenue",
                "type": "aggregate",
                "config": {
                    "by": KEYS,
                    "aggs": {"revenue": "sum(amount)", "orders": "count(order_id)", "avg_amount": "avg(amount)"},
                },
            },
        ],
        "connections": [
            {"from": "orders", "to": "paid"},
            {"from": "paid", "to": "joined.left"},
            {"from": "customers", "to": "joined.right"},
            {"from": "joined", "to": "revenue"},
        ],
    }


def by_hand(orders: Path, customers: Path) -> pl.DataFrame:
    return (
        pl.scan_parquet(orders)
        .filter((pl.col("status") == "paid") & (pl.col("amount") >= 20))
        .join(pl.scan_parquet(customers), on="customer_id", how="inner")
        .group_by(KEYS)
        .agg(
            revenue=pl.col("amount").sum(),
            orders=pl.col("order_id").count(),
            avg_amount=pl.col("amount").mean(),
        )
        .collect()
    )


def run_weflow(orders: Path, customers: Path, fuse: bool | None) -> tuple[pl.DataFrame, float]:
    """The answer, and the seconds spent inside weflow's step tasks (from its own node records)."""
    from weflow.core.document import from_data
    from weflow.core.entities import Execution, Mode, RunState
    from weflow.execution import execute

    definition = from_data(definition_document(orders, customers))
    execution = Execution(
        id=str(uuid.uuid4()), workflow_id=0, workflow=definition.name, version=0, mode=Mode.MANUAL, user_id=0,
        status=RunState.QUEUED,
    )  # fmt: skip
    result = execute(definition, execution, fuse=fuse)
    if not result.ok:
        raise RuntimeError(f"weflow run failed: {result.execution.error_message}")
    # every node of a fused step carries the step's duration: count each step once, by its root
    steps = [n.duration_ms or 0.0 for n in result.execution.nodes if n.group in (None, n.node)]
    return result["revenue"], sum(steps) / 1000


def with_weflow(orders: Path, customers: Path, fuse: bool | None) -> pl.DataFrame:
    return run_weflow(orders, customers, fuse)[0]


def same_answer(got: pl.DataFrame, want: pl.DataFrame) -> None:
    assert_frame_equal(got.sort(KEYS), want.sort(KEYS), check_dtypes=False, check_column_order=False)


# --- peak memory, one fresh process per measurement -------------------------------------


def _memory_mb(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, in MiB.

    Not ``ru_maxrss``: Linux carries the parent's high-water mark across fork and exec, so a
    child of a big benchmark process would report the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def child(variant: str, root: Path) -> dict[str, float]:
    """Run one variant once in this (fresh) process; report RSS before the run and the peak."""
    orders, customers = root / "orders.parquet", root / "customers.parquet"
    if variant == "polars":
        before = _memory_mb("VmRSS")
        t0 = time.perf_counter()
        frame = by_hand(orders, customers)
    else:
        import weflow.execution  # noqa: F401  (Prefect and weflow imported before the "before" reading)
        from weflow import config

        before = _memory_mb("VmRSS")
        t0 = time.perf_counter()
        with config.using(data_roots=(root,)):
            frame = with_weflow(orders, customers, None if variant == "weflow" else False)
    seconds = time.perf_counter() - t0
    return {"before_mb": before, "peak_mb": _memory_mb("VmHWM"), "seconds": seconds, "rows": frame.height}


def start_child(variant: str, root: Path) -> subprocess.Popen[str]:
    """``python -m benchmarks.dataframe child VARIANT DIR``: one run of one variant in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_api()}
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.dataframe", "child", variant, str(root)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def _child_result(variant: str, proc: subprocess.Popen[str]) -> dict[str, float]:
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(f"dataframe child {variant} failed:\n{err[-3000:]}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


# --- the benchmark ------------------------------------------------------------------------


def run(quick: bool) -> Section:
    from weflow import config

    rows = 20_000 if quick else 5_000_000
    repeats = 1 if quick else 5  # quick: one round proves the path (the numbers are not read)
    rss_repeats = 3
    section = Section(
        name="dataframe",
        title=f"a dataframe workflow over {rows:,} rows",
        description=f"""\
Orders ({rows:,} rows: order_id, customer_id, status, amount, region) and customers
({max(rows // 50, 100):,} rows: customer_id, segment, name), generated with Polars into
Parquet files in a temp dir. The pipeline: `read_parquet` orders → `filter` `status = 'paid'
AND amount >= 20` → `join` customers on customer_id → `aggregate` by region and segment (sum,
count and mean of amount). **weflow** runs it as a definition with `execute()` (no catalog
writes) with the default fusion (the whole pipeline is one lazy plan collected once in one
Prefect task) and with `fuse=False` (each of the 5 nodes materialised in its own task).
**{POLARS}** is the same pipeline as `scan_parquet(...)...collect()`. Both answers are checked
equal (sorted) before timing. Peak RSS: each variant runs once in a fresh Python process that
reports its high-water mark `VmHWM` (so it includes the interpreter and its imports: weflow and
Prefect for weflow, Polars only for the baseline).""",
        baselines=(POLARS,),
    )
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-dataframe-")).resolve()
    children = ["weflow", "polars"] if quick else ["weflow", "weflow-unfused", "polars"]
    try:
        t0 = time.perf_counter()
        orders, customers = generate(root, rows)
        generated = time.perf_counter() - t0
        size_mb = (orders.stat().st_size + customers.stat().st_size) / 2**20
        # the smoke run starts its fresh processes now (they take seconds to import Prefect) and
        # lets them overlap the timings: quick numbers are not meant to be read
        early = [start_child(v, root) for v in children] if quick else []
        with config.using(data_roots=(root,)):
            want = by_hand(orders, customers)
            same_answer(with_weflow(orders, customers, None), want)
            same_answer(with_weflow(orders, customers, False), want)
            inside: dict[bool | None, list[float]] = {None: [], False: []}

            def weflow(fuse: bool | None) -> Callable[[], float]:
                def measure() -> float:
                    t0 = time.perf_counter()
                    _, in_tasks = run_weflow(orders, customers, fuse)
                    seconds = time.perf_counter() - t0
                    inside[fuse].append(in_tasks)
                    return seconds

                return measure

            samples = interleave(
                {"fused": weflow(None), "unfused": weflow(False), "polars": timed(by_hand, orders, customers)},
                repeats,
                warmup=0,  # warmed up by the checks above
                max_settle=0.3 if quick else 10.0,
                progress=f"dataframe: {rows:,} rows",
            )
        rss: dict[str, list[dict[str, float]]] = {v: [] for v in children}
        for variant, proc in zip(children, early, strict=False):
            rss[variant].append(_child_result(variant, proc))
        for i in range(0 if quick else rss_repeats):
            log(f"dataframe: peak RSS in fresh processes, round {i + 1}/{rss_repeats}")
            for variant in children:
                settle(10.0)
                rss[variant].append(_child_result(variant, start_child(variant, root)))
    finally:
        shutil.rmtree(root, ignore_errors=True)

    polars_time = Stat(tuple(samples["polars"]))
    section.rows += [
        Row("one run, fused (default)", Stat(tuple(samples["fused"])), {POLARS: polars_time}),
        Row("one run, fuse=False", Stat(tuple(samples["unfused"])), {POLARS: polars_time}),
        Row("of which inside the step task, fused", Stat(tuple(inside[None])), {POLARS: polars_time}),
        Row("of which inside the step tasks, fuse=False", Stat(tuple(inside[False])), {POLARS: polars_time}),
    ]

    def mb(variant: str, key: str) -> Stat:
        return Stat(tuple(r[key] for r in rss[variant]), "MB")

    polars_peak = mb("polars", "peak_mb")
    section.rows.append(Row("peak RSS of a fresh process, fused", mb("weflow", "peak_mb"), {POLARS: polars_peak}))
    if "weflow-unfused" in rss:
        section.rows.append(
            Row("peak RSS of a fresh process, fuse=False", mb("weflow-unfused", "peak_mb"), {POLARS: polars_peak})
        )
    section.rows.append(
        Row("RSS after imports, before the run", mb("weflow", "before_mb"), {POLARS: mb("polars", "before_mb")})
    )
    section.notes += [
        f"Generating the data took {generated:.1f} s (not timed); the two Parquet files are {size_mb:.0f} MiB; "
        f"the answer has {want.height} rows.",
        'The "of which inside" rows are weflow\'s own node records of the same runs (`duration_ms` of each '
        "step task: building the plan, collecting it, recording); the rest of a run is the Prefect flow run "
        "around the tasks and weflow's preparation. weflow collects on Polars' streaming engine, batch by "
        'batch in a thread it can stop (`weflow.engine.threads.collect`: `collect_batches(engine="streaming")`; '
        "`collect(background=True)`, used before, silently ran the in-memory engine at ~1.5x the time and "
        "~3x the working memory). Peak memory of a fresh process includes the imports (the last row).",
        "A fresh process pays first-run costs (Prefect client set-up, the first flow run; imports are "
        "not counted) that the in-process timings above do not: its run took "
        + ", ".join(f"{name} {statistics.median([r['seconds'] for r in found]):.2f} s" for name, found in rss.items())
        + (" (medians; in quick mode these processes ran during the timings)." if quick else " (medians)."),
    ]
    log("dataframe: done")
    return section


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "child":
        raise SystemExit("usage: python -m benchmarks.dataframe child VARIANT DIR")
    print(json.dumps(child(sys.argv[2], Path(sys.argv[3]))))
