"""The run engine: a plan's steps as Prefect tasks, their records, and where the steps run.

Entry points: ``runtime.PlanRun`` (one task per step, records, reuse, spill, compensation;
``run`` returns one ``PlanResult``), ``runtime.StepExecutor`` with ``executors.InProcess``,
``remote.NodeQueue`` and ``remote.Dask`` (where steps run, chosen once by ``remote.executor_for``
in ``execution.lifecycle.prepare``), ``threads`` (stoppable blocking work), ``node_worker.serve`` (a
node worker on ``WORKFLOW_NODE_QUEUE``; SIGTERM stops it within ``STOP_GRACE`` seconds).

Imports go one way: threads <- runtime <- executors <- remote <- node_worker, all over ``compile.plan``; nothing
in the runtime imports an executor. Contract: frames never pass through Prefect parameters,
results or caches (on the node queue they travel as Parquet files, by path); every node of a
fused step still gets its own record (``runtime.NodeRecord``, a ``NodeExecution`` changed by
copying); a sink's compensation is registered before it writes and run only after a later failure.
"""
