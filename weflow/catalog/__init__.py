"""Storage: the DuckDB catalog. Entry points: ``Catalog``; ``auth`` for API keys and webhook tokens.

``Catalog`` (``store``) is one facade over the repositories: ``owners`` (organizations, users),
``definitions`` (workflows, versions, their node and connection tables), ``executions``
(executions, node executions, contract failures, compensations, leases) and ``metrics`` (stats,
alert deliveries). ``schema`` holds the forward-only migrations, ``session`` the short locked
session and the ``Repository`` base, ``rows`` the mapping between rows and ``core.entities``.

Contracts: every method is one short transaction under a file lock (DESIGN decision 7); bulk
writes go through Arrow (``rows.insert``); rows are read by column name, the columns of a record
derived from its dataclass (``rows.Columns``), so a field added in ``core.entities`` needs no list
here; timestamps come back as UTC datetimes. A caller waiting for another process's write
(``Catalog.stamp`` then ``Catalog.changed``) looks at the file between its reads, without a session.
"""

from weflow.catalog import auth
from weflow.catalog.definitions import SaveResult
from weflow.catalog.store import Catalog

__all__ = ["Catalog", "SaveResult", "auth"]
