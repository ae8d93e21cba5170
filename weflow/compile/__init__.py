"""Compile: a checked definition -> a plan of steps -> a Prefect flow.

Entry points: ``plan.build`` (steps: fused chains of pure Polars nodes, each node's inputs and
outputs) and ``flow.compile_flow`` (an async flow, no result persistence, timed out, whose body is
the run engine's ``run``, passed in). Compile imports neither the run engine (``weflow.engine``)
nor the catalog; ``prefect_gateway.client.run_flow`` runs a compiled flow.
"""
