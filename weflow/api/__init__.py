"""Interface: the REST API (FastAPI). Entry point: ``create_app``; served by ``weflow serve``.

Contract: every route but ``/health``, ``/hooks/{token}`` and ``/docs`` needs a bearer API key
(the ``/ui`` pages also take ``?key=``) and acts in the key's organization; errors are JSON
``{detail, problems}``; no input yields a 500. Page assets ship in ``static/``: nothing loads
from the internet. ``/runner/...`` is what remote workers use to load definitions and record
executions (``weflow.client``), with a key of the organization they run for. Routes call
services (``weflow.workflows``, ``execution``, ``monitor``, ``accounts``) and never import
``weflow.catalog`` or ``prefect``: the catalog is an opaque handle in ``app.state`` (import-linter).
"""

from weflow.api.app import create_app

__all__ = ["create_app"]
