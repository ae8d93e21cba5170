"""Cold start: a new ``weflow run daily_sales`` process against a new raw Prefect script process.

weflow: the console script ``weflow run daily_sales`` (``.venv/bin/weflow``) in a new process,
on a temp catalog where ``data/workflows/daily_sales.yaml`` was applied (its ``report`` path
moved into a temp data root), timed from process start to exit. Raw Prefect: ``python
benchmarks/raw_cold.py`` in a new process, an async flow of the same three Prefect tasks doing
the same Polars work (read the CSV, keep paid orders, sum and count per region, sort, write
Parquet), ``NO_CACHE`` and ``persist_result=False``. Both with a Prefect server running
(``PREFECT_API_URL`` set), interleaved; and without one (``PREFECT_API_URL`` unset, a fresh
Prefect home): weflow then starts its own local server (``weflow.prefect_gateway.server.ensure``) and reuses
it on the next run, raw Prefect starts its ephemeral server inside every process. Plus the
imports alone (``python -c "import weflow.cli.app"`` against ``python -c "import prefect"``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl
import yaml
from polars.testing import assert_frame_equal

from benchmarks.harness import REPO, Row, Section, Stat, interleave, log, prefect_api, settle, watch_server
from weflow import config, workflows
from weflow.catalog import Catalog
from weflow.core.document import from_data
from weflow.prefect_gateway import server as weflow_server
from weflow.workflows import Scope

RAW = "raw Prefect script"
WEFLOW_BIN = Path(sys.executable).with_name("weflow")
RAW_SCRIPT = REPO / "benchmarks" / "raw_cold.py"
DEFINITION = REPO / "data" / "workflows" / "daily_sales.yaml"
SAMPLE = REPO / "data" / "samples" / "orders.csv"
EPHEMERAL_TIMEOUT = 300  # Prefect's default (20 s) is too short for a fresh ephemeral server on a busy machine
LOG_LINE = re.compile(
    r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+\s*\| Flow run '[^']*' - (Beginning flow run|Finished in state)"
)
AGAIN = ", plus a second run in the same place (weflow reuses its server, Prefect starts the ephemeral one again)"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

# Run in a fresh interpreter with the benchmark's environment: the steps of `weflow run` that raw
# Prefect does not have, one by one (the first catalog session, lookups, the two records, the
# health check, the first and a second contract validation). Prints the seconds as JSON.
PROBE = """\
import json, sys, time
from dataclasses import replace
from datetime import UTC, datetime
t = [time.perf_counter()]
import weflow.cli.app
t.append(time.perf_counter())
from weflow import contracts, execution
from weflow.prefect_gateway import server
t.append(time.perf_counter())
import polars as pl
from weflow.core.entities import Mode, NodeExecution, RunState
from weflow.workflows import Scope
scope = Scope.current()
t.append(time.perf_counter())
definition, ex = execution.new_execution(scope, "daily_sales", mode=Mode.MANUAL, input_data=None, timeout=None)
t.append(time.perf_counter())
ex = replace(ex, status=RunState.RUNNING, started_at=datetime.now(UTC))
scope.catalog.insert_execution(ex)
t.append(time.perf_counter())
done = replace(ex, status=RunState.SUCCEEDED, finished_at=datetime.now(UTC), duration_ms=1.0)
scope.catalog.finish_execution(done, [NodeExecution(ex.id, n.name, RunState.SUCCEEDED, 1) for n in definition.nodes])
t.append(time.perf_counter())
server.ensure()
t.append(time.perf_counter())
frame, contract = pl.read_csv(sys.argv[1]), definition.node("orders").contract
contracts.apply(contract, frame)
t.append(time.perf_counter())
contracts.apply(contract, frame)
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
PROBE_STEPS = (
    "import weflow.cli.app",
    "import weflow.execution (Prefect, the compiler, pandera)",
    "Scope.current (first catalog session)",
    "new_execution (workflow and version lookups, checks)",
    "insert_execution",
    "finish_execution (5 node records)",
    "server.ensure (health check)",
    "first contract validation",
    "second contract validation",
)


@dataclass(frozen=True)
class Exited:
    """One process run to its end: wall seconds, and where they went by its Prefect log lines."""

    seconds: float
    phases: tuple[float, float, float] | None  # until the flow run begins, the flow run, after it
    stderr: str


def _seconds_of_day(match: re.Match[str]) -> float:
    h, m, s, ms = (int(match.group(i)) for i in range(1, 5))
    return h * 3600 + m * 60 + s + ms / 1000


def _phases(stderr: str, started: float, seconds: float) -> tuple[float, float, float] | None:
    """Split a run at Prefect's "Beginning flow run" and the flow run's "Finished in state" lines."""
    marks: dict[str, float] = {}
    for line in ANSI.sub("", stderr).splitlines():
        found = LOG_LINE.match(line)
        if found:
            marks.setdefault(found.group(5), _seconds_of_day(found))
    if len(marks) != 2:
        return None
    start = datetime.fromtimestamp(started)
    zero = start.hour * 3600 + start.minute * 60 + start.second + start.microsecond / 1e6
    before = marks["Beginning flow run"] - zero
    flow = marks["Finished in state"] - marks["Beginning flow run"]
    after = seconds - before - flow
    if min(before, flow, after) < -0.01:  # midnight, or a clock step: no split rather than a wrong one
        return None
    return max(before, 0.0), flow, max(after, 0.0)


def launch(cmd: Sequence[str | Path], cwd: Path, env: Mapping[str, str], output: Path | None = None) -> Exited:
    """Start ``cmd`` and wait for it to exit; a failed run is an error, never a timing."""
    if output is not None:
        output.unlink(missing_ok=True)
    started = time.time()
    t0 = time.perf_counter()
    done = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=900, check=False
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0 or (output is not None and not output.is_file()):
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited with {done.returncode}:\n{tail}")
    return Exited(seconds, _phases(done.stderr, started, seconds), done.stderr)


def base_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("PREFECT_API_URL", "PYTHONDONTWRITEBYTECODE", "PREFECT_PROFILE"):
        env.pop(key, None)
    env.update(
        WEFLOW_CATALOG=str(root / "catalog.duckdb"),
        WEFLOW_DATA_ROOTS=f"{REPO}:{root}",
        WEFLOW_RUNS_DIR=str(root / "runs"),
        WEFLOW_ORG="default",
        WEFLOW_USER="admin",
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=str(EPHEMERAL_TIMEOUT),
    )
    return env


def apply_daily_sales(root: Path) -> Path:
    """``daily_sales`` in a fresh catalog under ``root``, writing its report under ``root``; the report path."""
    doc = yaml.safe_load(DEFINITION.read_text())
    report = root / "out" / "daily_sales.parquet"
    for node in doc["nodes"]:
        if node["type"] == "write_parquet":
            node["config"]["path"] = str(report)
    catalog = root / "catalog.duckdb"
    with config.using(catalog=catalog, data_roots=(REPO, root), organization="default", user="admin"):
        workflows.apply(from_data(doc), Scope.current(Catalog(catalog)), "coldstart benchmark")
    return report


def same_report(a: Path, b: Path) -> None:
    left, right = pl.read_parquet(a), pl.read_parquet(b)
    cols = ["region", "revenue", "orders"]
    left, right = (f.select(cols).with_columns(pl.col("orders").cast(pl.Int64)) for f in (left, right))
    assert_frame_equal(left, right)  # float sums may differ in the last bits


def import_groups(stderr: str) -> tuple[float, list[tuple[str, float]]]:
    """``-X importtime`` lines: total self time and self time per top-level package, largest first."""
    groups: dict[str, float] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, _, name = line.removeprefix("import time:").split("|", 2)
        top = name.strip().split(".")[0]
        key = "stdlib" if top in sys.stdlib_module_names or top.startswith("_") else top
        groups[key] = groups.get(key, 0.0) + int(self_us) / 1e6
    ranked = sorted(groups.items(), key=lambda kv: -kv[1])
    return sum(groups.values()), ranked


def importtime(cmd: Sequence[str | Path]) -> list[str | Path]:
    """``cmd`` (a script, or the interpreter and a script) run by ``python -X importtime``."""
    script = list(cmd[1:]) if str(cmd[0]) == sys.executable else list(cmd)
    return [sys.executable, "-X", "importtime", *script]


def _groups_text(total: float, ranked: list[tuple[str, float]], top: int = 10) -> str:
    shown = ", ".join(f"{name} {sec:.2f}" for name, sec in ranked[:top])
    return f"{total:.2f} s ({shown}, other {total - sum(s for _, s in ranked[:top]):.2f})"


SERVED_PHASES = {
    0: "… until the flow run begins (imports, setup, creating the flow run)",
    1: "… the flow run (Prefect's `Beginning` to `Finished` log lines)",
    2: "… after the flow run until exit (records, output, Prefect's shutdown)",
}
COLD_PHASES = {
    0: "… until the flow run begins (starting a server included)",
    2: "… after the flow run until exit (the ephemeral server stops with the process)",
}


def phase_rows(weflow: Sequence[Exited], raw: Sequence[Exited], labels: Mapping[int, str]) -> list[Row]:
    """Rows of the phases both sides could be split into (none when either side's logs had no marks)."""
    ours = [r.phases for r in weflow if r.phases is not None]
    theirs = [r.phases for r in raw if r.phases is not None]
    if not ours or not theirs:
        return []
    return [
        Row(label, Stat(tuple(p[i] for p in ours)), {RAW: Stat(tuple(p[i] for p in theirs))})
        for i, label in labels.items()
    ]


def _stop(home: Path) -> None:
    """Stop the server weflow started in ``home`` (as ``weflow server stop`` there) and wait for it to go."""
    state = home / "weflow-server.json"
    pid = json.loads(state.read_text()).get("pid") if state.exists() else None
    weflow_server.stop(home)
    deadline = time.monotonic() + 15
    while pid and time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def run(quick: bool) -> Section:
    repeats = 1 if quick else 7
    fresh_repeats = 1 if quick else 3
    section = Section(
        name="coldstart",
        title="a new `weflow run` process against a new raw Prefect script process",
        description=f"""\
Process start to exit of `weflow run daily_sales` (the console script, on a temp catalog where
`data/workflows/daily_sales.yaml` was applied, its report written to a temp data root) against
`python benchmarks/raw_cold.py` (**{RAW}**): an async flow of the same three Prefect tasks
weflow's run makes (`orders` materialised for its contract, `paid -> by_region -> ranked` fused,
`report`), doing the same Polars work with `NO_CACHE` and `persist_result=False`. **With a
server**: `PREFECT_API_URL` points both at the benchmark's running local server; interleaved,
{repeats} round(s){"" if quick else " after a warm-up"}. The phases split each process at Prefect's own log lines
(`Beginning flow run`, the flow run's `Finished in state`). **Without a server**:
`PREFECT_API_URL` unset and a fresh Prefect home and working directory per round, so weflow
starts its local server (state in the round's `PREFECT_HOME`; stopped, untimed,
after the round) and raw Prefect starts its ephemeral server inside the process; {fresh_repeats}
round(s){"" if quick else AGAIN}.
**Imports**: `python -c "import ..."` in a new process.""",
        baselines=(RAW,),
    )
    root = Path(tempfile.mkdtemp(prefix="weflow-bench-coldstart-")).resolve()
    homes: list[Path] = []
    try:
        report = apply_daily_sales(root)
        raw_report = root / "raw-out" / "daily_sales.parquet"
        env = base_env(root)
        api = prefect_api()
        served = {**env, "PREFECT_API_URL": api}
        weflow_cmd: list[str | Path] = [WEFLOW_BIN, "run", "daily_sales"]

        def raw_cmd(out: Path) -> list[str | Path]:
            return [sys.executable, RAW_SCRIPT, SAMPLE, out]

        # --- with a running server ---------------------------------------------------------
        runs: dict[str, list[Exited]] = {"weflow": [], RAW: []}

        def measure(name: str, cmd: Sequence[str | Path], output: Path) -> Callable[[], float]:
            def once() -> float:
                done = launch(cmd, root, served, output)
                runs[name].append(done)
                return done.seconds

            return once

        served_samples = interleave(
            {"weflow": measure("weflow", weflow_cmd, report), RAW: measure(RAW, raw_cmd(raw_report), raw_report)},
            repeats,
            warmup=0 if quick else 1,
            max_settle=0.3 if quick else 30.0,  # quick: settle()'s path (the numbers are not read)
            progress="coldstart: with a server",
        )
        same_report(report, raw_report)
        kept = {k: v[len(v) - repeats :] for k, v in runs.items()}  # drop the warm-up round
        st = {k: Stat(tuple(v)) for k, v in served_samples.items()}
        section.rows.append(
            Row("`weflow run` vs raw script, server running: start to exit", st["weflow"], {RAW: st[RAW]})
        )
        section.rows += phase_rows(kept["weflow"], kept[RAW], SERVED_PHASES)
        split = {k: [r.phases for r in v if r.phases is not None] for k, v in kept.items()}

        # --- without a running server (not in the smoke run: it starts a server per side) ---
        if not quick:
            fresh: dict[str, Path] = {}
            counter = [0]

            def place() -> Path:
                counter[0] += 1
                where = root / f"fresh-{counter[0]}"
                where.mkdir()
                return where

            cold: dict[str, list[Exited]] = {}

            def unserved(name: str, cmd: Sequence[str | Path], where: Path, output: Path) -> float:
                done = launch(cmd, where, {**env, "PREFECT_HOME": str(where / "prefect-home")}, output)
                cold.setdefault(name, []).append(done)
                return done.seconds

            def weflow_first() -> float:
                where = fresh["weflow"] = place()
                homes.append(where / "prefect-home")  # weflow's local server lives in PREFECT_HOME
                return unserved("weflow", weflow_cmd, where, report)

            def weflow_again() -> float:
                where = fresh["weflow"]
                home = where / "prefect-home"
                try:
                    found = weflow_server.running(home)
                    assert found is not None, "weflow's first run left no server behind"
                    watch_server(found.api_url)  # wait for that server to finish recording the first run
                    settle(2.0 if quick else 30.0)
                    watch_server(api)
                    return unserved("weflow again", weflow_cmd, where, report)
                finally:
                    _stop(home)

            def raw_first() -> float:
                where = fresh["raw"] = place()
                return unserved(RAW, raw_cmd(raw_report), where, raw_report)

            def raw_again() -> float:
                return unserved("raw again", raw_cmd(raw_report), fresh["raw"], raw_report)

            def weflow_only_first() -> float:
                try:
                    return weflow_first()
                finally:
                    _stop(homes[-1])

            variants: dict[str, Callable[[], float]] = (
                {"weflow": weflow_only_first, RAW: raw_first}
                if quick
                else {"weflow": weflow_first, "weflow again": weflow_again, RAW: raw_first, "raw again": raw_again}
            )
            unserved_samples = interleave(
                variants, fresh_repeats, warmup=0, max_settle=2.0 if quick else 30.0, progress="coldstart: no server"
            )
            us = {k: Stat(tuple(v)) for k, v in unserved_samples.items()}
            section.rows.append(
                Row("no server, first run: weflow starts its server / Prefect's ephemeral server", us["weflow"],
                    {RAW: us[RAW]})
            )  # fmt: skip
            section.rows += phase_rows(cold["weflow"], cold[RAW], COLD_PHASES)
            if not quick:
                section.rows.append(
                    Row("no server, second run: weflow reuses its server / ephemeral again", us["weflow again"],
                        {RAW: us["raw again"]})
                )  # fmt: skip

        # --- imports ---------------------------------------------------------------------------
        def importing(modules: str) -> Callable[[], float]:
            return lambda: launch([sys.executable, "-c", f"import {modules}"], root, env).seconds

        imports: dict[str, Callable[[], float]] = {
            "cli": importing("weflow.cli.app"),
            "prefect": importing("prefect"),
            "nothing": lambda: launch([sys.executable, "-c", "pass"], root, env).seconds,
        }
        if not quick:  # what each process imports before its flow run starts
            imports.update(run=importing("weflow.cli.app, weflow.execution"), raw=importing("prefect, polars"))
        imported = interleave(
            imports,
            repeats,
            warmup=0 if quick else 1,
            max_settle=0.5,
            progress="coldstart: imports",
        )
        im = {k: Stat(tuple(v)) for k, v in imported.items()}
        section.rows.append(
            Row('imports: `python -c "import weflow.cli.app"` vs `"import prefect"`', im["cli"], {RAW: im["prefect"]})
        )
        if not quick:
            section.rows.append(
                Row("imports before a run: `weflow.cli.app, weflow.execution` vs `prefect, polars`", im["run"],
                    {RAW: im["raw"]})
            )  # fmt: skip

        # --- where the time goes (full mode: three more processes, untimed) --------------------
        if not quick:
            log("coldstart: import profile and step probe")
            weflow_imports = import_groups(launch(importtime(weflow_cmd), root, served).stderr)
            raw_imports = import_groups(launch(importtime(raw_cmd(raw_report)), root, served).stderr)
            probe = subprocess.run(
                [sys.executable, "-c", PROBE, str(SAMPLE)], cwd=root, env=served, capture_output=True, text=True,
                timeout=600, check=True,
            )  # fmt: skip
            steps = json.loads(probe.stdout.strip().splitlines()[-1])
    finally:
        for home in homes:
            _stop(home)
        shutil.rmtree(root, ignore_errors=True)

    def med(values: Sequence[float]) -> float:
        return statistics.median(values)

    if split["weflow"] and split[RAW]:
        section.notes.append(
            "With a server, medians of the phases: weflow "
            + " / ".join(f"{med([p[i] for p in split['weflow']]):.2f}" for i in range(3))
            + f" s, {RAW} "
            + " / ".join(f"{med([p[i] for p in split[RAW]]):.2f}" for i in range(3))
            + " s (until the flow run begins / the flow run / after it)."
        )
    section.notes.append(
        f"A bare `python -c pass` takes {im['nothing'].median * 1000:.0f} ms here; every other row pays it too."
    )
    if not quick:
        section.notes += [
            "Imports of one whole run (`python -X importtime`, one extra run each, self time summed per "
            f"top-level package, in seconds; importtime itself adds a little): weflow {_groups_text(*weflow_imports)}; "
            f"{RAW} {_groups_text(*raw_imports)}.",
            "weflow's own steps, timed one by one in a fresh interpreter (`PROBE` in this module): "
            + "; ".join(f"{name} {sec * 1000:.0f} ms" for name, sec in zip(PROBE_STEPS, steps, strict=True))
            + ". The first contract validation pays for pandera registering its Polars backend (which "
            "imports `hypothesis` when it is installed, as in this dev environment); the second shows the "
            "validation itself.",
        ]
    section.notes += [
        "What a `weflow run` process does that the raw script does not: import the CLI (typer, rich), "
        "the catalog (duckdb, pyarrow), the node registry and pandera; open the catalog file in several "
        "short sessions (user, workflow, version, the RUNNING record, the final record with node rows); "
        "check the definition and compile it; check the server's health; validate the `orders` contract; "
        "print the run's table. The Prefect part (import, creating the flow and task runs, the shutdown "
        "that flushes events and logs) is the same on both sides.",
        "Without a server, weflow's first run waits for `prefect server start` on a fresh database, and "
        "the server stays up for the next runs (stopped by this benchmark after each round); Prefect's "
        "ephemeral server starts inside every process and stops with it, losing task runs still queued "
        "(DESIGN.md). The ephemeral start timeout is raised to "
        f"{EPHEMERAL_TIMEOUT} s (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`; Prefect's default "
        "20 s failed on this busy machine).",
        "Both sides load compiled bytecode as an installed package would: the installed packages' from "
        "pip's install, weflow's and the benchmarks' from `make bench`'s `compileall` (no process gets "
        "`PYTHONDONTWRITEBYTECODE`, so one missing is written once).",
    ]
    log("coldstart: done")
    return section
