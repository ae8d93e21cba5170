"""``python -m weflow.child EXECUTION_ID PARENT_PID``: run one QUEUED execution in this process, then exit.

Started by ``weflow.children`` for the API (the catalog comes from WEFLOW_CATALOG). A child
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
    if len(args) != 2 or not args[1].isdigit():
        sys.stderr.write("usage: python -m weflow.child EXECUTION_ID PARENT_PID\n")
        return 2
    execution_id, parent = args[0], int(args[1])
    if os.getppid() != parent:  # the parent died before this process started
        return 1
    _watch(parent)
    execution.run_queued(execution_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
