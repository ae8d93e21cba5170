"""The catalog: workflows, versions, owners and execution records in one DuckDB file.

``Catalog`` is one facade over the repositories, each in its own module: ``owners``
(organizations, users), ``definitions`` (workflows, versions), ``executions`` (executions, node
executions, leases, contract failures), ``metrics`` (stats, alert deliveries) and ``retention``
(what a retention policy lets go, and removing it). Every method is one short transaction
(``session``); rows map to ``core.entities`` records through ``rows``.
"""

from __future__ import annotations

from weflow.catalog.definitions import Workflows
from weflow.catalog.executions import Executions
from weflow.catalog.metrics import Metrics
from weflow.catalog.owners import Owners
from weflow.catalog.retention import Retentions


class Catalog(Owners, Workflows, Executions, Metrics, Retentions):
    """Repository over the catalog file; each method is one short transaction."""
