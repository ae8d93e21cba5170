"""Storage: the DuckDB catalog. Entry point: ``Catalog``. Knows only core types.

Contract: every method is one short transaction under a file lock (DESIGN decision 7).
"""

from weflow.catalog.store import Catalog, SaveResult

__all__ = ["Catalog", "SaveResult"]
