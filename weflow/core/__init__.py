"""Core: the definition model, documents, graph checks, diff and builder. Pure: no I/O, no DuckDB, Prefect,
Pandera or Polars (import-linter keeps it so, and keeps the order of the modules below).

- ``model.py``: the definition as frozen data (``Definition``, ``Node``, ``Connection``, ``InputSpec``,
  ``WorkflowSettings``, ``AlertRule``); ``Definition.outline()`` is its graph as plain data.
- ``input_types.py``: the one table of run-input types; ``mismatch`` judges a default when applied and
  an ``input_data`` value when run, with the same words.
- ``document.py``: YAML/JSON in and out, pydantic errors turned into document paths (``nodes[1].config.x``).
- ``graph.py``: ``problems(definition, signatures)`` runs the checks as pure passes (nodes, connections,
  input counts, alerts, cycles), each returning (path, message) pairs; ``topological_order``, ``upstream``.
- ``mermaid.py``: Mermaid text from plain data (boxes, arrows, states, groups); it imports nothing of weflow.
- ``entities.py``: stored things (workflows, versions, executions); ``diff.py``; ``builder.py`` (notebooks).
"""
