"""The generic Prefect entrypoint, as a file for ``prefect.yaml`` and ``prefect deploy``.

The flow lives in the package (``weflow.flow_entry``), which is what ``weflow deploy``'s
deployments name: a worker needs weflow installed, not this file.
"""

from weflow.flow_entry import run_workflow

__all__ = ["run_workflow"]
