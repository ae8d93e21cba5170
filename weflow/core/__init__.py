"""Core: the definition model, graph checks, diff and builder. Pure: no DuckDB, Prefect, Pandera or Polars."""
