"""Node types. Entry points: ``registry.node_types()``, ``NodeType``; plugins register under
the entry-point group ``weflow.nodes`` (a NodeType, a list of them, or a callable returning one).

Contract: a node's ``run(config, inputs, ctx)`` returns a Polars frame; ``lazy`` types only build
a LazyFrame plan (so chains of them can be fused); paths go through ``resolve_path`` (one file)
or ``resolve_files`` (a file or a glob, every match checked), with ``ctx.data_roots``: they refuse
what lies outside the organization's roots and weflow's own state (catalog, Prefect home, runs).
"""
