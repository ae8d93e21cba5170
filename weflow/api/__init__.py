"""Interface: the REST API (FastAPI). Entry point: ``create_app``; served by ``weflow serve``.

Contract: every route but ``/health`` and ``/hooks/{token}`` needs a bearer API key and acts in
the key's organization; errors are JSON ``{detail, problems}``; no input yields a 500.
"""

from weflow.api.app import create_app

__all__ = ["create_app"]
