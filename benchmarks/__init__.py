"""Runnable benchmarks of weflow against raw baselines; ``python -m benchmarks`` writes BENCHMARKS.md.

Each module has ``run(quick: bool) -> Section``; ``benchmarks.harness`` holds the timing,
interleaving, statistics and markdown they share.
"""
