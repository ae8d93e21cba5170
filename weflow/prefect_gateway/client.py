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
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import certifi
from prefect import Flow
from prefect.client.base import ServerType
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.context import AsyncClientContext, SettingsContext, SyncClientContext, get_settings_context
from prefect.settings import PREFECT_API_URL, get_current_settings

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


def _connection() -> tuple[str, dict[str, Any]]:
    """The API URL and client arguments of the current settings, on the process's one SSL context."""
    api = get_current_settings().api
    return str(api.url), {
        "api_key": api.key.get_secret_value() if api.key else None,
        "auth_string": api.auth_string.get_secret_value() if api.auth_string else None,
        "httpx_settings": {"verify": _tls(api.ssl_cert_file, api.tls_insecure_skip_verify)},
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


@asynccontextmanager
async def run_clients() -> AsyncIterator[None]:
    """One sync and one async Prefect client for a flow run, made here, that the engine then reuses.

    Prefect's engine makes an async client per flow run and a sync client each time it sets up a
    result store (twice per run), and every new client builds an SSL context from the CA bundle:
    ~45 ms each here, even for an http:// API. The engine reuses clients it finds in Prefect's client
    contexts, so weflow enters both contexts first, with clients that share one SSL context per
    process (built from the same settings, so TLS verification is unchanged).
    """
    url, arguments = _connection()
    # model_construct: the contexts' __init__ would build clients of their own; their _httpx_settings stay
    # None so that the engine's get_client() (no settings) matches them.
    sync, async_ = _skip_csrf(SyncPrefectClient(url, **arguments)), _skip_csrf(PrefectClient(url, **arguments))
    try:
        with SyncClientContext.model_construct(client=sync):
            async with AsyncClientContext.model_construct(client=async_):
                yield
    finally:
        _learn_csrf(sync)
        _learn_csrf(async_)


async def _call(flow: Flow[..., Any], *args: Any) -> State[Any]:
    """Run ``flow`` to its final state inside ``run_clients``."""
    async with run_clients():
        running: Any = flow(*args, return_state=True)  # an async flow: a coroutine
        state: State[Any] = await running
    return state


def run_flow(flow: Flow[..., Any], *args: Any) -> State[Any]:
    """Run a compiled (async) flow in this process on this home's server, to its final state."""
    return on_server(lambda: _call(flow, *args))
