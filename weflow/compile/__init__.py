"""Compile: a checked definition -> a plan of steps -> a Prefect flow. The only layer that builds
Prefect objects. Entry points: ``plan.build``, ``flow.compile_flow``, ``runtime.PlanRun``.

Contract: frames never pass through Prefect parameters, results or caches; every node of a
fused step still gets its own record.
"""
