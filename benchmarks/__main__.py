"""``python -m benchmarks [--quick] [--only NAME] [--out BENCHMARKS.md]`` from the repository root."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import catalog, coldstart, dataframe, overhead, queued, throughput, tpch
from benchmarks.harness import QUIET, Section, document, log, machine, prefect_api

BENCHMARKS: dict[str, Callable[[bool], Section]] = {
    "catalog": catalog.run,
    "overhead": overhead.run,
    "dataframe": dataframe.run,
    "queued": queued.run,
    "tpch": tpch.run,
    "coldstart": coldstart.run,
    "throughput": throughput.run,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats (a smoke run)")
    parser.add_argument(
        "--only", action="append", choices=sorted(BENCHMARKS), metavar="NAME",
        help=f"run only this benchmark (repeatable; one of {', '.join(BENCHMARKS)})",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"), help="markdown file to write")
    args = parser.parse_args(argv)

    names = [n for n in BENCHMARKS if not args.only or n in args.only]
    facts = machine()
    sections = []
    started = time.perf_counter()
    for name in names:
        log(f"{name}: start ({'quick' if args.quick else 'full'})")
        t0 = time.perf_counter()
        section = BENCHMARKS[name](args.quick)
        section.seconds = time.perf_counter() - t0
        sections.append(section)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    facts["load average at end"] = " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)"
    facts["wall time"] = f"{time.perf_counter() - started:.0f} s for " + ", ".join(names)
    if prefect_api.cache_info().currsize:
        facts["Prefect server"] = f"{prefect_api()} (from `weflow.server.ensure()`), on this machine"
    if QUIET.calls:
        facts["waiting for an idle Prefect server"] = (
            f"{QUIET.waited:.0f} s before {QUIET.calls} measurements; gave up waiting {QUIET.gave_up} times"
        )
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    command += "".join(f" --only {n}" for n in args.only or ())
    args.out.write_text(document(sections, facts, args.quick, command))
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
