"""A plan becomes a Prefect flow: async (no heartbeat join), no result persistence, timed out; `call` runs it
with Prefect clients made once per run (see its note on what that saves)."""

from __future__ import annotations

import functools
import ssl
from typing import Any

import certifi
from prefect import Flow, flow
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.context import AsyncClientContext, SyncClientContext
from prefect.settings import get_current_settings

from weflow.compile.runtime import PlanResult, PlanRun
from weflow.config import settings
from weflow.core.entities import RunState


class RunFailed(Exception):
    """The flow's run did not succeed; the PlanRun holds the records."""


def compile_flow(run: PlanRun, timeout_seconds: float, name: str | None = None) -> Flow[..., Any]:
    """A flow named after the workflow whose body runs every step of ``run``."""

    async def body(execution_id: str, input_data: dict[str, Any] | None = None) -> PlanResult:
        result = await run.run()
        if result.status is not RunState.SUCCEEDED:
            raise RunFailed(str(result.error) if result.error else result.status.value)
        return result

    extra: dict[str, Any] = {}
    runner = run.executor.task_runner()
    if runner is not None:
        extra["task_runner"] = runner
    decorate = flow(
        **extra,
        name=name or run.plan.definition.name,
        timeout_seconds=timeout_seconds,
        persist_result=False,
        # Named storage, never written (persist_result=False): without it the engine asks the server for its
        # default result storage twice per flow run, each time through a new sync client.
        result_storage=settings().runs_dir / "prefect-results",
        validate_parameters=False,
        log_prints=True,
    )
    return decorate(body)  # type: ignore[return-value]


@functools.cache
def _tls(cert_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The SSL context Prefect's clients build for themselves (``PrefectClient.__init__``), built once."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cert_file or certifi.where())


async def call(flow: Flow[..., Any], *args: Any) -> State[Any]:
    """Run ``flow`` to its final state with one sync and one async Prefect client, made here.

    Prefect's engine makes an async client per flow run and a sync client each time it sets up a
    result store (twice per run), and every new client builds an SSL context from the CA bundle:
    ~45 ms each here, even for an http:// API. The engine reuses clients it finds in Prefect's client
    contexts, so weflow enters both contexts first, with clients that share one SSL context per
    process (built from the same settings, so TLS verification is unchanged).
    """
    api = get_current_settings().api
    key = api.key.get_secret_value() if api.key else None
    auth = api.auth_string.get_secret_value() if api.auth_string else None
    http = {"verify": _tls(api.ssl_cert_file, api.tls_insecure_skip_verify)}
    sync = SyncPrefectClient(str(api.url), api_key=key, auth_string=auth, httpx_settings=http)
    client = PrefectClient(str(api.url), api_key=key, auth_string=auth, httpx_settings=http)
    # model_construct: the contexts' __init__ would build clients of their own; their _httpx_settings stay
    # None so that the engine's get_client() (no settings) matches them.
    with SyncClientContext.model_construct(client=sync):
        async with AsyncClientContext.model_construct(client=client):
            running: Any = flow(*args, return_state=True)  # an async flow: a coroutine
            state: State[Any] = await running
    return state
