"""Prefect's clients, pointed at this home's server: ``on_server`` for one call, ``run_flow`` for a compiled flow.

``pointed_at`` gives Prefect's settings a server's URL for a block, ``blocking`` runs a coroutine from
sync code (also inside a Jupyter kernel's loop), and ``on_server`` joins the three steps every
gateway call takes: find or start the server (``server.ensure``), point the client at it, block.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import certifi
import httpx
from prefect import Flow
from prefect.client.base import ServerType
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.context import AsyncClientContext, SettingsContext, SyncClientContext, get_settings_context
from prefect.settings import PREFECT_API_ENABLE_HTTP2, PREFECT_API_URL, get_current_settings

from weflow.prefect_gateway import server

T = TypeVar("T")

_prefect_settings: dict[str, tuple[Any, Any]] = {}


@contextmanager
def pointed_at(api_url: str) -> Iterator[None]:
    """Prefect's settings with ``PREFECT_API_URL=api_url`` for the block.

    ``prefect.settings.temporary_settings`` rebuilds every Prefect setting from the environment, ~85 ms
    here (a sixth of a flow run's fixed cost); this copy is made once per base settings and URL and
    then reused, and none is made when the current settings already point there.
    """
    current = get_settings_context()
    if current.settings.api.url == api_url:
        yield
        return
    base, pointed = _prefect_settings.get(api_url, (None, None))
    if base is not current.settings:
        base, pointed = current.settings, current.settings.copy_with_update(updates={PREFECT_API_URL: api_url})
        _prefect_settings[api_url] = (base, pointed)
    with SettingsContext(profile=current.profile, settings=pointed):
        yield


def blocking(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to the end from sync code, also where a loop already runs (a Jupyter kernel)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    failure: list[BaseException] = []
    context = contextvars.copy_context()

    def target() -> None:
        try:
            result.append(context.run(asyncio.run, coro))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target, name="weflow-blocking")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return result[0]


def on_server(call: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Block on ``call()`` with Prefect's client pointed at this home's server (started if need be)."""
    api = server.ensure()
    with pointed_at(api.api_url):
        return blocking(call())


@functools.cache
def _tls(cert_file: str | None, insecure: bool) -> ssl.SSLContext:
    """The SSL context Prefect's clients build for themselves (``PrefectClient.__init__``), built once."""
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    return ssl.create_default_context(cafile=cert_file or certifi.where())


QUICK_PAUSES = (0.05, 0.1, 0.2, 0.4)  # seconds before asking again after a 503; then Prefect's client's own backoff


def _again(request: httpx.Request, response: httpx.Response) -> bool:
    """Whether to send ``request`` again: the server said 503 and the body can be sent twice (bytes, not a stream)."""
    return response.status_code == 503 and isinstance(request.stream, httpx.ByteStream)


class _QuickRetries(httpx.AsyncBaseTransport):
    """Asks again after a 503 within a fraction of a second, before Prefect's client sees it.

    Prefect's server on SQLite answers 503 when a transaction met another writer (``database is
    locked``: nothing was written) and Prefect's client asks again only after ~2 s, then 4, 8...: a
    flow run created or labelled 2 s late, here up to half the runs of a burst. Most such conflicts are
    over in milliseconds. What still gets a 503 after ``QUICK_PAUSES`` goes to Prefect's client as
    before, which retries it as it always did.
    """

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self._inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for pause in QUICK_PAUSES:
            response = await self._inner.handle_async_request(request)
            if not _again(request, response):
                return response
            await response.aclose()
            await asyncio.sleep(pause)
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _QuickRetriesSync(httpx.BaseTransport):
    """``_QuickRetries`` for Prefect's sync client."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self._inner = inner

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for pause in QUICK_PAUSES:
            response = self._inner.handle_request(request)
            if not _again(request, response):
                return response
            response.close()
            time.sleep(pause)
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()


def _connection(sync: bool = False) -> tuple[str, dict[str, Any]]:
    """The API URL and client arguments of the current settings: the process's one SSL context, and a transport
    that asks again quickly after a 503 (made per client: a client closes its transport).

    The transport takes the connection settings Prefect's client would give its own (pool limits, HTTP/2,
    retried connects): httpx applies them only to a transport it makes itself."""
    api = get_current_settings().api
    verify = _tls(api.ssl_cert_file, api.tls_insecure_skip_verify)
    # Prefect's own pool limits (PrefectClient.__init__) and its 3 retries of a failed connect
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=25)
    transport: httpx.BaseTransport | httpx.AsyncBaseTransport
    if sync:
        transport = _QuickRetriesSync(httpx.HTTPTransport(verify=verify, limits=limits, retries=3,
                                                          http2=PREFECT_API_ENABLE_HTTP2.value()))  # fmt: skip
    else:
        transport = _QuickRetries(httpx.AsyncHTTPTransport(verify=verify, limits=limits, retries=3,
                                                           http2=PREFECT_API_ENABLE_HTTP2.value()))  # fmt: skip
    return str(api.url), {
        "api_key": api.key.get_secret_value() if api.key else None,
        "auth_string": api.auth_string.get_secret_value() if api.auth_string else None,
        "httpx_settings": {"verify": verify, "transport": transport},
    }


_no_csrf: set[str] = set()  # API URLs whose server said CSRF protection is off (a 422 to GET /csrf-token)


class _Client(PrefectClient):
    """Prefect's async client that asks a server for a CSRF token only until one client of this process learnt
    it has CSRF protection off (a local server's default): one request less for every client made after."""

    async def __aexit__(self, *exc_info: Any) -> None:
        _learn_csrf(self)
        await super().__aexit__(*exc_info)


def _learn_csrf(made: PrefectClient | SyncPrefectClient) -> None:
    if not getattr(made._client, "enable_csrf_support", True) and made.server_type is not ServerType.CLOUD:
        _no_csrf.add(str(made.api_url))


def _skip_csrf(made: T) -> T:
    if str(made.api_url) in _no_csrf:  # type: ignore[attr-defined]
        made._client.enable_csrf_support = False  # type: ignore[attr-defined]
    return made


def client() -> PrefectClient:
    """Prefect's async client for the current settings, on the process's one SSL context (not ~45 ms of a new one)."""
    url, arguments = _connection()
    return _skip_csrf(_Client(url, **arguments))


def shared_client() -> PrefectClient:
    """What ``prefect.get_client()`` gives, without its ~45 ms of a new SSL context: the client of the Prefect
    client context this code runs in (a worker's, a flow run's) on this loop, else a new ``client()``.

    Waiters, listings and workers read flow-run states through this many times a run; with ``get_client()`` the
    SSL contexts were ~13 s of CPU in a full test run (py-spy)."""
    context = AsyncClientContext.get()
    if context is not None and context.client is not None:
        if getattr(context.client, "_loop", None) in (asyncio.get_running_loop(), None):
            return context.client
    return client()


@asynccontextmanager
async def run_clients() -> AsyncIterator[None]:
    """One sync and one async Prefect client for a flow run, made here, that the engine then reuses.

    Prefect's engine makes an async client per flow run and a sync client each time it sets up a
    result store (twice per run), and every new client builds an SSL context from the CA bundle:
    ~45 ms each here, even for an http:// API. The engine reuses clients it finds in Prefect's client
    contexts, so weflow enters both contexts first, with clients that share one SSL context per
    process (built from the same settings, so TLS verification is unchanged).
    """
    url, arguments = _connection(sync=True)
    # model_construct: the contexts' __init__ would build clients of their own; their _httpx_settings stay
    # None so that the engine's get_client() (no settings) matches them.
    sync = _skip_csrf(SyncPrefectClient(url, **arguments))
    try:
        with SyncClientContext.model_construct(client=sync):
            async with async_client():
                yield
    finally:
        _learn_csrf(sync)


@asynccontextmanager
async def async_client() -> AsyncIterator[None]:
    """weflow's async Prefect client (``client()``) for whatever in this task and the tasks it starts asks Prefect's
    ``get_client()``: a worker's own calls, Prefect's engine."""
    made = client()
    try:
        async with AsyncClientContext.model_construct(client=made):
            yield
    finally:
        _learn_csrf(made)


async def _call(flow: Flow[..., Any], *args: Any) -> State[Any]:
    """Run ``flow`` to its final state inside ``run_clients``."""
    async with run_clients():
        running: Any = flow(*args, return_state=True)  # an async flow: a coroutine
        state: State[Any] = await running
    return state


def run_flow(flow: Flow[..., Any], *args: Any) -> State[Any]:
    """Run a compiled (async) flow in this process on this home's server, to its final state."""
    return on_server(lambda: _call(flow, *args))
