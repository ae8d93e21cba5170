"""One fresh process of one framework: ``python child.py FRAMEWORK ROOT CSV [--answers DIR] [--warm K] JOB...``.

Run by the interpreter of the framework's own environment (``.peers/<name>/bin/python``, or the
project's ``.venv`` for weflow and hand-written Prefect), as a script, so it imports nothing of
weflow's unless the framework is weflow. It imports ``pipelines_<FRAMEWORK>`` (the framework
itself with it; timed), then runs each JOB (``q01``, ``q03``, ``q05``, ``q10``, ``chain10``,
``chain100``) once and ``K`` more times in the same process, and prints one JSON line: the import
seconds, each job's first and warm seconds and answer rows, and the process's peak RSS (VmHWM).
With ``--answers DIR`` it also writes each job's answer to ``DIR/JOB.parquet`` (untimed) so the
runner can check it against DuckDB's.
"""

from __future__ import annotations

import argparse
import importlib
import json
import time
from pathlib import Path

QUERIES = ("q01", "q03", "q05", "q10")


def status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("framework")
    parser.add_argument("root")
    parser.add_argument("csv")
    parser.add_argument("jobs", nargs="+")
    parser.add_argument("--answers", type=Path)
    parser.add_argument("--warm", type=int, default=1)
    args = parser.parse_args()
    for job in args.jobs:  # before the (slow) imports: a wrong job is one line, at once
        if job not in QUERIES and not (job.startswith("chain") and job.removeprefix("chain").isdigit()):
            parser.error(f"unknown job {job!r}: one of {', '.join(QUERIES)} or chain<N>")
    t0 = time.perf_counter()
    pipelines = importlib.import_module(f"pipelines_{args.framework}")
    report: dict[str, object] = {"import_s": time.perf_counter() - t0, "rss_after_imports_mb": status_mb("VmRSS")}
    jobs = {}
    inside: list[float] = getattr(pipelines, "INSIDE", [])  # weflow: the seconds inside its step tasks, per run
    for job in args.jobs:
        seen = len(inside)
        times = []
        for _ in range(1 + args.warm):
            t0 = time.perf_counter()
            answer = pipelines.run(job, args.root, args.csv)
            times.append(time.perf_counter() - t0)
        if args.answers:
            answer.write_parquet(args.answers / f"{job}.parquet")
        jobs[job] = {"first_s": times[0], "warm_s": times[1:], "rows": answer.height, "inside_s": inside[seen:]}
    report["jobs"] = jobs
    report["peak_mb"] = status_mb("VmHWM")
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
