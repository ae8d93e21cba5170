"""Storage: the DuckDB catalog. Entry points: ``Catalog``; ``auth`` for API keys and webhook tokens.

Contract: every method is one short transaction under a file lock (DESIGN decision 7).
"""

from weflow.catalog import auth
from weflow.catalog.auth import ApiKey, WebhookToken
from weflow.catalog.store import Catalog, SaveResult

__all__ = ["ApiKey", "Catalog", "SaveResult", "WebhookToken", "auth"]
