"""Compile: a checked definition -> a plan of steps -> a Prefect flow, and the engine that runs it.
The only layer that builds Prefect objects. Entry points: ``plan.build``, ``flow.compile_flow``,
``flow.call`` (runs a compiled flow with one sync and one async Prefect client for the run),
``runtime.PlanRun`` (the engine: one task per step, records, reuse, spill, compensation),
``runtime.StepExecutor`` with ``executors.InProcess``, ``remote.NodeQueue`` and ``remote.Dask``
(where steps run, chosen once by ``remote.executor_for`` in ``execution.lifecycle.prepare``),
``threads`` (stoppable blocking work), ``remote.serve`` (a node worker on ``WORKFLOW_NODE_QUEUE``).

Imports go one way: plan, threads <- runtime <- executors <- remote, and flow <- runtime only;
nothing in the engine imports an executor. Contract: frames never pass through Prefect
parameters, results or caches (on the node queue they travel as Parquet files, by path); every
node of a fused step still gets its own record (``runtime.NodeRecord``, a ``NodeExecution``
changed by copying); a sink's compensation is registered before it writes and run only after a
later failure.
"""
