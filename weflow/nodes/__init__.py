"""Node types. Entry points: ``registry.node_types()``, ``NodeType``; plugins register under
the entry-point group ``weflow.nodes`` (a NodeType, a list of them, or a callable returning one).
The built-ins are listed in ``builtin.BUILTINS`` and live by kind: ``sources`` (file scans, DuckDB
query, JSON API), ``transforms`` (Polars expressions, join, union, SQL, validate), ``python_node``
(allowed callables) and ``sinks`` (atomic writes and their compensations); ``base`` holds the
``NodeType``/``RunContext`` contract and the path checks, ``stop`` the switch that stops node
work in C on a timeout, a cancel or the memory limit.

Contract: a node's ``run(config, inputs, ctx)`` returns a Polars frame; ``lazy`` types only build
a LazyFrame plan (so chains of them can be fused); paths go through ``resolve_path`` (one file)
or ``resolve_files`` (a file or a glob, every match checked), with ``ctx.data_roots``: they refuse
what lies outside the organization's roots and weflow's own state (catalog, Prefect home, runs).
"""
