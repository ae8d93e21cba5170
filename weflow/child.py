"""``python -m weflow.child PARENT_PID``: run the one QUEUED execution whose id comes on stdin, then exit.

Started by ``weflow.children`` for the API (the catalog comes from WEFLOW_CATALOG) ahead of need:
it imports what a run needs, then waits for its execution id; an empty input ends it. A child
whose parent is gone stops at once: its lease names a dead process, so a reader ends the record.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from weflow import execution

PARENT_CHECK_SECONDS = 1.0


def _watch(parent: int) -> None:
    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=watch, name="weflow-parent-watch", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        sys.stderr.write("usage: python -m weflow.child PARENT_PID  (the execution id on stdin)\n")
        return 2
    parent = int(args[0])
    if os.getppid() != parent:  # the parent died before this process started
        return 1
    _watch(parent)
    execution_id = sys.stdin.readline().strip()
    if not execution_id:  # the parent closed the input: nothing to run
        return 0
    execution.run_queued(execution_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
