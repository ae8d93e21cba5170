"""The REST API (the seed's WorkflowsController): ``create_app`` builds it over one catalog."""

from __future__ import annotations

import os
from importlib.metadata import version
from pathlib import Path

from fastapi import APIRouter, FastAPI, Response

from weflow.api import backfills, definitions, diffs, metrics, pages, runner, runs
from weflow.api.http import HANDLERS, BodyLimit
from weflow.api.models import Health
from weflow.errors import WeflowError
from weflow.workflows import open_catalog

DEFAULT_BODY_LIMIT = 1 << 20  # 1 MiB: a large definition document is a few kB
BODY_LIMIT_ENV = "WEFLOW_API_BODY_LIMIT"

health = APIRouter(tags=["health"])


@health.get("/health", response_model=Health)
def get_health() -> Health:
    """Liveness; the only route that needs no API key."""
    return Health()


@health.head("/health", include_in_schema=False)
def head_health() -> Response:
    """Liveness for probes that send HEAD (load balancers, ``curl -I``): 200, no body, no key."""
    return Response(status_code=200, media_type="application/json")


def body_limit_from_env() -> int:
    """The body limit in bytes from WEFLOW_API_BODY_LIMIT (default 1 MiB)."""
    text = os.environ.get(BODY_LIMIT_ENV, "").strip()
    if not text:
        return DEFAULT_BODY_LIMIT
    if not text.isdigit() or int(text) < 1:
        raise WeflowError(f"{BODY_LIMIT_ENV}={text!r}: must be a positive number of bytes")
    return int(text)


def create_app(catalog_path: str | Path | None = None, body_limit: int | None = None) -> FastAPI:
    """The API over ``catalog_path`` (default WEFLOW_CATALOG); bodies over ``body_limit`` bytes get 413."""
    app = FastAPI(
        docs_url=None,  # served below from the package: the default page loads Swagger UI from a CDN
        redoc_url=None,
        title="weflow",
        version=version("weflow"),
        description="Workflows stored as data, run as Prefect flows. Send `Authorization: Bearer <API key>`.",
    )
    app.state.catalog = open_catalog(catalog_path)
    # weflow.execution loads its names on first use: the server loads the run path (engine, Prefect) as it starts,
    # not in its first run's request
    import weflow.execution.queue
    import weflow.execution.resuming  # noqa: F401

    for router in (
        health,
        definitions.router,
        diffs.router,
        runs.router,
        backfills.router,
        runs.webhooks,
        runner.router,
        metrics.router,
        pages.router,
        pages.docs,
    ):
        app.include_router(router)
    for exc_type, handler in HANDLERS:
        app.add_exception_handler(exc_type, handler)
    app.add_middleware(BodyLimit, limit=body_limit if body_limit is not None else body_limit_from_env())
    return app
