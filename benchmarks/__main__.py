"""``python -m benchmarks [--quick] [--only NAME] [--out BENCHMARKS.md]`` from the repository root.

With ``--only``, the sections of the other benchmarks already in the ``--out`` file are kept, each
marked with the date and commit of the run that measured it (full runs only: a quick run keeps nothing).
"""

from __future__ import annotations

import argparse
import os
import re
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from benchmarks import (
    catalog,
    coldstart,
    dataframe,
    history,
    hot,
    maintenance,
    overhead,
    peers,
    profiles,
    queued,
    recording,
    throughput,
    tpch,
)
from benchmarks.harness import QUIET, Section, document, log, machine, prefect_api

BENCHMARKS: dict[str, Callable[[bool], Section]] = {
    "catalog": catalog.run,
    "overhead": overhead.run,
    "dataframe": dataframe.run,
    "queued": queued.run,
    "tpch": tpch.run,
    "tpch10": lambda quick: tpch.run(quick, scale=10, name="tpch10"),
    "coldstart": coldstart.run,
    "throughput": throughput.run,
    "profiles": profiles.run,
    "maintenance": maintenance.run,
    "recording": recording.run,
    "history": history.run,
    "hot": hot.run,
    "peers": peers.run,
}
EARLIER = "_Measured in an earlier run"


def kept_sections(path: Path, rerun: Sequence[str]) -> dict[str, str]:
    """The sections of the report at ``path`` for benchmarks not in ``rerun``, marked with their run's facts."""
    if not path.is_file():
        return {}
    text = path.read_text()
    if "| mode | full |" not in text:
        return {}
    facts = dict(re.findall(r"^\| (date|commit|load average at start) \| (.+) \|$", text, flags=re.MULTILINE))
    mark = f"{EARLIER}: " + "; ".join(f"{k} {v}" for k, v in facts.items()) + "._"
    kept = {}
    for part in re.split(r"^(?=## )", text, flags=re.MULTILINE)[1:]:
        found = re.match(r"## (\w+): .*\n", part)
        if not found or found[1] in rerun or found[1] not in BENCHMARKS:
            continue
        body = part.rstrip() + "\n"
        if EARLIER not in body:
            body = found[0] + "\n" + mark + "\n" + body[found.end() :]
        kept[found[1]] = body
    return kept


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
    kept = kept_sections(args.out, names) if args.only and not args.quick else {}
    facts = machine()
    sections: list[Section] = []
    failed: list[str] = []
    started = time.perf_counter()
    command = "python -m benchmarks" + (" --quick" if args.quick else "")
    command += "".join(f" --only {n}" for n in args.only or ())

    def write() -> None:
        """The report so far: written after every benchmark, so a failure late in a long run loses nothing."""
        shown = dict(facts)
        load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
        shown["load average at end"] = " / ".join(f"{x:.2f}" for x in load) + " (1 / 5 / 15 min)"
        shown["wall time"] = f"{time.perf_counter() - started:.0f} s for " + ", ".join(s.name for s in sections)
        if failed:
            shown["failed"] = "; ".join(failed)
        if prefect_api.cache_info().currsize:
            shown["Prefect server"] = f"{prefect_api()} (from `prefect_gateway.server.ensure()`), on this machine"
        if QUIET.calls:
            shown["waiting for an idle Prefect server"] = (
                f"{QUIET.waited:.0f} s before {QUIET.calls} measurements; gave up waiting {QUIET.gave_up} times"
            )
        if kept:
            shown["kept"] = ", ".join(kept) + " (from the earlier report, marked in each section)"
        new = {section.name: section.to_markdown() for section in sections}
        blocks = [new.get(name) or kept[name] for name in BENCHMARKS if name in new or name in kept]
        args.out.write_text(document(blocks, shown, args.quick, command))

    for name in names:
        log(f"{name}: start ({'quick' if args.quick else 'full'})")
        t0 = time.perf_counter()
        try:
            section = BENCHMARKS[name](args.quick)
        except Exception as exc:  # one benchmark's failure (a server's 503, say) must not lose the others
            log(f"{name}: FAILED: {type(exc).__name__}: {exc}")
            traceback.print_exc()
            failed.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            write()
            continue
        section.seconds = time.perf_counter() - t0
        sections.append(section)
        write()
    log(f"wrote {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
