"""Compile: a checked definition -> a plan of steps -> a Prefect flow. The only layer that builds
Prefect objects. Entry points: ``plan.build``, ``flow.compile_flow``, ``flow.call`` (runs a compiled
flow with one sync and one async Prefect client for the run), ``runtime.PlanRun``, ``remote.serve``
(a node worker on ``WORKFLOW_NODE_QUEUE``).

Contract: frames never pass through Prefect parameters, results or caches (on the node queue
they travel as Parquet files, by path); every node of a fused step still gets its own record;
a sink's compensation is registered before it writes and run only after a later failure.
"""
